import os

# Idle OpenMP threads spin by default; on a busy 2-core machine that stalls tiny-model tests 10-100x.
# Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores here; keep torch from oversubscribing when pytest-xdist or BLAS threads pile up.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
