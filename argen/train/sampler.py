"""A resumable, seeded, epoch-permuting sampler: an endless index stream with a saveable position.

Epoch e visits the dataset in the order `torch.randperm(N)` drawn from a generator seeded with
(seed, e), so the order depends only on (seed, epoch) — never on how many times the run was stopped.
With `world_size` processes, rank r takes every world_size-th index of the permutation (the tail that
does not divide evenly is dropped), so all ranks see the same number of samples per epoch.

The stream never ends: batches may straddle an epoch boundary, and the training loop counts optimizer
steps, not epochs. The position is `DataPosition(epoch, index)` — `index` counts samples of this rank's
share of the epoch already consumed (with one process: the index within the epoch's permutation). The
loop computes it from the number of samples it consumed (`advance`), not from the DataLoader, whose
workers prefetch ahead; restoring it makes the next batch exactly the one an uninterrupted run would see.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Sampler

from ..errors import DataError


@dataclass(frozen=True)
class DataPosition:
    """Where the sample stream stands: `index` samples of epoch `epoch` (this rank's share) are consumed."""

    epoch: int = 0
    index: int = 0


class ResumableSampler(Sampler[int]):
    """Endless stream of dataset indices, reshuffled every epoch, starting at `start`."""

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 start: DataPosition = DataPosition()):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if num_samples < world_size:
            raise DataError(f"the dataset has {num_samples} samples, fewer than the {world_size} processes; "
                            "use a larger dataset or fewer processes")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.start = start

    @property
    def shard_size(self) -> int:
        """Samples per epoch seen by one rank."""
        return self.num_samples // self.world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the whole dataset in `epoch` (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.num_samples, generator=g)

    def shard(self, epoch: int) -> torch.Tensor:
        """This rank's indices for `epoch`, in visiting order."""
        return self.permutation(epoch)[self.rank : self.shard_size * self.world_size : self.world_size]

    def advance(self, position: DataPosition, count: int) -> DataPosition:
        """The position after consuming `count` more samples from `position`."""
        epoch, index = divmod(position.index + count, self.shard_size)
        return DataPosition(position.epoch + epoch, index)

    def __iter__(self) -> Iterator[int]:
        epoch, index = self.start.epoch, self.start.index
        while True:
            for i in self.shard(epoch)[index:].tolist():
                yield i
            epoch, index = epoch + 1, 0
