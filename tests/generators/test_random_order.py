import pytest
import torch

import argen
from argen import registry
from argen.generators.random_order import RandomOrderConfig, RandomOrderGenerator
from argen.presets import get_config
from argen.sampling import Force, generate
from argen.sampling.samplers import RandomOrderOptions
from gen_helpers import class_conditioner, embed, perturb, teacher_forced

V, GRID, N = 40, (3, 4), 12


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny(**kw):
    torch.manual_seed(0)
    cfg = RandomOrderConfig(vocab_size=V, scales=(GRID,), dim=32, depth=2, num_heads=4, embed_dropout=0.0,
                            resid_dropout=0.0, ffn_dropout=0.0, **kw)
    g = RandomOrderGenerator(cfg)
    perturb(g)
    return g.eval(), class_conditioner(g)


def orders(B: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(B, N, generator=torch.Generator().manual_seed(seed)).argsort(1)


def moved(order, a, j):
    """`order` with index a+j moved to index a (right after the first a positions)."""
    return torch.cat([order[:, :a], order[:, a + j:a + j + 1], order[:, a:a + j], order[:, a + j + 1:]], dim=1)


@pytest.mark.parametrize("cfg_rows", [False, True])
def test_kv_cache_logits_equal_full_forward_any_order(cfg_rows):
    """One token per step: every cached step's logits == the teacher-forced full forward in that order."""
    g, cond = tiny()
    tokens = torch.randint(0, V, (3, N))
    order = orders(3)
    c = embed(cond, [0, 4, -1], guided=cfg_rows)
    R = c.batch_size
    with torch.no_grad():
        full = g(tokens.repeat(R // 3, 1), c, order.repeat(R // 3, 1))
    assert full.shape == (R, N, V)
    cached = torch.zeros_like(full)
    steps = 0
    for state, _, logits in teacher_forced(g, c, tokens, order=order, num_steps=N):
        a, k = state.steps[state.step]
        assert k == 1
        pos = order[:, a].repeat(R // 3)
        cached[torch.arange(R), pos] = logits[:, 0]
        steps += 1
    assert steps == N
    assert torch.allclose(cached, full, atol=1e-4)
    if cfg_rows:
        assert not torch.allclose(full[:3], full[3:], atol=1e-3)  # the halves really are conditioned differently


def test_multi_token_steps_equal_full_forward_with_the_position_moved_next():
    """k positions per step: the query for index a+j sees the context and itself only, so its logits equal the
    full forward of the order that puts that position right after the context (exact conditionals)."""
    g, cond = tiny()
    tokens = torch.randint(0, V, (2, N))
    c = embed(cond, [1, 3])
    order = orders(2, seed=4)
    sizes = []
    for state, _, logits in teacher_forced(g, c, tokens, order=order, num_steps=4):
        a, k = state.steps[state.step]
        sizes.append(k)
        for j in range(k):
            with torch.no_grad():
                ref = g(tokens, c, moved(order, a, j))  # (B, N, V) layout order
            assert torch.allclose(logits[:, j], ref[torch.arange(2), order[:, a + j]], atol=1e-4)
    assert sum(sizes) == N and len(sizes) == 4 and max(sizes) > 1
    assert sizes == sorted(sizes)  # cosine schedule: few tokens first, more later


def test_identity_order_is_raster():
    """With the identity order the model is a raster AR model: (1) the logits of position p depend only on the
    tokens before p; (2) generation with order="raster", one token per step, greedy, gives exactly the tokens
    of a reference decode that re-runs the full (cache-free) forward in raster order, argmax by argmax."""
    g, cond = tiny()
    c = embed(cond, [0, 2])
    a = torch.randint(0, V, (2, N))
    b = a.clone()
    b[:, 7:] = torch.randint(0, V, (2, N - 7))
    with torch.no_grad():
        la, lb = g(a, c), g(b, c)
    assert torch.allclose(la[:, :8], lb[:, :8], atol=1e-5) and not torch.allclose(la[:, 8:], lb[:, 8:], atol=1e-3)

    reference = torch.zeros(2, N, dtype=torch.long)
    with torch.no_grad():
        for p in range(N):
            reference[:, p] = g(reference, c)[:, p].argmax(-1)
    out = generate(g, cond, [0, 2], temperature=0.0, num_steps=N, order="raster")
    assert torch.equal(out, reference)
    # the identity permutation given explicitly is the same thing
    assert torch.equal(generate(g, cond, [0, 2], temperature=0.0, num_steps=N, order=torch.arange(N)), reference)


def test_generation_in_a_given_order_matches_reference_decode():
    g, cond = tiny()
    c = embed(cond, [0, 2])
    order = orders(2, seed=9)
    reference = torch.zeros(2, N, dtype=torch.long)
    rows = torch.arange(2)
    with torch.no_grad():
        for i in range(N):
            reference[rows, order[:, i]] = g(reference, c, order)[rows, order[:, i]].argmax(-1)
    # the decoding order is an argument (no module state); the config default is one token per step
    assert torch.equal(generate(g, cond, [0, 2], temperature=0.0, order=order), reference)
    assert torch.equal(generate(g, cond, [0, 2], temperature=0.0, decoding=RandomOrderOptions(order=order)),
                       reference)


def test_seeds_orders_and_cfg():
    g, cond = tiny(num_steps=5)
    x = generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=10)
    assert x.shape == (3, N) and x.dtype == torch.long and int(x.max()) < V
    assert torch.equal(x, generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=10))
    assert not torch.equal(x, generate(g, cond, [0, 1, 2], seed=1, cfg=2.0, top_k=10))
    assert not torch.equal(x, generate(g, cond, [0, 1, 2], seed=0, cfg=1.0, top_k=10))
    linear = generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, cfg_schedule="linear")  # RandAR's ramp over tokens
    assert linear.shape == (3, N)
    # the random order comes from the sampling rng: same seed, same orders; an int seed fixes it on its own
    c = embed(cond, [0, 1])
    tokens = torch.zeros(2, N, dtype=torch.long)
    first = lambda rng=None, **kw: next(teacher_forced(g, c, tokens, rng=rng, **kw))[0].order  # noqa: E731
    o1, o2 = first(torch.Generator().manual_seed(3)), first(torch.Generator().manual_seed(3))
    assert torch.equal(o1, o2) and not torch.equal(o1, first(torch.Generator().manual_seed(4)))
    assert torch.equal(o1.sort(1).values, torch.arange(N).expand(2, N))
    fixed = [first(torch.Generator().manual_seed(s), order=7) for s in (0, 1)]
    assert torch.equal(*fixed) and not torch.equal(fixed[0][0], fixed[0][1])
    assert not torch.equal(generate(g, cond, [0, 1], seed=0, order=7), generate(g, cond, [0, 1], seed=5, order=7))


def test_force_keeps_known_tokens_and_feeds_them_first():
    g, cond = tiny(num_steps=4)
    known = torch.randint(0, V, (2, N))
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[:, 2:6] = True
    mask[0, 9] = True  # row 0 knows one more position than row 1
    out = generate(g, cond, [1, 3], seed=0, force=Force(known, mask))
    assert torch.equal(out[mask], known[mask])

    # the order is re-arranged so each row's known positions come first; decoding starts after the common count
    state, _, _ = next(teacher_forced(g, embed(cond, [1, 3]), known, order="raster", force=Force(known, mask)))
    order = state.order
    assert mask.gather(1, order)[0, :5].all() and mask.gather(1, order)[1, :4].all()
    assert torch.equal(order[1], torch.tensor([2, 3, 4, 5, 0, 1, 6, 7, 8, 9, 10, 11]))  # relative order kept
    assert state.steps[0][0] == 4 and sum(k for _, k in state.steps) == N - 4

    # all but one position forced + greedy: the free token is the argmax given every known token as context
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[0, 5] = mask[1, 0] = False
    out = generate(g, cond, [1, 3], temperature=0.0, force=(known, mask), order="raster")  # context keeps raster order
    free = torch.tensor([5, 0])
    moved_last = torch.stack([torch.cat([torch.arange(N)[torch.arange(N) != f], f[None]]) for f in free])
    with torch.no_grad():
        expected = g(known, embed(cond, [1, 3]), moved_last)[torch.arange(2), free].argmax(-1)
    assert torch.equal(out[torch.arange(2), free], expected) and torch.equal(out[mask], known[mask])
    # everything known: no steps at all
    assert torch.equal(generate(g, cond, [1, 3], force=(known, torch.ones(2, N, dtype=torch.bool))), known)


def test_tiny_model_learns_any_order_and_decodes_in_parallel():
    torch.manual_seed(0)
    g = RandomOrderGenerator(RandomOrderConfig(vocab_size=32, scales=((4, 4),), dim=64, depth=2, num_heads=4,
                                               embed_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0))
    cond = class_conditioner(g, num_classes=4)
    tokens = torch.randint(0, 32, (4, 16))
    opt = torch.optim.AdamW([*g.parameters(), *cond.parameters()], lr=5e-3)
    rng = torch.Generator().manual_seed(0)
    g.train()
    first = None
    for _ in range(80):
        out = g.loss(tokens, embed(cond, [0, 1, 2, 3]), rng=rng)  # a fresh random order per sample and step
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.metrics["nll"].item()
    assert first > 3.0  # ~ln 32 at init (zero output head)
    assert out.metrics["nll"].item() < 0.3
    # greedy decoding in random orders, 4 tokens per step, reproduces the memorised images
    assert torch.equal(generate(g, cond, [0, 1, 2, 3], temperature=0.0, num_steps=4, seed=1), tokens)


def test_save_load_identical_outputs(tmp_path):
    g, cond = tiny(num_steps=6)
    argen.save(g, tmp_path / "gen")
    back = argen.load(tmp_path / "gen")
    assert isinstance(back, RandomOrderGenerator) and back.config == g.config
    assert "pos_instruct_embeddings" in back.state_dict()
    tokens = torch.randint(0, V, (2, N))
    order = orders(2)
    c = embed(cond, [0, 1])
    with torch.no_grad():
        assert torch.equal(g(tokens, c, order), back(tokens, c, order))
    assert torch.equal(generate(g, cond, [0, 1], seed=5, cfg=2.0), generate(back, cond, [0, 1], seed=5, cfg=2.0))


def test_order_and_config_validation():
    g, cond = tiny()
    with pytest.raises(ValueError, match="permutation"):
        generate(g, cond, [0], order=torch.zeros(N, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        generate(g, cond, [0, 1], order=orders(3))
    with pytest.raises(ValueError, match="unknown decoding order"):
        generate(g, cond, [0], order="spiral")
    with pytest.raises(ValueError, match="num_steps"):
        generate(g, cond, [0], num_steps=13)
    with pytest.raises(ValueError, match="unknown sampling option.*prune"):  # next-scale only
        generate(g, cond, [0], prune=(0.5,))
    with pytest.raises(ValueError, match="num_steps"):
        RandomOrderConfig(vocab_size=V, scales=(GRID,), dim=32, num_heads=4, num_steps=13)
    with pytest.raises(ValueError, match="sample_order"):
        RandomOrderConfig(sample_order="spiral")


def test_presets():
    tiny_cfg = get_config("randar-tiny")
    assert tiny_cfg.kind == "random-order" and tiny_cfg.num_steps == 24
    cfg = get_config("randar-l")
    with torch.device("meta"):
        g = registry.build(cfg)
    # LlamaGen GPT-L without its class table (the conditioner's: 1001 x 1024) + the instruction vector
    assert sum(p.numel() for p in g.parameters()) == 342_910_976 - 1001 * 1024 + 1024
    assert cfg.num_steps == 88 and cfg.grid == (16, 16) and cfg.prefix_rope == "zero"
    pipe = get_config("fmnist-randar-tiny")
    assert pipe.generator == tiny_cfg and pipe.sampling.cfg_schedule == "linear"
