import pytest
import torch

import argen
from argen import registry
from argen.generators.random_order import RandomOrderConfig, RandomOrderGenerator
from argen.presets import get_config
from argen.sampling import Force, generate
from argen.sampling.guidance import double
from argen.types import Cond, SampleOptions

V, GRID, N = 40, (3, 4), 12


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny(**kw) -> RandomOrderGenerator:
    torch.manual_seed(0)
    cfg = RandomOrderConfig(vocab_size=V, num_classes=5, scales=(GRID,), dim=32, depth=2, num_heads=4,
                            embed_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0, **kw)
    g = RandomOrderGenerator(cfg)
    with torch.no_grad():
        for p in g.parameters():  # break the zero-initialised head so logits carry information
            p.add_(torch.randn_like(p) * 0.2)
    return g.eval()


def orders(B: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(B, N, generator=torch.Generator().manual_seed(seed)).argsort(1)


def teacher_forced_steps(g, cond: Cond, tokens, order, num_steps=None):
    """Run the state machine feeding the true tokens; yield (start, size, logits (R, k, V)) per step."""
    B = tokens.shape[0]
    state = g.begin(cond, batch_size=B, opts=SampleOptions(num_steps=num_steps), order=order)
    with torch.no_grad():
        while not state.done:
            a, k = state.cache["steps"][state.step]
            logits = g.predict(state)
            yield a, k, logits
            g.commit(state, tokens.gather(1, order[:, a:a + k]), torch.zeros(B, k))


def moved(order, a, j):
    """`order` with index a+j moved to index a (right after the first a positions)."""
    return torch.cat([order[:, :a], order[:, a + j:a + j + 1], order[:, a:a + j], order[:, a + j + 1:]], dim=1)


@pytest.mark.parametrize("cfg_rows", [False, True])
def test_kv_cache_logits_equal_full_forward_any_order(cfg_rows):
    """One token per step: every cached step's logits == the teacher-forced full forward in that order."""
    g = tiny()
    tokens = torch.randint(0, V, (3, N))
    labels = torch.tensor([0, 4, -1])
    order = orders(3)
    cond = Cond(labels=labels)
    if cfg_rows:
        cond = double(cond, Cond(labels=torch.full((3,), -1)))
    with torch.no_grad():
        full = g(tokens.repeat(2 if cfg_rows else 1, 1), cond.labels, order.repeat(2 if cfg_rows else 1, 1))
    assert full.shape == (len(cond.labels), N, V)
    cached = torch.zeros_like(full)
    steps = 0
    for a, k, logits in teacher_forced_steps(g, cond, tokens, order):
        assert k == 1
        pos = order[:, a].repeat(2 if cfg_rows else 1)
        cached[torch.arange(len(pos)), pos] = logits[:, 0]
        steps += 1
    assert steps == N
    assert torch.allclose(cached, full, atol=1e-4)
    if cfg_rows:
        assert not torch.allclose(full[:3], full[3:], atol=1e-3)  # the halves really are conditioned differently


def test_multi_token_steps_equal_full_forward_with_the_position_moved_next():
    """k positions per step: the query for index a+j sees the context and itself only, so its logits equal the
    full forward of the order that puts that position right after the context (exact conditionals)."""
    g = tiny()
    tokens = torch.randint(0, V, (2, N))
    labels = torch.tensor([1, 3])
    order = orders(2, seed=4)
    sizes = []
    for a, k, logits in teacher_forced_steps(g, Cond(labels=labels), tokens, order, num_steps=4):
        sizes.append(k)
        for j in range(k):
            with torch.no_grad():
                ref = g(tokens, labels, moved(order, a, j))  # (B, N, V) layout order
            assert torch.allclose(logits[:, j], ref[torch.arange(2), order[:, a + j]], atol=1e-4)
    assert sum(sizes) == N and len(sizes) == 4 and max(sizes) > 1
    assert sizes == sorted(sizes)  # cosine schedule: few tokens first, more later


def test_identity_order_is_raster():
    """With the identity order the model is a raster AR model: (1) the logits of position p depend only on the
    tokens before p; (2) generation with order="raster", one token per step, greedy, gives exactly the tokens
    of a reference decode that re-runs the full (cache-free) forward in raster order, argmax by argmax."""
    g = tiny()
    labels = torch.tensor([0, 2])
    a = torch.randint(0, V, (2, N))
    b = a.clone()
    b[:, 7:] = torch.randint(0, V, (2, N - 7))
    with torch.no_grad():
        la, lb = g(a, labels), g(b, labels)
    assert torch.allclose(la[:, :8], lb[:, :8], atol=1e-5) and not torch.allclose(la[:, 8:], lb[:, 8:], atol=1e-3)

    reference = torch.zeros(2, N, dtype=torch.long)
    with torch.no_grad():
        for p in range(N):
            reference[:, p] = g(reference, labels)[:, p].argmax(-1)
    with g.decode_order("raster"):
        out = generate(g, labels, temperature=0.0, num_steps=N)
    assert torch.equal(out, reference)
    with g.decode_order(torch.arange(N)):  # the identity permutation given explicitly is the same thing
        assert torch.equal(generate(g, labels, temperature=0.0, num_steps=N), reference)


def test_generation_in_a_given_order_matches_reference_decode():
    g = tiny()
    labels = torch.tensor([0, 2])
    order = orders(2, seed=9)
    reference = torch.zeros(2, N, dtype=torch.long)
    rows = torch.arange(2)
    with torch.no_grad():
        for i in range(N):
            reference[rows, order[:, i]] = g(reference, labels, order)[rows, order[:, i]].argmax(-1)
    with g.decode_order(order):
        assert torch.equal(generate(g, labels, temperature=0.0), reference)  # config default: one per step


def test_seeds_orders_and_cfg():
    g = tiny(num_steps=5)
    x = generate(g, [0, 1, 2], seed=0, cfg=2.0, top_k=10)
    assert x.shape == (3, N) and x.dtype == torch.long and int(x.max()) < V
    assert torch.equal(x, generate(g, [0, 1, 2], seed=0, cfg=2.0, top_k=10))
    assert not torch.equal(x, generate(g, [0, 1, 2], seed=1, cfg=2.0, top_k=10))
    assert not torch.equal(x, generate(g, [0, 1, 2], seed=0, cfg=1.0, top_k=10))
    linear = generate(g, [0, 1, 2], seed=0, cfg=2.0, cfg_schedule="linear")  # RandAR's ramp over tokens
    assert linear.shape == (3, N)
    # the random order comes from the sampling rng: same seed, same orders; an int seed fixes it on its own
    s1 = g.begin(Cond(labels=torch.tensor([0, 1])), batch_size=2, opts=SampleOptions())
    s2 = g.begin(Cond(labels=torch.tensor([0, 1])), batch_size=2, opts=SampleOptions())
    assert s1.cache["order"] is None
    g.randomize(s1, torch.Generator().manual_seed(3))
    g.randomize(s2, torch.Generator().manual_seed(3))
    assert torch.equal(s1.cache["order"], s2.cache["order"])
    assert torch.equal(s1.cache["order"].sort(1).values, torch.arange(N).expand(2, N))
    fixed = [g.begin(Cond(labels=torch.tensor([0, 1])), batch_size=2, opts=SampleOptions(), order=7).cache["order"]
             for _ in range(2)]
    assert torch.equal(*fixed) and not torch.equal(fixed[0][0], fixed[0][1])
    with g.decode_order(7):
        assert not torch.equal(generate(g, [0, 1], seed=0), generate(g, [0, 1], seed=5))  # tokens still random
    with pytest.raises(RuntimeError, match="randomize"):
        g.predict(g.begin(Cond(labels=torch.tensor([0])), batch_size=1, opts=SampleOptions()))


def test_force_keeps_known_tokens_and_feeds_them_first():
    g = tiny(num_steps=4)
    known = torch.randint(0, V, (2, N))
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[:, 2:6] = True
    mask[0, 9] = True  # row 0 knows one more position than row 1
    out = generate(g, [1, 3], seed=0, force=Force(known, mask))
    assert torch.equal(out[mask], known[mask])

    # the order is re-arranged so each row's known positions come first; decoding starts after the common count
    state = g.begin(Cond(labels=torch.tensor([1, 3])), batch_size=2, opts=SampleOptions(), order="raster")
    g.force(state, known, mask)
    order = state.cache["order"]
    assert mask.gather(1, order)[0, :5].all() and mask.gather(1, order)[1, :4].all()
    assert torch.equal(order[1], torch.tensor([2, 3, 4, 5, 0, 1, 6, 7, 8, 9, 10, 11]))  # relative order kept
    assert state.cache["steps"][0][0] == 4 and sum(k for _, k in state.cache["steps"]) == N - 4

    # all but one position forced + greedy: the free token is the argmax given every known token as context
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[0, 5] = mask[1, 0] = False
    with g.decode_order("raster"):  # the context keeps its relative (raster) order
        out = generate(g, [1, 3], temperature=0.0, force=(known, mask))
    free = torch.tensor([5, 0])
    moved_last = torch.stack([torch.cat([torch.arange(N)[torch.arange(N) != f], f[None]]) for f in free])
    with torch.no_grad():
        expected = g(known, torch.tensor([1, 3]), moved_last)[torch.arange(2), free].argmax(-1)
    assert torch.equal(out[torch.arange(2), free], expected) and torch.equal(out[mask], known[mask])
    # everything known: no steps at all
    assert torch.equal(generate(g, [1, 3], force=(known, torch.ones(2, N, dtype=torch.bool))), known)


def test_tiny_model_learns_any_order_and_decodes_in_parallel():
    torch.manual_seed(0)
    g = RandomOrderGenerator(RandomOrderConfig(vocab_size=32, num_classes=4, scales=((4, 4),), dim=64, depth=2,
                                               num_heads=4, embed_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0,
                                               class_dropout=0.0))
    tokens = torch.randint(0, 32, (4, 16))
    labels = torch.arange(4)
    opt = torch.optim.AdamW(g.parameters(), lr=5e-3)
    rng = torch.Generator().manual_seed(0)
    g.train()
    first = None
    for _ in range(80):
        out = g.loss(tokens, labels, rng=rng)  # a fresh random order per sample and step
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.metrics["nll"].item()
    assert first > 3.0  # ~ln 32 at init (zero output head)
    assert out.metrics["nll"].item() < 0.3
    # greedy decoding in random orders, 4 tokens per step, reproduces the memorised images
    assert torch.equal(generate(g, labels, temperature=0.0, num_steps=4, seed=1), tokens)


def test_save_load_identical_outputs(tmp_path):
    g = tiny(num_steps=6)
    argen.save(g, tmp_path / "gen")
    back = argen.load(tmp_path / "gen")
    assert isinstance(back, RandomOrderGenerator) and back.config == g.config
    assert "pos_instruct_embeddings" in back.state_dict()
    tokens = torch.randint(0, V, (2, N))
    order = orders(2)
    with torch.no_grad():
        assert torch.equal(g(tokens, torch.tensor([0, 1]), order), back(tokens, torch.tensor([0, 1]), order))
    assert torch.equal(generate(g, [0, 1], seed=5, cfg=2.0), generate(back, [0, 1], seed=5, cfg=2.0))


def test_order_and_config_validation():
    g = tiny()
    with pytest.raises(ValueError, match="permutation"):
        with g.decode_order(torch.zeros(N, dtype=torch.long)):
            pass
    with pytest.raises(ValueError, match="shape"):
        g.begin(Cond(labels=torch.tensor([0, 1])), batch_size=2, opts=SampleOptions(), order=orders(3))
    with pytest.raises(ValueError, match="unknown decoding order"):
        g.begin(Cond(labels=torch.tensor([0])), batch_size=1, opts=SampleOptions(), order="spiral")
    with pytest.raises(ValueError, match="num_steps"):
        RandomOrderConfig(vocab_size=V, scales=(GRID,), dim=32, num_heads=4, num_steps=13)
    with pytest.raises(ValueError, match="sample_order"):
        RandomOrderConfig(sample_order="spiral")
    assert g._order is None  # the context manager restored the default after the error


def test_presets():
    tiny_cfg = get_config("randar-tiny")
    assert tiny_cfg.kind == "random-order" and tiny_cfg.num_steps == 24
    cfg = get_config("randar-l")
    with torch.device("meta"):
        g = registry.build(cfg)
    assert sum(p.numel() for p in g.parameters()) == 342_910_976 + 1024  # LlamaGen GPT-L + the instruction vector
    assert cfg.num_steps == 88 and cfg.grid == (16, 16) and cfg.prefix_rope == "zero"
    pipe = get_config("fmnist-randar-tiny")
    assert pipe.generator == tiny_cfg and pipe.cfg_schedule == "linear"
