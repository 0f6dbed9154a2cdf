import numpy as np
import pytest
import scipy.linalg
import torch

from argen.metrics.frechet import (UnstableMetricWarning, feature_statistics, frechet_distance, kernel_distance,
                                   precision_recall)


def _gaussians(seed=0, n=400, d=16, shift=0.5):
    r = np.random.RandomState(seed)
    a = r.randn(n, d) @ r.randn(d, d) * 0.3
    b = r.randn(n, d) @ r.randn(d, d) * 0.3 + shift
    return a, b


def test_frechet_matches_direct_scipy_formula():
    r = np.random.RandomState(1)
    d = 8
    mu1, mu2 = r.randn(d), r.randn(d)
    a, b = r.randn(d, d), r.randn(d, d)
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    # Direct: Tr(S1 + S2 - 2 sqrt(sqrt(S1) S2 sqrt(S1))) (the symmetric form, independent of the code path)
    r1 = scipy.linalg.sqrtm(s1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # = 5 + 1 + 1 + 0.25
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(7.25)


def test_fid_of_a_set_with_itself_is_zero_and_shift_adds_squared_norm():
    a, _ = _gaussians()
    mu, sigma = feature_statistics(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    shift = np.full(a.shape[1], 0.25)
    mu2, sigma2 = feature_statistics(a + shift)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_feature_statistics_accepts_tensors_and_matches_numpy():
    a, _ = _gaussians(n=50, d=4)
    mu, sigma = feature_statistics(torch.from_numpy(a).float())
    np.testing.assert_allclose(mu, a.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(a, rowvar=False), atol=1e-5)


def test_small_n_warns_and_n_below_two_refuses():
    r = np.random.RandomState(0)
    with pytest.warns(UnstableMetricWarning, match="unstable"):
        feature_statistics(r.randn(10, 32))
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_statistics(r.randn(1, 32))


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shift():
    a, b = _gaussians(n=300, d=8, shift=1.0)
    r = np.random.RandomState(3)
    same = r.randn(300, 8) @ np.eye(8)
    same2 = r.randn(300, 8)
    m_same, _ = kernel_distance(same, same2, subsets=10, subset_size=100, seed=0)
    m_diff, _ = kernel_distance(a, b, subsets=10, subset_size=100, seed=0)
    assert abs(m_same) < 0.01 < m_diff
    with pytest.raises(ValueError, match="subset size"):
        kernel_distance(a[:50], b, subset_size=100)


def test_precision_recall_on_disjoint_and_identical_sets():
    a, _ = _gaussians(n=200, d=8, shift=0)
    p, r = precision_recall(a, a)
    assert p == 1.0 and r == 1.0
    p, r = precision_recall(a, a + 1000.0)
    assert p == 0.0 and r == 0.0
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall(a[:3], a)


def test_recall_drops_when_generated_set_covers_half_of_the_reference():
    r = np.random.RandomState(0)
    ref = r.randn(400, 2)
    gen = ref[ref[:, 0] > 0] + 0.01 * r.randn(*ref[ref[:, 0] > 0].shape)  # mode dropping
    p, rec = precision_recall(gen, ref)
    assert p > 0.9 and 0.35 < rec < 0.75


# ----------------------------------------------------------------------------- torch-fidelity agreement

@pytest.fixture(scope="module")
def tf_metrics():
    pytest.importorskip("torch_fidelity")
    from torch_fidelity import metric_fid, metric_kid, metric_prc

    return metric_fid, metric_kid, metric_prc


def test_agrees_with_torch_fidelity_on_the_same_features(tf_metrics):
    metric_fid, metric_kid, metric_prc = tf_metrics
    a, b = _gaussians(seed=5, n=300, d=24, shift=0.3)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)  # float64 on both sides
    ours_fid = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    theirs = metric_fid.fid_statistics_to_metric(metric_fid.fid_features_to_statistics(ta),
                                                  metric_fid.fid_features_to_statistics(tb), verbose=False)
    assert ours_fid == pytest.approx(theirs[metric_fid.KEY_METRIC_FID], rel=1e-6)

    kid_mean, kid_std = kernel_distance(a, b, subsets=20, subset_size=120, seed=7)
    theirs = metric_kid.kid_features_to_metric(ta, tb, kid_subsets=20, kid_subset_size=120, rng_seed=7,
                                               verbose=False)
    assert kid_mean == pytest.approx(theirs[metric_kid.KEY_METRIC_KID_MEAN], rel=1e-6)
    assert kid_std == pytest.approx(theirs[metric_kid.KEY_METRIC_KID_STD], rel=1e-6)

    p, r = precision_recall(a, b, k=3)
    theirs = metric_prc.prc_features_to_metric(ta, tb, prc_neighborhood=3, verbose=False)
    assert p == pytest.approx(theirs[metric_prc.KEY_METRIC_PRECISION], rel=1e-6)
    assert r == pytest.approx(theirs[metric_prc.KEY_METRIC_RECALL], rel=1e-6)
    assert 0 < p < 1 and 0 < r < 1  # a non-trivial case
