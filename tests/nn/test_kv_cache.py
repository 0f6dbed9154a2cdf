import pytest
import torch

from argen.nn import NO_CACHE, AdaLNBlock, Attention, Block, KVCache, Trunk, grid_rope_table


def _block_and_input(T=7, dim=32, heads=4):
    torch.manual_seed(0)
    block = Block(dim, heads, 64).eval()
    x = torch.randn(3, T, dim)
    rope = grid_rope_table(2, 3, dim // heads, num_prefix=1)  # 7 rows: prefix + 2x3 grid
    return block, x, rope


def test_cache_with_multi_token_steps_matches_causal_forward():
    block, x, (cos, sin) = _block_and_input()
    full = block(x, rope=(cos, sin), mask="causal", kv=NO_CACHE.layers[0])
    cache = KVCache(1, 3, 4, 7, 8)
    outs, start = [], 0
    for n in (3, 1, 2, 1):  # prefill 3, then single and double steps
        cache.prepare(start, n)
        assert (cache.mask is None) == (n == 1)
        outs.append(block(x[:, start:start + n], rope=(cos[start:start + n], sin[start:start + n]),
                          mask=cache.attn_mask, kv=cache.layers[0]))
        start += n
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_cache_arbitrary_slot_writes_and_rewrite():
    block, x, (cos, sin) = _block_and_input()
    full = block(x, rope=(cos, sin), mask="causal", kv=NO_CACHE.layers[0])
    cache = KVCache(1, 3, 4, 7, 8)
    cache.prepare(0, 3)
    block(x[:, :3], rope=(cos[:3], sin[:3]), mask=cache.attn_mask, kv=cache.layers[0])
    slots = torch.tensor([4, 3, 6, 5])  # out of order: slot-causal visibility still holds
    cache.prepare(slots)
    out = block(x[:, slots], rope=(cos[slots], sin[slots]), mask=cache.attn_mask, kv=cache.layers[0])
    assert torch.allclose(out, full[:, slots], atol=1e-5)
    cache.prepare(torch.tensor([5]))  # rewriting a slot with the same token changes nothing
    again = block(x[:, 5:6], rope=(cos[5:6], sin[5:6]), mask=cache.attn_mask, kv=cache.layers[0])
    assert torch.allclose(again, full[:, 5:6], atol=1e-5)
    with pytest.raises(ValueError, match="max_len"):
        cache.prepare(6, 2)


def test_cfg_doubled_rows_are_independent():
    torch.manual_seed(1)
    attn = Attention(16, 2, rotary=False).eval()
    x = torch.randn(4, 5, 16)  # 2B rows
    cache = KVCache(1, 4, 2, 5, 8)
    steps = []
    for t in range(5):
        cache.prepare(t, 1)
        steps.append(attn(x[:, t:t + 1], rope=None, mask=cache.attn_mask, kv=cache.layers[0]))
    cached = torch.cat(steps, 1)
    full = lambda rows: attn(rows, rope=None, mask="causal", kv=NO_CACHE.layers[0])  # noqa: E731
    assert torch.allclose(cached, full(x), atol=1e-5)
    assert torch.allclose(cached[:2], full(x[:2]), atol=1e-5)  # halves do not mix


def test_l2_attention_and_adaln_block_run_with_cache():
    torch.manual_seed(2)
    block = AdaLNBlock(16, 2, 32, cond_dim=8, mlp="gelu_tanh", norm="layer", norm_eps=1e-6, qkv_bias=True,
                       out_bias=True, qk_norm="l2", rotary=False).eval()
    assert "ada_lin.1.weight" in block.state_dict() and block.attention_norm.weight is None
    x, c = torch.randn(2, 4, 16), torch.randn(2, 8)
    mod = block.modulation(c)
    full = block(x, mod, rope=None, mask="causal", kv=NO_CACHE.layers[0])
    cache = KVCache(1, 2, 2, 4, 8)
    cache.prepare(0, 4)
    assert torch.allclose(block(x, mod, rope=None, mask=cache.attn_mask, kv=cache.layers[0]), full, atol=1e-5)


def test_trunk_composes_blocks_with_stochastic_depth_and_caches():
    torch.manual_seed(3)
    trunk = Trunk(16, 3, 2, 32, drop_path=0.2).eval()
    assert [b.drop_path.p for b in trunk] == pytest.approx([0.0, 0.1, 0.2])  # grows linearly with depth
    assert list(trunk.state_dict())[0].startswith("0.attention_norm")  # a ModuleList: the owner names it
    x = torch.randn(2, 5, 16)
    cos, sin = grid_rope_table(1, 5, 8)
    full = trunk(x, rope=(cos, sin), mask="causal")
    cache = trunk.new_cache(2, 5, dtype=x.dtype, device="cpu")
    steps = []
    for t in range(5):
        cache.prepare(t, 1)
        steps.append(trunk(x[:, t:t + 1], rope=(cos[t:t + 1], sin[t:t + 1]), mask=cache.attn_mask, cache=cache))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="plain blocks"):
        trunk.modulations(torch.randn(2, 16))
    ada = Trunk(16, 2, 2, 32, adaln="block", rotary=False).eval()
    mods = ada.modulations(torch.randn(2, 16))
    assert len(mods) == 2 and len(mods[0]) == 6
    assert ada(x, mask="full", modulations=mods).shape == x.shape


def test_attention_refuses_an_unknown_mask():
    attn = Attention(16, 2, rotary=False)
    with pytest.raises(ValueError, match="causal"):
        attn(torch.randn(1, 3, 16), rope=None, mask="diagonal", kv=NO_CACHE.layers[0])
