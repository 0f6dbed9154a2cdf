"""Which images: the held-out test slice of a folder without a test split, and evaluation subsets.

Both are deterministic functions of the file list (or the labels) and a seed, never of the order in
which files were read or of which runs came before, so a resumed run and a re-run evaluation see
the same images.

* `held_out_mask`: a folder with no test/ subfolder still needs a test split (reconstructions,
  tokenizer evaluation). A file is held out when a seeded hash of its path relative to the folder
  falls below `fraction` (about that share of every class): its side never changes when other
  files are added, and moving the folder does not reshuffle it. split="train" leaves these files
  out, so the two never overlap.
* `evaluation_order`: FID on the first N images of a class-sorted folder compares against one class
  (FID in the hundreds, precision 0). The order is a seeded shuffle in which every prefix is
  class-stratified (per-class counts within one of proportional), so "the first N of the order" is a
  random stratified subset, and a cached larger N still serves a smaller one as a prefix.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..errors import DataError


def _unit_hash(seed: int, name: str) -> float:
    """A uniform number in [0, 1) from (seed, name): the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "big") / 2.0**64


def held_out_mask(names: Sequence[str], labels: Sequence[int] | np.ndarray, fraction: float,
                  seed: int = 0) -> np.ndarray:
    """Boolean (N,) mask of the held-out files: those whose seeded hash of the name is below `fraction`.

    `names` are stable identifiers (relative paths), so a file's side depends on its own name only:
    adding or removing other files never moves it (a model trained on "train" is never evaluated
    on one of its own training images later). Two corrections for small folders, by hash order:
    every class keeps at least one training file, and the held-out slice gets at least one file
    (from the largest class).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(names) != len(labels):
        raise ValueError(f"{len(names)} names for {len(labels)} labels")
    if len(names) < 2:
        raise DataError(f"cannot hold out a test split from {len(names)} image(s); add images or make a test/ "
                        "subfolder")
    u = np.array([_unit_hash(seed, n) for n in names])
    mask = u < fraction
    groups = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    for idx in groups.values():
        if mask[idx].all():  # a class entirely held out: its highest hash goes back to training
            mask[idx[np.argmax(u[idx])]] = False
    if not mask.any():
        largest = max(groups, key=lambda c: (len(groups[c]), -c))
        idx = groups[largest]
        if len(idx) < 2:
            raise DataError(f"cannot hold out a test split: every class has a single image ({len(names)} in all); "
                            "add images or make a test/ subfolder")
        mask[idx[np.argmin(u[idx])]] = True
    return mask


def evaluation_order(labels: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of range(N) whose every prefix is class-stratified (labels < 0: one group).

    Within each class the members are shuffled; the k-th of n_c gets the key (k + u_c) / n_c with u_c
    uniform in [0, 1), and the order sorts by key, so any prefix holds about n_c / N of each class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if len(classes) <= 1:
        return rng.permutation(len(labels))
    members, keys = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        members.append(idx)
        keys.append((np.arange(len(idx)) + rng.random()) / len(idx))
    members, keys = np.concatenate(members), np.concatenate(keys)
    return members[np.argsort(keys, kind="stable")]


def subset_rule(n: int, total: int, seed: int, labelled: bool) -> str:
    """How `evaluation_order(...)[:n]` was chosen, in words, for evaluation protocols."""
    if n >= total:
        return f"all {total} images"
    kind = "class-stratified random" if labelled else "random"
    return f"seeded {kind} subset of {n} of {total} images (seed {seed}; argen.data.splits.evaluation_order)"
