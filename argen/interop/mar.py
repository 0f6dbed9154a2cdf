"""Official MAR checkpoints (LTH14/mar, Li et al. https://arxiv.org/abs/2406.11838) -> argen.

* Tokenizer `kl16.ckpt`: `{"model": state_dict}` with LDM AutoencoderKL names, which are argen's `kl-vae`
  names already (`encoder.down.{i}.block.{j}.conv1`, `encoder.mid.attn_1.q`, `quant_conv`, `post_quant_conv`,
  `decoder.up.{i}.upsample.conv`, ...), so conversion is a strict identity mapping. The architecture is read from
  the shapes (`vae_config`); the released file is argen's `vae-kl16` preset (ch 128, ch_mult (1,1,2,2,4),
  attention at 16 px and in the encoder's mid block, decoder attention only in its mid block, 16 channels),
  with MAR's scale factor 0.2325. LDM training-loss modules (`loss.*`: LPIPS, discriminator), if a file
  carries them, are dropped by name and reported.
* Generator `checkpoint-last.pth`: a training container `{"model", "model_ema", "optimizer", "epoch",
  "scaler", "args"}` whose `args` is an `argparse.Namespace`; `read_mar_checkpoint` opens it with exactly that
  one extra global allow-listed and returns the raw official state dict ("model_ema" by default, as the
  official evaluation does) plus the args as a dict. The diffusion head's keys `diffloss.net.*` map onto
  `DiffusionHead`'s `net.*` (`diffloss_rules`, `convert_head`); the transformer's names (timm `Block`s,
  `class_emb`, `fake_latent`, `*_pos_embed_learned`, ...) are the MAR generator's business.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .. import registry
from ..errors import CheckpointError, ConfigError
from .common import Converted, Rule, drop, load_strict, read_checkpoint, rename, unwrap

SCALE_FACTOR = 0.2325  # 1 / std of KL-16 latents over ImageNet (MAR's engine_mar.py)
VAE_CONTAINERS = ("model", "state_dict")
VAE_NON_STATE = (r"loss\..+",)
MAR_CONTAINERS = ("model_ema", "model")
# argparse fields of a MAR run that fix the diffusion head's process (the shapes come from the weights)
HEAD_ARGS = ("num_sampling_steps", "diffusion_batch_mul")


# ----------------------------------------------------------------------------- KL-16 VAE

def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    reg = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := reg.match(k))})


def vae_config(state: Mapping[str, Tensor], resolution: int = 256, scale_factor: float = SCALE_FACTOR):
    """The argen `KLVAEConfig` of an official (LDM/MAR) AutoencoderKL state dict at image size `resolution`."""
    from ..nn.conv import ConvNetConfig
    from ..tokenizers.vae import KLVAEConfig

    need = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight",
            "decoder.conv_in.weight")
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointError(f"not an AutoencoderKL state dict: {', '.join(absent)} missing "
                              "(pass MAR's kl16.ckpt, whose 'model' entry holds the VAE)")
    levels = _indices(state, r"encoder\.down\.(\d+)\.")
    blocks = _indices(state, r"encoder\.down\.0\.block\.(\d+)\.")
    if not levels or not blocks:
        raise CheckpointError("not an AutoencoderKL state dict: no encoder.down.{i}.block.{j} entries")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = []
    for i in levels:
        key = f"encoder.down.{i}.block.0.conv1.weight"
        if key not in state:
            raise CheckpointError(f"AutoencoderKL state dict lacks {key}; the file is incomplete")
        widths.append(state[key].shape[0])
    f = 2 ** (len(levels) - 1)
    if resolution % f:
        raise ConfigError(f"image size {resolution} is not a multiple of the VAE's downsampling factor {f}")
    enc_attn = tuple(resolution // 2 ** i for i in _indices(state, r"encoder\.down\.(\d+)\.attn\.0\."))
    dec_attn = tuple(resolution // 2 ** i for i in _indices(state, r"decoder\.up\.(\d+)\.attn\.0\."))
    if dec_attn and dec_attn != enc_attn:
        raise CheckpointError(f"decoder attention at {dec_attn} px differs from the encoder's {enc_attn}; argen's "
                              "conv net places both at the same resolutions (or the decoder's only in its mid block)")
    embed_dim = state["post_quant_conv.weight"].shape[1]
    net = ConvNetConfig(ch=ch, ch_mult=tuple(w // ch for w in widths), num_res_blocks=len(blocks),
                        attn_resolutions=enc_attn, decoder_attn=bool(dec_attn),
                        mid_attn="encoder.mid.attn_1.q.weight" in state,
                        z_channels=state["encoder.conv_out.weight"].shape[0] // 2)
    return KLVAEConfig(resolution=resolution, net=net, embed_dim=embed_dim, scale_factor=scale_factor)


def _source(source: str | os.PathLike | Mapping, what: str, allow_globals=()) -> tuple[Any, str]:
    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source, allow_globals=allow_globals), str(source)
    return source, f"{what} object"


def convert_vae(source: str | os.PathLike | Mapping, resolution: int = 256, *,
                scale_factor: float = SCALE_FACTOR) -> tuple[Any, Converted]:
    """MAR's `kl16.ckpt` (path or loaded dict) -> (argen `KLVAE` in eval mode, conversion record).

    Tokens are `posterior mean (or a sample) * scale_factor`, (B, L, C) raster order, as MAR feeds its
    generator; `decode` divides the factor out again (and clamps to [-1, 1], which the official decode does not)."""
    obj, name = _source(source, "VAE")
    state, where = unwrap(obj, VAE_CONTAINERS, source=name)
    cfg = vae_config(state, resolution, scale_factor)
    state, dropped = drop(state, VAE_NON_STATE)
    conv = rename(state, [], dropped, where)  # LDM names are argen's
    model = registry.build(cfg)
    load_strict(model, conv, name, hint="is this MAR's kl16.ckpt (an LDM AutoencoderKL)?")
    return model.eval(), conv


# ----------------------------------------------------------------------------- MAR training checkpoints

@dataclass
class MarCheckpoint:
    """The raw content of an official MAR checkpoint: `state` in the official names (`container` says which
    entry: "model_ema" or "model"), the run's argparse `args` as a plain dict ({} if the file has none) and
    its `epoch` (None if absent)."""

    state: dict[str, Tensor]
    args: dict[str, Any] = field(default_factory=dict)
    container: str = ""
    epoch: int | None = None
    source: str = ""


def read_mar_checkpoint(source: str | os.PathLike | Mapping, which: str = "model_ema") -> MarCheckpoint:
    """Open MAR's `checkpoint-last.pth` safely and pick the EMA weights (`which="model_ema"`, what the
    official evaluation loads) or the raw ones (`which="model"`).

    Only `argparse.Namespace` is allow-listed beyond tensors and plain containers: any other pickled object
    makes the read fail with a CheckpointError naming it."""
    if which not in MAR_CONTAINERS:
        raise ValueError(f"which must be 'model_ema' (the EMA weights the official evaluation uses) or 'model', "
                         f"got {which!r}")
    obj, name = _source(source, "MAR checkpoint", allow_globals=[argparse.Namespace])
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a MAR training checkpoint "
                              "(a dict with 'model' / 'model_ema')")
    if which not in obj:
        have = ", ".join(repr(k) for k in obj) or "nothing"
        other = next((c for c in MAR_CONTAINERS if c != which and c in obj), None)
        hint = f"; pass which={other!r} to read that one" if other else ""
        raise CheckpointError(f"{name} has no {which!r} entry (it holds {have}){hint}")
    state, where = unwrap(obj, (which,), source=name)
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if args is not None and not isinstance(args, Mapping):
        raise CheckpointError(f"{name}: 'args' is a {type(args).__name__}; expected an argparse Namespace or a dict")
    epoch = obj.get("epoch")
    return MarCheckpoint(state=state, args=dict(args or {}), container=where,
                         epoch=int(epoch) if isinstance(epoch, int) else None, source=name)


# ----------------------------------------------------------------------------- the diffusion head

DIFFLOSS_PREFIX = "diffloss."


def diffloss_rules(prefix: str = "head.") -> list[Rule]:
    """Rename rules for the official head keys `diffloss.net.*` -> `{prefix}net.*` (argen's `DiffusionHead`
    names below the module that owns it; prefix "" for a bare head). Other keys match no rule."""
    return [(r"diffloss\.net\.(.+)", prefix.replace("\\", "\\\\") + r"net.\1")]


def head_state(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Only the diffusion head's tensors of an official MAR state dict, renamed to `{prefix}net.*`."""
    picked = {k: v for k, v in state.items() if k.startswith(DIFFLOSS_PREFIX)}
    if not picked:
        raise CheckpointError("no 'diffloss.*' keys: not a MAR state dict "
                              "(expected diffloss.net.time_embed.mlp.0.weight, ...)")
    return rename(picked, diffloss_rules(prefix)).state


def _sampling_steps(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ConfigError(f"num_sampling_steps {value!r} is not a single step count; argen's head respaces to one "
                      "evenly strided count (MAR's default '100')")


def head_config(state: Mapping[str, Tensor], args: Mapping[str, Any] | None = None):
    """The `DiffusionHeadConfig` of an official MAR state dict (shapes of `diffloss.net.*`), with the sampling
    steps and batch multiplier of the run's `args` when given (argen's defaults 100 and 4 otherwise)."""
    from ..heads.diffusion import DiffusionHeadConfig

    need = [f"diffloss.net.{k}.weight" for k in ("input_proj", "cond_embed", "time_embed.mlp.0")]
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointError(f"not a MAR state dict with a diffusion head: {', '.join(absent)} missing")
    width, token_dim = state["diffloss.net.input_proj.weight"].shape
    fields: dict[str, Any] = {
        "token_dim": token_dim, "width": width, "cond_dim": state["diffloss.net.cond_embed.weight"].shape[1],
        "freq_dim": state["diffloss.net.time_embed.mlp.0.weight"].shape[1],
        "depth": len(_indices(state, r"diffloss\.net\.res_blocks\.(\d+)\.")),
    }
    args = dict(args or {})
    if args.get("num_sampling_steps") is not None:
        fields["sampling_steps"] = _sampling_steps(args["num_sampling_steps"])
    if args.get("diffusion_batch_mul") is not None:
        fields["batch_mul"] = int(args["diffusion_batch_mul"])
    try:
        return DiffusionHeadConfig(**fields)
    except ValueError as e:
        raise CheckpointError(f"the diffusion head of this MAR state dict does not form a valid head: {e}") from None


def convert_head(source: MarCheckpoint | Mapping[str, Tensor], config=None) -> tuple[Any, Converted]:
    """The diffusion head of an official MAR checkpoint (a `MarCheckpoint` or a state dict) -> (argen
    `DiffusionHead` in eval mode, record). Only `diffloss.*` keys are read (the rest is the transformer's);
    those must match the head exactly. `config` defaults to `head_config(state, args)`."""
    from ..heads.diffusion import DiffusionHead

    if isinstance(source, MarCheckpoint):
        state, args, name = source.state, source.args, source.source or "MAR checkpoint"
    else:
        state, args, name = dict(source), {}, "MAR state dict"
    picked = {k: v for k, v in state.items() if k.startswith(DIFFLOSS_PREFIX)}
    if not picked:
        raise CheckpointError(f"{name} has no 'diffloss.*' keys: not a MAR state dict")
    cfg = config if config is not None else head_config(state, args)
    conv = rename(picked, diffloss_rules(""))
    head = DiffusionHead(cfg)
    load_strict(head, conv, name, hint="does the head config (depth, width, token/cond dims) fit the file?")
    return head.eval(), conv


# ----------------------------------------------------------------------------- the MAR transformer

# timm Block names -> argen Block names, for encoder_blocks.* and decoder_blocks.*
_BLOCK_RULES = [
    (r"(encoder|decoder)_blocks\.(\d+)\.norm1\.(weight|bias)", r"generator.\1_blocks.\2.attention_norm.\3"),
    (r"(encoder|decoder)_blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"generator.\1_blocks.\2.attention.wqkv.\3"),
    (r"(encoder|decoder)_blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"generator.\1_blocks.\2.attention.wo.\3"),
    (r"(encoder|decoder)_blocks\.(\d+)\.norm2\.(weight|bias)", r"generator.\1_blocks.\2.ffn_norm.\3"),
    (r"(encoder|decoder)_blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"generator.\1_blocks.\2.feed_forward.\3.\4"),
]
# Official MAR keys -> keys of {"conditioner": ClassConditioner, "generator": MARGenerator}. `class_emb.weight` and
# `fake_latent` are merged into the conditioner's table first (the null row last), see `mar_state`.
MAR_RULES = _BLOCK_RULES + diffloss_rules("generator.head.") + [(r"(.+)", r"generator.\1")]
# Official MAR sizes: width -> (preset, encoder depth).
OFFICIAL_MAR = {768: ("mar-b", 12), 1024: ("mar-l", 16), 1280: ("mar-h", 20)}


def mar_shape_info(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Width, depths, token width, grid size, buffer and class count read from an official MAR state dict."""
    need = ("z_proj.weight", "class_emb.weight", "fake_latent", "diffusion_pos_embed_learned",
            "encoder_pos_embed_learned")
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointError(f"not a MAR state dict: {', '.join(absent)} missing (pass checkpoint-last.pth as "
                              "--generator and kl16.ckpt as --tokenizer)")
    dim, token_dim = state["z_proj.weight"].shape
    L = state["diffusion_pos_embed_learned"].shape[1]
    return {"dim": dim, "token_dim": token_dim, "num_tokens": L,
            "buffer_size": state["encoder_pos_embed_learned"].shape[1] - L,
            "encoder_depth": len(_indices(state, r"encoder_blocks\.(\d+)\.")),
            "decoder_depth": len(_indices(state, r"decoder_blocks\.(\d+)\.")),
            "num_classes": state["class_emb.weight"].shape[0]}


def mar_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The official state with `class_emb.weight` + `fake_latent` merged into one (classes + 1, D) table (the
    null row last, argen's class conditioner layout); returns (state, merged official keys)."""
    out = dict(state)
    table = torch.cat([out.pop("class_emb.weight"), out.pop("fake_latent").reshape(1, -1)])
    out["class_emb_with_null"] = table
    return out, ["class_emb.weight", "fake_latent"]


def _check_mar_config(cfg, info: dict[str, int], source: str) -> None:
    wrong = [f"{k} {info[k]} in the file vs {v} in the config" for k, v in (
        ("dim", cfg.dim), ("token_dim", cfg.token_dim), ("num_tokens", cfg.num_tokens),
        ("buffer_size", cfg.buffer_size), ("encoder_depth", cfg.encoder_depth),
        ("decoder_depth", cfg.decoder_depth)) if info[k] != v]
    if wrong:
        official = OFFICIAL_MAR.get(info["dim"])
        hint = (f"; the file looks like {official[0]}: use --preset {official[0]}" if official and official[1] ==
                info["encoder_depth"] else "; set the config to the file's shape with --set")
        raise CheckpointError(f"{source} does not fit the MAR config: {'; '.join(wrong)}{hint}")


def convert_mar(source: MarCheckpoint | str | os.PathLike | Mapping, config) -> tuple[Any, Any, Converted]:
    """An official MAR checkpoint (a `MarCheckpoint`, a path -> its EMA weights, or a state dict) -> (argen
    MARGenerator, ClassConditioner, record), both in eval mode. `config` is a `MARConfig` with the official
    architecture (e.g. the `mar-b` preset); heads, buffer and shapes are checked against the file, and the
    head's sampling steps / batch multiplier follow the run's args when the file has them."""
    from ..conditioning.labels import ClassConditionerConfig

    if not isinstance(source, MarCheckpoint):
        source = read_mar_checkpoint(source) if isinstance(source, (str, os.PathLike)) else \
            MarCheckpoint(state=dict(source), container="<raw>", source="MAR state dict")
    name = source.source or "MAR checkpoint"
    info = mar_shape_info(source.state)
    _check_mar_config(config, info, name)
    head = head_config(source.state, source.args)
    config = config.replace(head=config.head.replace(sampling_steps=head.sampling_steps, batch_mul=head.batch_mul))
    state, merged = mar_state(source.state)
    conv = rename(state, [(r"class_emb_with_null", "conditioner.embedding_table.weight")] + MAR_RULES,
                  container=source.container)
    conv.source_of["conditioner.embedding_table.weight"] = " + ".join(merged)
    conditioner = registry.build(ClassConditionerConfig(dim=config.dim, num_classes=info["num_classes"]))
    generator = registry.build(config)
    load_strict(nn.ModuleDict({"conditioner": conditioner, "generator": generator}), conv, name,
                hint="is this a MAR checkpoint with the preset's architecture?")
    return generator.eval(), conditioner.eval(), conv


def convert_pipeline(tokenizer: str | os.PathLike | Mapping, generator: MarCheckpoint | str | os.PathLike | Mapping,
                     preset: str = "mar-b", *, which: str = "model_ema", overrides=None):
    """kl16.ckpt + checkpoint-last.pth -> (argen Pipeline with the README's sampling: cfg 2.9 linear for MAR-B,
    3.0 L, 3.2 H; temperature 1), notes."""
    from ..generators.mar import MARConfig
    from ..pipeline import Pipeline
    from ..presets import get_config

    cfg = get_config(preset, overrides)
    cfg = getattr(cfg, "generator", cfg)
    if not isinstance(cfg, MARConfig):
        raise ConfigError(f"preset {preset!r} is a {type(cfg).__name__}; MAR checkpoints convert into mar-b, mar-l or "
                          "mar-h")
    ckpt = generator if isinstance(generator, MarCheckpoint) or not isinstance(generator, (str, os.PathLike)) \
        else read_mar_checkpoint(generator, which)
    gen, cond, gconv = convert_mar(ckpt, cfg)
    h, w = cfg.grid
    vae, _ = _source(tokenizer, "KL VAE") if isinstance(tokenizer, (str, os.PathLike)) else (tokenizer, "")
    factor = vae_config(unwrap(vae, VAE_CONTAINERS)[0]).downsample  # the image size follows the token grid
    tok, tconv = convert_vae(vae, resolution=h * factor)
    if tok.layout != gen.layout:
        raise ConfigError(f"the tokenizer's tokens {tok.layout} are not the generator's {gen.layout}; pair MAR with "
                          "the KL-16 it was trained on")
    cfg_scale = {768: 2.9, 1024: 3.0, 1280: 3.2}.get(cfg.dim, 2.9)
    pipe = Pipeline.from_parts(tok, cond, gen, cfg=cfg_scale, cfg_schedule="linear").eval()
    notes = [f"tokenizer: {tconv.container} -> {len(tconv.state)} tensors, all keys and shapes matched",
             f"generator: [{gconv.container}] -> {len(gconv.state)} tensors (class_emb + fake_latent -> the class "
             f"conditioner's {cond.num_classes}+1 rows), all keys and shapes matched; head {cfg.head.depth} x "
             f"{cfg.head.width}, {gen.config.head.sampling_steps} sampling steps",
             f"pipeline: {h * 16} px, {h}x{w} tokens of {cfg.token_dim} dims; sampling cfg {cfg_scale} linear"]
    return pipe, notes


__all__ = ["SCALE_FACTOR", "vae_config", "convert_vae", "MarCheckpoint", "read_mar_checkpoint", "diffloss_rules",
           "head_state", "head_config", "convert_head", "DIFFLOSS_PREFIX", "MAR_RULES", "OFFICIAL_MAR",
           "mar_shape_info", "mar_state", "convert_mar", "convert_pipeline"]
