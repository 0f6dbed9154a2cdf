import os

import pytest
import torch

# Two cores here; keep torch from oversubscribing when pytest-xdist or BLAS threads pile up.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
