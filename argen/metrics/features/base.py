"""The feature-network contract used by every distribution metric (FID, KID, precision/recall).

A feature network maps uint8 images (B, 3, H, W) to float32 features (B, D). It owns its input
protocol (resize, value scaling) so that one network always sees images the same way, and it says
who it is: `name` (used to label results), `dim`, `resize` (a human-readable description recorded in
every result), `weights_hash` (sha256 over its tensors, see `state_dict_sha256`) and `metric_prefix`:
"FID"/"KID" only for the standard TF-Inception pool3 features; every other network's numbers are
labelled with its own name ("FD_lenet-fmnist"), never FID/IS (see docs in /work/shared design §5).

Networks are listed by name in a small table (`register_feature_net`) so tests and the CLI can iterate
them; each entry knows how to load its weights (`load_feature_net(name, ...)`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ...errors import ConfigError

DEFAULT_CACHE_DIR = Path("~/.cache/argen")


class FeatureNet(nn.Module):
    """Base class: subclasses implement `extract(x_uint8) -> (B, D)` and set the attributes below."""

    name: str = ""
    dim: int = 0
    resize: str = ""
    # "FID" for the standard Inception features; None means results are labelled "FD_<name>" etc.
    metric_prefix: str | None = None
    weights_hash: str = ""  # filled in by the loader (sha256 over the tensors)

    def forward(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) or (B, 1, H, W) -> float32 features (B, D) on the input's device."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected uint8 images (B, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}; convert float images with argen.imageio.to_uint8")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grey -> RGB
        return self.extract(images).float()

    def extract(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Prefix of distance names in results: 'FID' / 'KID' for Inception, 'FD_<name>' otherwise."""
        return self.metric_prefix or f"FD_{self.name}"

    def protocol(self) -> dict:
        """What a result must record about the features it was computed on."""
        return {"feature_net": self.name, "feature_dim": self.dim, "feature_weights_sha256": self.weights_hash,
                "resize": self.resize}


def state_dict_sha256(state: dict[str, Tensor]) -> str:
    """sha256 over sorted keys, dtypes, shapes and raw bytes: identifies weights independent of file format.

    BatchNorm's `num_batches_tracked` counters are left out: they do not change eval-mode outputs.
    """
    h = hashlib.sha256()
    for k in sorted(k for k in state if not k.endswith("num_batches_tracked")):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- resize

def resize_bilinear_tf1(x: Tensor, size: int) -> Tensor:
    """Bilinear resize as TensorFlow 1.x `resize_bilinear(align_corners=False)` (torch-fidelity's protocol).

    The source coordinate of output pixel i is i * (in / out) (no half-pixel centres), the two
    neighbours floor() and floor()+1 (clamped to the last pixel) are blended linearly, with no
    antialiasing. This is how the original TF FID code fed Inception, so we match it exactly; it differs
    from `F.interpolate(mode="bilinear")`, which uses half-pixel centres. `x` is float (B, C, H, W).
    """
    _, _, h, w = x.shape

    def axis(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        # Positions in float32 as in TF (and torch-fidelity), so values match bit for bit on CPU.
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (pos - lo.float()).to(x.dtype)

    ylo, yhi, dy = axis(h)
    xlo, xhi, dx = axis(w)
    top, bottom = x[:, :, ylo, :], x[:, :, yhi, :]  # (B, C, size, W)
    top = top[..., xlo] + (top[..., xhi] - top[..., xlo]) * dx
    bottom = bottom[..., xlo] + (bottom[..., xhi] - bottom[..., xlo]) * dx
    return top + (bottom - top) * dy.view(-1, 1)


# ----------------------------------------------------------------------------- name table

@dataclass(frozen=True)
class FeatureNetEntry:
    name: str
    description: str
    load: Callable[..., FeatureNet]  # load(cache_dir=..., weights=None, device=...) -> FeatureNet
    aliases: tuple[str, ...] = ()


_FEATURE_NETS: dict[str, FeatureNetEntry] = {}


def register_feature_net(name: str, description: str, aliases: tuple[str, ...] = ()):
    """Decorator for a loader function `load(cache_dir, weights, device) -> FeatureNet`."""

    def deco(fn: Callable[..., FeatureNet]) -> Callable[..., FeatureNet]:
        _FEATURE_NETS[name] = FeatureNetEntry(name, description, fn, aliases)
        return fn

    return deco


def feature_net_names() -> list[str]:
    return sorted(_FEATURE_NETS)


def describe_feature_nets() -> dict[str, str]:
    return {n: _FEATURE_NETS[n].description for n in feature_net_names()}


def resolve_feature_net_name(name: str) -> str:
    for entry in _FEATURE_NETS.values():
        if name == entry.name or name in entry.aliases:
            return entry.name
    known = ", ".join(f"{e.name} (alias {', '.join(e.aliases)})" if e.aliases else e.name
                      for e in _FEATURE_NETS.values())
    raise ConfigError(f"unknown feature network '{name}'; choose one of: {known}")


def load_feature_net(name: str, cache_dir: str | Path = DEFAULT_CACHE_DIR, weights: str | Path | None = None,
                     device: str | torch.device = "cpu") -> FeatureNet:
    """Load feature network `name` (or an alias such as 'inception') with its weights, in eval mode.

    `weights` overrides where the weights come from (a file or saved-model directory); by default each
    network finds them under `cache_dir` (see its loader).
    """
    entry = _FEATURE_NETS[resolve_feature_net_name(name)]
    net = entry.load(cache_dir=Path(cache_dir).expanduser(), weights=weights, device=torch.device(device))
    return net.eval().requires_grad_(False)

