"""`argen convert SOURCE ...`: turn official checkpoints into an argen pipeline directory.

Each source is one small function registered in `SOURCES` with `@source(name, help, add_arguments)`;
adding a converter (VAR, MAR, taming) is one more decorated function here and a module in
`argen/interop/`. The written directory loads with `argen.load(DIR)` and needs nothing else.

    argen convert llamagen --tokenizer vq_ds16_c2i.pt --generator c2i_B_256.pt --preset llamagen-b --out DIR
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from . import HelpFormatter
from ._common import say

COMMAND = "convert"
HELP = "convert official checkpoints (LlamaGen, VAR, MAR) into an argen pipeline directory"


@dataclass(frozen=True)
class Source:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SOURCES: dict[str, Source] = {}


def source(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `fn(args) -> int` as `argen convert <name>`."""

    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        SOURCES[name] = Source(help, add_arguments, fn)
        return fn

    return deco


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="source", metavar="SOURCE")
    for name, src in SOURCES.items():
        sp = sub.add_parser(name, help=src.help, description=src.help,
                            formatter_class=HelpFormatter)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        src.add_arguments(sp)
        sp.set_defaults(_convert=src.run)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "_convert", None):
        raise ValueError(f"choose what to convert: argen convert {{{','.join(SOURCES)}}} ... (see argen convert SOURCE --help)")
    return args._convert(args)


# ----------------------------------------------------------------------------- LlamaGen

def _llamagen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="PT", help="official VQ checkpoint, e.g. vq_ds16_c2i.pt")
    p.add_argument("--generator", required=True, metavar="PT",
                   help="official c2i GPT checkpoint, e.g. c2i_B_256.pt ({'model'|'module'|'state_dict': sd} or a bare FSDP dict)")
    p.add_argument("--preset", default="llamagen-b",
                   help="raster generator preset with the official architecture (llamagen-b, -l, -xl, -xxl, -3b; "
                        "the grid sets the image size: -b is 16x16 = 256 px, the others 24x24 = 384 px)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a generator config value (generator.* or a bare key), e.g. --set scales=[[16,16]] "
                        "for c2i_L_256.pt (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output pipeline directory (config.json + model.safetensors)")


@source("llamagen", "LlamaGen VQ tokenizer + class-conditional GPT (FoundationVision/LlamaGen)", _llamagen_arguments)
def _convert_llamagen(args: argparse.Namespace) -> int:
    from .. import save
    from ..interop.llamagen import convert_pipeline

    from ..train.recipes import route_overrides

    groups = route_overrides(args.overrides, "generator")
    others = [i for g, items in groups.items() if g != "generator" for i in items]
    if others:
        raise ValueError(f"--set {others[0]}: `convert llamagen` takes generator overrides only (the rest is read "
                         "from the files)")
    over = [i[len("generator."):] for i in groups["generator"]]
    pipe, notes = convert_pipeline(args.tokenizer, args.generator, preset=args.preset, overrides=over or None)
    out = save(pipe, args.out)
    for line in notes:
        say(line)
    say(f"wrote {out} (load with argen.load('{out}'))")
    return 0


# ----------------------------------------------------------------------------- VAR

def _var_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="PTH", help="official VQVAE checkpoint vae_ch160v4096z32.pth")
    p.add_argument("--generator", required=True, metavar="PTH",
                   help="official VAR transformer, e.g. var_d16.pth (depth, width, scales are read from the weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="output pipeline directory (config.json + model.safetensors)")


@source("var", "VAR multi-scale VQVAE + next-scale transformer (FoundationVision/VAR, d16..d36)", _var_arguments)
def _convert_var(args: argparse.Namespace) -> int:
    from .. import save
    from ..interop.var import convert_pipeline

    pipe, notes = convert_pipeline(args.tokenizer, args.generator)
    out = save(pipe, args.out)
    for line in notes:
        say(line)
    say(f"wrote {out} (load with argen.load('{out}'); sample with `argen sample {out}`)")
    return 0


# ----------------------------------------------------------------------------- MAR

def _mar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="CKPT", help="MAR's KL-16 VAE, kl16.ckpt ({'model': sd})")
    p.add_argument("--generator", required=True, metavar="PTH",
                   help="official MAR checkpoint-last.pth (model / model_ema / args; only argparse.Namespace is "
                        "allow-listed when unpickling)")
    p.add_argument("--preset", default="mar-b", help="MAR preset with the official architecture: mar-b, mar-l, mar-h")
    p.add_argument("--weights", default="ema", choices=["ema", "model"],
                   help="the EMA weights (what the official evaluation uses) or the raw training weights")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a generator config value (generator.* or a bare key) (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output pipeline directory")


@source("mar", "MAR KL-16 VAE + masked autoregressive transformer with its diffusion head (LTH14/mar)", _mar_arguments)
def _convert_mar(args: argparse.Namespace) -> int:
    from .. import save
    from ..interop.mar import convert_pipeline
    from ..train.recipes import route_overrides

    groups = route_overrides(args.overrides, "generator")
    others = [i for g, items in groups.items() if g != "generator" for i in items]
    if others:
        raise ValueError(f"--set {others[0]}: `convert mar` takes generator overrides only")
    over = [i[len("generator."):] for i in groups["generator"]]
    pipe, notes = convert_pipeline(args.tokenizer, args.generator, preset=args.preset, overrides=over or None,
                                   which="model_ema" if args.weights == "ema" else "model")
    out = save(pipe, args.out)
    for line in notes:
        say(line)
    say(f"wrote {out} (load with argen.load('{out}'); sample with `argen sample {out}`)")
    return 0
