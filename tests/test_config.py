from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
from torch import nn

import argen
from argen import registry
from argen.config import Config, MissingFieldsError, apply_overrides, from_dict, to_dict
from argen.errors import CheckpointError, ConfigError
from argen.saving import check_state_dict, load, save


@dataclass(frozen=True, kw_only=True)
class _PartConfig(Config):
    width: int = 4


@dataclass(frozen=True, kw_only=True)
class _PartA(_PartConfig):
    act: Literal["relu", "gelu"] = "relu"


@dataclass(frozen=True, kw_only=True)
class _PartB(_PartConfig):
    scale: float = 1.0


@dataclass(frozen=True, kw_only=True)
class _ToyConfig(Config):
    depth: int = 2
    dims: tuple[int, ...] = (3, 4)
    scales: tuple[tuple[int, int], ...] = ((1, 1), (2, 3))
    name: str | None = None
    use_bias: bool = True
    part: _PartConfig = field(default_factory=_PartA)

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")


@registry.register("_test_part_a", _PartA)
class _ToyPartA(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config


@registry.register("_test_part_b", _PartB)
class _ToyPartB(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config


@registry.register("_test_toy", _ToyConfig)
class _Toy(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(nn.Linear(config.part.width, config.part.width, bias=config.use_bias)
                                    for _ in range(config.depth))
        self.tied = self.layers[0]  # alias: tied module appears twice in state_dict
        self.register_buffer("counter", torch.zeros(3))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_json_round_trip_keeps_nested_kind():
    cfg = _ToyConfig(depth=3, part=_PartB(width=8, scale=2.0))
    d = to_dict(cfg)
    assert d["part"]["kind"] == "_test_part_b"
    back = from_dict(_ToyConfig, d)
    assert back == cfg and isinstance(back.part, _PartB)


def test_overrides_coerce_types():
    cfg = apply_overrides(_ToyConfig(), ["depth=5", "dims=1,2,3", "scales=[[1,1],[4,2]]", "use_bias=false",
                                         "part.width=16", "part.act=gelu", "name=none"])
    assert cfg.depth == 5 and cfg.dims == (1, 2, 3) and cfg.scales == ((1, 1), (4, 2))
    assert cfg.use_bias is False and cfg.part.width == 16 and cfg.part.act == "gelu" and cfg.name is None


def test_override_swaps_polymorphic_kind():
    cfg = apply_overrides(_ToyConfig(), ["part.kind=_test_part_b", "part.scale=0.5"])
    assert isinstance(cfg.part, _PartB) and cfg.part.scale == 0.5


@pytest.mark.parametrize("bad, fragment", [
    ("dpth=3", "allowed"),
    ("depth=abc", "expected an integer"),
    ("depth=0", "depth must be >= 1"),
    ("part.act=tanh", "choose one of"),
    ("part.nope=1", "unknown key 'part.nope'"),
    ("use_bias=maybe", "expected true or false"),
    ("depth", "key=value"),
    ("part.kind=_test_toy", "not a _PartConfig"),
])
def test_bad_overrides_say_what_is_allowed(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(_ToyConfig(), [bad])


def test_configs_are_frozen():
    with pytest.raises(Exception):
        _ToyConfig().depth = 3  # type: ignore[misc]


def test_save_load_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = registry.build(_ToyConfig(depth=3))
    model.counter += 2
    save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = argen.load(tmp_path / "m")
    x = torch.randn(5, 4)
    assert torch.equal(model(x), loaded(x))
    assert torch.equal(loaded.counter, model.counter)
    assert loaded.config == model.config


def test_load_reports_mismatch_and_truncation(tmp_path):
    model = registry.build(_ToyConfig(depth=2))
    save(model, tmp_path / "m")
    # config says depth 3 but weights have 2 layers -> missing keys reported, not ignored
    text = (tmp_path / "m" / "config.json").read_text().replace('"depth": 2', '"depth": 3')
    (tmp_path / "m" / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match="missing from the file: layers.2.weight"):
        load(tmp_path / "m")
    save(model, tmp_path / "t")
    w = tmp_path / "t" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="changed since it was saved: corrupt or replaced"):
        load(tmp_path / "t")  # the recorded checksum catches it first
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path / "t", verify=False)
    with pytest.raises(CheckpointError, match="config.json not found"):
        load(tmp_path / "nothing")


def test_check_state_dict_shape_report():
    model = registry.build(_ToyConfig(depth=1))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.0.weight"] = torch.zeros(2, 2)
    sd["extra"] = torch.zeros(1)
    rep = check_state_dict(model, sd)
    assert rep.unexpected == ["extra"] and rep.mismatched[0][0] == "layers.0.weight" and not rep.ok


def test_registry_rejects_unknown_kind():
    with pytest.raises(ConfigError, match="unknown kind"):
        registry.config_class("definitely-not-a-kind")


# ----------------------------------------------------------------------------- strict reading (saved configs)

@dataclass(frozen=True, kw_only=True)
class _Plain(Config):  # a plain nested group (no kind)
    a: int = 1
    b: float = 2.0


@dataclass(frozen=True, kw_only=True)
class _NestedConfig(Config):
    part: _PartConfig = field(default_factory=_PartA)
    maybe: _Plain | None = None
    parts: tuple[_Plain, ...] = ()
    top: int = 0


def test_require_all_names_every_absent_field_by_its_dotted_path():
    data = to_dict(_NestedConfig(maybe=_Plain(), parts=(_Plain(), _Plain())))
    assert from_dict(_NestedConfig, data, require_all=True) == _NestedConfig(maybe=_Plain(), parts=(_Plain(), _Plain()))
    del data["top"], data["part"]["act"], data["maybe"]["b"]
    with pytest.raises(MissingFieldsError) as e:
        from_dict(_NestedConfig, data, require_all=True)
    assert sorted(e.value.paths) == ["maybe.b", "part.act", "top"]  # inside an Optional too, not "cannot read"
    assert isinstance(e.value, ConfigError) and "missing fields" in str(e.value)
    del data["parts"][1]["a"]
    with pytest.raises(MissingFieldsError, match=r"parts\[1\]\.a"):
        _NestedConfig.from_dict(data, require_all=True)
    lenient = from_dict(_NestedConfig, data)  # the default: absent fields take their defaults
    assert lenient.top == 0 and lenient.part.act == "relu" and lenient.maybe.b == 2.0


@pytest.mark.parametrize("name", argen.list_presets())
def test_every_preset_writes_every_field_nested_ones_too(name):
    from argen.presets import get_config

    cfg = get_config(name)
    assert from_dict(type(cfg), to_dict(cfg), require_all=True) == cfg
