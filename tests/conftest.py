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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are latency-bound: run a module single-threaded (two OpenMP threads on a busy 2-core box
    spend far longer synchronising than working), then restore the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fashion_mnist():
    """Skip (never download) when Fashion-MNIST is not installed, as the dataset tests do."""
    from argen.data import fashion_mnist as fm

    root = fm.find_root()
    if root is None:
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (scripts/setup.sh does this)")
    return root
