"""A small LeNet-style classifier whose penultimate layer serves as a fast feature space for quick CPU checks.

LeNet: LeCun et al. 1998 (http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf). argen trains it on
Fashion-MNIST (`train_lenet`, a few minutes on CPU) and saves it as an argen model with the sha256 of
its tensors. Distances on these features are NOT FID: results are always labelled with the network's
name, e.g. "FD_lenet-fmnist" (Frechet distance on LeNet features trained on Fashion-MNIST), and are
comparable only with numbers from the same saved network (same hash).

Input protocol: uint8 (B, 3, H, W) -> grey (mean of RGB) -> if H, W != 28: bilinear resize to 28x28 with
antialiasing (`F.interpolate(antialias=True, align_corners=False)`) -> x / 127.5 - 1 -> two conv+pool
stages -> fc (feature_dim). Features are the fc activations *before* the ReLU, so no unit is constant zero
and the covariance stays well conditioned. After training, the fc layer is rescaled so that training
features have mean squared value 1 per dimension (the head is rescaled inversely, logits unchanged): KID's
kernel (x.y/d + 1)^3 assumes features of order 1, as Inception's are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...config import Config
from ...errors import CheckpointError
from .base import FeatureNet, register_feature_net, state_dict_sha256

NAME = "lenet-fmnist"


@dataclass(frozen=True, kw_only=True)
class LeNetConfig(Config):
    name: str = NAME  # label of the feature space in results ("FD_<name>")
    resolution: int = 28  # the network's input size; other sizes are resized to it
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128
    num_classes: int = 10

    def __post_init__(self):
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name must be a non-empty label without spaces, e.g. 'lenet-fmnist', got {self.name!r}")
        if self.resolution < 8 or self.resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4 and >= 8 (two 2x poolings), got {self.resolution}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be two positive widths, e.g. (32, 64), got {self.channels}")
        if self.feature_dim < 2 or self.num_classes < 2:
            raise ValueError(f"feature_dim and num_classes must be >= 2, got {self.feature_dim}, {self.num_classes}")


@registry.register("lenet-features", LeNetConfig)
class LeNetFeatures(FeatureNet):
    """conv5-pool-conv5-pool-fc(features)-fc(classes); `extract` returns the pre-ReLU fc features."""

    metric_prefix = None

    def __init__(self, config: LeNetConfig):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc = nn.Linear(c2 * (config.resolution // 4) ** 2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.config.name

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.config.feature_dim

    @property
    def resize(self) -> str:  # type: ignore[override]
        r = self.config.resolution
        return f"grey (RGB mean), bilinear antialiased to {r}x{r} when the size differs"

    def _prepare(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float (B, 1, R, R) in [-1, 1] on the network's device/dtype."""
        p = self.conv1.weight
        x = images.to(device=p.device, dtype=torch.float32).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        r = self.config.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return (x / 127.5 - 1.0).to(p.dtype)

    def _features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, C2, R/4, R/4)
        return self.fc(x.flatten(1))  # (B, feature_dim), before the ReLU

    def extract(self, images: Tensor) -> Tensor:
        return self._features(self._prepare(images))

    def logits(self, images: Tensor) -> Tensor:
        """Class logits for uint8 images (used for training and accuracy checks)."""
        return self.head(F.relu(self._features(self._prepare(images))))


# ----------------------------------------------------------------------------- training

def init_weights(model: LeNetFeatures, rng: torch.Generator) -> None:
    """Seeded init (PyTorch's default Kaiming-uniform scheme, drawn from `rng`)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=rng)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def accuracy(model: LeNetFeatures, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images (N, 3, H, W)."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = model.logits(images[i:i + batch_size]).argmax(dim=1).cpu()
        correct += (pred == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


@torch.no_grad()
def normalise_feature_scale(model: LeNetFeatures, images: Tensor, batch_size: int = 1000) -> float:
    """Rescale fc (and inversely the head) so features of `images` have mean squared value 1; returns the factor.

    relu(s * z) = s * relu(z) for s > 0, so dividing the head's weights by s leaves the logits unchanged.
    """
    feats = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    scale = 1.0 / feats.pow(2).mean().sqrt().item()
    model.fc.weight.mul_(scale)
    model.fc.bias.mul_(scale)
    model.head.weight.div_(scale)
    return scale


def train_lenet(images: Tensor, labels: Tensor, config: LeNetConfig | None = None, epochs: int = 2,
                batch_size: int = 128, lr: float = 2e-3, rng: torch.Generator | None = None,
                progress: Callable[[int, int, float], None] | None = None) -> LeNetFeatures:
    """Train a LeNet classifier on uint8 images (N, 3, H, W) with int labels (N,); returns it in eval mode.

    Adam with a cosine learning-rate decay; `progress(step, total, loss)` is called every step. The
    features are then rescaled to unit mean square on (up to 10k of) the training images.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    config = config or LeNetConfig(num_classes=int(labels.max()) + 1)
    rng = rng if rng is not None else torch.Generator().manual_seed(0)
    model = LeNetFeatures(config)
    init_weights(model, rng)
    model.train()
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    labels = labels.long()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=rng)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model.logits(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total, loss.item())
    model.eval()
    normalise_feature_scale(model, images[:10000])
    return model


def save_lenet(model: LeNetFeatures, directory: str | Path, extra: dict | None = None) -> Path:
    """Save as an argen model; `config.json` records the tensors' sha256 (checked on load)."""
    from ...saving import save

    info = {"sha256": state_dict_sha256(model.state_dict()), **(extra or {})}
    return save(model, directory, extra=info)


def default_lenet_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "feature_nets" / NAME


@register_feature_net(NAME, "LeNet-style CNN trained by argen on Fashion-MNIST, 128-d penultimate layer; "
                      "fast CPU checks, labelled FD_lenet-fmnist (not FID)")
def load_lenet(cache_dir: Path, weights: str | Path | None = None,
               device: torch.device = torch.device("cpu")) -> LeNetFeatures:
    """weights: a saved-model directory; default `<cache_dir>/feature_nets/lenet-fmnist`."""
    import json

    from ...saving import CONFIG_NAME, load

    directory = Path(weights).expanduser() if weights is not None else default_lenet_dir(cache_dir)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"no trained {NAME} feature network in {directory}; train it once with "
                              f"`argen eval --train-features {NAME}` (a few minutes on CPU)")
    model = load(directory, map_location=device)
    if not isinstance(model, LeNetFeatures):
        raise CheckpointError(f"{directory} holds a {type(model).__name__}, not a LeNet feature network")
    digest = state_dict_sha256(model.state_dict())
    recorded = json.loads((directory / CONFIG_NAME).read_text()).get("extra", {}).get("sha256")
    if recorded is not None and recorded != digest:
        raise CheckpointError(f"{directory}: weights have sha256 {digest} but config.json records {recorded}; "
                              "the file was modified or is corrupt: retrain it")
    model.weights_hash = digest
    return model
