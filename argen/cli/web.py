"""`argen web DIR`: serve a small page that samples a saved pipeline (class, seed, cfg, top-k/p)."""
from __future__ import annotations

import argparse

from ._common import add_device_argument, add_threads_argument, apply_threads, resolve_device, say

COMMAND = "web"
HELP = "serve a demo page that samples a saved pipeline in the browser"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved pipeline directory, or the --out directory of `argen train`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1 = this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    add_device_argument(p)
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..pipeline import Pipeline
    from ..train.recipes import find_pipeline
    from ..web import make_server

    apply_threads(args.threads)
    pipeline = Pipeline.load(find_pipeline(Path(args.path)), map_location=resolve_device(args.device))
    server = make_server(pipeline, host=args.host, port=args.port)
    host, port = server.server_address[:2]
    say(f"serving {args.path} at http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
