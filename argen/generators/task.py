"""Training task for `argen.train.Trainer`: a batch `(tokens, cond fields)` from a token cache -> the
generator's loss on the conditioner's embeddings.

CFG dropout (a fraction `conditioner.config.dropout` of rows made unconditional) draws from the loop's
generator (`ctx.rng`) before the generator draws its own choices, so resumed runs replay exactly. The EMA
tracks both trainable components (the conditioner's embeddings are learned too)."""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..types import Cond, LossOutput


def batch_cond(fields: Any) -> Cond:
    """A collated batch's conditioning -> Cond: a Cond, a mapping of Cond fields, or a label tensor."""
    if isinstance(fields, Cond):
        return fields
    if isinstance(fields, Mapping):
        return Cond(**{k: (v.long() if k == "labels" else v) for k, v in fields.items()})
    if isinstance(fields, Tensor):
        return Cond(labels=fields.long())
    raise TypeError(f"cannot read conditioning from a batch field of type {type(fields).__name__}")


class GeneratorTask(nn.Module):
    def __init__(self, generator: nn.Module, conditioner: nn.Module):
        super().__init__()
        generator.check_conditioner(conditioner)
        self.generator = generator
        self.conditioner = conditioner

    def forward(self, batch, ctx) -> LossOutput:
        tokens, fields = batch
        cond = batch_cond(fields).to(tokens.device)
        if self.training:
            cond = self.conditioner.drop(cond, self.conditioner.config.dropout, ctx.rng)
        return self.generator.loss(tokens, self.conditioner(cond), rng=ctx.rng)
