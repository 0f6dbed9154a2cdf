"""A resumable, seeded, epoch-permuting sampler: an endless index stream with a saveable position.

Epoch e visits the dataset in the order `torch.randperm(N)` drawn from a generator seeded with
(seed, e), so the order depends only on (seed, epoch) — never on how many times the run was stopped,
nor on how many processes read it. The epochs, concatenated, form one *global stream*.

Every optimizer step consumes the next `global batch` of the stream (`chunk * world_size` samples, where
`chunk = batch_size * grad_accum` is one process's share of a step): rank r takes the r-th contiguous
`chunk` of it, and splits it into its micro-batches. So the samples of a step are the same whether one
process takes all of them (in several micro-batches) or several processes take a part each: a run with
the same global batch sees the same data on any number of processes, and the ranks never overlap. No
sample is dropped at the end of an epoch: batches may straddle an epoch boundary (the loop counts
optimizer steps, not epochs).

The position is `DataPosition(epoch, index)`: `index` samples of epoch `epoch` of the global stream are
consumed, a number that means the same on any number of processes — which is what lets a checkpoint
written on N processes resume on M. The loop computes it from the number of samples consumed
(`advance`), not from the DataLoader, whose workers prefetch ahead; restoring it makes the next batch
exactly the one an uninterrupted run would see.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Sampler

from ..errors import DataError


@dataclass(frozen=True)
class DataPosition:
    """Where the global sample stream stands: `index` samples of epoch `epoch` are consumed (all ranks)."""

    epoch: int = 0
    index: int = 0


class ResumableSampler(Sampler[int]):
    """Endless stream of dataset indices, reshuffled every epoch, starting at `start`; with `world_size`
    processes this rank's share (`chunk` samples of every `chunk * world_size`, see the module docstring)."""

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 chunk: int = 1, start: DataPosition = DataPosition()):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if num_samples < 1:
            raise DataError("the dataset is empty; there is nothing to train on")
        if num_samples < world_size:
            raise DataError(f"the dataset has {num_samples} samples, fewer than the {world_size} processes; "
                            "use a larger dataset or fewer processes")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.chunk = chunk
        self.start = start

    @property
    def global_batch(self) -> int:
        """Samples of the global stream per optimizer step (all ranks together)."""
        return self.chunk * self.world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the whole dataset in `epoch` (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.num_samples, generator=g)

    def shard(self, epoch: int) -> torch.Tensor:
        """The global stream's order of `epoch` (kept for callers that look up which samples come first)."""
        return self.permutation(epoch)

    def advance(self, position: DataPosition, count: int) -> DataPosition:
        """The position after `count` more samples of the global stream are consumed from `position`."""
        epoch, index = divmod(position.index + count, self.num_samples)
        return DataPosition(position.epoch + epoch, index)

    def _global(self) -> Iterator[int]:
        epoch, index = self.start.epoch, self.start.index
        while True:
            yield from self.permutation(epoch)[index:].tolist()
            epoch, index = epoch + 1, 0

    def __iter__(self) -> Iterator[int]:
        stream = self._global()
        lo, hi, period = self.rank * self.chunk, (self.rank + 1) * self.chunk, self.global_batch
        k = 0
        for i in stream:
            if lo <= k < hi:
                yield i
            k = k + 1 if k + 1 < period else 0
