"""Full-reference image quality: PSNR and SSIM (Wang et al. 2004, https://doi.org/10.1109/TIP.2003.819861).

Conventions (fixed, so numbers are comparable across runs and papers that state the same ones):
* inputs are argen images (B, 3, H, W) in [-1, 1] (pass `value_range=(0, 1)` for [0, 1] images); both
  are mapped to [0, 1] and clamped, and data_range = 1;
* RGB: every channel is used and the result is the mean over channels (no Y/luma conversion);
* PSNR = 10 log10(1 / MSE), MSE over C, H, W of each image; identical images give +inf;
* SSIM: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering (no padding; as
  the reference MATLAB code, pytorch-msssim and tf.image.ssim), mean over pixels and channels.
Both return one value per image, shape (B,), computed in float32 or float64 (the input's, at least fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_unit(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    lo, hi = value_range
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return ((x.to(dtype) - lo) / (hi - lo)).clamp(0, 1)


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def psnr(a: Tensor, b: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (B,), data_range 1 on [0, 1]; +inf when identical."""
    _check_pair(a, b)
    mse = (_to_unit(a, value_range) - _to_unit(b, value_range)).pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)  # mse == 0 -> +inf


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Structural similarity per image (B,), Gaussian 11x11 sigma 1.5, mean over RGB channels."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{tuple(a.shape[-2:])}")
    x, y = _to_unit(a, value_range), _to_unit(b, value_range)
    c = x.shape[1]
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)
    # Separable filter applied per channel (groups=C): rows then columns.
    wh = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wv = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data_range = 1
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)
