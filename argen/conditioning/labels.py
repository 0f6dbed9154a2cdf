"""Class-label conditioning with a null class for classifier-free guidance (Ho & Salimans,
https://arxiv.org/abs/2207.12598).

Class ids are 0..num_classes-1; id `num_classes` is the null ("unconditional") class. Label -1 means
"no label" everywhere in argen (unconditional datasets, the uncond half of CFG) and maps to the null id.
During training a fraction `dropout` of labels is replaced by the null id so one network learns both
the conditional and the unconditional model. Parameter name `embedding_table` matches LlamaGen/DiT.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..types import Cond

NULL_LABEL = -1


def as_cond(cond: Cond | Tensor | Sequence[int] | int, device: torch.device | str | None = None) -> Cond:
    """Accept a Cond, a LongTensor / list of class ids (-1 = unconditional) or one int; return a Cond."""
    if isinstance(cond, Cond):
        return cond.to(device) if device is not None else cond
    if isinstance(cond, int):
        cond = [cond]
    labels = torch.as_tensor(cond, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() == 0:
        raise ValueError("no labels given: pass at least one class id (or -1 for unconditional)")
    return Cond(labels=labels)


def null_like(cond: Cond) -> Cond:
    """The unconditional counterpart of a label Cond (every label -> -1)."""
    if cond.labels is None:
        raise ValueError("class-conditional generators need Cond.labels (use -1 for unconditional samples)")
    return Cond(labels=torch.full_like(cond.labels, NULL_LABEL))


class ClassEmbedder(nn.Module):
    """labels (B,) -> one prefix token (B, 1, C); table has num_classes + 1 rows (last = null)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def ids(self, labels: Tensor) -> Tensor:
        """Map -1 to the null id and check the range (ids >= num_classes are a user error)."""
        labels = labels.long()
        if labels.numel() and (int(labels.max()) >= self.num_classes or int(labels.min()) < NULL_LABEL):
            raise ValueError(f"class labels must be in [0, {self.num_classes}) or -1 for unconditional; got "
                             f"min {int(labels.min())}, max {int(labels.max())}")
        return torch.where(labels < 0, torch.full_like(labels, self.null_id), labels)

    def drop(self, ids: Tensor, prob: float, rng: torch.Generator | None = None) -> Tensor:
        """Replace each id by the null id with probability `prob` (CFG label dropout, training only)."""
        if prob <= 0:
            return ids
        hit = torch.rand(ids.shape, device=ids.device, generator=rng) < prob
        return ids.masked_fill(hit, self.null_id)

    def forward(self, ids: Tensor) -> Tensor:
        return self.embedding_table(ids).unsqueeze(1)  # (B, 1, C)
