"""MAR's feature cache (LazyMAR-style token cache, `token_refresh`): recording changes nothing, a lazy forward
over an unchanged state equals the full one, lazy steps run fewer rows through the transformer, and sampling
with it stays an option that is exact at 1."""
import pytest
import torch

from argen.sampling import generate
from gen_helpers import embed
from test_mar_network import L, D, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def deep():
    return tiny(encoder_depth=2, decoder_depth=2)


def test_recording_leaves_the_forward_unchanged_and_a_lazy_forward_of_the_same_state_equals_it():
    g, cond = deep()
    c = embed(cond, [0, 1])
    tokens = torch.randn(2, L, D)
    known = torch.zeros(2, L, dtype=torch.bool)
    known[0, [1, 4, 7]] = True
    known[1, [0, 2, 11]] = True
    with torch.no_grad():
        exact = g.condition(tokens, known, c)
        cache = g.feature_cache(2)
        assert torch.equal(g.condition(tokens, known, c, cache=cache), exact)
        # nothing changed since the write: the reused keys/values are the current ones, so lazy == full
        predict = ~known
        rows = []
        hook = g.encoder_blocks[0].register_forward_hook(lambda m, a, out: rows.append(a[0].shape[1]))
        lazy = g.condition(tokens, known, c, cache=cache, lazy=True, predict=predict)
        hook.remove()
        assert rows == [2]  # the encoder re-ran the two buffer slots only
        torch.testing.assert_close(lazy[predict], exact[predict], atol=1e-5, rtol=0)
        # two more tokens known per row: the lazy result is fresh at `predict` but stale elsewhere, so it differs
        more = known.clone()
        more[0, [2, 3]] = True
        more[1, [5, 6]] = True
        predict = ~more
        new_exact = g.condition(tokens, more, c)
        lazy = g.condition(tokens, more, c, cache=cache, lazy=True, predict=predict)
        assert lazy.shape == new_exact.shape and torch.isfinite(lazy).all()
        gap = (lazy[predict] - new_exact[predict]).abs().max()
        assert 0 < gap < (new_exact[predict] - exact[predict]).abs().max()  # closer than the stale full result
        assert torch.equal(cache.seen[:, 2:], more)  # the cache now describes the new state
        # a token that became unknown again (a reset) cannot be served from the cache: a full forward runs
        fewer = more.clone()
        fewer[0, 1] = False
        torch.testing.assert_close(g.condition(tokens, fewer, c, cache=cache, lazy=True), g.condition(tokens, fewer, c),
                                   atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="rows"):
        g.condition(tokens, known, c, cache=g.feature_cache(3))


def test_lazy_steps_run_only_the_changed_rows_and_token_refresh_1_is_exact():
    g, cond = deep()
    rows = []
    hook = g.encoder_blocks[0].register_forward_hook(lambda m, a, out: rows.append(tuple(a[0].shape[:2])))
    exact = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4)
    full_rows = list(rows)
    rows.clear()
    assert torch.equal(generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, token_refresh=1), exact)
    rows.clear()
    lazy = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, token_refresh=2)
    hook.remove()
    # 12 tokens in 4 steps reveal 1, 3, 4, 4; the encoder sees the buffer (2) + the known tokens on full steps
    # (0 and 2) and the buffer + the tokens revealed since the last full step on lazy ones (1 and 3)
    assert full_rows == [(4, 2), (4, 3), (4, 6), (4, 10)]
    assert rows == [(4, 2), (4, 3), (4, 6), (4, 6)]
    assert lazy.shape == exact.shape and torch.isfinite(lazy).all() and not torch.equal(lazy, exact)
    # combined with the condition cache: lazy steps of the conditional rows only
    both = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, token_refresh=2, cfg_refresh=2)
    assert torch.isfinite(both).all()
    with pytest.raises(ValueError, match="token_refresh"):
        generate(g, cond, [0], token_refresh=0)
    # the head cache reaches the head through the sampler (tiny head: 5 steps, depth 1 -> cond rows only)
    head = generate(g, cond, [0, 1], seed=0, cfg=3.0, num_steps=4, head_refresh=2)
    assert torch.isfinite(head).all() and not torch.equal(head, exact)
    with pytest.raises(ValueError, match="head_refresh"):
        generate(g, cond, [0], head_refresh=0)


def test_editing_with_the_token_cache_keeps_the_known_tokens():
    g, cond = deep()
    known = torch.zeros(2, L, dtype=torch.bool)
    known[0, :5] = True
    known[1, 3:6] = True  # different counts per row
    target = torch.randn(2, L, D)
    out = generate(g, cond, [0, 1], seed=0, cfg=2.0, num_steps=4, token_refresh=3, force=(target, known))
    assert torch.equal(out[known], target[known])
