import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from argen.cli import main
from argen.errors import DataError
from argen.metrics import DatasetSpec, UnstableMetricWarning, evaluate
from argen.metrics.features import FeatureNet, LeNetConfig, LeNetFeatures, save_lenet


class _Toy(FeatureNet):
    """Cheap deterministic features: 2x2 average-pooled pixels (12-d)."""

    name, dim, resize, weights_hash = "toy", 12, "adaptive avg-pool to 2x2", "toyhash"

    def extract(self, x):
        return F.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)


def _images(n=40, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _fmnist_or_skip():
    try:
        from argen.data import load_dataset

        load_dataset("fashion-mnist", split="test")
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")


def test_result_records_the_full_protocol_and_json(tmp_path):
    x = _images()
    out = tmp_path / "m.json"
    r = evaluate(x, reference=x.clone(), features=_Toy(), seed=3, kid_subsets=5, out=out)
    m = r["metrics"]
    assert set(m) == {"fd_toy", "kd_toy_mean", "kd_toy_std", "precision_toy", "recall_toy"}  # never "fid"
    assert abs(m["fd_toy"]) < 1e-8 and m["precision_toy"] == 1.0 and m["recall_toy"] == 1.0
    p = r["protocol"]
    for key in ("feature_net", "feature_weights_sha256", "resize", "n_gen", "n_ref", "reference", "samples", "seed",
                "argen_version", "date", "kid_subsets", "kid_subset_size", "pr_k", "uint8_conversion"):
        assert key in p, key
    assert (p["feature_net"], p["feature_weights_sha256"], p["n_gen"], p["n_ref"], p["seed"]) == \
        ("toy", "toyhash", 40, 40, 3)
    assert p["kid_subset_size"] == 40  # capped at N
    on_disk = json.loads(out.read_text())
    assert on_disk["metrics"] == m and on_disk["protocol"]["date"] == p["date"]
    assert "FD_toy" in r["summary"] and "KD_toy" in r["summary"]


def test_n_limits_both_sides_and_small_n_is_flagged():
    x, y = _images(40), _images(40, seed=1)
    with pytest.warns(UnstableMetricWarning):
        r = evaluate(x, reference=y, features=_Toy(), n=8, kid_subsets=2)
    assert r["protocol"]["n_gen"] == 8 and r["protocol"]["n_ref"] == 8
    assert r["warnings"] and "unstable" in r["warnings"][0]
    with pytest.raises(ValueError, match="n must be >= 2"):
        evaluate(x, reference=y, features=_Toy(), n=1)


def test_tensor_iterable_npz_and_folder_inputs_agree(tmp_path):
    from PIL import Image

    x = _images(12)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    np.savez(tmp_path / "s.npz", u8)
    (tmp_path / "png").mkdir()
    for i, a in enumerate(u8):
        Image.fromarray(a).save(tmp_path / "png" / f"{i:03d}.png")
    ref = _images(12, seed=5)
    kw = dict(reference=ref, features=_Toy(), kid_subsets=3)
    base = evaluate(x, **kw)["metrics"]
    for source in (list(x.split(5)), tmp_path / "s.npz", str(tmp_path / "png"), torch.from_numpy(u8)):
        got = evaluate(source, **kw)["metrics"]
        assert got == pytest.approx(base, rel=1e-9), type(source)


def test_reference_dataset_stats_are_cached(tmp_path):
    _fmnist_or_skip()
    x = _images(30, size=32)
    kw = dict(reference="fashion-mnist:test", features=_Toy(), n=30, kid_subsets=3, cache_dir=tmp_path)
    first = evaluate(x, **kw)
    ref = first["protocol"]["reference"]
    assert ref["cache_hit"] is False and ref["resolution"] == 32 and ref["split"] == "test"
    assert len(list((tmp_path / "ref_stats").glob("*.npz"))) == 1
    second = evaluate(x, **kw)
    assert second["protocol"]["reference"]["cache_hit"] is True
    assert second["metrics"] == first["metrics"]
    # The subset is a prefix of the split: a larger cached N serves a smaller one, a smaller one is extended.
    third = evaluate(x[:20], **{**kw, "n": 20})
    assert third["protocol"]["reference"]["cache_hit"] is True and third["protocol"]["n_ref"] == 20
    fourth = evaluate(_images(40, size=32), **{**kw, "n": 40})
    assert fourth["protocol"]["reference"]["cache_hit"] == "partial"
    fresh = evaluate(_images(40, size=32), **{**kw, "n": 40, "stats_cache": False})
    assert fresh["protocol"]["reference"]["cache_hit"] is False
    assert fresh["metrics"] == pytest.approx(fourth["metrics"], rel=1e-6)


def test_dataset_spec_parsing():
    assert DatasetSpec.parse("fashion-mnist:train@32") == DatasetSpec("fashion-mnist", "train", 32)
    assert DatasetSpec.parse("emoji") == DatasetSpec("emoji", "test", None)
    with pytest.raises(DataError, match="integer"):
        DatasetSpec.parse("fashion-mnist:test@big")
    with pytest.raises(DataError, match="no such file"):
        evaluate("/no/such/folder", reference=_images(), features=_Toy())


def test_cli_eval_writes_json_and_prints_summary(tmp_path, capsys):
    _fmnist_or_skip()
    net = LeNetFeatures(LeNetConfig(feature_dim=8))
    save_lenet(net, tmp_path / "lenet")
    u8 = ((_images(20, size=28) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "samples.npz", u8)
    out = tmp_path / "metrics.json"
    rc = main(["eval", "--samples", str(tmp_path / "samples.npz"), "--ref", "fashion-mnist:test", "--n", "20",
               "--features", "lenet-fmnist", "--weights", str(tmp_path / "lenet"), "--kid-subsets", "3",
               "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == f"wrote {out}" and lines[-1].startswith("FD_lenet-fmnist ")
    result = json.loads(out.read_text())
    assert "fd_lenet-fmnist" in result["metrics"] and "fid" not in result["metrics"]
    assert result["protocol"]["n_gen"] == 20 and result["protocol"]["reference"]["dataset"] == "fashion-mnist"
