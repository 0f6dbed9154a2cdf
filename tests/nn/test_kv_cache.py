import pytest
import torch

from argen.nn import Attention, Block, KVCache, grid_rope_table


def _block_and_input(T=7, dim=32, heads=4):
    torch.manual_seed(0)
    block = Block(dim, heads, 64).eval()
    x = torch.randn(3, T, dim)
    rope = grid_rope_table(2, 3, dim // heads, num_prefix=1)  # 7 rows: prefix + 2x3 grid
    return block, x, rope


def test_cache_with_multi_token_steps_matches_causal_forward():
    block, x, (cos, sin) = _block_and_input()
    full = block(x, rope=(cos, sin), causal=True)
    cache = KVCache(1, 3, 4, 7, 8)
    outs, start = [], 0
    for n in (3, 1, 2, 1):  # prefill 3, then single and double steps
        cache.prepare(start, n)
        assert (cache.mask is None) == (n == 1)
        outs.append(block(x[:, start:start + n], rope=(cos[start:start + n], sin[start:start + n]), kv=cache.layers[0]))
        start += n
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_cache_arbitrary_slot_writes_and_rewrite():
    block, x, (cos, sin) = _block_and_input()
    full = block(x, rope=(cos, sin), causal=True)
    cache = KVCache(1, 3, 4, 7, 8)
    cache.prepare(0, 3)
    block(x[:, :3], rope=(cos[:3], sin[:3]), kv=cache.layers[0])
    slots = torch.tensor([4, 3, 6, 5])  # out of order: slot-causal visibility still holds
    cache.prepare(slots)
    out = block(x[:, slots], rope=(cos[slots], sin[slots]), kv=cache.layers[0])
    assert torch.allclose(out, full[:, slots], atol=1e-5)
    cache.prepare(torch.tensor([5]))  # rewriting a slot with the same token changes nothing
    again = block(x[:, 5:6], rope=(cos[5:6], sin[5:6]), kv=cache.layers[0])
    assert torch.allclose(again, full[:, 5:6], atol=1e-5)
    with pytest.raises(ValueError, match="max_len"):
        cache.prepare(6, 2)


def test_cfg_doubled_rows_are_independent():
    torch.manual_seed(1)
    attn = Attention(16, 2).eval()
    x = torch.randn(4, 5, 16)  # 2B rows
    cache = KVCache(1, 4, 2, 5, 8)
    steps = []
    for t in range(5):
        cache.prepare(t, 1)
        steps.append(attn(x[:, t:t + 1], kv=cache.layers[0]))
    cached = torch.cat(steps, 1)
    assert torch.allclose(cached, attn(x, causal=True), atol=1e-5)
    assert torch.allclose(cached[:2], attn(x[:2], causal=True), atol=1e-5)  # halves do not mix


def test_l2_attention_and_adaln_block_run_with_cache():
    torch.manual_seed(2)
    block = Block(16, 2, 32, mlp="gelu_tanh", norm="layer", norm_eps=1e-6, qkv_bias=True, out_bias=True,
                  qk_norm="l2", adaln_dim=8).eval()
    assert "ada_lin.1.weight" in block.state_dict() and block.attention_norm.weight is None
    x, c = torch.randn(2, 4, 16), torch.randn(2, 8)
    full = block(x, causal=True, cond=c)
    cache = KVCache(1, 2, 2, 4, 8)
    cache.prepare(0, 4)
    assert torch.allclose(block(x, kv=cache.layers[0], cond=c), full, atol=1e-5)
    with pytest.raises(ValueError, match="AdaLN"):
        block(x, causal=True)
