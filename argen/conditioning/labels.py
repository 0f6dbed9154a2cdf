"""Class-label conditioning with a null class for classifier-free guidance (Ho & Salimans,
https://arxiv.org/abs/2207.12598).

Class ids are 0..num_classes-1; row `num_classes` of the table is the null ("unconditional") class. Label -1
(`NULL_LABEL`) means "no label" everywhere in argen (unconditional datasets, CFG's uncond half) and maps to the
null row; `num_classes=0` is an unconditional model (its one row is a learned start token). The embedding of a
label is both the prefix token (LlamaGen's class token) and the vector (VAR's AdaLN condition, MAR's buffer).
The parameter name `embedding_table` matches LlamaGen/DiT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..registry import register
from ..types import Cond, Conditioning
from .base import Conditioner, ConditionerConfig

NULL_LABEL = -1
NULL_NAMES = ("none", "null", "uncond", "unconditional")


@dataclass(frozen=True, kw_only=True)
class ClassConditionerConfig(ConditionerConfig):
    """`num_classes` 0 = unconditional. `class_names` (optional) name every class, in id order: the CLI, the
    web page and `parse` accept them, and a dataset whose classes differ can be refused."""

    num_classes: int = 1000
    class_names: tuple[str, ...] = ()
    init_std: float = 0.02  # N(0, init_std) init (LlamaGen 0.02; VAR sqrt(1 / (3 dim)))

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries but num_classes is {self.num_classes}; "
                             "give one name per class or none")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")


@register("class", ClassConditionerConfig)
class ClassConditioner(Conditioner):
    """labels (B,) -> Conditioning(prefix (B, 1, C), vector (B, C)); the table has num_classes + 1 rows."""

    config: ClassConditionerConfig

    def __init__(self, config: ClassConditionerConfig):
        super().__init__(config)
        self.embedding_table = nn.Embedding(config.num_classes + 1, config.dim)
        nn.init.normal_(self.embedding_table.weight, std=config.init_std)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_id(self) -> int:
        return self.config.num_classes

    # ------------------------------------------------------------------ raw conditions

    def label_ids(self, names: Sequence[str | int]) -> list[int]:
        """Class ids from names (case-insensitive) or ids ("sneaker", "7", 7); -1 / "none" = unconditional."""
        lowered = [c.lower() for c in self.config.class_names]
        out = []
        for n in names:
            s = str(n).strip()
            if s.lstrip("-").isdigit():
                out.append(int(s))
            elif s.lower() in NULL_NAMES:
                out.append(NULL_LABEL)
            elif s.lower() in lowered:
                out.append(lowered.index(s.lower()))
            else:
                known = ", ".join(self.config.class_names) or "(this model has no class names; use ids)"
                raise ValueError(f"unknown class {s!r}; use an id in [0, {self.num_classes}), -1 for unconditional, "
                                 f"or one of: {known}")
        return out

    def parse(self, values: Any, device: torch.device | str | None = None) -> Cond:
        """A Cond, a LongTensor / list of class ids or names, or one id -> Cond(labels) (range-checked)."""
        if isinstance(values, Cond):
            cond = values.to(device) if device is not None else values
        else:
            if isinstance(values, (int, str)):
                values = [values]
            if isinstance(values, Tensor):
                labels = values.to(device=device, dtype=torch.long).reshape(-1)
            else:
                labels = torch.as_tensor(self.label_ids(list(values)), dtype=torch.long, device=device).reshape(-1)
            cond = Cond(labels=labels)
        if cond.labels is None:
            raise ValueError("a class-conditional model needs labels (class ids, -1 for unconditional)")
        if cond.labels.numel() == 0:
            raise ValueError("no labels given: pass at least one class id (or -1 for unconditional)")
        self.ids(cond.labels)  # range check
        return cond

    def null(self, batch_size: int, device: torch.device | str | None = None) -> Cond:
        return Cond(labels=torch.full((batch_size,), NULL_LABEL, dtype=torch.long, device=device))

    def drop(self, cond: Cond, prob: float, rng: torch.Generator | None = None) -> Cond:
        if prob <= 0:
            return cond
        labels = cond.labels
        hit = torch.rand(labels.shape, device=labels.device, generator=rng) < prob
        return Cond(labels=labels.masked_fill(hit, NULL_LABEL))

    def is_null(self, cond: Cond) -> Tensor:
        return cond.labels < 0

    # ------------------------------------------------------------------ embedding

    def ids(self, labels: Tensor) -> Tensor:
        """Map -1 to the null id and check the range (ids >= num_classes are a user error)."""
        labels = labels.long()
        if labels.numel() and (int(labels.max()) >= self.num_classes or int(labels.min()) < NULL_LABEL):
            raise ValueError(f"class labels must be in [0, {self.num_classes}) or -1 for unconditional; got "
                             f"min {int(labels.min())}, max {int(labels.max())}")
        return torch.where(labels < 0, torch.full_like(labels, self.null_id), labels)

    def forward(self, cond: Cond) -> Conditioning:
        e = self.embedding_table(self.ids(cond.labels.to(self.embedding_table.weight.device)))  # (B, C)
        return Conditioning(prefix=e.unsqueeze(1), vector=e)  # prefix (B, 1, C) is a view

    def describe(self) -> dict[str, Any]:
        return {"kind": "class", "num_classes": self.num_classes, "class_names": list(self.config.class_names)}
