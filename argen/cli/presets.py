"""`argen presets`: list the named presets, or print one preset's full config."""
from __future__ import annotations

import argparse

COMMAND = "presets"
HELP = "list named presets or show one preset's config as JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show this preset's config (with any --set applied)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override to apply before printing, e.g. generator.depth=20")


def run(args: argparse.Namespace) -> int:
    from ..config import to_json
    from ..presets import describe_presets, get_config

    if args.name:
        print(to_json(get_config(args.name, args.overrides or None)))
        return 0
    presets = describe_presets()
    if not presets:
        print("no presets registered")
    width = max((len(n) for n in presets), default=0)
    for name, desc in presets.items():
        print(f"{name:<{width}}  {desc}")
    return 0
