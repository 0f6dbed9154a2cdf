"""Loading builds the model on the meta device (no random init) and assigns the saved tensors; anything that
cannot be built or filled that way falls back to a normal build. Both paths must give the saved model."""
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import argen
from argen import registry
from argen.config import Config
from argen.errors import CheckpointError
from argen.saving import deferred_init, load, save


@dataclass(frozen=True, kw_only=True)
class _NetConfig(Config):
    width: int = 4
    fill: float = 3.0


@registry.register("_test_saving_net", _NetConfig)
class _Net(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, config.width)
        self.emb = nn.Embedding(5, config.width)
        nn.init.trunc_normal_(self.lin.weight, std=0.02)
        with torch.no_grad():
            self.lin.weight.mul_(2.0)
        self.frozen = nn.Linear(config.width, 2)
        self.frozen.requires_grad_(False)
        self.register_buffer("steps", torch.arange(config.width).float(), persistent=False)  # constant: stays real

    def forward(self, x):
        return self.frozen(self.lin(x) + self.emb.weight[:1] + self.steps)


@dataclass(frozen=True, kw_only=True)
class _FilledConfig(_NetConfig):
    pass


@registry.register("_test_saving_filled", _FilledConfig)
class _Filled(_Net):
    """A non-persistent buffer filled in place from torch.empty: on meta it would stay empty -> fallback."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("fill", torch.empty(2).fill_(config.fill), persistent=False)

    def forward(self, x):
        return super().forward(x) * self.fill


def test_deferred_init_puts_parameters_on_meta_and_keeps_constant_buffers():
    model = deferred_init(lambda: registry.build(_NetConfig()))
    assert model is not None
    assert all(p.is_meta for p in model.parameters())
    assert not model.steps.is_meta and torch.equal(model.steps, torch.arange(4).float())


def test_load_via_meta_gives_the_saved_model(tmp_path):
    torch.manual_seed(0)
    model = registry.build(_NetConfig())
    save(model, tmp_path / "m")
    loaded = argen.load(tmp_path / "m")
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    assert isinstance(loaded.lin.weight, nn.Parameter)
    loaded.train()
    loaded(x).sum().backward()  # trainable after loading
    assert loaded.lin.weight.grad is not None and loaded.frozen.weight.grad is None


def test_load_falls_back_when_a_buffer_needs_real_init(tmp_path):
    torch.manual_seed(0)
    model = registry.build(_FilledConfig(fill=3.0))
    save(model, tmp_path / "m")
    loaded = argen.load(tmp_path / "m")
    assert torch.equal(loaded.fill, torch.full((2,), 3.0))
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))


def test_load_casts_saved_dtype_to_the_models(tmp_path):
    model = registry.build(_NetConfig()).to(torch.bfloat16)
    save(model, tmp_path / "m")
    loaded = argen.load(tmp_path / "m")
    assert loaded.lin.weight.dtype == torch.float32  # as a copy into the built model would give
    assert torch.equal(loaded.lin.weight, model.lin.weight.float())


@pytest.mark.parametrize("name", [n for n in argen.list_presets() if n.endswith("-tiny")])
def test_every_tiny_preset_loads_through_the_meta_path_unchanged(name, tmp_path):
    # A module that computes a buffer from an uninitialised tensor (or ties weights) would silently send loading
    # back to the slow build; this keeps the fast path in use for every registered family.
    from argen.presets import get_config
    from argen.saving import _leftover_meta, load_state_dict_checked, read_model

    cfg = get_config(name)
    torch.manual_seed(0)
    model = registry.build(cfg)
    save(model, tmp_path / "m")
    fast = deferred_init(lambda: registry.build(cfg))
    assert fast is not None
    _, state = read_model(tmp_path / "m")  # a pipeline's component folders, assembled
    load_state_dict_checked(fast, state, assign=True)
    assert _leftover_meta(fast) == []
    loaded = argen.load(tmp_path / "m")
    want = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    got = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)  # non-persistent constants included


# ----------------------------------------------------------------------------- file modes

@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    before = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(before)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_artefacts_get_the_mode_the_umask_gives_a_new_file(umask, mask, mode, tmp_path):
    # A web server running as another account must be able to read saved models (mkstemp made them 0600).
    from argen.imageio import save_image
    from argen.saving import atomic_torch_save, atomic_write_text

    umask(mask)
    save(registry.build(_NetConfig()), tmp_path / "m")
    atomic_write_text(tmp_path / "run.json", "{}\n")
    atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "state.pt")
    save_image(torch.zeros(3, 4, 4), tmp_path / "image.png")
    files = [tmp_path / "m" / "config.json", tmp_path / "m" / "model.safetensors", tmp_path / "run.json",
             tmp_path / "state.pt", tmp_path / "image.png"]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: mode for f in files}
    # a file rewritten gets the mode of a new one too (so files left 0600 by earlier argen become readable)
    (tmp_path / "run.json").chmod(0o600)
    atomic_write_text(tmp_path / "run.json", "{}\n")
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == mode
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_path_removes_its_temp_and_keeps_the_target_on_error(tmp_path):
    from argen.saving import atomic_path

    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert tmp.parent == tmp_path and tmp.name.startswith(f".a.json.{os.getpid()}-")
            raise ValueError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a writer")
def test_remove_stale_temps_keeps_complete_files_and_live_writers(tmp_path):
    import multiprocessing
    import signal

    from argen.saving import remove_stale_temps

    ctx = multiprocessing.get_context("fork")
    dead = ctx.Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    (tmp_path / "step-00000002.pt").write_bytes(b"complete")
    (tmp_path / "latest").write_text("step-00000002.pt\n")
    stale = [tmp_path / f".step-00000004.pt.{dead.pid}-0123abcd.tmp",  # its writer was killed
             tmp_path / ".latest.k2j_x9qa.tmp"]  # earlier argen (mkstemp), no pid: never a live write of this one
    live = [tmp_path / f".log.jsonl.{os.getpid()}-89abcdef.tmp"]  # this process: may be writing it right now
    sleeper = ctx.Process(target=signal.pause)
    sleeper.start()
    try:
        live.append(tmp_path / f".step-00000006.pt.{sleeper.pid}-00ff00ff.tmp")
        for p in stale + live:
            p.write_bytes(b"partial")
        assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    finally:
        sleeper.kill()
        sleeper.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["step-00000002.pt", "latest", *(p.name for p in live)])


# ----------------------------------------------------------------------------- integrity on load

def _meta(directory):
    return json.loads((directory / "config.json").read_text())


def test_saving_records_the_weights_checksum(tmp_path):
    save(registry.build(_NetConfig()), tmp_path / "m")
    digest = hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest()
    assert _meta(tmp_path / "m")["weights_sha256"] == digest


def test_changed_weights_are_refused_unless_verify_is_off(tmp_path):
    torch.manual_seed(0)
    save(registry.build(_NetConfig()), tmp_path / "a")
    torch.manual_seed(1)
    other = registry.build(_NetConfig())
    save(other, tmp_path / "b")
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")  # a valid file, replaced
    with pytest.raises(CheckpointError, match=r"a/model.safetensors: the weights file changed since it was saved: "
                                              r"corrupt or replaced") as e:
        load(tmp_path / "a")
    assert "\n" not in str(e.value) and "verify=False" in str(e.value)
    loaded = load(tmp_path / "a", verify=False)
    assert torch.equal(loaded.lin.weight, other.lin.weight)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    model = registry.build(_NetConfig())
    with torch.no_grad():
        model.lin.weight[0, 1] = float("nan")
        model.emb.weight[2, 0] = float("-inf")
    save(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'emb.weight' holds 0 NaN and 1 inf"):
        load(tmp_path / "m")
    assert torch.isnan(load(tmp_path / "m", verify=False).lin.weight[0, 1])


def test_directories_without_a_checksum_still_load(tmp_path):
    model = registry.build(_NetConfig())
    save(model, tmp_path / "m")
    meta = _meta(tmp_path / "m")
    del meta["weights_sha256"]  # as saved before checksums (and every version-1 directory)
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    assert torch.equal(load(tmp_path / "m").lin.weight, model.lin.weight)


def test_a_pipeline_names_the_component_whose_weights_changed(tmp_path):
    pipe = argen.create("fmnist-raster-tiny")
    pipe.save(tmp_path / "p")
    assert all("weights_sha256" in _meta(tmp_path / "p" / c) for c in ("tokenizer", "conditioner", "generator"))
    weights = tmp_path / "p" / "generator" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight: still a readable file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"p/generator/model.safetensors: the weights file changed"):
        argen.load(tmp_path / "p")
    load(tmp_path / "p", verify=False)


# ----------------------------------------------------------------------------- strict configs on load

def test_a_saved_config_missing_a_field_is_refused_naming_it(tmp_path):
    # The fault: without quantizer.metric a cosine VQ loaded as euclidean and gave other token ids, silently.
    tok = argen.create("vq-tiny")
    assert tok.config.quantizer.metric == "cosine"
    save(tok, tmp_path / "t")
    meta = _meta(tmp_path / "t")
    del meta["config"]["quantizer"]["metric"]
    del meta["config"]["resolution"]
    (tmp_path / "t" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"t/config.json lacks resolution, quantizer.metric\. A saved config "
                                              r"lists every field") as e:
        load(tmp_path / "t")
    assert "\n" not in str(e.value)
    # lenient reading stays available for configs typed by people (CLI JSON, overrides)
    from argen.config import from_dict

    assert from_dict(type(tok.config), meta["config"]).quantizer.metric == "euclidean"


def test_a_pipeline_names_the_component_file_that_lacks_a_field(tmp_path):
    argen.create("fmnist-raster-tiny").save(tmp_path / "p")
    for rel, drop in [("tokenizer", ("quantizer", "metric")), (".", ("sampling", "top_k"))]:
        path = tmp_path / "p" / rel / "config.json"
        meta = json.loads(path.read_text())
        del meta["config"][drop[0]][drop[1]]
        path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "p")
    msg = str(e.value)
    assert f"{tmp_path / 'p' / 'tokenizer' / 'config.json'} lacks quantizer.metric" in msg
    assert f"{tmp_path / 'p' / 'config.json'} lacks sampling.top_k" in msg
