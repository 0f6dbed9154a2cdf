"""Reported evaluator faults: which N images are used, N larger than the set, KID spread with one subset."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from argen.cli import main
from argen.data.splits import evaluation_order
from argen.errors import DataError
from argen.metrics import UnstableMetricWarning, evaluate
from argen.metrics.features import FeatureNet, LeNetConfig, LeNetFeatures, save_lenet


class _Toy(FeatureNet):
    """Cheap deterministic features: 2x2 average-pooled pixels (12-d)."""

    name, dim, resize, weights_hash = "toy", 12, "adaptive avg-pool to 2x2", "toyhash"

    def extract(self, x):
        return F.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)


RED, BLUE = (220, 30, 30), (30, 30, 220)


def _solid(color, n, seed, size=16):
    """n noisy uint8 images (N, H, W, 3) around one colour."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array(color) + rng.normal(0, 12, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _class_sorted_folder(root, n_per=30, size=16):
    """root/a: red images, root/b: blue ones, so the first N files are all one class."""
    for cls, color, seed in (("a", RED, 0), ("b", BLUE, 1)):
        (root / cls).mkdir(parents=True)
        for i, arr in enumerate(_solid(color, n_per, seed, size)):
            Image.fromarray(arr).save(root / cls / f"{i:03d}.png")
    return root


def _mixed_samples(n=40, seed=5):
    half = n // 2
    return torch.from_numpy(np.concatenate([_solid(RED, half, seed), _solid(BLUE, n - half, seed + 1)]))


# ----------------------------------------------------------------------------- 5. seeded, stratified subsets

def test_reference_subset_of_a_class_sorted_folder_is_stratified(tmp_path):
    ref = _class_sorted_folder(tmp_path / "ref")
    r = evaluate(_mixed_samples(20), reference=f"{ref}:train", features=_Toy(), n=20, kid_subsets=3,
                 cache_dir=tmp_path / "cache")
    m = r["metrics"]
    assert m["fd_toy"] < 0.2  # the first 20 files are all red: FD 2.3, precision 0.4
    info = r["protocol"]["reference"]
    assert "class-stratified" in info["subset"] and info["subset_seed"] == 2020 and info["n"] == 20
    assert r["protocol"]["subset_seed"] == 2020 and "stratified" in r["protocol"]["subset_rule"]
    again = evaluate(_mixed_samples(20), reference=f"{ref}:train", features=_Toy(), n=20, kid_subsets=3,
                     cache_dir=tmp_path / "cache")
    assert again["protocol"]["reference"]["cache_hit"] is True and again["metrics"] == m
    other = evaluate(_mixed_samples(20), reference=f"{ref}:train", features=_Toy(), n=20, kid_subsets=3, seed=1,
                     stats_cache=False)
    assert other["protocol"]["reference"]["subset_seed"] == 1


def test_sample_subsets_are_random_for_folders_and_tensors(tmp_path):
    folder = _class_sorted_folder(tmp_path / "samples")
    ref = _mixed_samples(40, seed=9)
    for samples in (folder, torch.from_numpy(np.concatenate([_solid(RED, 30, 0), _solid(BLUE, 30, 1)]))):
        r = evaluate(samples, reference=ref, features=_Toy(), n=20, kid_subsets=3)
        assert r["metrics"]["fd_toy"] < 0.2, type(samples)  # the first 20 are all red: FD 2.3
        assert "subset of 20 of 60" in r["protocol"]["samples"]["subset"]
    assert "class-stratified" in evaluate(folder, reference=ref, features=_Toy(), n=20, kid_subsets=3)[
        "protocol"]["samples"]["subset"]


def test_evaluation_order_prefixes_are_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    order = evaluation_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(100))
    for n in (5, 10, 37, 100):
        counts = np.bincount(labels[order[:n]], minlength=3)
        assert np.all(np.abs(counts - n * np.array([0.5, 0.3, 0.2])) <= 1), (n, counts)
    assert evaluation_order(labels, 0).tolist() == order.tolist()
    assert evaluation_order(labels, 1).tolist() != order.tolist()


# ----------------------------------------------------------------------------- 6. N larger than the set

def test_n_larger_than_the_set_is_refused(tmp_path):
    x = _mixed_samples(80)
    with pytest.raises(DataError, match="asked for 500 images but there are only 80; pass n=80"):
        evaluate(x, reference=x, features=_Toy(), n=500)
    folder = _class_sorted_folder(tmp_path / "f", n_per=5)
    with pytest.raises(DataError, match="only 10"):
        evaluate(folder, reference=x, features=_Toy(), n=20)
    with pytest.raises(DataError, match="reference.*only 10"):
        evaluate(x, reference=folder, features=_Toy(), n=20, n_ref=20)
    with pytest.warns(UnstableMetricWarning):  # 10 reference images for 12-d features
        capped = evaluate(x, reference=folder, features=_Toy(), n=20, kid_subsets=2)  # default n_ref: capped, said
    assert capped["protocol"]["n_ref"] == 10 and "capped" in capped["protocol"]["n_ref_rule"]
    with pytest.raises(DataError, match="iterable gave only 80"):
        evaluate(list(x.split(16)), reference=x, features=_Toy(), n=100)


def test_cli_n_larger_than_the_set_is_one_line(tmp_path, capsys):
    folder = _class_sorted_folder(tmp_path / "f", n_per=60, size=28)
    save_lenet(LeNetFeatures(LeNetConfig(feature_dim=8)), tmp_path / "lenet")
    common = ["--features", "lenet-fmnist", "--weights", str(tmp_path / "lenet"), "--kid-subsets", "3",
              "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"]
    assert main(["eval", "--samples", str(folder), "--ref", f"{folder}:train", "--n", "500", *common]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only 120" in err and "--n" in err
    # --real-floor on a folder without a test split: train vs the held-out slice, both seeded subsets
    from argen.data import load_dataset

    n = len(load_dataset(folder, split="test"))
    assert 4 <= n < 20
    out = tmp_path / "floor.json"
    assert main(["eval", "--real-floor", str(folder), "--n", str(n), "--out", str(out), *common]) == 0
    text = capsys.readouterr().out
    assert f"samples: seeded class-stratified random subset of {n} of {120 - n}" in text
    protocol = json.loads(out.read_text())["protocol"]
    assert protocol["samples"]["split"] == "train" and protocol["reference"]["split"] == "test"
    assert protocol["subset_seed"] == 2020 and "stratified" in protocol["samples"]["subset"]


# ----------------------------------------------------------------------------- 7. KID spread with one subset

def test_kid_spread_is_undefined_when_one_subset_covers_everything(tmp_path):
    x, y = _mixed_samples(40, seed=1), _mixed_samples(40, seed=2)
    r = evaluate(x, reference=y, features=_Toy(), kid_subsets=10, out=tmp_path / "m.json")  # subset 1000 -> 40
    assert r["metrics"]["kd_toy_std"] is None and r["metrics"]["kd_toy_mean"] is not None
    assert "(one subset: spread undefined)" in r["summary"] and "±" not in r["summary"]
    assert "undefined" in r["protocol"]["kid_std"]
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["kd_toy_std"] is None
    single = evaluate(x, reference=y, features=_Toy(), kid_subsets=1, kid_subset_size=20)
    assert single["metrics"]["kd_toy_std"] is None and "spread undefined" in single["summary"]
    spread = evaluate(x, reference=y, features=_Toy(), kid_subsets=5, kid_subset_size=20)
    assert spread["metrics"]["kd_toy_std"] > 0 and "±" in spread["summary"]


def test_evaluation_indices_give_the_reference_subset(tmp_path):
    """What a tokenizer evaluation reads to reconstruct the very images the reference side uses."""
    from argen.data import load_dataset
    from argen.metrics.evaluator import evaluation_indices

    folder = _class_sorted_folder(tmp_path / "f")
    ds = load_dataset(folder, split="train")
    idx = evaluation_indices(ds, 20)
    assert len(idx) == 20 and np.bincount(ds.labels[idx]).tolist() == [10, 10]
    r = evaluate(ds.uint8_images(indices=idx), reference=f"{folder}:train", features=_Toy(), n=20, kid_subsets=2,
                 stats_cache=False)
    assert abs(r["metrics"]["fd_toy"]) < 1e-6 and r["metrics"]["precision_toy"] == 1.0
    with pytest.raises(DataError, match="only"):
        evaluation_indices(ds, 10_000)
