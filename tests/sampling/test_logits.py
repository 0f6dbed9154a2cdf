import math

import pytest
import torch

from argen.sampling.logits import filter_logits, sample_logits, top_k_filter, top_p_filter


def kept(logits):
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


def test_top_k_keeps_exactly_the_k_largest_and_ties_with_the_kth():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.5, 2.5])
    assert kept(top_k_filter(logits, 3)) == {1, 3, 5}
    assert kept(top_k_filter(logits, 0)) == set(range(6))
    assert kept(top_k_filter(logits, 99)) == set(range(6))
    tied = torch.tensor([1.0, 2.0, 1.0, 0.0, 1.0])
    assert kept(top_k_filter(tied, 2)) == {0, 1, 2, 4}  # HF semantics: ties with the k-th value are kept


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()
    assert kept(top_p_filter(logits, 0.75)) == {1, 3}  # 0.5 + 0.3 >= 0.75
    assert kept(top_p_filter(logits, 0.85)) == {1, 2, 3}
    assert kept(top_p_filter(logits, 0.01)) == {1}  # the argmax always survives
    assert kept(top_p_filter(logits, 1.0)) == {0, 1, 2, 3}
    # top-k first, then top-p renormalised over the kept set: {0.5, 0.3} -> {0.625, 0.375}
    assert kept(filter_logits(logits, top_k=2, top_p=0.7)) == {1, 3}
    assert kept(filter_logits(logits, top_k=2, top_p=0.6)) == {1}  # 0.625 alone already reaches 0.6


@pytest.mark.parametrize("top_k, top_p, temperature", [(0, 1.0, 1.0), (5, 1.0, 1.0), (5, 0.7, 0.8), (0, 0.6, 1.3),
                                                       (40, 0.9, 1.0)])
def test_sample_logits_draws_from_the_reference_distribution(top_k, top_p, temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 50, generator=g) * 2
    ref = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p).log_softmax(-1)[0]
    rows = logits.expand(4000, 50)
    tokens, scores = sample_logits(rows, temperature=temperature, top_k=top_k, top_p=top_p, rng=g)
    drawn = set(tokens.tolist())
    assert drawn <= kept(ref)  # nothing outside the kept set, and every likely kept token appears
    assert {i for i in kept(ref) if ref[i].exp() > 2e-3} <= drawn
    assert torch.allclose(scores, ref[tokens], atol=1e-5)  # scores are log-probs of the sampling distribution
    freq = torch.bincount(tokens, minlength=50).float() / 4000
    assert (freq - ref.exp()).abs().max() < 0.04


def test_sample_logits_tie_fallback_and_greedy():
    logits = torch.tensor([[0.0, 5.0, 5.0, 5.0, -1.0]]).expand(600, 5)
    tokens, _ = sample_logits(logits, top_k=2, rng=torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {1, 2, 3}  # tie at the k-th value keeps all three
    greedy, score = sample_logits(torch.tensor([[0.0, 1.0, 3.0]]), temperature=0.0)
    assert greedy.item() == 2 and math.isclose(score.item(), torch.tensor([0.0, 1.0, 3.0]).log_softmax(-1)[2].item(),
                                               rel_tol=1e-6)


def test_sample_logits_shapes_and_seeds():
    logits = torch.randn(3, 4, 100)
    a, s = sample_logits(logits, top_k=10, rng=torch.Generator().manual_seed(1))
    b, _ = sample_logits(logits, top_k=10, rng=torch.Generator().manual_seed(1))
    c, _ = sample_logits(logits, top_k=10, rng=torch.Generator().manual_seed(2))
    assert a.shape == s.shape == (3, 4) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
