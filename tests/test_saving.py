"""Loading builds the model on the meta device (no random init) and assigns the saved tensors; anything that
cannot be built or filled that way falls back to a normal build. Both paths must give the saved model."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import argen
from argen import registry
from argen.config import Config
from argen.saving import deferred_init, save


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
