"""Tiny tasks and data shared by the training tests (fixtures return factories)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from argen.types import LossOutput


class ToyTask(nn.Module):
    """MLP classifier with dropout, a norm, augmentation noise from ctx.rng and an integer buffer."""

    def __init__(self, hidden: int = 16, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 4))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, batch, ctx):
        x, y = batch
        x = x + 0.1 * torch.randn(x.shape, generator=ctx.rng, device=x.device)  # augmentation from the loop rng
        logits = self.net(x)
        self.seen += x.shape[0]
        return LossOutput(F.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean(), "const": 2.0})


class ToyGAN(nn.Module):
    """Two phases: generator (maps noise to 8-d points) and a hinge discriminator with its own lr."""

    def __init__(self, disc_start: int = 0):
        super().__init__()
        self.disc_start = disc_start
        self.G = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 8))
        self.D = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def phases(self):
        return {"generator": list(self.G.parameters()),
                "discriminator": {"params": list(self.D.parameters()), "lr": 2e-3}}

    def ema_module(self):
        return self.G

    def forward(self, batch, ctx):
        real = batch[0]
        z = torch.randn(real.shape[0], 4, generator=ctx.rng, device=real.device)
        if ctx.phase == "generator":
            fake = self.G(z)
            return LossOutput(-self.D(fake).mean() + 0.1 * fake.pow(2).mean(), {"fake_mean": fake.mean()})
        if ctx.step < self.disc_start:
            return LossOutput(torch.zeros((), device=real.device))
        with torch.no_grad():
            fake = self.G(z)
        loss = F.relu(1 - self.D(real)).mean() + F.relu(1 + self.D(fake)).mean()
        return LossOutput(loss, {"d_real": self.D(real).mean().detach()})


@pytest.fixture
def toy_data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(40, 8, generator=g), torch.randint(0, 4, (40,), generator=g))


@pytest.fixture
def make_toy():
    def make(seed: int = 0, **kw):
        torch.manual_seed(seed)
        return ToyTask(**kw)
    return make


@pytest.fixture
def make_gan():
    def make(seed: int = 0, **kw):
        torch.manual_seed(seed)
        return ToyGAN(**kw)
    return make
