import itertools

import pytest
import torch

from argen.errors import DataError
from argen.train import DataPosition, ResumableSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_seeded_permutation():
    s = ResumableSampler(10, seed=3)
    stream = _take(s, 30)
    epochs = [stream[i:i + 10] for i in (0, 10, 20)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert _take(ResumableSampler(10, seed=3), 30) == stream  # same seed, same stream
    assert _take(ResumableSampler(10, seed=4), 10) != epochs[0]
    assert _take(ResumableSampler(10, shuffle=False), 12) == list(range(10)) + [0, 1]


@pytest.mark.parametrize("consumed", [0, 3, 10, 17, 25])
def test_resume_from_advanced_position_continues_the_stream(consumed):
    full = _take(ResumableSampler(10, seed=1), 40)
    s = ResumableSampler(10, seed=1)
    pos = s.advance(DataPosition(), consumed)
    assert pos == DataPosition(consumed // 10, consumed % 10)
    resumed = ResumableSampler(10, seed=1, start=pos)
    assert _take(resumed, 40 - consumed) == full[consumed:]


def test_ranks_split_each_epoch_disjointly():
    shards = [ResumableSampler(11, seed=0, rank=r, world_size=3) for r in range(3)]
    assert shards[0].shard_size == 3
    firsts = [_take(s, 3) for s in shards]
    flat = sum(firsts, [])
    assert len(set(flat)) == 9 and set(flat) <= set(range(11))  # disjoint, tail of 2 dropped
    assert flat != list(range(9))
    with pytest.raises(DataError, match="fewer than"):
        ResumableSampler(2, world_size=3)


def test_permutation_depends_only_on_seed_and_epoch():
    a = ResumableSampler(50, seed=7).permutation(5)
    b = ResumableSampler(50, seed=7, start=DataPosition(9, 3)).permutation(5)
    assert torch.equal(a, b)
