"""MAR's diffusion head: parity with golden outputs of the official DiffLoss (tiny official-shaped head, weights
rebuilt from a seed; see tests/fixtures/mar/README.md), the fast sampler against the plain per-step network,
guidance, determinism and input checks."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from argen.config import from_dict
from argen.heads import DiffusionHead, DiffusionHeadConfig
from argen.heads.diffusion import Diffusion, beta_schedule, respaced_timesteps
from argen.types import SampleOptions

FIX = Path(__file__).parent.parent / "fixtures" / "mar"
SPEC = json.loads((FIX / "spec.json").read_text())
GOLD = load_file(str(FIX / "golden.safetensors"))
_sw = importlib.util.spec_from_file_location("seeded_weights",
                                             Path(__file__).parent.parent / "interop" / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_sw)
_sw.loader.exec_module(seeded_weights)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py
OPTS = SampleOptions()


def tiny_config(**kw) -> DiffusionHeadConfig:
    d = SPEC["diffloss"]
    fields = dict(token_dim=d["target_channels"], cond_dim=d["z_channels"], depth=d["depth"], width=d["width"],
                  sampling_steps=int(d["num_sampling_steps"]), batch_mul=1)
    return DiffusionHeadConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def head():
    h = DiffusionHead(tiny_config())
    h.load_state_dict(seeded_weights.seeded_state_dict(SPEC["diffloss_table"], SPEC["diffloss_seed"]), strict=True)
    return h.eval()


def random_head(depth=3, width=48, token_dim=4, cond_dim=24, seed=0, **kw) -> DiffusionHead:
    """A head with small random weights (AdaLN and output layers non-zero, unlike a fresh head)."""
    h = DiffusionHead(DiffusionHeadConfig(token_dim=token_dim, cond_dim=cond_dim, depth=depth, width=width,
                                          sampling_steps=8, **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in h.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5 if p.ndim == 2 else 0.05))
    return h.eval()


def rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal up to `tol` relative to b's largest magnitude (untrained denoisers give |x_0| up to ~1e5)."""
    scale = b.abs().max().clamp(min=1.0)
    torch.testing.assert_close(a / scale, b / scale, atol=tol, rtol=0)


# ----------------------------------------------------------------------------- parity with the official code


def test_parameter_names_are_the_official_ones(head):
    assert sorted(head.state_dict()) == [row[0] for row in SPEC["diffloss_table"]]


def test_schedule_tables_match_official():
    full = Diffusion.make("cosine", 1000)
    torch.testing.assert_close(torch.tensor(beta_schedule("cosine", 1000), dtype=torch.float64),
                               GOLD["sched_betas_1000"], atol=1e-15, rtol=0)
    torch.testing.assert_close(full.betas, GOLD["sched_betas_1000"], atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.cumprod(1 - full.betas, 0), GOLD["sched_alphas_cumprod_1000"], atol=1e-12, rtol=0)
    for steps in (100, 10):
        assert respaced_timesteps(1000, steps) == GOLD[f"sched_timestep_map_{steps}"].tolist()
        spaced = Diffusion.make("cosine", 1000, steps)
        torch.testing.assert_close(spaced.betas, GOLD[f"sched_betas_{steps}"], atol=1e-12, rtol=0)


def test_training_terms_match_official(head):
    t = head.terms(GOLD["dl_z"], GOLD["dl_x"], GOLD["dl_t"], GOLD["dl_noise"])
    assert (GOLD["dl_t"] == 0).any()  # the decoder-NLL branch is exercised
    for name, gold in (("mse", "dl_mse"), ("vb", "dl_vb"), ("loss", "dl_loss_terms")):
        torch.testing.assert_close(t[name].detach(), GOLD[gold], atol=1e-5, rtol=1e-5)


def test_loss_matches_official_forward_with_and_without_mask(head):
    kw = dict(timesteps=GOLD["dl_t"], noise=GOLD["dl_noise"])
    out = head.loss(GOLD["dl_z"], GOLD["dl_x"], GOLD["dl_mask"].bool(), **kw)
    torch.testing.assert_close(out.loss.detach(), GOLD["dl_forward_loss"], atol=1e-5, rtol=1e-6)
    plain = head.loss(GOLD["dl_z"], GOLD["dl_x"], **kw)
    torch.testing.assert_close(plain.loss.detach(), GOLD["dl_forward_loss_nomask"], atol=1e-5, rtol=1e-6)
    assert set(out.metrics) == {"mse", "vb"}


@pytest.mark.parametrize("precompute", [True, False])
@pytest.mark.parametrize("name", ["nocfg_t1", "nocfg_t07", "cfg_t1", "cfg_t07"])
def test_sampling_with_recorded_noise_matches_official(head, name, precompute):
    run = SPEC["ds_runs"][name]
    guided = run["cfg"] != 1.0
    zc = GOLD["ds_z_cond"]
    z = torch.cat([zc, GOLD["ds_z_uncond"]]) if guided else zc
    B = zc.shape[0]
    # official draws: x_T (B rows, duplicated for CFG), then one randn_like(x) per step over all rows of x;
    # only the conditional half's draws reach the returned samples
    noise = torch.cat([GOLD[f"ds_{name}_x_T"][None], GOLD[f"ds_{name}_step_noise"][:, :B]])
    tokens, scores = head.sample(z, OPTS, cfg_scale=run["cfg"], guided=guided, temperature=run["temperature"],
                                 noise=noise, precompute=precompute)
    rel_close(tokens, GOLD[f"ds_{name}_out"])
    assert scores.shape == (B,) and not scores.any()
    # the (S + 1)-th draw (at t = 0) is unused: passing S entries gives the same tokens
    again, _ = head.sample(z, OPTS, cfg_scale=run["cfg"], guided=guided, temperature=run["temperature"],
                           noise=noise[:-1], precompute=precompute)
    torch.testing.assert_close(again, tokens, atol=0, rtol=0)


def test_temperature_comes_from_options_unless_given(head):
    z, noise = GOLD["ds_z_cond"], torch.cat([GOLD["ds_nocfg_t07_x_T"][None], GOLD["ds_nocfg_t07_step_noise"]])
    a, _ = head.sample(z, SampleOptions(temperature=0.7), noise=noise)
    b, _ = head.sample(z, SampleOptions(temperature=1.0), temperature=0.7, noise=noise)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    rel_close(a, GOLD["ds_nocfg_t07_out"])


# ----------------------------------------------------------------------------- the fast sampler


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("budget", [None, 1, 3])  # None: all steps at once; else chunks of 1 / a few steps
def test_precomputed_modulations_equal_plain_per_step_network(guided, budget):
    h = random_head()
    rows, S = 5, h.config.sampling_steps
    z = torch.randn(2 * rows if guided else rows, h.config.cond_dim, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(S + 1, rows, h.config.token_dim, generator=torch.Generator().manual_seed(2))
    if budget is not None:
        per_step = (3 * h.config.depth + 2) * h.config.width * z.shape[0] * 4
        h.modulation_budget = budget * per_step
    fast, _ = h.sample(z, OPTS, cfg_scale=2.5, guided=guided, noise=noise)
    plain, _ = h.sample(z, OPTS, cfg_scale=2.5, guided=guided, noise=noise, precompute=False)
    assert fast.abs().max() > 0.1
    rel_close(fast, plain, tol=1e-6)


def test_modulated_forward_equals_network_forward():
    h = random_head()
    net, g = h.net, torch.Generator().manual_seed(3)
    x, z = torch.randn(6, 4, generator=g), torch.randn(6, 24, generator=g)
    t = torch.tensor([0, 7, 999, 500, 3, 250])
    with torch.no_grad():
        want = net(x, t, z)
        c_emb, t_emb = net.cond_embed(z), net.time_embed(t)
        mods = net.modulations(c_emb, t_emb)  # (S=6 times, R=6 rows): take the diagonal (row i at time i)
        got = torch.stack([net.forward_modulated(x[i:i + 1], [tuple(m[i, i:i + 1] for m in ms) for ms in mods])[0]
                           for i in range(6)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_head_cache_is_exact_when_what_it_reuses_is_constant_and_skips_the_middle_blocks():
    """refresh > 1 reuses the middle blocks' residuals and the cond - uncond noise difference: exact when the
    middle blocks add nothing (zero gates) and both halves are equal; an approximation otherwise."""
    h = random_head(depth=4)
    S, g = h.config.sampling_steps, torch.Generator().manual_seed(5)
    zc, zu = torch.randn(3, 24, generator=g), torch.randn(3, 24, generator=g)
    noise = torch.randn(S, 3, 4, generator=g)
    exact, _ = h.sample(torch.cat([zc, zu]), OPTS, cfg_scale=2.5, guided=True, noise=noise)
    assert torch.equal(h.sample(torch.cat([zc, zu]), OPTS, cfg_scale=2.5, guided=True, noise=noise, refresh=1)[0],
                       exact)
    calls = {0: 0, 1: 0}  # forward_modulated calls of the first and a middle block
    real = {i: h.net.res_blocks[i].forward_modulated for i in (0, 1)}
    for i in (0, 1):
        h.net.res_blocks[i].forward_modulated = lambda *a, i=i: (calls.__setitem__(i, calls[i] + 1), real[i](*a))[1]
    cached, _ = h.sample(torch.cat([zc, zu]), OPTS, cfg_scale=2.5, guided=True, noise=noise, refresh=3)
    assert calls == {0: S, 1: 4}  # 8 steps: the middle block runs at steps 0, 3, 6 and the last one only
    assert torch.isfinite(cached).all() and not torch.allclose(cached, exact)
    for i in (0, 1):
        del h.net.res_blocks[i].forward_modulated
    # zero the middle blocks' gates (they add nothing) and make both halves equal: then nothing reused is stale
    with torch.no_grad():
        for block in h.net.res_blocks[1:-1]:
            lin = block.adaLN_modulation[1]
            lin.weight[2 * h.config.width:].zero_()
            lin.bias[2 * h.config.width:].zero_()
    same = torch.cat([zc, zc])
    want, _ = h.sample(same, OPTS, cfg_scale=2.5, guided=True, noise=noise)
    rel_close(h.sample(same, OPTS, cfg_scale=2.5, guided=True, noise=noise, refresh=3)[0], want, tol=1e-6)
    with pytest.raises(ValueError, match="refresh"):
        h.sample(same, OPTS, guided=True, noise=noise, refresh=0)
    with pytest.raises(ValueError, match="precompute"):
        h.sample(same, OPTS, guided=True, noise=noise, refresh=2, precompute=False)


# ----------------------------------------------------------------------------- guidance, determinism, dtypes


def test_cfg_scale_one_equals_unguided():
    h = random_head()
    g = torch.Generator().manual_seed(4)
    zc, zu = torch.randn(3, 24, generator=g), torch.randn(3, 24, generator=g)
    noise = torch.randn(h.config.sampling_steps, 3, 4, generator=g)
    guided, _ = h.sample(torch.cat([zc, zu]), OPTS, cfg_scale=1.0, guided=True, noise=noise)
    plain, _ = h.sample(zc, OPTS, noise=noise)
    rel_close(guided, plain, tol=1e-6)
    other, _ = h.sample(torch.cat([zc, zu]), OPTS, cfg_scale=3.0, guided=True, noise=noise)
    assert not torch.allclose(other, plain)


def test_seeded_determinism_and_no_global_rng():
    h = random_head()
    z = torch.randn(4, 24, generator=torch.Generator().manual_seed(5))
    target = torch.randn(4, 4, generator=torch.Generator().manual_seed(6))
    state = torch.random.get_rng_state()
    a, _ = h.sample(z, OPTS, torch.Generator().manual_seed(7))
    b, _ = h.sample(z, OPTS, torch.Generator().manual_seed(7))
    c, _ = h.sample(z, OPTS, torch.Generator().manual_seed(8))
    la = h.loss(z, target, rng=torch.Generator().manual_seed(9)).loss
    lb = h.loss(z, target, rng=torch.Generator().manual_seed(9)).loss
    lc = h.loss(z, target, rng=torch.Generator().manual_seed(10)).loss
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn from the global generator
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(la, lb) and not torch.equal(la, lc)


def test_loss_repeats_pairs_batch_mul_times_in_tiled_order():
    h = random_head(batch_mul=3)
    g = torch.Generator().manual_seed(11)
    z, x = torch.randn(2, 5, 24, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.rand(2, 5, generator=g) > 0.4
    t = torch.randint(0, 1000, (30,), generator=g)
    noise = torch.randn(30, 4, generator=g)
    out = h.loss(z, x, mask, timesteps=t, noise=noise)
    terms = h.terms(z.reshape(10, 24).repeat(3, 1), x.reshape(10, 4).repeat(3, 1), t, noise)["loss"]
    w = mask.reshape(-1).float().repeat(3)
    torch.testing.assert_close(out.loss, (terms * w).sum() / w.sum(), atol=1e-6, rtol=1e-6)


def test_leading_dims_are_kept_and_guided_rows_halved():
    h = random_head()
    rng = torch.Generator().manual_seed(12)
    tokens, scores = h.sample(torch.randn(4, 3, 24), OPTS, rng, cfg_scale=2.0, guided=True)
    assert tokens.shape == (2, 3, 4) and scores.shape == (2, 3) and tokens.dtype == torch.float32
    tokens, scores = h.sample(torch.randn(4, 3, 24), OPTS, rng)
    assert tokens.shape == (4, 3, 4) and scores.shape == (4, 3)


def test_vb_gradient_does_not_reach_the_mean():
    h = random_head()
    g = torch.Generator().manual_seed(13)
    t = h.terms(torch.randn(6, 24, generator=g), torch.randn(6, 4, generator=g),
                torch.randint(1, 1000, (6,), generator=g), torch.randn(6, 4, generator=g))
    h.train().zero_grad()
    t["vb"].sum().backward()
    grad = h.net.final_layer.linear.weight.grad  # rows [eps (4); v (4)]
    assert torch.equal(grad[:4], torch.zeros_like(grad[:4])) and grad[4:].abs().sum() > 0


def test_fresh_head_is_adaln_zero_and_trains():
    h = DiffusionHead(DiffusionHeadConfig(token_dim=4, cond_dim=8, depth=2, width=16))
    for lin in [b.adaLN_modulation[1] for b in h.net.res_blocks] + [h.net.final_layer.adaLN_modulation[1],
                                                                     h.net.final_layer.linear]:
        assert not lin.weight.any() and not lin.bias.any()
    out = h.loss(torch.randn(3, 8), torch.randn(3, 4), rng=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and h.net.final_layer.linear.weight.grad.abs().sum() > 0


def test_bfloat16_head_samples_and_trains():
    h = random_head().to(torch.bfloat16)
    z = torch.randn(4, 24, dtype=torch.bfloat16)
    tokens, _ = h.sample(z, OPTS, torch.Generator().manual_seed(0), cfg_scale=2.0, guided=True)
    assert tokens.dtype == torch.bfloat16 and tokens.shape == (2, 4) and torch.isfinite(tokens.float()).all()
    out = h.train().loss(z, torch.randn(4, 4), rng=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_temperature_zero_is_the_deterministic_mean_path():
    h = random_head()
    z = torch.randn(3, 24)
    x_T = torch.randn(1, 3, 4)
    steps = h.config.sampling_steps
    a, _ = h.sample(z, SampleOptions(temperature=0.0), noise=torch.cat([x_T, torch.randn(steps - 1, 3, 4)]))
    b, _ = h.sample(z, SampleOptions(temperature=0.0), noise=torch.cat([x_T, torch.randn(steps - 1, 3, 4)]))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_num_steps_override_and_cache():
    h = random_head()
    assert h.sampling_diffusion().num_steps == 8
    assert h.sampling_diffusion(3).timesteps == [0, 500, 999]
    assert h.sampling_diffusion(3) is h.sampling_diffusion(3)
    tokens, _ = h.sample(torch.randn(2, 24), OPTS, torch.Generator().manual_seed(0), num_steps=3)
    assert tokens.shape == (2, 4)


@pytest.mark.parametrize("refresh", [1, 3])
def test_x0_clip_bounds_the_predicted_token_and_is_off_by_default(refresh):
    """A random head diverges (|x| ~1e3 and more, as a small undertrained one does: heads/diffusion.py); with
    x0_clip the predicted x_0 -- and so the last step's output, which is x_0 -- stays in [-bound, bound]. A bound
    that never binds gives the unclipped (official) result bit for bit; the keyword overrides the config."""
    z = torch.randn(2 * 5, 24, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(8, 5, 4, generator=torch.Generator().manual_seed(4))
    kw = dict(cfg_scale=2.0, guided=True, noise=noise, refresh=refresh)
    free, _ = random_head().sample(z, OPTS, **kw)
    assert free.abs().max() > 20
    clipped, _ = random_head(x0_clip=2.0).sample(z, OPTS, **kw)
    assert clipped.abs().max() <= 2.0 and torch.isfinite(clipped).all()
    assert torch.equal(random_head(x0_clip=1e12).sample(z, OPTS, **kw)[0], free)
    assert torch.equal(random_head(x0_clip=2.0).sample(z, OPTS, x0_clip=0.0, **kw)[0], free)
    assert torch.equal(random_head().sample(z, OPTS, x0_clip=2.0, **kw)[0], clipped)
    with pytest.raises(ValueError, match="x0_clip must be a finite number >= 0"):
        random_head().sample(z, OPTS, x0_clip=-1.0, **kw)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors():
    h = random_head()
    rng = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 24\)"):
        h.sample(torch.randn(2, 23), OPTS, rng)
    with pytest.raises(ValueError, match="odd first dim 3"):
        h.sample(torch.randn(3, 24), OPTS, rng, cfg_scale=2.0, guided=True)
    with pytest.raises(ValueError, match="noise must have shape"):
        h.sample(torch.randn(2, 24), OPTS, noise=torch.randn(4, 2, 4))
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        h.sample(torch.randn(2, 24), OPTS)
    with pytest.raises(ValueError, match="temperature"):
        h.sample(torch.randn(2, 24), OPTS, rng, temperature=-1.0)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[2, 1000\]"):
        h.sample(torch.randn(2, 24), OPTS, rng, num_steps=1)
    with pytest.raises(ValueError, match=r"target must have shape \(\.\.\., 4\)"):
        h.loss(torch.randn(2, 24), torch.randn(2, 5), rng=rng)
    with pytest.raises(ValueError, match="share their leading shape"):
        h.loss(torch.randn(2, 24), torch.randn(3, 4), rng=rng)
    with pytest.raises(ValueError, match=r"mask must have shape \(2,\)"):
        h.loss(torch.randn(2, 24), torch.randn(2, 4), torch.ones(3, dtype=torch.bool), rng=rng)
    with pytest.raises(ValueError, match="draws timesteps and noise from rng="):
        h.loss(torch.randn(2, 24), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"timesteps must be integers of shape \(8,\)"):
        h.loss(torch.randn(2, 24), torch.randn(2, 4), timesteps=torch.zeros(3, dtype=torch.long),
               noise=torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 1000\)"):
        h.loss(torch.randn(2, 24), torch.randn(2, 4), timesteps=torch.full((8,), 1000), noise=torch.randn(8, 4))


@pytest.mark.parametrize("field,value,match", [
    ("depth", 0, "depth must be an integer >= 1"),
    ("width", 2.5, "width must be an integer >= 1"),
    ("batch_mul", 0, "batch_mul must be an integer >= 1"),
    ("sampling_steps", 1, r"sampling_steps must be an integer in \[2, 1000\]"),
    ("sampling_steps", 2000, r"sampling_steps must be an integer in \[2, 1000\]"),
    ("num_timesteps", 1, "num_timesteps must be an integer >= 2"),
    ("noise_schedule", "sqrt", "noise_schedule must be one of cosine, linear"),
    ("freq_dim", 1, "freq_dim must be an integer >= 2"),
    ("x0_clip", -0.5, "x0_clip must be a finite number >= 0"),
    ("x0_clip", float("nan"), "x0_clip must be a finite number >= 0"),
    ("x0_clip", True, "x0_clip must be a finite number >= 0"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        DiffusionHeadConfig(**{field: value})


def test_config_json_round_trip_and_defaults():
    cfg = DiffusionHeadConfig()
    assert (cfg.depth, cfg.width, cfg.token_dim, cfg.cond_dim, cfg.num_timesteps, cfg.sampling_steps,
            cfg.noise_schedule, cfg.batch_mul) == (6, 1024, 16, 768, 1000, 100, "cosine", 4)  # MAR-B
    again = from_dict(DiffusionHeadConfig, json.loads(json.dumps(tiny_config().to_dict())))
    assert again == tiny_config()
    assert respaced_timesteps(1000, [2, 3]) == [0, 499, 500, 750, 999]  # IDDPM sections
    with pytest.raises(ValueError, match="cannot take 600 steps from a section of 500"):
        respaced_timesteps(1000, [600, 2])
