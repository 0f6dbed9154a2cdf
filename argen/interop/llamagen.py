"""Official LlamaGen checkpoints -> argen (Sun et al., https://arxiv.org/abs/2406.06525,
code: https://github.com/FoundationVision/LlamaGen).

* Tokenizer (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`): `{"model": sd, "optimizer": ..., ...}`; the conv VQGAN maps
  onto argen's `autoencoder` with a cosine `vq` quantizer. Names differ only in structure: official
  `encoder.conv_blocks.{i}.res.{j}` is taming's `encoder.down.{i}.block.{j}`, `mid.{0,1,2}` is
  `mid.{block_1,attn_1,block_2}`, and the decoder's `conv_blocks.{k}` counts from the lowest resolution
  while argen's `decoder.up.{i}` mirrors encoder level i (i = levels - 1 - k). The architecture is read
  from the shapes (width, levels, res blocks, codebook); the official code hard-codes the rest.
* Generator (`c2i_B_256.pt`, ...): `{"model" | "module" | "state_dict": sd}` or a bare FSDP-consolidated
  dict; names are argen's raster generator names already, except the class table
  `cls_embedding.embedding_table.weight`, which becomes the class conditioner's `embedding_table.weight` (its
  row count gives the classes). The architecture comes from a preset (`llamagen-b`, ...): the number of heads
  is not visible in the weights, nor is the token grid (`c2i_B_256.pt` and `c2i_B_384.pt` are
  shape-identical). Width, depth and vocabulary are checked against the file, with a hint naming the preset
  that fits.

Non-state entries that some files carry (the RoPE table `freqs_cis`, KV-cache buffers left over from
sampling, the VQ's rolling `codebook_used` statistic) are dropped by name and listed in the notes;
everything else must match exactly or conversion fails with a report naming the keys.
"""
from __future__ import annotations

import os
import re
from typing import Any

from torch import Tensor, nn

from .. import registry
from ..errors import CheckpointError, ConfigError
from .common import Converted, Rule, drop, load_strict, read_checkpoint, rename, unwrap

GPT_CONTAINERS = ("model", "module", "state_dict", "ema")
VQ_CONTAINERS = ("model", "ema", "state_dict")

# Entries that are not model state: recomputed RoPE table, KV caches / masks left over from generate().
GPT_NON_STATE = (r"freqs_cis", r"causal_mask", r"layers\.\d+\.attention\.kv_cache\.[kv]_cache")
# The VQ's rolling buffer of the last 65,536 code assignments (a training statistic).
VQ_NON_STATE = (r"quantize\.codebook_used",)
# argen's own codebook-usage counters (training statistics) start fresh.
VQ_FRESH = (r"quantizer\.usage_step", r"quantizer\.last_used")

# Official c2i GPT sizes: width -> (preset, depth, heads).
OFFICIAL_GPT = {768: ("llamagen-b", 12, 12), 1024: ("llamagen-l", 24, 16), 1280: ("llamagen-xl", 36, 20),
                1536: ("llamagen-xxl", 48, 24), 3200: ("llamagen-3b", 24, 32)}


def _state(source: str | os.PathLike | dict, containers: tuple[str, ...], what: str) -> tuple[dict[str, Tensor], str, str]:
    """(state dict, container name, printable source) from a path or an already-loaded object."""
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        obj = read_checkpoint(source)
    else:
        name, obj = f"{what} state dict", source
    state, where = unwrap(obj, containers, source=name)
    return state, where, name


# ----------------------------------------------------------------------------- tokenizer (VQ)

def vq_rules(levels: int) -> list[Rule]:
    """Official VQModel names -> argen autoencoder names for a net with `levels` resolutions."""
    rules: list[Rule] = [
        (r"encoder\.conv_blocks\.(\d+)\.res\.(\d+)\.(.+)", r"encoder.down.\1.block.\2.\3"),
        (r"encoder\.conv_blocks\.(\d+)\.attn\.(\d+)\.(.+)", r"encoder.down.\1.attn.\2.\3"),
        (r"encoder\.conv_blocks\.(\d+)\.downsample\.(.+)", r"encoder.down.\1.downsample.\2"),
        (r"(encoder|decoder)\.mid\.0\.(.+)", r"\1.mid.block_1.\2"),
        (r"(encoder|decoder)\.mid\.1\.(.+)", r"\1.mid.attn_1.\2"),
        (r"(encoder|decoder)\.mid\.2\.(.+)", r"\1.mid.block_2.\2"),
        (r"quantize\.embedding\.weight", "quantizer.codebook.weight"),
    ]
    for k in range(levels):  # decoder blocks count from the lowest resolution; argen's up[i] mirrors down[i]
        i = levels - 1 - k
        rules += [(rf"decoder\.conv_blocks\.{k}\.res\.(\d+)\.(.+)", rf"decoder.up.{i}.block.\1.\2"),
                  (rf"decoder\.conv_blocks\.{k}\.attn\.(\d+)\.(.+)", rf"decoder.up.{i}.attn.\1.\2"),
                  (rf"decoder\.conv_blocks\.{k}\.upsample\.(.+)", rf"decoder.up.{i}.upsample.\1")]
    return rules


def _indices(state: dict[str, Tensor], pattern: str) -> list[int]:
    reg = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := reg.match(k))})


def vq_config(state: dict[str, Tensor], resolution: int):
    """The argen `AutoencoderConfig` of an official VQModel state dict at image size `resolution`."""
    from ..nn.conv import ConvNetConfig
    from ..tokenizers.autoencoder import AutoencoderConfig

    need = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quantize.embedding.weight")
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointError(f"not a LlamaGen VQ state dict: {', '.join(absent)} missing "
                              "(pass the tokenizer checkpoint, e.g. vq_ds16_c2i.pt, to --tokenizer)")
    levels = _indices(state, r"encoder\.conv_blocks\.(\d+)\.")
    blocks = _indices(state, r"encoder\.conv_blocks\.0\.res\.(\d+)\.")
    if not levels or not blocks:
        raise CheckpointError("not a LlamaGen VQ state dict: no encoder.conv_blocks.{i}.res.{j} entries")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = []
    for i in levels:
        key = f"encoder.conv_blocks.{i}.res.0.conv1.weight"
        if key not in state:
            raise CheckpointError(f"LlamaGen VQ state dict lacks {key}; the file is incomplete")
        widths.append(state[key].shape[0])
    ch_mult = tuple(w // ch for w in widths)
    codes, dim = state["quantize.embedding.weight"].shape
    f = 2 ** (len(levels) - 1)
    if resolution % f:
        raise ConfigError(f"image size {resolution} is not a multiple of the tokenizer's downsampling factor {f}")
    net = ConvNetConfig(ch=ch, ch_mult=ch_mult, num_res_blocks=len(blocks), attn_resolutions=(resolution // f,),
                        z_channels=state["encoder.conv_out.weight"].shape[0])
    # LlamaGen's released tokenizers all use l2-normalised codes (codebook_l2_norm=True), beta 0.25
    quantizer = registry.config_class("vq")(dim=dim, codebook_size=codes, metric="cosine", beta=0.25)
    return AutoencoderConfig(resolution=resolution, net=net, quantizer=quantizer, quant_conv_kernel=1)


def convert_vq(source: str | os.PathLike | dict, resolution: int | None = None, *, grid: int | None = None) -> tuple[Any, Converted]:
    """Official VQ checkpoint (path or loaded dict) -> (argen Autoencoder in eval mode, conversion record).

    The image size is `resolution`, or `grid` tokens per side times the downsampling factor read from the
    checkpoint (default 256 px)."""
    state, where, name = _state(source, VQ_CONTAINERS, "VQ")
    if grid is not None:
        resolution = grid * 2 ** max(len(_indices(state, r"encoder\.conv_blocks\.(\d+)\.")) - 1, 0)
    cfg = vq_config(state, resolution or 256)
    state, dropped = drop(state, VQ_NON_STATE)
    conv = rename(state, vq_rules(len(cfg.net.ch_mult)), dropped, where)
    model = registry.build(cfg)
    load_strict(model, conv, name, hint="is this a LlamaGen VQ checkpoint (vq_ds16_c2i.pt / vq_ds8_c2i.pt)?",
                fresh=VQ_FRESH)
    return model.eval(), conv


# ----------------------------------------------------------------------------- generator (GPT)

def gpt_shape_info(state: dict[str, Tensor]) -> dict[str, int]:
    """Width, depth, vocabulary, classes and SwiGLU width read from an official c2i GPT state dict."""
    need = ("tok_embeddings.weight", "cls_embedding.embedding_table.weight")
    absent = [k for k in need if k not in state]
    if absent:
        hint = (" (a text-to-image checkpoint: only class-conditional c2i models convert)"
                if any(k.startswith("cls_embedding.cap_proj") for k in state) else
                " (pass the GPT checkpoint, e.g. c2i_B_256.pt, to --generator)")
        raise CheckpointError(f"not a LlamaGen c2i GPT state dict: {', '.join(absent)} missing{hint}")
    vocab, dim = state["tok_embeddings.weight"].shape
    w1 = state.get("layers.0.feed_forward.w1.weight")
    return {"dim": dim, "depth": len(_indices(state, r"layers\.(\d+)\.")), "vocab_size": vocab,
            "num_classes": state["cls_embedding.embedding_table.weight"].shape[0] - 1,
            "ffn_hidden": 0 if w1 is None else w1.shape[0]}


def _check_generator_config(cfg, info: dict[str, int], source: str) -> None:
    wrong = []
    for field, mine in (("dim", cfg.dim), ("depth", cfg.depth), ("vocab_size", cfg.vocab_size),
                        ("ffn_hidden", cfg.hidden_dim)):
        if info[field] and info[field] != mine:
            wrong.append(f"{field} {info[field]} in the file vs {mine} in the config")
    if not wrong:
        return
    official = OFFICIAL_GPT.get(info["dim"])
    hint = (f"; the file looks like {official[0]} ({info['dim']} wide, {official[1]} layers): use --preset {official[0]}"
            if official and official[1] == info["depth"] else
            f"; set the config to the file's shape, e.g. --set dim={info['dim']} --set depth={info['depth']} "
            f"--set vocab_size={info['vocab_size']} and num_heads")
    raise CheckpointError(f"{source} does not fit the generator config: {'; '.join(wrong)}{hint}")


CLASS_TABLE = "cls_embedding.embedding_table.weight"
# Official GPT keys -> keys of {"conditioner": ClassConditioner, "generator": RasterGenerator}.
GPT_RULES = [(re.escape(CLASS_TABLE), "conditioner.embedding_table.weight"), (r"(.+)", r"generator.\1")]


def convert_gpt(source: str | os.PathLike | dict, config) -> tuple[Any, Any, Converted]:
    """Official c2i GPT checkpoint (path or loaded dict) -> (argen RasterGenerator, ClassConditioner, record),
    both in eval mode.

    `config` is a `RasterConfig` with the official architecture (e.g. the `llamagen-b` preset); it must
    keep `prefix_rope="zero"` for exact parity with the official model."""
    from ..conditioning.labels import ClassConditionerConfig

    state, where, name = _state(source, GPT_CONTAINERS, "GPT")
    info = gpt_shape_info(state)
    _check_generator_config(config, info, name)
    state, dropped = drop(state, GPT_NON_STATE)
    conv = rename(state, GPT_RULES, dropped, where)  # the generator's names are LlamaGen's already
    conditioner = registry.build(ClassConditionerConfig(dim=config.dim, num_classes=info["num_classes"]))
    generator = registry.build(config)
    load_strict(nn.ModuleDict({"conditioner": conditioner, "generator": generator}), conv, name,
                hint="is this a LlamaGen c2i GPT checkpoint with the preset's architecture?")
    return generator.eval(), conditioner.eval(), conv




# ----------------------------------------------------------------------------- pipeline

# Sampling defaults of the official demo (autoregressive/sample/sample_c2i.py); FID runs use cfg 1.5-2, top_k 0.
DEMO_SAMPLING = {"cfg": 4.0, "top_k": 2000, "top_p": 1.0, "temperature": 1.0}


def _generator_config(preset: str, overrides: list[str] | dict[str, Any] | None):
    from ..generators.raster import RasterConfig
    from ..pipeline import PipelineConfig
    from ..presets import get_config

    cfg = get_config(preset, overrides)
    if isinstance(cfg, PipelineConfig):
        cfg = cfg.generator
    if not isinstance(cfg, RasterConfig):
        raise ConfigError(f"preset {preset!r} is a {type(cfg).__name__}; LlamaGen GPTs convert into a raster "
                          "generator preset: llamagen-b, llamagen-l, llamagen-xl, llamagen-xxl or llamagen-3b")
    return cfg


def _note(what: str, source: str, conv: Converted) -> list[str]:
    lines = [f"{what}: {source} [{conv.container}] -> {len(conv.state)} tensors, all keys and shapes matched"]
    if conv.dropped:
        lines.append(f"  dropped non-state entries: {', '.join(conv.dropped[:6])}"
                     + (f" (+{len(conv.dropped) - 6} more)" if len(conv.dropped) > 6 else ""))
    if conv.fresh:
        lines.append(f"  argen-only state initialised fresh: {', '.join(conv.fresh)}")
    return lines


def convert_pipeline(tokenizer: str | os.PathLike | dict, generator: str | os.PathLike | dict,
                     preset: str = "llamagen-b", overrides: list[str] | dict[str, Any] | None = None):
    """Official VQ + c2i GPT checkpoints -> (argen `Pipeline`, notes: one line per fact worth reporting).

    The generator architecture comes from `preset` (+ dotted `overrides`, e.g. ["scales=[[24,24]]"] for
    a 384 px model); the tokenizer's from its checkpoint, at the image size the generator's grid implies.
    The pipeline samples with the official demo defaults (cfg 4.0, top_k 2000) unless a call overrides them.
    """
    from ..pipeline import Pipeline

    gen_cfg = _generator_config(preset, overrides)
    gen, conditioner, gconv = convert_gpt(generator, gen_cfg)
    h, w = gen_cfg.grid
    if h != w:
        raise ConfigError(f"LlamaGen tokens form a square grid; generator scales {gen_cfg.scales} are not square")
    tok, tconv = convert_vq(tokenizer, grid=h)  # image size = grid x the VQ's downsampling factor
    if tok.layout.vocab_size != gen_cfg.vocab_size:
        raise ConfigError(f"the tokenizer has {tok.layout.vocab_size} codes but the generator models "
                          f"{gen_cfg.vocab_size}; pair a GPT with the VQ it was trained on")
    pipe = Pipeline.from_parts(tok, conditioner, gen, **DEMO_SAMPLING).eval()
    name = lambda src, what: f"{what} state dict" if isinstance(src, dict) else str(src)  # noqa: E731
    notes = _note("tokenizer", name(tokenizer, "VQ"), tconv) + _note("generator", name(generator, "GPT"), gconv)
    notes.append(f"pipeline: {tok.config.resolution} px, {h}x{w} tokens, {gen_cfg.vocab_size} codes, "
                 f"{conditioner.num_classes} classes; sampling defaults cfg {DEMO_SAMPLING['cfg']}, top_k {DEMO_SAMPLING['top_k']}")
    return pipe, notes


__all__ = ["vq_rules", "vq_config", "convert_vq", "gpt_shape_info", "convert_gpt", "convert_pipeline", "OFFICIAL_GPT",
           "DEMO_SAMPLING", "GPT_RULES"]
