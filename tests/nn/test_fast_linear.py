import pytest
import torch
import torch.nn.functional as F

from argen.nn import Linear, RMSNorm, packed_linears
from argen.nn.fast_linear import _ops_available


def test_packed_linear_matches_plain_and_is_released():
    torch.manual_seed(0)
    net = torch.nn.Sequential(Linear(1024, 1024), Linear(1024, 8))  # only the big one is packed
    x = torch.randn(3, 5, 1024)
    with torch.no_grad():
        plain = net(x)
    with torch.inference_mode(), packed_linears(net, rows=15) as active:  # off unless asked for
        assert active is False and net[0]._packed is None
    with torch.inference_mode(), packed_linears(net, rows=15, enabled=True) as active:
        assert active == _ops_available()
        if active:
            assert net[0]._packed is not None and net[1]._packed is None
        fast = net(x)
    assert torch.allclose(fast, plain, atol=1e-4)
    assert net[0]._packed is None  # copies dropped after the block
    with packed_linears(net, rows=2, enabled=True) as active:  # with autograd on, the plain path runs (and gets grads)
        y = net(x).sum()
    y.backward()
    assert net[0].weight.grad is not None
    with packed_linears(net, rows=2, enabled=False) as active:
        assert active is False
    try:
        with packed_linears(net, rows=2, enabled=None):  # no "automatic" mode: it must be an explicit choice
            raise AssertionError("enabled=None was accepted")
    except ValueError as e:
        assert "True or False" in str(e)


def test_rms_norm_fused_path_equals_formula():
    norm = RMSNorm(16)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, 16)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert torch.allclose(norm(x), ref, atol=1e-6)
    assert torch.allclose(norm(x.double()), ref.double(), atol=1e-5)
    assert F.linear(x, torch.eye(16)).shape == (4, 16)


@pytest.mark.skipif(not _ops_available(), reason="this torch build has no oneDNN linear ops: nothing is packed")
def test_calls_with_many_rows_take_the_plain_path():
    """Prepacked weights only help at few rows; above MAX_PACKED_ROWS a call must use the plain GEMM."""
    from argen.nn.fast_linear import MAX_PACKED_ROWS
    torch.manual_seed(0)
    lin = Linear(1024, 1024)
    # a packed copy of a *zero* weight tells the two paths apart: the packed one returns just the bias
    lin._packed = torch.ops.mkldnn._reorder_linear_weight(torch.zeros_like(lin.weight), 8)
    try:
        with torch.inference_mode():
            few = torch.randn(2, MAX_PACKED_ROWS // 2, 1024)
            many = torch.randn(2, MAX_PACKED_ROWS // 2 + 1, 1024)
            assert torch.allclose(lin(few), lin.bias.expand(2, MAX_PACKED_ROWS // 2, 1024))
            assert torch.equal(lin(many), F.linear(many, lin.weight, lin.bias))
    finally:
        lin._packed = None
