import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from argen.metrics import CodeCounter, bits_per_dim, codebook_perplexity, codebook_usage, psnr, ssim


def _images(seed=0, shape=(2, 3, 24, 24)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8  # in [-0.8, 0.8]


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    x = _images()
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)


def test_constant_offset_gives_known_psnr():
    x = _images()
    # +0.2 in [-1, 1] is +0.1 on the [0, 1] scale (data_range 1): PSNR = -20 log10(0.1) = 20 dB
    assert torch.allclose(psnr(x, x + 0.2), torch.full((2,), 20.0), atol=1e-4)
    u = (x + 1) / 2
    assert torch.allclose(psnr(u, u + 0.01, value_range=(0, 1)), torch.full((2,), 40.0), atol=1e-3)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Straight from Wang et al.: 2-D Gaussian filter (scipy), valid region only, mean over channels."""
    vals = []
    for c in range(a.shape[0]):
        x, y = a[c], b[c]
        f = lambda t: scipy.ndimage.gaussian_filter(t, 1.5, truncate=5 / 1.5, mode="constant")[5:-5, 5:-5]  # noqa
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def test_ssim_matches_a_direct_reference_and_drops_with_noise():
    x = _images(1)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    ours = ssim(x.double(), noisy.double())
    ref = _ssim_reference(((x[0].double() + 1) / 2).numpy(), ((noisy[0].double() + 1) / 2).numpy())
    assert ours[0].item() == pytest.approx(ref, rel=1e-6)
    assert ours[0] < 0.9
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_codebook_usage_and_perplexity():
    ids = torch.tensor([[0, 1], [2, 3]])
    assert codebook_usage(ids, 8) == 50.0
    assert codebook_perplexity(ids, 8) == pytest.approx(4.0)
    assert codebook_perplexity(torch.zeros(10, dtype=torch.long), 8) == pytest.approx(1.0)
    counter = CodeCounter(4)
    counter.update(torch.tensor([0, 0]))
    counter.update(torch.tensor([1, 1]))
    assert counter.usage == 50.0 and counter.perplexity == pytest.approx(2.0)
    with pytest.raises(ValueError, match="code ids must lie"):
        codebook_usage(torch.tensor([8]), 8)


def test_bits_per_dim():
    assert bits_per_dim(math.log(2) * 3072, 3072) == pytest.approx(1.0)
    assert torch.allclose(bits_per_dim(torch.tensor([math.log(256) * 12]), 12), torch.tensor([8.0]))
