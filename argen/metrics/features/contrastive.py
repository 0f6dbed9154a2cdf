"""A small contrastive text-image model that argen trains itself, for a text-image alignment score offline.

CLIP (Radford et al. 2021, https://arxiv.org/abs/2103.00020) in miniature: an image tower (a small CNN) and a
text tower (an MLP on the frozen MiniLM sentence features: the encoder's token features, masked-mean pooled)
map into one embedding space; training maximises the symmetric InfoNCE objective over a batch of captioned
images with a learned temperature. argen trains it on a captioned dataset (`train_contrastive`, default the
emoji names: a few CPU minutes) and saves it as an argen model with the sha256 of its tensors and of the
frozen text encoder's parameters. Scores computed with it (`argen.metrics.alignment`) are NOT CLIPScore: they
are always labelled with this model's name, e.g. "TIS_align-minilm-emoji" (text-image similarity on
align-minilm-emoji), and are comparable only with numbers from the same saved model (same hash).

Input protocol (images): uint8 (B, 3, H, W) -> if H, W != resolution: bilinear resize with antialiasing
(`F.interpolate(antialias=True, align_corners=False)`) -> x / 127.5 - 1 -> CNN -> L2-normalised embedding.
Text: prompts -> the frozen encoder (`config.text_encoder`, `max_length` tokens, right-padded) -> masked mean
over tokens -> MLP -> L2-normalised embedding. The encoder is not part of the saved weights; its parameters'
sha256 is recorded at training time and checked when the model loads, so a changed encoder is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...config import Config
from ...errors import CheckpointError, ConfigError, DataError
from .base import DEFAULT_CACHE_DIR, state_dict_sha256

DEFAULT_NAME = "align-minilm-emoji"
CACHE_SUBDIR = "feature_nets"


@dataclass(frozen=True, kw_only=True)
class ContrastiveConfig(Config):
    """`name` labels every score computed with the model ("TIS_<name>"); `text_encoder` / `max_length` /
    `text_dim` choose the frozen text encoder (as `TextConditionerConfig`); `resolution` is the image tower's
    input size, `channels` its stage widths (one 2x pooling per stage), `embed_dim` the joint space."""

    name: str = DEFAULT_NAME
    text_encoder: str = "minilm"
    max_length: int = 32
    text_dim: int = 384
    resolution: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    text_hidden: int = 512
    embed_dim: int = 128
    init_temperature: float = 0.07  # CLIP's initial softmax temperature
    max_logit_scale: float = 100.0  # CLIP clamps 1 / temperature at 100

    def __post_init__(self):
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name must be a non-empty label without spaces, e.g. {DEFAULT_NAME!r}, got {self.name!r}")
        if not self.text_encoder:
            raise ValueError("text_encoder must name a text encoder ('minilm', a hub name or a local path)")
        for field, v in (("max_length", self.max_length), ("text_dim", self.text_dim),
                         ("text_hidden", self.text_hidden), ("embed_dim", self.embed_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{field} must be a positive integer, got {v!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive stage widths, e.g. (32, 64, 128), got {self.channels}")
        if self.resolution < 2 ** len(self.channels) or self.resolution % 2 ** len(self.channels):
            raise ValueError(f"resolution must be a multiple of {2 ** len(self.channels)} (one 2x pooling per "
                             f"stage of channels={self.channels}), got {self.resolution}")
        if not 0 < self.init_temperature < 1:
            raise ValueError(f"init_temperature must be in (0, 1), e.g. 0.07, got {self.init_temperature}")
        if self.max_logit_scale <= 1:
            raise ValueError(f"max_logit_scale must be > 1, e.g. 100, got {self.max_logit_scale}")


def masked_mean(features: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) token features, (B, T) bool mask -> (B, D): MiniLM's sentence embedding before its normalisation."""
    w = mask.to(features.dtype)[..., None]  # (B, T, 1)
    return (features * w).sum(1) / w.sum(1).clamp(min=1.0)


@registry.register("contrastive-text-image", ContrastiveConfig)
class ContrastiveTextImage(nn.Module):
    """Image tower (CNN) + text tower (MLP on pooled frozen text features) into one normalised embedding space."""

    def __init__(self, config: ContrastiveConfig):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        width = 3
        for ch in c.channels:
            layers += [nn.Conv2d(width, ch, 3, padding=1), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1), nn.GELU(),
                       nn.AvgPool2d(2)]
            width = ch
        self.image_tower = nn.Sequential(*layers)
        side = c.resolution // 2 ** len(c.channels)
        self.image_proj = nn.Linear(width * side * side, c.embed_dim)
        self.text_tower = nn.Sequential(nn.LayerNorm(c.text_dim), nn.Linear(c.text_dim, c.text_hidden), nn.GELU(),
                                        nn.Linear(c.text_hidden, c.embed_dim))
        # log(1 / temperature), shape (1,) (a 0-d tensor has no byte view for state_dict_sha256)
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1.0 / c.init_temperature)))
        self.weights_hash = ""  # sha256 over the tensors, set by the loader
        self.text_encoder_hash = ""  # sha256 over the frozen encoder's parameters recorded at training time
        self.training_info: dict[str, Any] = {}  # the saved `extra` (trained_on, validation numbers, seed, ...)

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def label(self) -> str:
        """Prefix of the score's name: 'TIS_<name>' (text-image similarity on this model), never CLIPScore."""
        return f"TIS_{self.name}"

    @property
    def resize(self) -> str:
        r = self.config.resolution
        return f"bilinear antialiased to {r}x{r} when the size differs"

    def protocol(self) -> dict[str, Any]:
        """What a result must record about the model it was computed with."""
        c = self.config
        return {"alignment_model": self.name, "alignment_weights_sha256": self.weights_hash,
                "text_encoder": c.text_encoder, "text_encoder_sha256": self.text_encoder_hash,
                "text_max_length": c.max_length, "text_pooling": "masked mean of the encoder's token features",
                "model_resolution": c.resolution, "resize": self.resize, "embed_dim": c.embed_dim}

    # ------------------------------------------------------------------ towers

    def _prepare(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected uint8 images (B, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}; convert float images with argen.imageio.to_uint8")
        p = self.image_proj.weight
        x = images.to(device=p.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB
        r = self.config.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return (x / 127.5 - 1.0).to(p.dtype)

    def _image_forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.image_proj(self.image_tower(x).flatten(1)), dim=-1)  # (B, E)

    def embed_images(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> L2-normalised float32 embeddings (B, E)."""
        return self._image_forward(self._prepare(images)).float()

    def embed_text_features(self, pooled: Tensor) -> Tensor:
        """Pooled frozen-encoder features (B, text_dim) -> L2-normalised float32 embeddings (B, E)."""
        if pooled.dim() != 2 or pooled.shape[1] != self.config.text_dim:
            raise ValueError(f"{self.name}: text features must be (B, {self.config.text_dim}) (pooled "
                             f"{self.config.text_encoder} features), got {tuple(pooled.shape)}")
        p = self.image_proj.weight
        return F.normalize(self.text_tower(pooled.to(device=p.device, dtype=p.dtype)), dim=-1).float()

    def encode_prompts(self, prompts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Prompts -> pooled frozen-encoder features (B, text_dim) (the text tower's input)."""
        return encode_captions(prompts, self.config, batch_size=batch_size, device=self.image_proj.weight.device)

    def embed_prompts(self, prompts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Prompts -> L2-normalised float32 embeddings (B, E)."""
        return self.embed_text_features(self.encode_prompts(prompts, batch_size))

    def temperature(self) -> float:
        return 1.0 / self.logit_scale.exp().clamp(max=self.config.max_logit_scale).item()

    def loss(self, images: Tensor, pooled: Tensor, caption_ids: Tensor | None = None) -> Tensor:
        """Symmetric InfoNCE over a batch of pairs: float images (B, 3, R, R) in [-1, 1], pooled text (B, D).

        With `caption_ids` (B,), pairs whose captions are equal are not each other's negatives: the target of
        a row is spread evenly over the columns with its caption (CLIP's one-hot target when all differ).
        """
        img = self._image_forward(images)
        txt = F.normalize(self.text_tower(pooled), dim=-1)
        logits = self.logit_scale.exp().clamp(max=self.config.max_logit_scale) * img @ txt.T  # (B, B)
        if caption_ids is None:
            target = torch.eye(len(img), device=img.device)
        else:
            target = (caption_ids[:, None] == caption_ids[None, :]).to(logits.dtype)  # (B, B), symmetric
        target = target / target.sum(1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ----------------------------------------------------------------------------- the frozen text encoder

def _encoder(config: ContrastiveConfig, device: torch.device | str = "cpu"):
    from ...conditioning.text import load_text_encoder

    enc = load_text_encoder(config.text_encoder, config.max_length, str(device))
    if enc.dim != config.text_dim:
        raise ConfigError(f"the text encoder {config.text_encoder!r} is {enc.dim}-wide but {config.name} was built "
                          f"for text_dim={config.text_dim}")
    return enc


def text_encoder_sha256(config: ContrastiveConfig) -> str:
    """sha256 over the frozen encoder's parameters (buffers left out: they vary with the transformers version)."""
    enc = _encoder(config)
    return state_dict_sha256(dict(enc.model.named_parameters()))


@torch.no_grad()
def encode_captions(captions: Sequence[str], config: ContrastiveConfig, batch_size: int = 256,
                    device: torch.device | str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Captions -> masked-mean pooled frozen-encoder features (N, text_dim), float32 on `device`."""
    captions = list(captions)
    if not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be strings")
    enc = _encoder(config, device)
    out = []
    for i in range(0, len(captions), batch_size):
        feats, mask = enc.encode(captions[i:i + batch_size])  # (b, T, D), (b, T)
        out.append(masked_mean(feats, mask).float())
        if progress is not None:
            progress(min(i + batch_size, len(captions)), len(captions))
    if not out:
        return torch.zeros(0, config.text_dim, device=device)
    return torch.cat(out)


# ----------------------------------------------------------------------------- training

def init_weights(model: ContrastiveTextImage, rng: torch.Generator) -> None:
    """Seeded init (PyTorch's default Kaiming-uniform scheme, drawn from `rng`); LayerNorm at identity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=rng)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1.0 / model.config.init_temperature))


def _shift(x: Tensor, max_shift: int, rng: torch.Generator) -> Tensor:
    """Random translation by up to `max_shift` pixels per image (edge-replicated border), drawn from `rng`."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=rng)
    rows = dy[:, None] + torch.arange(H)  # (B, H)
    cols = dx[:, None] + torch.arange(W)  # (B, W)
    b = torch.arange(B)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def dataset_pairs(dataset) -> tuple[Tensor, list[str]]:
    """(uint8 images (N, 3, H, W), captions) of a captioned argen dataset; DataError if it has no captions."""
    captions = getattr(dataset, "captions", None)
    if not captions:
        raise DataError(f"{getattr(dataset, 'name', 'the dataset')} has no captions to align images with: give a "
                        "captioned dataset (emoji, or an image folder with a name.txt caption beside every image)")
    return dataset.uint8_images().movedim(-1, 1).contiguous(), list(captions)  # (N, H, W, 3) -> (N, 3, H, W)


def train_contrastive(dataset=None, config: ContrastiveConfig | None = None, *, images: Tensor | None = None,
                      captions: Sequence[str] | None = None, text_features: Tensor | None = None,
                      epochs: int = 20, batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 0.2,
                      max_shift: int = 3, rng: torch.Generator | None = None,
                      progress: Callable[[int, int, float], None] | None = None) -> ContrastiveTextImage:
    """Train the contrastive model on a captioned dataset (or `images` uint8 (N, 3, H, W) + `captions`).

    The captions are encoded once by the frozen encoder (or given as pooled `text_features` (N, text_dim));
    images are resized to the model's resolution once, then each step draws a seeded batch, shifts the images
    by up to `max_shift` pixels and minimises the symmetric InfoNCE loss (pairs with equal captions are not
    each other's negatives) with AdamW, a short warm-up and a cosine learning-rate decay.
    `progress(step, total, loss)` is called every step. Same `rng` seed, same data, device and thread count
    -> the same weights. Returns the model in eval mode with `text_encoder_hash` set (when the frozen encoder
    was used).
    """
    if dataset is not None:
        images, captions = dataset_pairs(dataset)
    if images is None or (captions is None and text_features is None):
        raise ValueError("give a captioned dataset, or images with captions (or pooled text_features)")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    n = len(images)
    if captions is not None and len(captions) != n:
        raise ValueError(f"{n} images but {len(captions)} captions")
    if n < 2:
        raise ValueError(f"contrastive training needs at least 2 captioned images, got {n}")
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
    config = config or ContrastiveConfig()
    rng = rng if rng is not None else torch.Generator().manual_seed(0)
    model = ContrastiveTextImage(config)
    init_weights(model, rng)
    encoder_hash = ""
    if text_features is None:
        text_features = encode_captions(captions, config)
        encoder_hash = text_encoder_sha256(config)
    if text_features.shape != (n, config.text_dim):
        raise ValueError(f"text_features must be ({n}, {config.text_dim}), got {tuple(text_features.shape)}")
    with torch.no_grad():
        x_all = model._prepare(images)  # (N, 3, R, R) float in [-1, 1]: resized once
    pooled = text_features.float()
    caption_ids = torch.unique(pooled, dim=0, return_inverse=True)[1]  # equal captions -> equal features -> one id
    batch_size = min(batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # full batches only: InfoNCE's difficulty depends on the batch size
    total = epochs * steps_per_epoch
    decay = [p for name, p in model.named_parameters() if p.dim() > 1]
    rest = [p for name, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=rng)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = model.loss(_shift(x_all[idx], max_shift, rng), pooled[idx], caption_ids[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total, loss.item())
    model.eval()
    model.text_encoder_hash = encoder_hash
    return model


# ----------------------------------------------------------------------------- saving and loading

def model_name(dataset: str, encoder: str = "minilm") -> str:
    """The default name of a model trained on `dataset` ('emoji' -> 'align-minilm-emoji')."""
    stem = Path(str(dataset).rstrip("/")).name or "data"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.lower())
    enc = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(encoder).name.lower())
    return f"align-{enc}-{safe}"


def default_contrastive_dir(cache_dir: str | Path = DEFAULT_CACHE_DIR, name: str = DEFAULT_NAME) -> Path:
    return Path(cache_dir).expanduser() / CACHE_SUBDIR / name


def save_contrastive(model: ContrastiveTextImage, directory: str | Path, extra: dict | None = None) -> Path:
    """Save as an argen model; `config.json` records the tensors' sha256 and the text encoder's (checked on load)."""
    from ...saving import save

    info = {"sha256": state_dict_sha256(model.state_dict()), "text_encoder_sha256": model.text_encoder_hash,
            **(extra or {})}
    return save(model, directory, extra=info)


def load_contrastive(name_or_dir: str | Path = DEFAULT_NAME, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                     device: str | torch.device = "cpu", check_text_encoder: bool = True) -> ContrastiveTextImage:
    """Load a saved contrastive model: a saved-model directory, or a name found under
    `<cache_dir>/feature_nets/<name>` (where `argen eval --train-alignment DATASET` puts it).

    The tensors must match the sha256 recorded at save time; with `check_text_encoder`, so must the frozen
    text encoder's parameters (a different encoder would make every embedding meaningless).
    """
    import json

    from ...saving import CONFIG_NAME, load

    given = Path(str(name_or_dir)).expanduser()
    directory = given if (given / CONFIG_NAME).is_file() else default_contrastive_dir(cache_dir, str(name_or_dir))
    if not (directory / CONFIG_NAME).is_file():
        name = str(name_or_dir)
        dataset = name[len("align-minilm-"):] if name.startswith("align-minilm-") else "emoji"
        raise CheckpointError(f"no trained alignment model {name!r} (looked in {given} and {directory}); train it "
                              f"once with `argen eval --train-alignment {dataset}` (a few minutes on CPU)")
    model = load(directory, map_location=device)
    if not isinstance(model, ContrastiveTextImage):
        raise CheckpointError(f"{directory} holds a {type(model).__name__}, not a contrastive text-image model")
    digest = state_dict_sha256(model.state_dict())
    extra = json.loads((directory / CONFIG_NAME).read_text()).get("extra", {})
    recorded = extra.get("sha256")
    if recorded is not None and recorded != digest:
        raise CheckpointError(f"{directory}: weights have sha256 {digest} but config.json records {recorded}; "
                              "the file was modified or is corrupt: retrain it")
    model.weights_hash = digest
    model.text_encoder_hash = extra.get("text_encoder_sha256") or ""
    model.training_info = dict(extra)
    if check_text_encoder and model.text_encoder_hash:
        now = text_encoder_sha256(model.config)
        if now != model.text_encoder_hash:
            raise CheckpointError(f"{directory}: {model.name} was trained on text encoder "
                                  f"{model.config.text_encoder!r} with parameters sha256 {model.text_encoder_hash[:12]}..., but the installed one "
                                  f"has {now[:12]}...; reinstall that encoder or retrain the model")
    return model.requires_grad_(False)
