"""MAR: continuous tokens, the MAE-style encoder/decoder, training masks, the sampling schedule and order,
the diffusion head in the loop (CFG, temperature, steps), editing, and a tiny model that learns."""
import math

import pytest
import torch

import argen
from argen.generators.mar import MARConfig, MARGenerator
from argen.heads.diffusion import DiffusionHeadConfig
from argen.sampling import generate
from argen.sampling.loop import resolve_options
from argen.sampling.samplers import sampler_for
from gen_helpers import class_conditioner, embed, perturb

L, D = 12, 4
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny(**kw):
    torch.manual_seed(0)
    kw = {"encoder_depth": 1, "decoder_depth": 1, **kw}
    cfg = MARConfig(scales=((3, 4),), token_dim=D, dim=32, num_heads=4, buffer_size=2, attn_dropout=0.0,
                    proj_dropout=0.0, num_steps=4,
                    head=DiffusionHeadConfig(token_dim=D, cond_dim=32, depth=1, width=32, batch_mul=2,
                                             sampling_steps=5), **kw)
    g = MARGenerator(cfg)
    perturb(g, scale=0.1)
    return g.eval(), class_conditioner(g)


def test_encoder_sees_only_known_tokens_and_the_ragged_path_agrees():
    g, cond = tiny()
    c = embed(cond, [0, 1])
    tokens = torch.randn(2, L, D)
    known = torch.zeros(2, L, dtype=torch.bool)
    known[:, :5] = True
    with torch.no_grad():
        z = g.condition(tokens, known, c)
        changed = tokens.clone()
        changed[:, 5:] = torch.randn(2, L - 5, D)  # unknown tokens' values must not matter
        assert torch.allclose(g.condition(changed, known, c), z, atol=1e-6)
        assert not torch.allclose(g.condition(tokens, torch.ones_like(known), c), z, atol=1e-4)
        # rows with different known counts (editing) take the key-mask path; each row equals its own computation
        ragged = known.clone()
        ragged[1, 5:8] = True
        both = g.condition(tokens, ragged, c)
        for b in range(2):
            alone = g.condition(tokens[b:b + 1], ragged[b:b + 1], c.rows(b, b + 1))
            torch.testing.assert_close(both[b:b + 1], alone, atol=1e-5, rtol=0)
    assert z.shape == (2, L, 32)


def test_training_masks_take_a_truncated_normal_share_of_each_order():
    g, _ = tiny()
    rng = torch.Generator().manual_seed(0)
    counts = [int(g.training_mask(2, rng, torch.device("cpu")).sum(1)[0]) for _ in range(300)]
    assert min(counts) >= math.ceil(0.7 * L) - 1 and max(counts) <= L
    order = torch.stack([torch.randperm(L, generator=rng) for _ in range(2)])
    mask = g.training_mask(2, None, torch.device("cpu"), order=order, num_masked=5)
    for b in range(2):
        assert set(order[b, :5].tolist()) == set(mask[b].nonzero().flatten().tolist())


def test_loss_is_deterministic_given_order_count_timesteps_and_noise():
    g, cond = tiny()
    tokens = torch.randn(2, L, D)
    c = embed(cond, [1, 2])
    order = torch.stack([torch.randperm(L) for _ in range(2)])
    n = 2 * 2 * L  # batch_mul x all positions (the head masks the loss)
    t = torch.randint(0, 1000, (n,))
    noise = torch.randn(n, D)
    a = g.loss(tokens, c, order=order, num_masked=7, timesteps=t, noise=noise)
    b = g.loss(tokens, c, order=order, num_masked=7, timesteps=t, noise=noise)
    assert torch.equal(a.loss, b.loss) and a.metrics["mask_ratio"] == pytest.approx(7 / L)
    other = g.loss(tokens, c, order=order, num_masked=3, timesteps=t, noise=noise)
    assert not torch.equal(a.loss, other.loss)
    with pytest.raises(ValueError, match="num_masked"):
        g.loss(tokens, c, order=order, num_masked=0, timesteps=t, noise=noise)
    with pytest.raises(ValueError, match=r"float \(B, 12, 4\)"):
        g.loss(torch.zeros(2, L, dtype=torch.long), c)


@pytest.mark.parametrize("steps", [1, 4, L])
def test_the_schedule_reveals_the_end_of_each_order_first(steps):
    g, cond = tiny()
    c = embed(cond, [0, 1])
    opts, dec = resolve_options(g, num_steps=steps, order=7)
    sampler = sampler_for(g)(g, opts, dec)
    rng = torch.Generator().manual_seed(0)
    state = sampler.begin(c, 2, rng)
    order = state.order.clone()
    revealed, left = [], L
    while not state.done:
        z = sampler.predict(state, rng)
        k = int(state.to_predict[0].sum())
        positions = set(state.to_predict[0].nonzero().flatten().tolist())
        assert positions == set(order[0, left - k:left].tolist())  # the end of the order first
        x, s = g.head.sample(z, opts, rng)
        sampler.commit(state, x, s, rng=rng, cfg_scale=1.0)
        revealed.append(k)
        left -= k
    expect, masked = [], L
    for k in range(steps):
        after = max(1, min(masked - 1, math.floor(L * math.cos(math.pi / 2 * (k + 1) / steps))))
        expect.append(masked if k + 1 == steps else masked - after)
        masked -= expect[-1]
    assert revealed == expect and sum(revealed) == L and bool(state.known.all())


def test_linear_cfg_ramps_over_the_fraction_decided_after_each_step():
    g, cond = tiny()
    scales = []
    from argen.sampling import guidance_scale

    opts, dec = resolve_options(g, cfg=3.0, cfg_schedule="linear", num_steps=4)
    sampler = sampler_for(g)(g, opts, dec)
    rng = torch.Generator().manual_seed(0)
    state = sampler.begin(embed(cond, [0], guided=True), 1, rng)
    while not state.done:
        z = sampler.predict(state, rng)
        scales.append(guidance_scale(3.0, "linear", progress=sampler.progress(state)))
        x, s = g.head.sample(z, opts, rng, cfg_scale=scales[-1], guided=True)
        sampler.commit(state, x, s, rng=rng, cfg_scale=scales[-1])
    masked = [max(1, min(m - 1, math.floor(L * math.cos(math.pi / 2 * (k + 1) / 4)))) for k, m in
              zip(range(4), [12, 11, 8, 4])]
    assert scales == pytest.approx([1 + 2.0 * (L - m) / L for m in masked])  # never exactly 3 at the end


def test_sampling_options_steps_and_temperature():
    g, cond = tiny()
    a = generate(g, cond, [0, 1], seed=0, cfg=2.0)
    assert a.shape == (2, L, D) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, generate(g, cond, [0, 1], seed=0, cfg=2.0))
    assert not torch.equal(a, generate(g, cond, [0, 1], seed=0, cfg=2.0, diffusion_steps=3))
    cold = generate(g, cond, [0, 1], seed=1, temperature=0.0)  # temperature scales the per-step noise only
    assert torch.isfinite(cold).all() and not torch.equal(cold, generate(g, cond, [0, 1], seed=1, temperature=1.0))
    with pytest.raises(ValueError, match="diffusion_steps"):
        generate(g, cond, [0], diffusion_steps=1)
    with pytest.raises(ValueError, match="unknown sampling option.*choice_temperature"):
        generate(g, cond, [0], choice_temperature=1.0)
    # x0_clip reaches the head: every drawn token (the last denoising step's x_0) inside the bound
    free = generate(g, cond, [0, 1], seed=0, cfg=2.0, x0_clip=0.0)
    assert torch.equal(free, a)  # the config's default is unclipped
    bound = 0.5 * float(free.abs().max())
    clipped = generate(g, cond, [0, 1], seed=0, cfg=2.0, x0_clip=bound)
    assert clipped.abs().max() <= bound and not torch.equal(clipped, free)
    with pytest.raises(ValueError, match="x0_clip must be a finite number >= 0"):
        generate(g, cond, [0], x0_clip=-1.0)


def test_tiny_model_learns():
    torch.manual_seed(0)
    g, cond = tiny()
    g.train()
    tokens = torch.randn(4, L, D, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([*g.parameters(), *cond.parameters()], lr=3e-3)
    rng = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        out = g.loss(tokens, embed(cond, [0, 1, 2, 3]), rng=rng)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_presets_and_pipeline():
    from argen.presets import get_config

    cfg = get_config("mar-b")
    assert (cfg.dim, cfg.encoder_depth, cfg.buffer_size, cfg.head.depth, cfg.head.width) == (768, 12, 64, 6, 1024)
    pipe = argen.create("fmnist-mar-tiny")
    assert pipe.tokenizer.layout == pipe.generator.layout  # continuous 8x8 x 4 tokens
    images = pipe(["bag", -1], seed=0, num_steps=2)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1


def test_cfg_refresh_runs_the_unconditional_rows_every_nth_step_only():
    """The condition cache (cfg_refresh > 1) skips the uncond half of the network on the steps in between;
    1 is exact MAR, and without guidance it changes nothing."""
    g, cond = tiny()
    rows = []
    real = g.condition

    def counted(tokens, known, c, **kw):
        rows.append(tokens.shape[0])
        return real(tokens, known, c, **kw)

    g.condition = counted
    exact = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4)
    assert rows == [4, 4, 4, 4]
    rows.clear()
    lazy = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, cfg_refresh=2)
    assert rows == [4, 2, 4, 2]  # steps 1 and 3 run the two conditional rows only
    assert lazy.shape == exact.shape and not torch.equal(lazy, exact)  # an approximation, not exact MAR
    assert torch.equal(generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, cfg_refresh=1), exact)
    rows.clear()
    plain = generate(g, cond, [0, 1], seed=0, cfg=1.0, num_steps=4)
    assert torch.equal(generate(g, cond, [0, 1], seed=0, cfg=1.0, num_steps=4, cfg_refresh=3), plain)
    with pytest.raises(ValueError, match="cfg_refresh"):
        generate(g, cond, [0], cfg_refresh=0)
