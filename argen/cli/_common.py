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
