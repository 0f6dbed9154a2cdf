"""Helpers shared by CLI subcommands (device choice, --set overrides, seeds, output lines)."""
from __future__ import annotations

import argparse
import sys

import torch


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value with a dotted key, e.g. --set generator.depth=20 (repeatable)")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def apply_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def say(msg: str) -> None:
    """Print a user-facing line (CLI only; the library never prints)."""
    print(msg, file=sys.stdout, flush=True)


CFG_SCHEDULES = ("constant", "linear", "linear_scale", "interval")


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed_help: str, cfg_help: str) -> None:
    """--seed, --cfg, --cfg-schedule, --temperature, --top-k, --top-p (None = the pipeline's stored default)."""
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--cfg", type=float, default=None, help=cfg_help)
    p.add_argument("--cfg-schedule", default=None, choices=CFG_SCHEDULES,
                   help="how the guidance scale varies over steps (default: the pipeline's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (1 = all)")
    p.add_argument("--prune", type=float, nargs="+", default=None, metavar="RATIO",
                   help="next-scale only, approximate speed-up (FastVAR-style): fraction of tokens the transformer "
                        "skips at each of the last scales, e.g. --prune 0.4 0.5 (default: exact sampling)")


def sampling_overrides(args: argparse.Namespace) -> dict:
    """The sampling options the user gave (unset ones fall back to the pipeline's defaults)."""
    given = dict(cfg=args.cfg, cfg_schedule=args.cfg_schedule, temperature=args.temperature, top_k=args.top_k,
                 top_p=args.top_p, prune=None if args.prune is None else tuple(args.prune))
    return {k: v for k, v in given.items() if v is not None}
