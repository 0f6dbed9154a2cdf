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


def test_ranks_split_each_step_disjointly_and_together_equal_one_process():
    # 3 ranks x chunk 2 = global batch 6 per step; one process with chunk 6 reads the same stream
    ranks = [ResumableSampler(11, seed=0, rank=r, world_size=3, chunk=2) for r in range(3)]
    one = _take(ResumableSampler(11, seed=0, chunk=6), 24)
    parts = [_take(s, 8) for s in ranks]  # 4 steps of 2 samples each
    for step in range(4):
        got = sum((p[2 * step:2 * step + 2] for p in parts), [])
        assert got == one[6 * step:6 * step + 6]  # rank r takes the r-th chunk of the step
    assert sorted(one[:11]) == list(range(11))  # no sample dropped or repeated within an epoch
    assert len(set(sum((p[:2] for p in parts), []))) == 6  # disjoint within a step
    with pytest.raises(DataError, match="fewer than"):
        ResumableSampler(2, world_size=3)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_position_is_the_same_on_any_number_of_processes(world):
    chunk = 8 // world
    s = ResumableSampler(13, seed=5, world_size=world, chunk=chunk)
    pos = s.advance(DataPosition(), 3 * 8)  # three steps of a global batch of 8
    assert pos == DataPosition(1, 11)
    resumed = [_take(ResumableSampler(13, seed=5, rank=r, world_size=world, chunk=chunk, start=pos), chunk)
               for r in range(world)]
    assert sum(resumed, []) == _take(ResumableSampler(13, seed=5, chunk=8), 32)[24:32]


def test_permutation_depends_only_on_seed_and_epoch():
    a = ResumableSampler(50, seed=7).permutation(5)
    b = ResumableSampler(50, seed=7, start=DataPosition(9, 3)).permutation(5)
    assert torch.equal(a, b)
