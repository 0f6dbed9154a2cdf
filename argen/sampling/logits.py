"""Logit processing for categorical sampling: temperature, top-k, top-p (nucleus, Holtzman et al.,
https://arxiv.org/abs/1904.09751) as pure functions, plus `sample_logits`, the fast sampler every
categorical head uses.

Semantics are Hugging Face's (and LlamaGen's), applied in the order temperature -> top-k -> top-p:
  * top-k keeps every token whose logit is >= the k-th largest, so tokens *tied* with the k-th value are
    all kept (the kept set can exceed k);
  * top-p sorts ascending and removes tokens whose ascending cumulative probability is <= 1 - p; the most
    likely token is always kept. Equal-probability tokens straddling the boundary are split by sort order
    (stable sort: among equal logits the lower token id is removed first).
`sample_logits` computes exactly these sets but avoids full-vocabulary sorts: with top_k > 0 it works on
the k candidates from `torch.topk` (already sorted, so top-p needs no further sort) and falls back to the
full-vocabulary path only when ties cross the k-th value.
"""
from __future__ import annotations

import torch
from torch import Tensor


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / T for T > 0 (T = 1 returns the input)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 here; temperature 0 (greedy) is handled by sample_logits")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set logits below the k-th largest to -inf (k <= 0 or k >= V keeps everything; ties are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest high-probability set whose mass exceeds p (HF rule; p >= 1 keeps everything)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False, stable=True)
    remove_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    remove_sorted[..., -1] = False  # always keep the most likely token
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Reference pipeline on the full vocabulary: temperature (if > 0), top-k, top-p."""
    if temperature > 0:
        logits = apply_temperature(logits, temperature)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def _top_p_on_descending(vals: Tensor, p: float) -> Tensor:
    """top_p_filter for rows already sorted in descending order (no sort needed)."""
    asc = vals.flip(-1)
    remove = asc.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    remove[..., -1] = False
    return vals.masked_fill(remove.flip(-1), float("-inf"))


def sample_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  rng: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample one token per row of logits (..., V).

    Returns `tokens` (...) int64 and `scores` (...) fp32, the log-probability of each chosen token under
    the distribution it was drawn from (after temperature and filtering; for temperature 0 — greedy —
    under the filtered distribution at temperature 1).
    """
    V = logits.shape[-1]
    lead = logits.shape[:-1]
    x = logits.reshape(-1, V).float()  # (R, V)
    if temperature > 0:
        x = apply_temperature(x, temperature)
    cand_idx = None  # None: candidates are the whole vocabulary
    if 0 < top_k < V:
        vals, idx = x.topk(top_k, dim=-1)  # (R, k), descending
        if bool(((x >= vals[:, -1:]).sum(-1) > top_k).any()):  # ties cross the k-th value: exact slow path
            x = top_k_filter(x, top_k)
        else:
            x, cand_idx = vals, idx
    if top_p < 1.0:
        x = _top_p_on_descending(x, top_p) if cand_idx is not None else top_p_filter(x, top_p)
    logp = x.log_softmax(dim=-1)
    if temperature > 0:
        choice = torch.multinomial(logp.exp(), 1, generator=rng)  # (R, 1)
    else:
        choice = x.argmax(dim=-1, keepdim=True)
    scores = logp.gather(-1, choice)
    tokens = cand_idx.gather(-1, choice) if cand_idx is not None else choice
    return tokens.reshape(lead), scores.reshape(lead)
