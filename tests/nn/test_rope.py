import math

import pytest
import torch

from argen.nn import apply_rope, grid_rope_table, rope_1d, rope_2d, with_prefix


def _rot(x, r, c, head_dim):
    cos, sin = rope_2d(torch.tensor([r]), torch.tensor([c]), head_dim)
    return apply_rope(x.view(1, 1, 1, head_dim), cos, sin).view(head_dim)


def test_2d_rope_dot_product_depends_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(32, generator=g), torch.randn(32, generator=g)
    base = torch.dot(_rot(q, 3, 5, 32), _rot(k, 1, 2, 32))
    for dr, dc in [(1, 0), (0, 4), (7, -2), (-1, 11)]:
        shifted = torch.dot(_rot(q, 3 + dr, 5 + dc, 32), _rot(k, 1 + dr, 2 + dc, 32))
        assert torch.allclose(base, shifted, atol=1e-4)
    # a change of relative position does change the score
    assert not torch.allclose(base, torch.dot(_rot(q, 3, 6, 32), _rot(k, 1, 2, 32)), atol=1e-3)


def test_2d_rope_layout_first_half_rows_second_half_cols_interleaved_pairs():
    x = torch.randn(16)
    a, b = _rot(x, 2, 0, 16), _rot(x, 2, 5, 16)
    assert torch.equal(a[:8], b[:8]) and not torch.allclose(a[8:], b[8:])  # columns only touch the 2nd half
    c = _rot(x, 4, 5, 16)
    assert torch.equal(b[8:], c[8:]) and not torch.allclose(b[:8], c[:8])
    # pair (x0, x1) rotated by angle row * base^0 = row radians
    cos_r, sin_r = math.cos(2.0), math.sin(2.0)
    assert torch.allclose(a[:2], torch.stack([x[0] * cos_r - x[1] * sin_r, x[1] * cos_r + x[0] * sin_r]), atol=1e-6)
    assert rope_2d(torch.zeros(1), torch.zeros(1), 100)[0].shape == (1, 50)  # LlamaGen-3B head_dim 100


def test_rope_preserves_norm_and_matches_complex_rotation():
    x = torch.randn(2, 3, 5, 8)
    cos, sin = rope_1d(torch.arange(5), 8)
    out = apply_rope(x, cos, sin)
    ref = torch.view_as_real(torch.view_as_complex(x.reshape(2, 3, 5, 4, 2)) * torch.polar(torch.ones(5, 4), torch.atan2(sin, cos)))
    assert torch.allclose(out, ref.reshape(2, 3, 5, 8), atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    per_sample = apply_rope(x, cos.expand(2, 5, 4), sin.expand(2, 5, 4))  # (B, L, D/2) tables
    assert torch.allclose(per_sample, out)


@pytest.mark.parametrize("mode", ["identity", "zero"])
def test_prefix_rows(mode):
    cos, sin = grid_rope_table(2, 3, 8, num_prefix=2, prefix_mode=mode)
    assert cos.shape == (8, 4)
    x = torch.randn(1, 1, 8, 8)
    out = apply_rope(x, cos, sin)
    if mode == "identity":
        assert torch.equal(out[:, :, :2], x[:, :, :2])
    else:  # LlamaGen's quirk: prefix q/k vanish
        assert torch.count_nonzero(out[:, :, :2]) == 0
    assert torch.equal(out[:, :, 2:], apply_rope(x[:, :, 2:], cos[2:], sin[2:]))
    with pytest.raises(ValueError, match="identity"):
        with_prefix((cos, sin), 1, "bogus")
