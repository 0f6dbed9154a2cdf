"""`argen` command line: the only argv parser in the package.

Each subcommand lives in its own module here and defines:
    COMMAND = "name"; HELP = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int
Modules are discovered automatically; names starting with '_' are helpers, not commands.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from .. import __version__


def _command_modules():
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "COMMAND") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only when it says something: not None/False, and not when the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argen",
        description="Autoregressive visual generation: data, tokenizers, training, sampling, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"argen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.COMMAND, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=HelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import ArgenError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("argen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `argen presets | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except (ArgenError, ValueError, OSError, ImportError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"argen {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
