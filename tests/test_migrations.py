"""Saved directories of older argen versions load, in memory, as the current layout (argen.migrations), with
exactly the outputs they gave: tests/fixtures/v1_pipelines holds version-1 pipelines of every generator kind
and the tokens argen 0.1 sampled from them."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import argen
from argen.config import CONFIG_VERSION
from argen.errors import CheckpointError
from argen.pipeline import Pipeline

V1 = Path(__file__).parent / "fixtures" / "v1_pipelines"
KINDS = ["raster", "random-order", "next-scale", "pixel-ar"]
LABELS = [0, 3, -1]
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def outputs(pipe: Pipeline, kind: str, default: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"default": pipe.sample_tokens(LABELS, seed=1),
           "cfg3_topk20": pipe.sample_tokens(LABELS, seed=2, cfg=3.0, top_k=20, top_p=0.9),
           "greedy": pipe.sample_tokens(LABELS, seed=3, cfg=1.5, temperature=0.0)}
    if kind == "random-order":
        out["raster_order_8steps"] = pipe.sample_tokens(LABELS, seed=4, num_steps=8, order="raster")
    if kind == "next-scale":
        out["gumbel"] = pipe.sample_tokens(LABELS, seed=5, gumbel=0.27, cfg=2.0)
        out["prune"] = pipe.sample_tokens(LABELS, seed=6, prune=(0.5,))
    with torch.no_grad():
        c = pipe.conditioner(pipe.conditioner.parse(LABELS))
        out["loss"] = pipe.generator.loss(default, c, rng=torch.Generator().manual_seed(7)).loss.reshape(1)
    out["images"] = pipe.decode(default[:1])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_version_1_pipelines_load_and_reproduce_their_outputs(kind, tmp_path):
    assert json.loads((V1 / kind / "config.json").read_text())["version"] == 1
    expected = load_file(str(V1 / kind / "expected.safetensors"))
    pipe = argen.load(V1 / kind)
    assert isinstance(pipe, Pipeline) and type(pipe.generator.config).kind == kind
    assert pipe.conditioner.num_classes == 10 and len(pipe.conditioner.config.class_names) == 10
    got = outputs(pipe, kind, expected["default"])
    assert set(got) == set(expected)
    for name, value in got.items():
        if name == "images":  # a float conv decode: oneDNN picks kernels by the CPU's instruction set, so on
            # another machine than the one that wrote the fixtures the last bits differ (~3e-6 seen)
            torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-4, msg=name)
        else:  # tokens (sampling included) and losses: bit for bit, not approximately
            assert torch.equal(value, expected[name]), name
    # saved again, it is a current (component-folder) directory with the same outputs
    pipe.save(tmp_path / "v2")
    meta = json.loads((tmp_path / "v2" / "config.json").read_text())
    assert meta["version"] == CONFIG_VERSION and "components" in meta
    again = argen.load(tmp_path / "v2")
    assert torch.equal(again.sample_tokens(LABELS, seed=1), expected["default"])


def test_saving_over_a_version_1_directory_leaves_no_stale_weights(tmp_path):
    shutil.copytree(V1 / "raster", tmp_path / "p")
    argen.load(tmp_path / "p").save(tmp_path / "p")
    assert not (tmp_path / "p" / "model.safetensors").exists()
    assert argen.load(tmp_path / "p").generator.config.kind == "raster"


def test_a_differing_quantizer_copy_is_refused_not_guessed(tmp_path):
    shutil.copytree(V1 / "next-scale", tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    state = load_file(str(weights))
    state["generator.quantizer.embedding.weight"] = state["generator.quantizer.embedding.weight"] + 1.0
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="differs from the tokenizer's"):
        argen.load(tmp_path / "p")


def test_a_version_1_generator_saved_alone_gets_a_clear_error(tmp_path):
    gen = argen.create("llamagen-tiny")
    argen.save(gen, tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "config.json").read_text())
    meta["version"] = 1
    meta["config"]["num_classes"] = 10
    (tmp_path / "g" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="save it as a pipeline"):
        argen.load(tmp_path / "g")


def test_version_1_tokenizer_takes_its_training_resolution(tmp_path):
    tok = argen.create("vq-tiny")
    argen.save(tok, tmp_path / "t")
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    meta["version"] = 1
    meta["extra"] = {"train_resolution": 16, "data": "fashion-mnist"}  # 0.1 kept it beside the config
    (tmp_path / "t" / "config.json").write_text(json.dumps(meta))
    back = argen.load(tmp_path / "t")  # the same network (attention at the same level), now at its real size
    assert back.config.resolution == 16 and back.layout.grid == (4, 4) and back.config.net.attn_resolutions == (4,)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back.encode(x), tok.eval().encode(x))


def test_newer_versions_are_refused(tmp_path):
    argen.save(argen.create("vq-tiny"), tmp_path / "t")
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    meta["version"] = CONFIG_VERSION + 1
    (tmp_path / "t" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer than this argen"):
        argen.load(tmp_path / "t")


def test_version_1_is_read_strictly_with_the_new_fields_supplied_by_the_migration(tmp_path):
    # Version 2 added the conditioner's init_std and sampling.cfg_interval: the migration writes the values
    # version 1 behaved as (the generator's class-table init; guidance on every step), not today's defaults.
    import math

    meta = json.loads((V1 / "next-scale" / "config.json").read_text())
    assert "weights_sha256" not in meta  # version 1 recorded no checksum: loads without one
    pipe = argen.load(V1 / "next-scale")
    assert pipe.conditioner.config.init_std == math.sqrt(1 / (3 * pipe.generator.config.width))  # VAR's init
    assert pipe.config.sampling.cfg_interval == (0.0, 1.0)
    assert argen.load(V1 / "raster").conditioner.config.init_std == 0.02  # LlamaGen's
    # a field version 1 did write, missing from the file, is refused, not defaulted
    shutil.copytree(V1 / "raster", tmp_path / "p")
    meta = json.loads((V1 / "raster" / "config.json").read_text())
    del meta["config"]["tokenizer"]["quantizer"]["metric"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"p/config.json lacks tokenizer.quantizer.metric\. A saved config"):
        argen.load(tmp_path / "p")


def test_version_2_raster_pipelines_read_their_condition_as_a_prefix(tmp_path):
    """Version 3 added the raster generator's cond_mode; a version-2 directory (no such field) loads as the
    prefix decoder it was, with the same samples."""
    torch.manual_seed(0)
    pipe = argen.create("fmnist-raster-tiny").eval()
    pipe.save(tmp_path / "p")
    for f in (tmp_path / "p").rglob("config.json"):  # what argen with config version 2 wrote
        meta = json.loads(f.read_text())
        meta["version"] = 2
        meta["config"].pop("cond_mode", None)
        f.write_text(json.dumps(meta))
    old = argen.load(tmp_path / "p")  # the migration writes the value version 2 behaved as
    assert old.generator.config.cond_mode == "prefix"
    assert torch.equal(old.sample_tokens([1, 2], seed=0), pipe.sample_tokens([1, 2], seed=0))
    # the same files claiming version 3 are refused: a field missing from a current file is never defaulted
    for f in (tmp_path / "p").rglob("config.json"):
        f.write_text(json.dumps({**json.loads(f.read_text()), "version": CONFIG_VERSION}))
    with pytest.raises(CheckpointError, match="cond_mode"):
        argen.load(tmp_path / "p")


def test_version_3_tokenizers_decode_three_channels(tmp_path):
    """Version 4 added the tokenizer's `channels`; a version-3 tokenizer (no such field) loads as the colour
    decoder it was."""
    torch.manual_seed(0)
    tok = argen.create("vq-tiny").eval()
    argen.save(tok, tmp_path / "t")
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    meta["version"] = 3
    del meta["config"]["channels"]
    (tmp_path / "t" / "config.json").write_text(json.dumps(meta))
    old = argen.load(tmp_path / "t")
    assert old.config.channels == 3
    ids = torch.randint(0, 256, (1, 64))
    assert torch.equal(old.decode(ids), tok.decode(ids))
    assert not torch.equal(old.decode(ids)[:, 0], old.decode(ids)[:, 1])  # three independent channels


@pytest.mark.parametrize("preset", ["fmnist-mar-tiny", "fmnist-ar-diffusion-tiny"])
def test_version_4_diffusion_heads_sample_unclipped(preset, tmp_path):
    """Version 5 added the diffusion head's `x0_clip`; a version-4 MAR / causal-diffusion pipeline (no such field)
    loads as the unclipped sampler it was, with the same samples."""
    torch.manual_seed(0)
    pipe = argen.create(preset).eval()
    pipe.save(tmp_path / "p")
    for f in (tmp_path / "p").rglob("config.json"):  # what argen with config version 4 wrote
        meta = json.loads(f.read_text())
        meta["version"] = 4
        meta["config"].get("head", {}).pop("x0_clip", None)
        f.write_text(json.dumps(meta))
    old = argen.load(tmp_path / "p")
    assert old.generator.config.head.x0_clip is None
    kw = dict(seed=0, num_steps=2) if "mar" in preset else dict(seed=0)
    assert torch.equal(old.sample_tokens([1, 2], **kw), pipe.sample_tokens([1, 2], **kw))
    for f in (tmp_path / "p").rglob("config.json"):  # claiming version 5, the same files are refused
        f.write_text(json.dumps({**json.loads(f.read_text()), "version": CONFIG_VERSION}))
    with pytest.raises(CheckpointError, match="x0_clip"):
        argen.load(tmp_path / "p")
