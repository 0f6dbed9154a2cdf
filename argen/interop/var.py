"""Official VAR checkpoints (FoundationVision/VAR, https://arxiv.org/abs/2404.02905) -> argen modules.

    tokenizer, generator, notes = convert("vae_ch160v4096z32.pth", "var_d16.pth")

Both files are plain state dicts opened with `torch.load(weights_only=True)`. Every architecture number is
read from the weights (depth, width, heads, classes, vocabulary, scales, shared AdaLN, l2 attention, Phi
sharing, conv widths), so d16/d20/d24/d30/d36 and custom sizes need no flags. Loading is strict: every
official key maps to one argen key or is one of these non-state buffers, which are *checked* against what
argen derives from the config and then dropped:

    lvl_1L                      (1, L) scale index of every position          == generator.levels
    attn_bias_for_masking       (1, 1, L, L) 0 / -inf block-causal mask        == generator.block_mask
    blocks.{i}.attn.zero_k_bias (C,) zeros                                     (argen has no k bias)
    quantize.ema_vocab_hit_SV   (S, V) code-usage statistics of VQVAE training (logging only)

Renames (official -> argen): VAR's `pos_1LC` -> `pos_embed`, `lvl_embed` -> `level_embed`, `class_emb.weight`
-> the class conditioner's `embedding_table.weight`, `blocks.{i}.attn.{mat_qkv,proj,scale_mul_1H11}` ->
`blocks.{i}.attention.{wqkv,wo,qk_scale}`, `ffn` -> `feed_forward`, `head_nm.ada_lin` -> `head_ada_lin`,
`head` -> `output`; VQVAE `quantize.*` -> `quantizer.*` (`quant_resi.qresi_ls.{i}` -> `phi.{i}`) and the packed
1x1 `attn.qkv` conv of the conv attention blocks is split into `q`, `k`, `v`. The generator reads its inputs
with the tokenizer's quantizer (codebook + Phi), bound after both are loaded.
"""
from __future__ import annotations

import math
import os
import re

import torch
from torch import Tensor, nn

from .. import registry
from ..errors import CheckpointError
from ..nn.conv import ConvNetConfig
from .common import Converted, load_strict, read_checkpoint, rename, report, unwrap

VAR_BUFFERS = ("lvl_1L", "attn_bias_for_masking")

# Official VAR keys -> argen keys of {"conditioner": ClassConditioner, "generator": NextScaleGenerator}.
GENERATOR_RULES = [
    (r"class_emb\.weight", "conditioner.embedding_table.weight"),
    (r"pos_1LC", "generator.pos_embed"),
    (r"lvl_embed\.weight", "generator.level_embed.weight"),
    (r"blocks\.(\d+)\.attn\.mat_qkv\.weight", r"generator.blocks.\1.attention.wqkv.weight"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"generator.blocks.\1.attention.wo.\2"),
    (r"blocks\.(\d+)\.attn\.scale_mul_1H11", r"generator.blocks.\1.attention.qk_scale"),
    (r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"generator.blocks.\1.attention.\2"),
    (r"blocks\.(\d+)\.ffn\.(fc1|fc2)\.(weight|bias)", r"generator.blocks.\1.feed_forward.\2.\3"),
    (r"head_nm\.ada_lin\.1\.(weight|bias)", r"generator.head_ada_lin.1.\1"),
    (r"head\.(weight|bias)", r"generator.output.\1"),
    (r"(.+)", r"generator.\1"),  # the rest keeps its name (word_embed, pos_start, ada_lin, shared_ada_lin, ...)
]

QUANTIZER_RULES = [
    (r"quantize\.embedding\.weight", "quantizer.embedding.weight"),
    (r"quantize\.quant_resi\.qresi_ls\.(\d+)\.(weight|bias)", r"quantizer.phi.\1.\2"),  # partially shared
    (r"quantize\.quant_resi\.qresi\.(weight|bias)", r"quantizer.phi.0.\1"),  # one shared Phi
    (r"quantize\.quant_resi\.(\d+)\.(weight|bias)", r"quantizer.phi.\1.\2"),  # one Phi per scale
]


# ----------------------------------------------------------------------------- reading

def _read(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    state, _ = unwrap(read_checkpoint(path), source=str(path))
    if what == "vae" and "quantize.embedding.weight" not in state:
        raise CheckpointError(f"{path} is not a VAR VQVAE checkpoint (no quantize.embedding.weight); pass "
                              "vae_ch160v4096z32.pth as --tokenizer")
    if what == "var" and "pos_1LC" not in state:
        raise CheckpointError(f"{path} is not a VAR transformer checkpoint (no pos_1LC); pass var_d16.pth "
                              "(or d20/d24/d30/d36) as --generator")
    return state


def _count(state: dict[str, Tensor], pattern: str) -> int:
    reg = re.compile(pattern)
    return len({m.group(1) for k in state if (m := reg.match(k))})


# ----------------------------------------------------------------------------- configs from weights

def scales_from_state(var_state: dict[str, Tensor]) -> tuple[tuple[int, int], ...]:
    """VAR's square patch_nums from the `lvl_1L` buffer (token count per scale index)."""
    if "lvl_1L" not in var_state:
        raise CheckpointError("the VAR checkpoint lacks lvl_1L, which records its scales; re-save it from the "
                              "official VAR module (var.state_dict())")
    counts = torch.bincount(var_state["lvl_1L"].reshape(-1).long()).tolist()
    sides = [math.isqrt(n) for n in counts]
    if any(s * s != n for s, n in zip(sides, counts)):
        raise CheckpointError(f"lvl_1L has per-scale token counts {counts}, which are not squares")
    return tuple((s, s) for s in sides)


def quantizer_config_from_state(vae_state: dict[str, Tensor], scales: tuple[tuple[int, int], ...]):
    """The msvq config of a VQVAE state dict for the given scales."""
    V, C = vae_state["quantize.embedding.weight"].shape
    n_ls = _count(vae_state, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    n_per = _count(vae_state, r"quantize\.quant_resi\.(\d+)\.")
    if n_ls:
        sharing, ratio = n_ls, 0.5
    elif "quantize.quant_resi.qresi.weight" in vae_state:
        sharing, ratio = 1, 0.5
    elif n_per:
        if n_per != len(scales):
            raise CheckpointError(f"the VQVAE has {n_per} per-scale Phi convs but the generator has {len(scales)} scales")
        sharing, ratio = 0, 0.5
    else:
        sharing, ratio = 4, 0.0  # quant_resi = 0: Phi is the identity
    return registry.config_class("msvq")(dim=int(C), codebook_size=int(V), scales=tuple(scales),
                                         phi_sharing=sharing, phi_ratio=ratio)


def tokenizer_config_from_state(vae_state: dict[str, Tensor], scales: tuple[tuple[int, int], ...]):
    """Autoencoder config (taming conv net + msvq) of a VAR VQVAE state dict."""
    ch = vae_state["encoder.conv_in.weight"].shape[0]
    levels = _count(vae_state, r"encoder\.down\.(\d+)\.")
    mult = tuple(vae_state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
    blocks = _count(vae_state, r"encoder\.down\.0\.block\.(\d+)\.")
    z = vae_state["encoder.conv_out.weight"].shape[0]
    k = vae_state["quant_conv.weight"].shape[-1]
    down = 2 ** (levels - 1)
    H, W = scales[-1]
    if H != W:
        raise CheckpointError(f"VAR's VQVAE is square; got last scale {scales[-1]}")
    net = ConvNetConfig(ch=int(ch), ch_mult=mult, num_res_blocks=blocks, attn_resolutions=(H,), z_channels=int(z))
    return registry.config_class("autoencoder")(resolution=H * down, net=net, quant_conv_kernel=int(k),
                                                quantizer=quantizer_config_from_state(vae_state, scales))


def generator_config_from_state(var_state: dict[str, Tensor], quantizer) -> "registry.Config":
    """NextScaleConfig of a VAR transformer state dict (depth, width, heads, ... read from the weights)."""
    depth = _count(var_state, r"blocks\.(\d+)\.")
    C = var_state["pos_start"].shape[-1]
    qk_norm = "blocks.0.attn.scale_mul_1H11" in var_state
    heads = var_state["blocks.0.attn.scale_mul_1H11"].shape[1] if qk_norm else C // 64
    hidden = var_state["blocks.0.ffn.fc1.weight"].shape[0]
    return registry.config_class("next-scale")(
        vocab_size=var_state["head.weight"].shape[0], scales=quantizer.scales, quantizer=quantizer, depth=depth,
        dim=None if C == 64 * depth else int(C), num_heads=None if heads == depth else int(heads),
        mlp_ratio=hidden / C, qk_norm=qk_norm, shared_adaln="shared_ada_lin.1.weight" in var_state)


# ----------------------------------------------------------------------------- renaming

def _split_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """VAR's packed 1x1 `attn.qkv` conv (3C, C, 1, 1) -> argen's `q`, `k`, `v` convs (q first)."""
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"(.*)\.qkv\.(weight|bias)", k)
        if m:
            for name, part in zip("qkv", v.chunk(3, dim=0)):
                out[f"{m.group(1)}.{name}.{m.group(2)}"] = part.contiguous()
        else:
            out[k] = v
    return out


def tokenizer_state(vae_state: dict[str, Tensor]) -> Converted:
    """Official VQVAE keys -> argen autoencoder keys; ema_vocab_hit_SV is dropped (statistics only)."""
    state = {k: v for k, v in vae_state.items() if k != "quantize.ema_vocab_hit_SV"}
    dropped = ["quantize.ema_vocab_hit_SV"] if len(state) < len(vae_state) else []
    return rename(_split_qkv(state), QUANTIZER_RULES, dropped=dropped)


def generator_state(var_state: dict[str, Tensor], generator) -> Converted:
    """Official VAR keys -> argen conditioner + next-scale generator keys, after checking the buffers."""
    state = dict(var_state)
    dropped = _check_buffers(state, generator)
    return rename(state, GENERATOR_RULES, dropped=dropped)


def _check_buffers(state: dict[str, Tensor], generator) -> list[str]:
    """Pop VAR's derived buffers after checking they hold what argen derives itself."""
    dropped = []
    lv = state.pop("lvl_1L", None)
    if lv is not None:
        if lv.reshape(-1).tolist() != generator.levels.tolist():
            raise CheckpointError("lvl_1L (scale index per position) differs from the scales read from the checkpoint")
        dropped.append("lvl_1L")
    bias = state.pop("attn_bias_for_masking", None)
    if bias is not None:
        L = generator.config.num_tokens
        want = torch.zeros(L, L).masked_fill(~generator.block_mask.cpu(), float("-inf"))
        if tuple(bias.shape) != (1, 1, L, L) or not torch.equal(bias.reshape(L, L).float(), want):
            raise CheckpointError("attn_bias_for_masking is not VAR's block-causal mask for these scales; the file "
                                  "was not written by the official VAR module")
        dropped.append("attn_bias_for_masking")
    for k in [k for k in state if k.endswith(".attn.zero_k_bias")]:
        if bool(state[k].abs().max() > 0):
            raise CheckpointError(f"{k} is not zero; VAR's attention has no k bias, so this file is not supported")
        state.pop(k)
        dropped.append(k)
    return dropped


def _keep_fresh_statistics(model, conv: Converted) -> None:
    """Quantizer usage counters (argen training statistics) have no official counterpart: keep the freshly
    built values, by name, so the load stays strict for everything else."""
    for k, v in model.state_dict().items():
        if re.fullmatch(r"(.*\.)?quantizer\.(usage_step|last_used)", k) and k not in conv.state:
            conv.state[k] = v.clone()
            conv.source_of[k] = f"<fresh {k}>"


# ----------------------------------------------------------------------------- entry points

def convert(tokenizer_path: str | os.PathLike, generator_path: str | os.PathLike, *,
            vae_state: dict[str, Tensor] | None = None, var_state: dict[str, Tensor] | None = None):
    """Build argen's (tokenizer, conditioner, generator) from official VAR files (or loaded state dicts).

    Returns (tokenizer, conditioner, generator, notes) in eval mode, the generator bound to the tokenizer;
    notes are one-line facts for the CLI to print.
    """
    from ..conditioning.labels import ClassConditionerConfig

    vae_state = vae_state if vae_state is not None else _read(tokenizer_path, "vae")
    var_state = var_state if var_state is not None else _read(generator_path, "var")
    scales = scales_from_state(var_state)
    tok_cfg = tokenizer_config_from_state(vae_state, scales)
    gen_cfg = generator_config_from_state(var_state, tok_cfg.quantizer)
    if "class_emb.weight" not in var_state:
        raise CheckpointError(f"{generator_path} lacks class_emb.weight; only class-conditional VAR models convert")
    num_classes = var_state["class_emb.weight"].shape[0] - 1
    conditioner = registry.build(ClassConditionerConfig(dim=gen_cfg.width, num_classes=num_classes))
    generator = registry.build(gen_cfg)  # the smaller model first: its buffer checks fail fast
    conv_g = generator_state(var_state, generator)
    load_strict(nn.ModuleDict({"conditioner": conditioner, "generator": generator}), conv_g, str(generator_path),
                hint="is this a VAR transformer (var_d16.pth ...)?", skip=("generator.quantizer.",))
    tokenizer = registry.build(tok_cfg)
    conv_t = tokenizer_state(vae_state)
    _keep_fresh_statistics(tokenizer, conv_t)
    load_strict(tokenizer, conv_t, str(tokenizer_path), hint="is this VAR's VQVAE (vae_ch160v4096z32.pth)?")
    generator.bind_tokenizer(tokenizer)
    c = gen_cfg
    notes = [
        f"tokenizer: {sum(p.numel() for p in tokenizer.parameters()) / 1e6:.2f}M params, {len(conv_t.state)} tensors "
        f"({report(tokenizer, conv_t).summary()}); dropped {', '.join(conv_t.dropped) or 'nothing'}",
        f"generator: VAR depth {c.depth}, width {c.width}, {c.heads} heads, {num_classes} classes, "
        f"{'shared' if c.shared_adaln else 'per-block'} AdaLN, {'l2' if c.qk_norm else 'scaled'} attention, "
        f"{len(c.scales)} scales ({c.num_tokens} tokens); {_generator_params(generator) / 1e6:.2f}M params (without "
        f"the tokenizer's quantizer; all {len(conv_g.state)} tensors matched); checked and dropped {len(conv_g.dropped)} buffers "
        f"({', '.join(sorted({k.split('.')[-1] for k in conv_g.dropped}))})",
        "sample like VAR's cfg=c with cfg=1+c and cfg_schedule=linear_scale",
    ]
    return tokenizer.eval(), conditioner.eval(), generator.eval(), notes


def _generator_params(generator) -> int:
    return sum(p.numel() for n, p in generator.named_parameters() if not n.startswith("quantizer."))


def convert_pipeline(tokenizer_path: str | os.PathLike, generator_path: str | os.PathLike):
    """Official VAR files -> an argen Pipeline with VAR's FID sampling defaults (cfg 1.5 linear in the scale
    index = argen cfg 2.5 with cfg_schedule="linear_scale", top-k 900, top-p 0.96). Returns (pipeline, notes)."""
    from ..pipeline import Pipeline

    tokenizer, conditioner, generator, notes = convert(tokenizer_path, generator_path)
    pipe = Pipeline.from_parts(tokenizer, conditioner, generator, cfg=2.5, cfg_schedule="linear_scale", top_k=900,
                               top_p=0.96)
    return pipe.eval(), notes


__all__ = ["convert", "convert_pipeline", "tokenizer_state", "generator_state", "scales_from_state", "tokenizer_config_from_state",
           "generator_config_from_state", "quantizer_config_from_state"]
