"""Next-scale prediction: VAR (Tian et al., "Visual Autoregressive Modeling", https://arxiv.org/abs/2404.02905).

The image is a pyramid of token maps r_1 .. r_S from the multi-scale residual quantizer (`msvq`), flattened
coarse -> fine. One transformer step predicts a *whole scale* at once:

    position block 0     : class token (+ pos_start)                      -> logits of scale 1
    position block k > 0 : word_embed(AreaDown(f_hat_{k-1}, scale k))      -> logits of scale k+1

where f_hat_{k-1} = sum_{j<k} phi_j(BicubicUp(e[r_j])) is the running reconstruction of the quantizer (its
one shared function builds these inputs for training and, scale by scale, for sampling). Every position
adds a level embedding (its scale index) and a learned absolute position embedding. Attention is
block-causal: a token sees its own scale and all coarser ones. Each block is pre-norm with non-affine
LayerNorm and AdaLN from the class vector (6 chunks in VAR's order gamma1, gamma2, scale1, scale2, shift1,
shift2; or one shared projection plus per-block offsets as in VAR-d36), attention with q/v-only biases and
optionally l2-normalised q/k with a learned per-head temperature, and a tanh-GELU MLP. The head is an AdaLN
(scale, shift) LayerNorm and a linear layer to the vocabulary.

The generator holds a frozen copy of the quantizer (codebook + phi convs, ~0.2M parameters for VAR) because
its inputs are built from token ids; `bind_tokenizer(tokenizer)` copies it from the trained tokenizer.
Sampling runs one scale per step through `argen.generate` with a static KV cache (each scale's slots are
written by index and see every earlier slot, no mask). VAR's guidance is cfg_schedule="linear_scale"
(argen cfg = 1 + VAR's cfg).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import registry
from ..conditioning.labels import ClassEmbedder, as_cond
from ..errors import ConfigError
from ..heads.categorical import CategoricalHead
from ..nn import AdaLNModulation, Block, KVCache, LayerNorm, Linear, modulate
from ..registry import register
from ..sampling.guidance import combine, guidance_scale
from ..sampling.logits import top_k_filter, top_p_filter
from ..tokenizers.quantizers.base import QuantizerConfig
from ..types import Cond, DecodeState, LossOutput, SampleOptions
from .base import Generator, GeneratorConfig

VAR_SCALES_256 = tuple((p, p) for p in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))


def _default_quantizer() -> QuantizerConfig:
    return registry.config_class("msvq")(dim=32, codebook_size=4096, scales=VAR_SCALES_256)


@dataclass(frozen=True, kw_only=True)
class NextScaleConfig(GeneratorConfig):
    """VAR transformer. `dim`/`num_heads` None follow VAR's size rule (64 * depth, depth heads);
    `drop_path` None is VAR's 0.1 * depth / 24. Defaults are VAR-d16 on 256px (310M parameters)."""

    vocab_size: int = 4096
    scales: tuple[tuple[int, int], ...] = VAR_SCALES_256
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    depth: int = 16
    dim: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    qk_norm: bool = True  # VAR's attn_l2_norm
    shared_adaln: bool = False  # VAR-d36's shared AdaLN
    drop_path: float | None = None
    attn_dropout: float = 0.0
    dropout: float = 0.0
    init_std: float | None = None  # None: sqrt(1 / (3 * dim))
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.width < 1 or self.heads < 1 or self.width % self.heads:
            raise ValueError(f"dim ({self.width}) must be a positive multiple of num_heads ({self.heads})")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0 (VAR uses 4), got {self.mlp_ratio}")
        for name in ("attn_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.path_drop < 1.0:
            raise ValueError(f"drop_path must be in [0, 1) or null (VAR's 0.1 * depth / 24), got {self.drop_path}")
        if self.quantizer.kind != "msvq":
            raise ValueError(f"quantizer must be the multi-scale quantizer (kind msvq), got {self.quantizer.kind!r}")
        q = self.quantizer
        if tuple(map(tuple, q.scales)) != tuple(map(tuple, self.scales)):
            raise ValueError(f"scales {list(map(list, self.scales))} differ from quantizer.scales "
                             f"{list(map(list, q.scales))}; set both to the tokenizer's scales")
        if q.codebook_size != self.vocab_size:
            raise ValueError(f"vocab_size {self.vocab_size} differs from quantizer.codebook_size {q.codebook_size}; "
                             "set both to the tokenizer's codebook size")

    @property
    def width(self) -> int:
        return self.dim if self.dim is not None else 64 * self.depth

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else self.depth

    @property
    def path_drop(self) -> float:
        return self.drop_path if self.drop_path is not None else 0.1 * self.depth / 24

    @property
    def first_len(self) -> int:
        """Tokens of the first scale (the class token is repeated over them)."""
        h, w = self.scales[0]
        return h * w

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(begin, end) of every scale in the flat token sequence."""
        out, cur = [], 0
        for h, w in self.scales:
            out.append((cur, cur + h * w))
            cur += h * w
        return out


@register("next-scale", NextScaleConfig)
class NextScaleGenerator(Generator):
    """VAR: block-causal transformer over a token pyramid, one scale per sampling step."""

    config: NextScaleConfig
    supports_prune = True  # SampleOptions.prune (see _pruned_blocks)
    # Ten steps of up to 2 x 256 rows: packing the weights costs more than it saves (VAR-d16 batch 1 on 2 cores:
    # 5.8 s with vs 5.3 s without; benchmarks/RESULTS.md). Raster decoding (hundreds of 2-row steps) gains ~2x.
    pack_weights_default = False

    def __init__(self, config: NextScaleConfig):
        super().__init__(config)
        c = config
        C, L = c.width, c.num_tokens
        self.quantizer = registry.build(c.quantizer)
        self.quantizer.requires_grad_(False)  # a copy of the tokenizer's; see bind_tokenizer
        self.word_embed = nn.Linear(c.quantizer.dim, C)
        self.class_emb = ClassEmbedder(c.num_classes, C)
        self.pos_start = nn.Parameter(torch.zeros(1, c.first_len, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, L, C))  # one learned vector per (scale, position)
        self.level_embed = nn.Embedding(len(c.scales), C)
        if c.shared_adaln:
            self.shared_ada_lin = AdaLNModulation(C, C, 6)
        rates = [c.path_drop * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            Block(C, c.heads, round(C * c.mlp_ratio), mlp="gelu_tanh", norm="layer", norm_eps=c.norm_eps,
                  qkv_bias="qv", out_bias=True, qk_norm="l2" if c.qk_norm else "none",
                  attn_dropout=c.attn_dropout, resid_dropout=c.dropout, ffn_dropout=c.dropout,
                  drop_path=rates[i], adaln_dim=0 if c.shared_adaln else C, shared_adaln=c.shared_adaln,
                  softmax_scale=None if c.qk_norm else 0.25 / math.sqrt(C // c.heads))  # VAR's scale without l2
            for i in range(c.depth))
        self.head_norm = LayerNorm(C, c.norm_eps, affine=False)
        self.head_ada_lin = AdaLNModulation(C, C, 2)
        self.output = Linear(C, c.vocab_size)  # nn.Linear that may use prepacked weights while sampling
        self.head = CategoricalHead()
        levels = torch.cat([torch.full((h * w,), k) for k, (h, w) in enumerate(c.scales)])  # (L,)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("block_mask", levels[None, :] <= levels[:, None], persistent=False)  # (L, L) may attend
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """VAR's init: truncated normal std sqrt(1/(3C)) for linears/embeddings, zero biases, small head,
        residual projections / sqrt(2 depth), AdaLN gates x init_adaln_gamma and scales/shifts x init_adaln."""
        c = self.config
        C = c.width
        std = c.init_std if c.init_std is not None else math.sqrt(1 / (3 * C))
        for name, m in self.named_modules():
            if name.startswith("quantizer"):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.pos_start, self.pos_embed):
            nn.init.trunc_normal_(p, std=std)
        with torch.no_grad():
            self.output.weight.mul_(c.init_head)
            self.head_ada_lin[1].weight.mul_(c.init_adaln)
            for b in self.blocks:
                b.attention.wo.weight.div_(math.sqrt(2 * c.depth))
                b.feed_forward.fc2.weight.div_(math.sqrt(2 * c.depth))
                if c.qk_norm:
                    b.attention.qk_scale.fill_(math.log(4.0))
                b.attention.q_bias.zero_()
                b.attention.v_bias.zero_()
                if c.shared_adaln:
                    gss = torch.randn_like(b.ada_gss) / math.sqrt(C)
                    gss[:, :, 2:] *= c.init_adaln
                    gss[:, :, :2] *= c.init_adaln_gamma
                    b.ada_gss.copy_(gss)
                else:
                    w = b.ada_lin[1].weight  # rows: gamma1, gamma2 | scale1, scale2, shift1, shift2
                    w[2 * C:].mul_(c.init_adaln)
                    w[:2 * C].mul_(c.init_adaln_gamma)

    # ------------------------------------------------------------------ tokenizer link

    def bind_tokenizer(self, tokenizer: nn.Module) -> None:
        """Copy the trained tokenizer's quantizer (codebook, phi) into this generator's frozen copy."""
        self.check_layout(tokenizer.layout)
        q = getattr(tokenizer, "quantizer", None)
        if q is None or type(q) is not type(self.quantizer) or q.config != self.quantizer.config:
            got = None if q is None else q.config
            raise ConfigError(f"the next-scale generator needs a tokenizer with quantizer {self.quantizer.config}; "
                              f"got {got}. Set generator.quantizer to the tokenizer's quantizer config.")
        self.quantizer.load_state_dict(q.state_dict())

    # ------------------------------------------------------------------ network

    def _cond_vector(self, ids: Tensor) -> Tensor:
        """Class ids (R,) -> the AdaLN condition: (R, C), or (R, 1, 6, C) with shared AdaLN."""
        return self.class_emb.embedding_table(ids)

    def _modulations(self, cond_vec: Tensor) -> list[tuple[Tensor, ...]]:
        """AdaLN vectors of every block and the head for class vectors (R, C): [6 x (R, 1, C)] * depth + [2 x ...].
        They depend on the class only, so sampling computes them once per run instead of once per scale."""
        mod = torch.stack(self.shared_ada_lin(cond_vec), dim=2) if self.config.shared_adaln else cond_vec  # (R,1,6,C)
        return [b.modulation(mod) for b in self.blocks] + [self.head_ada_lin(cond_vec)]

    def _run(self, x: Tensor, mods: list[tuple[Tensor, ...]], *, mask: Tensor | None = None,
             cache: KVCache | None = None) -> Tensor:
        """Blocks + head over x (R, T, C) with precomputed modulations; logits (R, T, V) in fp32."""
        return self._head(self._blocks(x, mods, mask=mask, cache=cache), mods)

    def _blocks(self, x: Tensor, mods: list[tuple[Tensor, ...]], *, mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        for i, b in enumerate(self.blocks):
            x = b(x, mask=mask, kv=None if cache is None else cache.layers[i], modulation=mods[i])
        return x

    def _head(self, x: Tensor, mods: list[tuple[Tensor, ...]]) -> Tensor:
        scale, shift = mods[-1]  # 2 x (R, 1, C)
        return self.output(modulate(self.head_norm(x), scale, shift)).float()

    def _embed_scale(self, k: int, cond_vec: Tensor | None = None, feats: Tensor | None = None) -> Tensor:
        """Input tokens of scale k: (R, first_len, C) from class vectors at k = 0, else (B, h_k w_k, C)."""
        a, b = self.config.bounds[k]
        lvl_pos = self.level_embed.weight[k] + self.pos_embed[:, a:b]  # (1, T, C)
        if k == 0:
            return cond_vec.unsqueeze(1) + self.pos_start + lvl_pos  # (R, first_len, C)
        return self.word_embed(feats) + lvl_pos

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced logits (B, L, V) for tokens (B, L) given class labels (B,) (-1 = unconditional)."""
        return self._logits(tokens, self.class_emb.ids(labels.to(tokens.device)))

    def _logits(self, tokens: Tensor, ids: Tensor) -> Tensor:
        cond_vec = self._cond_vector(ids)  # (B, C)
        feats = self.quantizer.build_next_scale_inputs(tokens).to(cond_vec.dtype)  # (B, L - first_len, Cq)
        sos = cond_vec.unsqueeze(1) + self.pos_start  # (B, first_len, C)
        x = torch.cat([sos, self.word_embed(feats)], dim=1)  # (B, L, C)
        x = x + self.level_embed(self.levels) + self.pos_embed
        return self._run(x, self._modulations(cond_vec), mask=self.block_mask)

    def loss(self, tokens: Tensor, cond: Cond | Tensor, *, rng: torch.Generator | None = None) -> LossOutput:
        """Mean CE over all L tokens (VAR weights every token 1/L, so the finest scale dominates);
        metrics add `nll_scale{k}` per scale. Labels drop to the null class with p=class_dropout in training."""
        cond = as_cond(cond, tokens.device)
        self._check_tokens(tokens)
        ids = self.class_emb.ids(cond.labels)
        if self.training:
            ids = self.class_emb.drop(ids, self.config.class_dropout, rng)
        logits = self._logits(tokens, ids)
        out = self.head.loss(logits, tokens)
        with torch.no_grad():
            nll = F.cross_entropy(logits.detach().reshape(-1, logits.shape[-1]), tokens.reshape(-1),
                                  reduction="none").view_as(tokens)  # (B, L)
            for k, (a, b) in enumerate(self.config.bounds):
                out.metrics[f"nll_scale{k}"] = nll[:, a:b].mean()
        return out

    # ------------------------------------------------------------------ sampling state machine

    def begin(self, cond: Cond, *, batch_size: int, opts: SampleOptions) -> DecodeState:
        rows = self._check_rows(cond, batch_size)
        c, device = self.config, self.device
        if len(opts.prune) >= len(c.scales):
            raise ValueError(f"prune gives ratios for {len(opts.prune)} scales, but only the last "
                             f"{len(c.scales) - 1} of this model's {len(c.scales)} scales can be pruned")
        ids = self.class_emb.ids(cond.labels.to(device))
        cache = KVCache(c.depth, rows, c.heads, c.num_tokens, c.width // c.heads, dtype=self.dtype, device=device)
        tokens = torch.zeros(batch_size, c.num_tokens, dtype=torch.long, device=device)
        known = torch.zeros(batch_size, c.num_tokens, dtype=torch.bool, device=device)
        cond_vec = self._cond_vector(ids)
        return DecodeState(tokens, known, step=0, num_steps=len(c.scales),
                           cache={"kv": cache, "cond_vec": cond_vec, "mods": self._modulations(cond_vec),
                                  "rows": rows, "f_hat": None, "freed": 0, "hidden": None,
                                  "opts": opts, "soft": None})

    def predict(self, state: DecodeState) -> Tensor:
        """Logits (R, h_k w_k, V) for scale k = state.step. The input of scale k > 0 is built here from the
        tokens of scale k-1 as they stand now (so tokens forced by editing enter f_hat)."""
        kv: KVCache = state.cache["kv"]
        k, rows = state.step, state.cache["rows"]
        cond_vec = state.cache["cond_vec"]
        if k == 0:
            x = self._embed_scale(0, cond_vec)
        else:
            a, b = self.config.bounds[k - 1]
            h, w = self.config.scales[k - 1]
            prev = state.tokens[:, a:b]
            h_k = self.quantizer.embed_scale(prev.view(-1, h, w))  # (B, Cq, h, w)
            if state.cache["soft"] is not None:  # Gumbel smoothing, except where editing forced a token
                forced = prev != state.cache["sampled"]
                if state.cache.get("forced") is not None:  # also where the forced token equals the sampled one
                    forced = forced | state.cache["forced"][:, a:b]
                forced = forced.view(-1, 1, h, w)
                h_k = torch.where(forced, h_k, state.cache["soft"].to(h_k.dtype))
            # f_hat += Phi(BicubicUp(h_k)); next input = AreaDown(f_hat, scale k)
            state.cache["f_hat"], nxt = self.quantizer.next_scale_step(state.cache["f_hat"], h_k, k - 1)
            feats = nxt.flatten(2).transpose(1, 2)  # (B, Cq, h', w') -> (B, T, Cq)
            x = self._embed_scale(k, feats=feats.to(cond_vec.dtype))
            if rows != x.shape[0]:
                x = x.repeat(rows // x.shape[0], 1, 1)  # (R, T, C): the same input for cond and uncond rows
        a, b = self.config.bounds[k]
        mods, freed = state.cache["mods"], state.cache["freed"]
        keep = self._kept_tokens(state.cache["opts"].prune, k)
        if keep is None:
            # Slots: a scale's tokens go right after those of the coarser scales that were kept.
            kv.prepare(a - freed, b - a, causal=False)  # the scale's tokens see each other and every coarser scale
            hidden = self._blocks(x, mods, cache=kv)
        else:
            hidden = self._pruned_blocks(x, keep, state, kv)
            state.cache["freed"] = freed + (b - a) - keep
        if k + 1 < len(self.config.scales) and self._kept_tokens(state.cache["opts"].prune, k + 1) is not None:
            state.cache["hidden"] = hidden  # the next scale restores its skipped tokens from these
        logits = self._head(hidden, mods)
        state.cache["logits"] = logits
        return logits

    # ------------------------------------------------------------------ late-scale token pruning (FastVAR)

    def _kept_tokens(self, prune: tuple[float, ...], k: int) -> int | None:
        """How many tokens of scale k the transformer processes under `prune` (None = all of them)."""
        S, n = len(self.config.scales), len(prune)
        if k < S - n or prune[k - (S - n)] == 0:
            return None
        h, w = self.config.scales[k]
        return max(1, round(h * w * (1 - prune[k - (S - n)])))

    def _pruned_blocks(self, x: Tensor, keep: int, state: DecodeState, kv: KVCache) -> Tensor:
        """Training-free speed-up in the spirit of FastVAR (Guo et al., https://arxiv.org/abs/2503.23367): at a
        late scale most tokens only refine what the coarser scales already fixed. The blocks run on the `keep`
        "pivotal" tokens whose inputs differ most from the scale's mean (high-frequency content); the others take
        the previous scale's final hidden states, resized to this scale ('area', as FastVAR). Only the kept tokens
        enter the KV cache (attention carries no positions, so their slots are simply packed)."""
        k, C = state.step, x.shape[-1]
        a = self.config.bounds[k][0] - state.cache["freed"]
        B = state.tokens.shape[0]
        cond_x = x[:B]  # cond and uncond rows share the scale's input: select once, per image
        score = (cond_x - cond_x.mean(1, keepdim=True)).square().sum(-1)  # (B, T)
        idx = score.topk(keep, dim=1).indices.sort(dim=1).values  # (B, keep)
        idx = idx.repeat(x.shape[0] // B, 1)[..., None].expand(-1, -1, C)  # (R, keep, C)
        kv.prepare(a, keep, causal=False)
        part = self._blocks(x.gather(1, idx), state.cache["mods"], cache=kv)  # (R, keep, C)
        prev = state.cache["hidden"]  # (R, T', C) of scale k - 1
        (hp, wp), (h, w) = self.config.scales[k - 1], self.config.scales[k]
        grid = prev.transpose(1, 2).reshape(prev.shape[0], C, hp, wp)  # (R, T', C) -> (R, C, h', w')
        full = F.interpolate(grid, size=(h, w), mode="area").flatten(2).transpose(1, 2)  # (R, T, C)
        return full.scatter(1, idx, part)

    def commit(self, state: DecodeState, tokens: Tensor, scores: Tensor) -> None:
        k = state.step
        a, b = self.config.bounds[k]
        state.tokens[:, a:b] = tokens
        state.known[:, a:b] = True
        state.cache["soft"] = self._gumbel_weights(state) if state.cache["opts"].gumbel > 0 else None
        state.cache["sampled"] = tokens
        state.step = k + 1

    def force(self, state: DecodeState, tokens: Tensor, mask: Tensor) -> None:
        """Known positions keep `tokens` in every scale; remembered so Gumbel smoothing never softens them."""
        super().force(state, tokens, mask)
        state.cache["forced"] = mask

    def randomize(self, state: DecodeState, rng: torch.Generator) -> None:
        state.cache["rng"] = rng  # Gumbel smoothing draws its noise from the loop's generator

    def _gumbel_weights(self, state: DecodeState) -> Tensor:
        """VAR's `more_smooth` (visual quality, not FID): the next inputs mix code vectors with soft weights
        softmax((l (1 + r) + g) / tau), tau = max(gumbel (1 - 0.95 r), 0.005), r = k / (S - 1), g ~ Gumbel, on
        the guided, top-k/top-p filtered logits l. gumbel=0.27 is VAR's. The sampled ids are still the tokens
        (decoding them gives the hard-token image). Returns code vectors (B, Cq, h, w)."""
        opts: SampleOptions = state.cache["opts"]
        rng = state.cache.get("rng")
        if rng is None:
            raise ValueError("Gumbel smoothing needs the sampling loop's rng; sample through argen.generate")
        k, S = state.step, state.num_steps
        logits = state.cache["logits"].float()  # (R, T, V)
        if logits.shape[0] != state.tokens.shape[0]:  # [cond; uncond] rows: guide as the loop did
            scale = guidance_scale(opts.cfg, opts.cfg_schedule, step=k, num_steps=S, progress=self.progress(state),
                                   interval=opts.cfg_interval)
            logits = combine(logits, scale)
        logits = top_p_filter(top_k_filter(logits, opts.top_k), opts.top_p)
        r = k / max(S - 1, 1)
        tau = max(opts.gumbel * (1 - 0.95 * r), 0.005)
        noise = -torch.empty_like(logits).exponential_(generator=rng).log()  # Gumbel(0, 1)
        weights = ((logits * (1 + r) + noise) / tau).softmax(-1)  # (B, T, V)
        h, w = self.config.scales[k]
        codes = weights @ self.quantizer.embedding.weight.to(weights.dtype)  # (B, T, Cq)
        return codes.transpose(1, 2).reshape(codes.shape[0], -1, h, w)  # (B, T, Cq) -> (B, Cq, h, w)

    def progress(self, state: DecodeState) -> float:
        return state.step / max(state.num_steps - 1, 1)
