"""Masked generation (MaskGIT): bidirectional network, training masks, the decoding schedule with confidence
re-masking, any number of steps, CFG, editing, and a tiny model that learns."""
import math

import pytest
import torch

import argen
from argen import registry
from argen.generators.masked import MaskedConfig, MaskedGenerator
from argen.presets import get_config
from argen.sampling import generate
from argen.sampling.schedules import mask_ratio
from gen_helpers import class_conditioner, embed, perturb

V, N = 40, 12
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny(**kw):
    torch.manual_seed(0)
    g = MaskedGenerator(MaskedConfig(vocab_size=V, scales=((3, 4),), dim=32, depth=2, num_heads=4, dropout=0.0,
                                     attn_dropout=0.0, num_steps=4, **kw))
    perturb(g)
    return g.eval(), class_conditioner(g)


def test_attention_is_bidirectional_and_mask_id_is_special():
    g, cond = tiny()
    c = embed(cond, [1, 2])
    a = torch.randint(0, V, (2, N))
    b = a.clone()
    b[:, -1] = (b[:, -1] + 1) % V  # change only the last token
    with torch.no_grad():
        la, lb = g(a, c), g(b, c)
    assert la.shape == (2, N, V)
    assert (la[:, 0] - lb[:, 0]).abs().max() > 1e-4  # position 0 sees the future (unlike raster)
    masked = a.clone()
    masked[:, 3] = g.config.mask_id
    with torch.no_grad():
        assert not torch.allclose(g(masked, c), la, atol=1e-4)
    with pytest.raises(ValueError, match=r"\[MASK\] = 40"):
        g(torch.zeros(2, N + 1, dtype=torch.long), c)


def test_training_masks_follow_the_schedule_and_the_loss_counts_masked_positions_only():
    g, cond = tiny(label_smoothing=0.0)
    rng = torch.Generator().manual_seed(0)
    masks = g.random_mask(4000, rng, torch.device("cpu"))
    counts = masks.sum(1).float()
    assert counts.min() >= 1 and counts.max() <= N
    # E[ceil(cos(pi r / 2) N)] over r ~ U(0, 1): about 2N / pi + 1/2
    assert abs(counts.mean().item() - (2 * N / math.pi + 0.5)) < 0.3
    tokens = torch.randint(0, V, (3, N))
    mask = torch.zeros(3, N, dtype=torch.bool)
    mask[:, :5] = True
    c = embed(cond, [0, 1, 2])
    out = g.loss(tokens, c, mask=mask)
    with torch.no_grad():
        logits = g(tokens.masked_fill(mask, g.config.mask_id), c)
    ref = torch.nn.functional.cross_entropy(logits[mask], tokens[mask])
    torch.testing.assert_close(out.loss, ref)
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V  # visible (unmasked) tokens change the inputs, not the targets
    assert not torch.allclose(g.loss(changed, c, mask=mask).loss, out.loss)


def test_label_smoothing_changes_the_objective_not_the_reported_nll():
    g, cond = tiny(label_smoothing=0.1)
    plain, _ = tiny(label_smoothing=0.0)
    tokens, mask = torch.randint(0, V, (2, N)), torch.rand(2, N) < 0.5
    c = embed(cond, [0, 1])
    smooth, hard = g.loss(tokens, c, mask=mask), plain.loss(tokens, c, mask=mask)
    torch.testing.assert_close(smooth.metrics["nll"], hard.metrics["nll"])
    assert not torch.allclose(smooth.loss, hard.loss)


@pytest.mark.parametrize("steps", [1, 4, N])
def test_each_step_reveals_what_the_schedule_says(steps):
    g, cond = tiny()
    c = embed(cond, [0, 3])
    known_after = []
    from argen.sampling.loop import resolve_options
    from argen.sampling.samplers import sampler_for

    opts, dec = resolve_options(g, num_steps=steps)
    sampler = sampler_for(g)(g, opts, dec)
    rng = torch.Generator().manual_seed(1)
    state = sampler.begin(c, 2, rng)
    while not state.done:
        logits = sampler.predict(state, rng)
        sampled, scores = g.head.sample(logits, opts, rng)
        sampler.commit(state, sampled, scores, rng=rng, cfg_scale=1.0)
        known_after.append(int(state.known[0].sum()))
    expect, prev = [], N
    for t in range(steps):
        r = (t + 1) / steps
        masked = 0 if t + 1 == steps else min(max(math.floor(N * mask_ratio(r)), 1), prev - 1)
        expect.append(N - masked)
        prev = masked
    assert known_after == expect and known_after[-1] == N
    assert (state.tokens < V).all()  # no [MASK] left


def test_greedy_with_no_choice_noise_reveals_the_most_confident_positions():
    g, cond = tiny()
    out = generate(g, cond, [0, 1], temperature=0.0, choice_temperature=0.0, num_steps=3)
    assert out.shape == (2, N) and (out < V).all()
    assert torch.equal(out, generate(g, cond, [0, 1], temperature=0.0, choice_temperature=0.0, num_steps=3, seed=9))
    # the first step keeps the positions whose argmax probability is highest
    from argen.sampling.loop import resolve_options
    from argen.sampling.samplers import sampler_for

    c = embed(cond, [0, 1])
    opts, dec = resolve_options(g, temperature=0.0, choice_temperature=0.0, num_steps=3)
    sampler = sampler_for(g)(g, opts, dec)
    rng = torch.Generator().manual_seed(0)
    state = sampler.begin(c, 2, rng)
    logits = sampler.predict(state, rng)
    sampled, scores = g.head.sample(logits, opts, rng)
    sampler.commit(state, sampled, scores, rng=rng, cfg_scale=1.0)
    revealed = state.known
    k = int(revealed[0].sum())
    top = logits.log_softmax(-1).max(-1).values.topk(k, dim=1).indices
    assert torch.equal(revealed.nonzero()[:, 1].view(2, k).sort(1).values, top.sort(1).values)


def test_seeds_cfg_and_editing():
    g, cond = tiny()
    a = generate(g, cond, [0, 1, 2], seed=0, cfg=3.0, top_k=10)
    assert torch.equal(a, generate(g, cond, [0, 1, 2], seed=0, cfg=3.0, top_k=10))
    assert not torch.equal(a, generate(g, cond, [0, 1, 2], seed=1, cfg=3.0, top_k=10))
    known = torch.randint(0, V, (2, N))
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[:, ::2] = True
    out = generate(g, cond, [0, 1], seed=0, force=(known, mask), num_steps=2)
    assert torch.equal(out[mask], known[mask]) and (out < V).all()


def test_tiny_model_learns_and_decodes_in_parallel():
    torch.manual_seed(0)
    g = MaskedGenerator(MaskedConfig(vocab_size=32, scales=((4, 4),), dim=64, depth=2, num_heads=4, dropout=0.0,
                                     attn_dropout=0.0, label_smoothing=0.0))
    cond = class_conditioner(g, num_classes=4)
    tokens = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([*g.parameters(), *cond.parameters()], lr=3e-3)
    rng = torch.Generator().manual_seed(0)
    g.train()
    for _ in range(150):
        out = g.loss(tokens, embed(cond, [0, 1, 2, 3]), rng=rng)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.metrics["nll"].item() < 0.3
    decoded = generate(g, cond, [0, 1, 2, 3], temperature=0.0, choice_temperature=0.0, num_steps=4)
    assert (decoded == tokens).float().mean() > 0.9  # the memorised grids, decoded 4 tokens at a time


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="num_steps"):
        MaskedConfig(vocab_size=V, scales=((3, 4),), dim=32, num_heads=4, num_steps=13)
    with pytest.raises(ValueError, match="one token grid"):
        MaskedConfig(scales=((1, 1), (2, 2)))
    g, cond = tiny()
    with pytest.raises(ValueError, match="num_steps"):
        generate(g, cond, [0], num_steps=N + 1)
    with pytest.raises(ValueError, match="unknown sampling option.*order"):
        generate(g, cond, [0], order="raster")  # random-order only
    cfg = get_config("maskgit-b")
    assert (cfg.depth, cfg.dim, cfg.num_heads, cfg.vocab_size, cfg.grid, cfg.num_steps) == (24, 768, 16, 1024, (16, 16), 8)
    with torch.device("meta"):
        big = registry.build(cfg)
    assert 170e6 < sum(p.numel() for p in big.parameters()) < 175e6
    pipe = argen.create("fmnist-maskgit-tiny")
    assert pipe(["bag", "sneaker"], seed=0).shape == (2, 3, 32, 32)
