"""A small demo web app: pick a class (or type a prompt, for a text-to-image pipeline), seed and sampling knobs,
get a grid of samples from a saved pipeline.

Standard library only (http.server), so `argen web runs/demo/generator` works wherever argen does:

    server = make_server(Pipeline.load(dir), host="127.0.0.1", port=8000)
    server.serve_forever()

Routes: `GET /` the page; `GET /api/info` pipeline facts as JSON; `GET /api/sample?label=3&n=8&seed=0&cfg=2
&top_k=0&top_p=1&temperature=1` a PNG grid (a text pipeline takes `prompt=red+heart` instead of `label`;
an empty prompt is unconditional). Every parameter is checked (a number, finite, in range); a bad one
gets a 400 whose text says which and what is allowed, and the page shows it. The app calls only
`pipeline(cond, **options)`, with the conditions parsed by the pipeline's conditioner.
"""
from __future__ import annotations

import html
import io
import math
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch

from ..imageio import make_grid

MAX_IMAGES = 64
MAX_SEED = 2**63 - 1
MAX_PROMPT = 500  # characters; the encoder truncates to its max_length tokens anyway

# Query parameters: name -> (type, default, min, max). None bounds = unbounded.
_PARAMS: dict[str, tuple[type, Any, float | None, float | None]] = {
    "label": (int, -1, -1, None),
    "n": (int, 8, 1, MAX_IMAGES),
    "seed": (int, 0, 0, MAX_SEED),
    "cfg": (float, None, 0.0, 50.0),
    "top_k": (int, None, 0, 1 << 31),
    "top_p": (float, None, 1e-6, 1.0),
    "temperature": (float, None, 0.0, 10.0),
}


class RequestError(ValueError):
    """A bad query parameter; answered with 400 and the message."""


def parse_query(query: str, num_classes: int, text: bool = False) -> dict[str, Any]:
    """Validate the sample query; raise RequestError saying which value is wrong and what is allowed. A text
    pipeline (`text=True`) takes `prompt` instead of `label`."""
    raw = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=text).items()}
    allowed = [n for n in _PARAMS if n != "label"] + ["prompt"] if text else list(_PARAMS)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise RequestError(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    if text:
        prompt = raw.pop("prompt", "")
        if len(prompt) > MAX_PROMPT:
            raise RequestError(f"prompt is {len(prompt)} characters; keep it under {MAX_PROMPT}")
        out["prompt"] = prompt.strip()
        raw = {k: v for k, v in raw.items() if v != ""}  # blank number fields: the defaults
    for name, (tp, default, lo, hi) in _PARAMS.items():
        if name not in raw:
            out[name] = default
            continue
        try:
            value = tp(raw[name])
        except ValueError:
            kind = "whole number" if tp is int else "number"
            raise RequestError(f"{name}={raw[name]!r} is not a {kind}") from None
        if tp is float and not math.isfinite(value):
            raise RequestError(f"{name}={raw[name]!r} must be a finite number in [{lo}, {hi}]")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise RequestError(f"{name}={value} is out of range [{lo}, {'inf' if hi is None else hi}]")
        out[name] = value
    if not text and out["label"] >= num_classes:
        raise RequestError(f"label={out['label']} but the pipeline has {num_classes} classes (use -1 for unconditional)")
    if out["temperature"] is not None and 0 < out["temperature"] < 1e-6:
        raise RequestError(f"temperature={out['temperature']} is too small to sample from; use 0 (greedy) or >= 1e-6")
    return out


def sample_png(pipeline, params: dict[str, Any], lock: threading.Lock) -> bytes:
    """Run the pipeline for one request and return a PNG grid."""
    from PIL import Image

    options = {k: params[k] for k in ("cfg", "top_k", "top_p", "temperature") if params[k] is not None}
    cond = pipeline.conditioner.parse([params["prompt"] if "prompt" in params else params["label"]] * params["n"])
    with lock, torch.inference_mode():  # one sampling run at a time: the model and its caches are shared
        images = pipeline(cond, seed=params["seed"], **options)
    grid = make_grid(images, nrow=min(8, params["n"]))  # uint8 (H, W, 3)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def info(pipeline) -> dict[str, Any]:
    cond = pipeline.conditioner.describe()
    return {"generator": type(pipeline.generator.config).kind, "tokenizer": type(pipeline.tokenizer.config).kind,
            "conditioner": cond, "num_classes": cond.get("num_classes", 0), "class_names": cond.get("class_names", []),
            "defaults": pipeline.sample_defaults()}


def _page(pipeline) -> str:
    facts = info(pipeline)
    names = facts["class_names"] or [str(i) for i in range(facts["num_classes"])]
    if facts["conditioner"].get("kind") == "text":
        condition = ('<label>prompt <input name="prompt" size="40" maxlength="{m}" value="red heart" '
                     'placeholder="empty = unconditional"></label>').format(m=MAX_PROMPT)
    else:
        options = '<option value="-1">unconditional</option>' + "".join(
            f'<option value="{i}">{i}: {html.escape(n)}</option>' for i, n in enumerate(names))
        condition = f'<label>class <select name="label">{options}</select></label>'
    d = facts["defaults"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>argen</title>
<style>body{{font-family:sans-serif;max-width:760px;margin:2em auto}}label{{margin-right:1em}}
img{{image-rendering:pixelated;width:100%;margin-top:1em;border:1px solid #ccc}}</style></head><body>
<h1>argen</h1><p>{html.escape(facts['generator'])} generator + {html.escape(facts['tokenizer'])} tokenizer</p>
<form id="f">{condition}
<label>images <input name="n" type="number" value="8" min="1" max="{MAX_IMAGES}"></label>
<label>seed <input name="seed" type="number" value="0" min="0"></label>
<label>cfg <input name="cfg" type="number" step="0.1" value="{d.get('cfg', 1.0)}"></label>
<label>top-k <input name="top_k" type="number" value="{d.get('top_k', 0)}" min="0"></label>
<label>top-p <input name="top_p" type="number" step="0.01" value="{d.get('top_p', 1.0)}"></label>
<label>temperature <input name="temperature" type="number" step="0.1" value="{d.get('temperature', 1.0)}"></label>
<button>generate</button></form><p id="err" style="color:#b00"></p><img id="out" alt="">
<script>
document.getElementById('f').onsubmit = async (e) => {{
  e.preventDefault();
  const q = new URLSearchParams(new FormData(e.target)).toString();
  const r = await fetch('/api/sample?' + q);
  if (!r.ok) {{ document.getElementById('err').textContent = await r.text(); return; }}
  document.getElementById('err').textContent = '';
  document.getElementById('out').src = URL.createObjectURL(await r.blob());
}};
</script></body></html>"""


def make_server(pipeline, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server bound to (host, port) serving `pipeline`; port 0 picks a free port."""
    lock = threading.Lock()
    page = _page(pipeline).encode()
    facts = info(pipeline)
    num_classes, text = facts["num_classes"], facts["conditioner"].get("kind") == "text"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the library never prints
            pass

        def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            url = urlparse(self.path)
            try:
                if url.path == "/":
                    self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
                elif url.path == "/api/info":
                    self._send(HTTPStatus.OK, json.dumps(info(pipeline)).encode(), "application/json")
                elif url.path == "/api/sample":
                    png = sample_png(pipeline, parse_query(url.query, num_classes, text), lock)
                    self._send(HTTPStatus.OK, png, "image/png")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found; routes: /, /api/info, /api/sample", "text/plain")
            except RequestError as e:
                self._send(HTTPStatus.BAD_REQUEST, str(e).encode(), "text/plain; charset=utf-8")
            except (ValueError, RuntimeError) as e:  # a request the model cannot serve: say why, keep serving
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"sampling failed: {e}".encode(), "text/plain; charset=utf-8")

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or stop the "
                      "process that uses it") from None
