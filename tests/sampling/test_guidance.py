import pytest
import torch

from argen.sampling.guidance import combine, guidance_scale
from argen.sampling.schedules import anneal_temperature, mask_ratio, tokens_per_step
from argen.types import Cond


def test_combine_is_u_plus_s_c_minus_u_and_exact_at_one():
    c, u = torch.randn(2, 5), torch.randn(2, 5)
    out = torch.cat([c, u])
    assert torch.equal(combine(out, 1.0), c)
    assert torch.allclose(combine(out, 3.0), u + 3.0 * (c - u))
    assert torch.allclose(combine(out, 0.0), u)


def test_cfg_rows_keep_the_order_cond_then_uncond():
    d = Cond(labels=torch.tensor([3, 4])).cat(Cond(labels=torch.tensor([-1, -1])))
    assert d.labels.tolist() == [3, 4, -1, -1] and d.text is None
    assert d.rows(1, 3).labels.tolist() == [4, -1]


def test_schedules():
    assert guidance_scale(4.0, "constant", step=7, num_steps=10) == 4.0
    assert guidance_scale(3.0, "linear", step=0, num_steps=4) == 1.0
    assert guidance_scale(3.0, "linear", step=2, num_steps=4) == 2.0
    # VAR: linear in the scale index, full strength at the last scale
    assert [guidance_scale(2.5, "linear_scale", step=k, num_steps=4) for k in range(4)] == [1.0, 1.5, 2.0, 2.5]
    sched = [guidance_scale(2.0, "interval", step=k, num_steps=10, interval=(0.2, 0.5)) for k in range(10)]
    assert sched == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="constant"):
        guidance_scale(2.0, "cosine")


def test_mask_schedules():
    assert mask_ratio(0.0) == 1.0 and abs(mask_ratio(1.0)) < 1e-12
    counts = tokens_per_step(256, 8)
    assert sum(counts) == 256 and min(counts) >= 1 and counts[0] < counts[-1]  # cosine: few first, many last
    assert tokens_per_step(5, 5) == [1, 1, 1, 1, 1]
    assert anneal_temperature(4.5, 0.5) == 2.25
