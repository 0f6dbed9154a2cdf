"""Distances between two sets of features: Frechet distance, kernel distance, precision/recall.

* Frechet distance (FID when the features are TF-Inception pool3; Heusel et al. 2017,
  https://arxiv.org/abs/1706.08500): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64 with
  scipy's `sqrtm`; if the product is singular, eps * I is added to both covariances (TTUR / pytorch-fid).
* Kernel distance (KID; Binkowski et al. 2018, https://arxiv.org/abs/1801.01401): unbiased MMD^2 with the
  cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets. Subsets are drawn
  exactly as torch-fidelity does (numpy RandomState(seed).choice without replacement, generated set
  first), so the same seed gives the same value.
* Precision / recall (Kynkaenniemi et al. 2019, https://arxiv.org/abs/1904.06991) with k-NN radius
  manifolds, k=3, as in the ADM evaluator (Dhariwal & Nichol 2021): precision = share of generated
  samples inside the real manifold, recall = share of real samples inside the generated manifold.

Everything takes feature arrays (N, D) (numpy or torch) and returns Python floats.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


class UnstableMetricWarning(UserWarning):
    """The sample is too small for the statistic to be trusted (e.g. fewer samples than feature dims)."""


def _as_float64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    return x


def check_sample_size(n: int, dim: int, what: str = "features") -> None:
    """N < 2: error (no covariance). N < dim: UnstableMetricWarning (singular covariance, noisy FID)."""
    if n < 2:
        raise ValueError(f"{what}: need at least 2 samples for a covariance, got {n}; evaluate more images")
    if n < dim:
        warnings.warn(f"{what}: {n} samples for {dim}-d features; the covariance is singular and the Frechet "
                      f"distance is unstable and biased upward (use N >= {dim}, ideally 10x more; compare only "
                      "numbers computed with the same N)", UnstableMetricWarning, stacklevel=3)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64 (as np.cov)."""
    x = _as_float64(features)
    check_sample_size(x.shape[0], x.shape[1])
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}; both sides must use the same feature network")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. N < D): regularise both covariances slightly and retry.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            warnings.warn(f"sqrtm has an imaginary component of {imag:.3g}: the covariances are nearly singular "
                          "and the Frechet distance is unreliable (use more samples)", UnstableMetricWarning,
                          stacklevel=2)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> np.ndarray:
    return (x @ y.T * gamma + coef0) ** degree


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)  # off-diagonal sums: the unbiased estimator drops i == j
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(gen_features, ref_features, subsets: int = 100, subset_size: int = 1000, seed: int = 2020,
                    degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """KID: mean and std of unbiased MMD^2 over `subsets` random subsets of `subset_size` from each side."""
    x, y = _as_float64(gen_features), _as_float64(ref_features)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    if subset_size < 2 or subset_size > min(len(x), len(y)):
        raise ValueError(f"KID subset size {subset_size} must be in [2, min(N_gen, N_ref) = {min(len(x), len(y))}]; "
                         "lower it or evaluate more images")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)  # a local, seeded generator (same draws as torch-fidelity)
    mmds = np.empty(subsets)
    for i in range(subsets):
        a = x[rng.choice(len(x), subset_size, replace=False)]
        b = y[rng.choice(len(y), subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(_poly_kernel(a, a, degree, gamma, coef0), _poly_kernel(a, b, degree, gamma, coef0),
                                 _poly_kernel(b, b, degree, gamma, coef0))
    return float(mmds.mean()), float(mmds.std())


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row (the row itself is the 0-th neighbour)."""
    return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(chunk)])


def _inside_share(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Share of `points` within radius[j] of some centre j."""
    hits = [(torch.cdist(c, centres) <= radii).any(dim=1) for c in points.split(chunk)]
    return torch.cat(hits).double().mean().item()


def precision_recall(gen_features, ref_features, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (float64 distances, memory O(chunk * N))."""
    x = torch.from_numpy(_as_float64(gen_features))
    y = torch.from_numpy(_as_float64(ref_features))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per side, got "
                         f"{len(x)} generated and {len(y)} reference")
    precision = _inside_share(x, y, _knn_radii(y, k, chunk), chunk)
    recall = _inside_share(y, x, _knn_radii(x, k, chunk), chunk)
    return precision, recall
