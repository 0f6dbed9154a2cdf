"""The LlamaGen decoder that the raster, random-order and pixel generators compose (they are siblings, none
subclasses another): token embeddings, a `Trunk` of plain Llama blocks (RMSNorm, SwiGLU, fused-qkv attention
without biases), the final RMSNorm, the output projection and 2-D RoPE over the token grid.

Parameter names are LlamaGen's (`tok_embeddings`, `layers.{i}.attention.wqkv/wo`, `layers.{i}.feed_forward.
w1/w2/w3`, `layers.{i}.attention_norm/ffn_norm`, `norm`, `output`), so an official `c2i_*.pt` maps one-to-one
(its `cls_embedding` goes to the class conditioner). `prefix_rope="zero"` reproduces LlamaGen's zero RoPE rows
for the conditioning prefix (the official presets keep it); new models leave the prefix unrotated.

How the decoder reads its condition (`cond_mode`, the raster generator's choice):
  "prefix"  the conditioning tokens start the sequence (LlamaGen c2i/t2i): every layer self-attends to them;
  "cross"   the pooled vector is the one start token and every layer cross-attends to the conditioning
            tokens (a caption's), their keys/values projected once per sequence;
  "adaln"   the pooled vector is the start token and modulates every layer (AdaLN; VAR / Infinity style).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from ..nn import NO_CACHE, GridRope, KVCache, Linear, NoCache, RMSNorm, Trunk, llama_hidden_dim
from ..nn.attention import AttnMask, CrossContext, with_key_padding
from ..types import Conditioning
from .base import DiscreteGeneratorConfig, GeneratorConfig

_DROPOUTS = ("embed_dropout", "resid_dropout", "ffn_dropout", "attn_dropout", "drop_path")
CondMode = Literal["prefix", "cross", "adaln"]
COND_MODES = ("prefix", "cross", "adaln")


@dataclass(frozen=True, kw_only=True)
class LlamaShape(GeneratorConfig):
    """The decoder's shape, for discrete (`LlamaConfig`) and continuous tokens alike. Defaults are GPT-B."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_hidden: int | None = None  # None: LlamaGen's rule, 2/3 * 4 * dim rounded up to a multiple of 256
    norm_eps: float = 1e-5
    rope: Literal["2d", "1d"] = "2d"
    rope_base: float = 10000.0
    prefix_rope: Literal["identity", "zero"] = "identity"
    embed_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    init_std: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        if len(self.scales) != 1:
            raise ValueError(f"a {type(self).kind or 'LlamaGen'} generator models one token grid; got scales "
                             f"{self.scales} (use the next-scale generator for several scales)")
        if self.dim < 1 or self.depth < 1 or self.num_heads < 1:
            raise ValueError("dim, depth and num_heads must be positive")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.rope == "2d" and self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim = dim / num_heads divisible by 4, got {self.head_dim}; "
                             "change dim or num_heads, or set rope=1d")
        if self.rope == "1d" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise ValueError(f"ffn_hidden must be positive or null (LlamaGen rule), got {self.ffn_hidden}")
        for name in _DROPOUTS:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_hidden or llama_hidden_dim(self.dim)

    @property
    def cond_dim(self) -> int:
        return self.dim


@dataclass(frozen=True, kw_only=True)
class LlamaConfig(LlamaShape, DiscreteGeneratorConfig):
    """The LlamaGen decoder over token ids. Defaults are GPT-B (111M parameters with 16384 codes, 1000 classes)."""


def add_llama_decoder(module: nn.Module, c: LlamaShape, *, rope_repeat: int = 1, cond_mode: CondMode = "prefix",
                      embedding: nn.Module | None = None, output: nn.Module | None = None) -> None:
    """Give `module` the decoder's parts under LlamaGen's names (composition: the generator owns them).
    `embedding` / `output` replace the token-id embedding and the logit projection (continuous tokens: a
    linear embedding, and a head reading the final hidden states instead of logits)."""
    if cond_mode not in COND_MODES:
        raise ValueError(f"unknown cond_mode {cond_mode!r}; choose one of {', '.join(COND_MODES)}")
    module.tok_embeddings = embedding if embedding is not None else nn.Embedding(c.vocab_size, c.dim)
    module.tok_dropout = nn.Dropout(c.embed_dropout)
    module.layers = Trunk(c.dim, c.depth, c.num_heads, c.hidden_dim, mlp="swiglu", norm="rms", norm_eps=c.norm_eps,
                          attn_dropout=c.attn_dropout, resid_dropout=c.resid_dropout, ffn_dropout=c.ffn_dropout,
                          drop_path=c.drop_path, adaln="block" if cond_mode == "adaln" else "none",
                          cond_dim=c.dim, cross=cond_mode == "cross")
    module.cond_mode = cond_mode
    module.norm = RMSNorm(c.dim, c.norm_eps)
    module.output = output if output is not None else Linear(c.dim, c.vocab_size, bias=False)
    module.rope = GridRope(c.grid, c.head_dim, base=c.rope_base, kind=c.rope, prefix_mode=c.prefix_rope,
                           repeat=rope_repeat)


def llama_init(module: nn.Module, std: float) -> None:
    """LlamaGen init: N(0, std) for linears and embeddings, zero biases, unit norms, zero output projection
    (a module's `head` initialises itself)."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and not name.startswith("head."):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    if isinstance(module.output, nn.Linear):
        nn.init.zeros_(module.output.weight)
    if getattr(module, "cond_mode", "prefix") != "prefix":
        for block in module.layers:  # new branches start as the identity: AdaLN gates / cross outputs at zero
            if module.cond_mode == "adaln":
                nn.init.zeros_(block.ada_lin[1].weight)
                nn.init.zeros_(block.ada_lin[1].bias)
            else:
                nn.init.zeros_(block.cross_attention.wo.weight)


@dataclass
class DecoderInputs:
    """What the decoder reads from a Conditioning, prepared once per sequence (a training batch or a whole
    sampling run): the sequence's first inputs and their valid slots, and per layer the AdaLN modulations or
    the cross-attention keys/values."""

    prefix: Tensor  # (B, P, C)
    prefix_mask: Tensor | None = None  # (B, P) bool; None = all real
    modulations: Sequence[tuple[Tensor, ...]] = field(default_factory=tuple)
    contexts: Sequence[CrossContext] = field(default_factory=tuple)


def decoder_inputs(module: nn.Module, c: Conditioning) -> DecoderInputs:
    """The decoder's view of `c` under its `cond_mode` (see the module docstring)."""
    dtype = module.tok_embeddings.weight.dtype
    mode = getattr(module, "cond_mode", "prefix")
    if mode == "prefix":
        return DecoderInputs(*right_aligned(c.prefix.to(dtype), c.prefix_mask))
    start = c.vector.to(dtype)[:, None]  # (B, 1, C)
    if mode == "adaln":
        return DecoderInputs(start, modulations=module.layers.modulations(c.vector.to(dtype)))
    return DecoderInputs(start, contexts=module.layers.contexts(c.prefix.to(dtype), c.prefix_mask))


def right_aligned(prefix: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A padded prefix with each row's real tokens moved to the end (their order kept), as LlamaGen-T2I
    feeds captions: the last prefix slot predicts the first image token, so it must be a real token."""
    if mask is None or bool(mask[:, -1].all()):
        return prefix, mask
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # pads first, real tokens after
    return prefix.gather(1, order[..., None].expand_as(prefix)), mask.gather(1, order)


def decoder_hidden(module: nn.Module, x: Tensor, rope: tuple[Tensor, Tensor], mask: AttnMask,
                   cache: KVCache | NoCache = NO_CACHE, inputs: DecoderInputs | None = None) -> Tensor:
    """Trunk and final norm over x (R, T, C). `inputs` carries the AdaLN / cross-attention condition of a
    decoder built with another cond_mode than "prefix"."""
    extra = {} if inputs is None else {"modulations": inputs.modulations, "contexts": inputs.contexts}
    return module.norm(module.layers(x, rope=rope, mask=mask, cache=cache, **extra))


def decoder_logits(module: nn.Module, x: Tensor, rope: tuple[Tensor, Tensor], mask: AttnMask,
                   cache: KVCache | NoCache = NO_CACHE, inputs: DecoderInputs | None = None) -> Tensor:
    """`decoder_hidden` and the output projection: logits (R, T, V) in fp32."""
    return module.output(decoder_hidden(module, x, rope, mask, cache, inputs)).float()


def causal_logits(module: nn.Module, seq: Tensor, c: Conditioning) -> Tensor:
    """Teacher-forced logits (B, N, V) of a sequence (B, N) after the conditioning prefix (B, P, C): position
    P - 1 + i predicts token i. `module.embed(seq, start)` embeds sequence tokens (raster: token ids; pixel:
    value + channel)."""
    module._check_conditioning(c, seq.shape[0])
    inputs = decoder_inputs(module, c)
    P = inputs.prefix.shape[1]
    x = torch.cat([inputs.prefix, module.embed(seq[:, :-1], 0)], dim=1)  # (B, P + N - 1, C)
    cos, sin = module.rope.table(P)
    T = x.shape[1]
    mask = with_key_padding("causal", prefix_keys(inputs.prefix_mask, T), T, T)  # pad tokens are never keys
    logits = module.logits(module.tok_dropout(x), (cos[:T], sin[:T]), mask, NO_CACHE, inputs)
    return logits[:, P - 1:]  # (B, N, V), or the head input (B, N, C) of continuous tokens


def prefix_keys(prefix_mask: Tensor | None, length: int) -> Tensor | None:
    """(B, length) bool: which of `length` sequence slots (prefix first) may be attended to; None = all."""
    if prefix_mask is None:
        return None
    B, P = prefix_mask.shape
    return torch.cat([prefix_mask, prefix_mask.new_ones(B, max(length - P, 0))], dim=1)
