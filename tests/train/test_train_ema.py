import pytest
import torch
from torch import nn

from argen.errors import CheckpointError
from argen.train import EMA


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def test_ema_math_params_and_buffers():
    torch.manual_seed(0)
    net = _Net()
    ema = EMA(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    history = []
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.bn(torch.randn(5, 2))  # train mode: updates BatchNorm running stats (buffers)
        history.append({k: v.clone() for k, v in net.state_dict().items()})
        ema.update(net)
    for k, v0 in start.items():
        if v0.is_floating_point():
            want = v0
            for h in history:
                want = 0.9 * want + 0.1 * h[k]
            torch.testing.assert_close(ema.shadow[k], want, rtol=1e-6, atol=1e-7)
        else:  # num_batches_tracked is copied, not averaged
            assert torch.equal(ema.shadow[k], history[-1][k]) and ema.shadow[k].item() == 3
    assert ema.num_updates == 3


def test_ema_decay_zero_tracks_exactly_and_shadow_is_independent():
    net = _Net()
    ema = EMA(net, decay=0.0)
    with torch.no_grad():
        net.lin.weight.fill_(3.0)
    ema.update(net)
    assert torch.equal(ema.shadow["lin.weight"], net.lin.weight)
    with torch.no_grad():
        net.lin.weight.fill_(5.0)
    assert ema.shadow["lin.weight"].unique().item() == 3.0  # a copy, not a view


def test_copy_swap_and_state_round_trip():
    torch.manual_seed(0)
    net = _Net()
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.lin.weight.add_(1.0)
    ema.update(net)
    live = net.lin.weight.detach().clone()
    with ema.swapped(net):
        assert torch.equal(net.lin.weight, ema.shadow["lin.weight"]) and not torch.equal(net.lin.weight, live)
    assert torch.equal(net.lin.weight, live)
    other = EMA(_Net(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow) and other.num_updates == 1
    copy = _Net()
    ema.copy_to(copy)
    assert torch.equal(copy.lin.weight, ema.shadow["lin.weight"])


def test_load_mismatch_raises():
    ema = EMA(_Net(), decay=0.9)
    bad = EMA(nn.Linear(3, 5), decay=0.9).state_dict()
    with pytest.raises(CheckpointError, match="does not match"):
        ema.load_state_dict(bad)
