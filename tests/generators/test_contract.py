"""The generator contract, checked for every registered generator kind from its tiny preset (as the quantizer
contract is): incremental decoding == the network's full forward, save -> load identical, seeded
determinism, cfg=1 == no guidance, editing keeps known tokens. A kind without a tiny preset or a sampler
fails here."""
import pytest
import torch

import argen
from argen import registry
from argen.generators.base import GeneratorConfig
from argen.presets import get_config, tiny_preset
from argen.sampling import Force, generate
from argen.sampling.samplers import sampler_for
from argen.tokenizers.base import token_shape
from gen_helpers import class_conditioner, embed, perturb, teacher_forced

KINDS = registry.names(GeneratorConfig)
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def build(kind: str):
    cfg = get_config(tiny_preset(kind))
    assert isinstance(cfg, GeneratorConfig) and type(cfg).kind == kind
    torch.manual_seed(0)
    g = registry.build(cfg)
    perturb(g)
    return g.eval(), class_conditioner(g, num_classes=4)


def random_tokens(g, batch: int, seed: int = 0) -> torch.Tensor:
    layout = g.layout
    shape = token_shape(layout, batch)
    gen = torch.Generator().manual_seed(seed)
    if layout.discrete:
        return torch.randint(0, layout.vocab_size, shape, generator=gen)
    return torch.randn(shape, generator=gen)


def test_every_kind_has_a_tiny_preset_and_a_sampler():
    assert {"raster", "random-order", "pixel-ar", "next-scale", "masked", "mar"} <= set(KINDS)
    for kind in KINDS:
        tiny_preset(kind)  # ConfigError without one
        g, _ = build(kind)
        sampler_for(g)  # ValueError without one


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_incremental_decoding_equals_the_full_forward(kind, guided):
    g, cond = build(kind)
    c = embed(cond, [0, 3, -1], guided=guided)
    tokens = random_tokens(g, 3)
    steps = 0
    for state, sampler, out in teacher_forced(g, c, tokens):
        assert out.shape[0] % c.batch_size == 0  # R rows (or R x the step's tokens, flattened: MAR)
        with torch.no_grad():
            ref = sampler.reference(state, c)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
        steps += 1
    assert steps >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_samples(kind, tmp_path):
    g, cond = build(kind)
    argen.save(g, tmp_path / "gen")
    back = argen.load(tmp_path / "gen")
    assert type(back) is type(g) and back.config == g.config
    a = generate(g, cond, [0, 1, -1], seed=3, cfg=2.0, top_k=20)
    assert torch.equal(a, generate(back, cond, [0, 1, -1], seed=3, cfg=2.0, top_k=20))


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_determinism(kind):
    g, cond = build(kind)
    a = generate(g, cond, [0, 1, 2], seed=0, cfg=1.5)
    assert a.shape == token_shape(g.layout, 3)
    assert torch.equal(a, generate(g, cond, [0, 1, 2], seed=0, cfg=1.5))
    assert not torch.equal(a, generate(g, cond, [0, 1, 2], seed=1, cfg=1.5))
    rng = torch.Generator().manual_seed(0)  # an explicit generator is the same as its seed
    assert torch.equal(a, generate(g, cond, [0, 1, 2], rng=rng, cfg=1.5))


@pytest.mark.parametrize("kind", KINDS)
def test_cfg_one_is_no_guidance(kind):
    """cfg=1 samples the conditional model; the guided code path with a scale of 1 at every step (an interval
    schedule that never switches on) gives exactly the same tokens: the uncond rows never leak."""
    g, cond = build(kind)
    plain = generate(g, cond, [0, 1, 2], seed=4)
    doubled = generate(g, cond, [0, 1, 2], seed=4, cfg=5.0, cfg_schedule="interval", cfg_interval=(2.0, 3.0))
    if g.layout.discrete:
        assert torch.equal(plain, doubled)
    else:  # rows run in a batch of 3 or of 6, so fp32 rounding may differ, and continuous tokens carry it on
        # (amplified by an untrained head's large outputs); a leaking uncond row would differ at full scale
        assert (plain - doubled).abs().max() <= 1e-4 * plain.abs().max()
    assert not torch.allclose(plain.float(), generate(g, cond, [0, 1, 2], seed=4, cfg=5.0).float(), rtol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_editing_keeps_known_tokens(kind):
    g, cond = build(kind)
    known = random_tokens(g, 2, seed=5)
    B, P = known.shape[:2]
    mask = torch.rand(B, P, generator=torch.Generator().manual_seed(6)) < 0.5
    out = generate(g, cond, [1, 2], seed=0, force=Force(known, mask))
    assert torch.equal(out[mask], known[mask])
    everything = generate(g, cond, [1, 2], seed=0, force=Force(known, torch.ones(B, P, dtype=torch.bool)))
    assert torch.equal(everything, known)
