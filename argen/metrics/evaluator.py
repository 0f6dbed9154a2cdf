"""The evaluator: one call from images to FID / KID / precision / recall with the full protocol recorded.

    result = evaluate(samples, reference="fashion-mnist:test", features="inception", n=1000)
    result["metrics"]   # {"fid": ..., "kid_mean": ..., "kid_std": ..., "precision": ..., "recall": ...}
    result["protocol"]  # feature net + weights sha256, resize, N gen/ref, reference spec, seed, versions, date

`samples` is a float tensor (B, 3, H, W) in [-1, 1], a uint8 tensor (B, 3, H, W) or (B, H, W, 3), an
iterable of such batches (e.g. a sampler), a folder of images, an ADM-style `.npz` (`arr_0`, uint8
N x H x W x 3) or a dataset spec. `reference` is a dataset spec "name:split[@resolution]"
(e.g. "fashion-mnist:test", `DatasetSpec(...)`), a folder or an `.npz`.

Protocol choices (all recorded in the result):
* float images become uint8 as `argen.imageio.to_uint8` does: round((x + 1) * 127.5), clamped; the
  feature network then applies its own resize (Inception: TF1 bilinear to 299, as torch-fidelity).
* N: `n` images of the samples and `n_ref` of the reference (default: as many as the samples, capped
  at the reference's size). When N is smaller than a set, the N are a seeded random subset, class-
  stratified where the set has labels (a dataset or a class folder): the first N of
  `argen.data.splits.evaluation_order(labels, seed)`. The first N of a class-sorted folder would all
  be one class. An iterable (a sampler) gives its first N, as it produces them. Asking for more
  images than a set has (`n` or an explicit `n_ref`) is an error, never a silent smaller N.
* A reference dataset without an explicit resolution is read at the samples' resolution.
* KID: `kid_subsets` subsets of min(kid_subset_size, N_gen, N_ref), drawn with `seed`. When a subset
  is all of both sides (or there is one subset) every subset is the same, so the spread is undefined:
  `kid_std` is None (null in JSON) and the summary says so, rather than a misleading "± 0".
* Features of dataset specs (reference or real samples) are cached per (feature net + weights hash,
  dataset, split, resolution, N, resize) under `<cache_dir>/ref_stats/` as .npz (features, mu, sigma);
  the subset is a prefix of the seeded order, so a cached larger N also serves (and a smaller one seeds) N.

Metric names: the standard Inception features give "fid", "kid_*", "precision", "recall"; any other
feature network's numbers carry its name ("fd_lenet-fmnist", "kd_lenet-fmnist_mean", ...).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..errors import DataError
from ..saving import atomic_path, atomic_write_text
from .features import DEFAULT_CACHE_DIR, FeatureNet, load_feature_net
from .frechet import (UnstableMetricWarning, check_sample_size, feature_statistics, frechet_distance,
                      kernel_distance, precision_recall)

CACHE_VERSION = 2  # 2: subsets follow the seeded stratified order, not the split's first N
DEFAULT_SEED = 2020  # torch-fidelity's default, so KID subsets match it at the same seed


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset by name (or folder path), split and resolution (None = native / the samples')."""

    name: str
    split: str = "test"
    resolution: int | None = None

    @classmethod
    def parse(cls, text: str) -> "DatasetSpec":
        """'fashion-mnist:test@32' -> DatasetSpec('fashion-mnist', 'test', 32); split defaults to 'test'."""
        body, _, res = text.partition("@")
        name, _, split = body.partition(":")
        if not name:
            raise DataError(f"dataset spec {text!r} has no name; write e.g. fashion-mnist:test or "
                            "fashion-mnist:test@32")
        try:
            resolution = int(res) if res else None
        except ValueError:
            raise DataError(f"dataset spec {text!r}: resolution after '@' must be an integer, e.g. @32") from None
        return cls(name, split or "test", resolution)

    def __str__(self) -> str:
        return f"{self.name}:{self.split}" + (f"@{self.resolution}" if self.resolution else "")


# ----------------------------------------------------------------------------- image sources

def to_uint8_nchw(images: Tensor) -> Tensor:
    """A batch as uint8 (B, 3, H, W): float (B, 3, H, W) in [-1, 1] is rounded as argen.imageio.to_uint8;
    uint8 may be (B, 3|1, H, W) or (B, H, W, 3|1)."""
    from ..imageio import to_uint8

    if images.dim() != 4:
        raise ValueError(f"expected a batch of images (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
            images = images.movedim(-1, 1)  # (B, H, W, C) -> (B, C, H, W)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(f"uint8 images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        return images.contiguous()
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1] or uint8, got {images.dtype}")
    return to_uint8(images).movedim(-1, 1).contiguous()  # (B, H, W, 3) -> (B, 3, H, W)


def _batches(source: Any, n: int | None, batch_size: int) -> Iterator[Tensor]:
    """Yield uint8 (b, 3, H, W) batches of at most `n` images in total from a tensor or an iterable."""
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    chunks: Iterable[Any] = source.split(batch_size) if isinstance(source, Tensor) else source
    left = n
    for chunk in chunks:
        if isinstance(chunk, (tuple, list)):  # (images, labels) from a DataLoader
            chunk = chunk[0]
        x = to_uint8_nchw(torch.as_tensor(chunk))
        if left is not None:
            x = x[:left]
            left -= len(x)
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]
        if left is not None and left <= 0:
            return


def _load_npz(path: Path) -> Tensor:
    with np.load(path, allow_pickle=False) as data:
        key = "arr_0" if "arr_0" in data.files else (data.files[0] if data.files else None)
        if key is None:
            raise DataError(f"{path}: empty .npz; expected arr_0 with uint8 images (N, H, W, 3)")
        arr = data[key]
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise DataError(f"{path}: {key} is {arr.dtype} {arr.shape}; expected uint8 images (N, H, W, 3) as the "
                        "ADM evaluator's sample batches")
    return torch.from_numpy(arr)


def _as_spec(x: Any) -> DatasetSpec | Path | None:
    """A dataset spec or a file path for strings/paths; None for in-memory images."""
    if isinstance(x, DatasetSpec):
        return x
    if isinstance(x, (str, os.PathLike)):
        p = Path(x).expanduser()
        if p.exists():
            return p
        if isinstance(x, Path) or ":" not in str(x):
            from ..data import dataset_key

            if dataset_key(str(x)) is None:
                raise DataError(f"{x}: no such file or folder, and not a dataset spec like fashion-mnist:test")
        return DatasetSpec.parse(str(x))
    return None


def _open_dataset(spec: DatasetSpec, resolution: int | None):
    from ..data import load_dataset

    return load_dataset(spec.name, split=spec.split, resolution=spec.resolution or resolution)


def _count(n: int | None, available: int, what: str, strict: bool) -> int:
    """How many images to use: all when `n` is None; refuse (strict) or cap an `n` above what there is."""
    if n is None or n <= available:
        return available if n is None else n
    if strict:
        raise DataError(f"{what}: asked for {n} images but there are only {available}; pass n={available} or fewer "
                        f"(CLI: --n / --n-ref {available}), or leave n out to use all {available}")
    return available


def evaluation_indices(dataset, n: int | None, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The indices of `dataset` that `evaluate` uses for `n` images of it as a dataset spec (all when None).

    Callers that evaluate something computed from the reference images themselves (a tokenizer's
    reconstructions) read these indices, so both sides hold the same images.
    """
    from ..data.splits import evaluation_order

    count = _count(n, len(dataset), f"dataset {getattr(dataset, 'name', '')}", strict=True)
    return evaluation_order(dataset.labels, seed)[:count]


def _subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray | None:
    """Indices of the evaluated subset (the first `count` of the seeded stratified order), None for all."""
    from ..data.splits import evaluation_order

    return None if count >= len(labels) else evaluation_order(labels, seed)[:count]


def _subset_info(count: int, total: int, seed: int, labelled: bool) -> dict:
    from ..data.splits import subset_rule

    return {"n": count, "of": total, "subset": subset_rule(count, total, seed, labelled), "subset_seed": seed}


# ----------------------------------------------------------------------------- features

@torch.inference_mode()
def extract_features(net: FeatureNet, batches: Iterable[Tensor], total: int | None = None,
                     progress: bool = False, desc: str = "features", distributed: Any = None) -> np.ndarray:
    """Run `net` over uint8 batches -> float32 (N, D) numpy array.

    With `distributed` (an `argen.train` strategy of several processes, e.g. under torchrun) rank r runs
    the net on batches r, r + W, ... only, and the features are gathered to every rank in batch order: the
    same array as one process computes (every rank reads all batches; only the network's work is split)."""
    rank, size = (0, 1) if distributed is None else (distributed.rank, distributed.world_size)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="img")
    else:
        progress = False
    out: list[tuple[int, np.ndarray]] = []
    for i, x in enumerate(batches):
        if i % size == rank:
            out.append((i, net(x).cpu().numpy().astype(np.float32)))
        if progress:
            bar.update(len(x))
    if progress:
        bar.close()
    if size > 1:
        out = sorted((pair for part in distributed.gather(out) for pair in part), key=lambda pair: pair[0])
    if not out:
        raise DataError(f"{desc}: no images to evaluate")
    return np.concatenate([f for _, f in out])


def _cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_cached(path: Path, dim: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            feats = data["features"]
        return feats if feats.ndim == 2 and feats.shape[1] == dim else None
    except (OSError, ValueError, KeyError):
        return None  # unreadable entry: recomputed and overwritten


def dataset_features(net: FeatureNet, spec: DatasetSpec, n: int | None, resolution: int | None = None,
                     batch_size: int = 64, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                     progress: bool = False, seed: int = DEFAULT_SEED, strict: bool = True,
                     distributed: Any = None) -> tuple[np.ndarray, dict]:
    """Features of `n` images of a dataset (all when None), through the on-disk cache; returns (features, info).

    The images are the first `n` of `evaluation_order(labels, seed)` (a seeded class-stratified order);
    `n` above the split's size is refused when `strict`, else capped. One cache entry per (feature net +
    weights hash, dataset, split, resolution, resize, seed, N). Because the subset is always a prefix
    of the order, an entry for a larger N serves a smaller one (sliced), and an entry for a smaller N
    is extended rather than recomputed (`cache_hit` is then "partial"). With `distributed` the ranks share
    the feature extraction (see `extract_features`) and rank 0 alone writes the cache.
    """
    from ..data.splits import evaluation_order

    ds = _open_dataset(spec, resolution)
    count = _count(n, len(ds), f"dataset {spec}", strict)
    info = {"dataset": ds.name, "split": ds.split, "resolution": ds.resolution,
            **_subset_info(count, len(ds), seed, ds.conditional)}
    if ds.split_note:
        info["split_note"] = ds.split_note
    if ds.skipped or ds.warnings:
        info.update({"skipped_files": len(ds.skipped), "folder_warnings": list(ds.warnings)})
    key_fields = {"dataset": ds.name, "split": ds.split, "resolution": ds.resolution, "num_images": len(ds),
                  "order": "evaluation_order", "subset_seed": seed}
    key_fields.update({"fit": getattr(ds, "fit", None), "feature_net": net.name, "resize": net.resize,
                       "feature_weights_sha256": net.weights_hash, "cache_version": CACHE_VERSION})
    path, done, hit = None, np.zeros((0, net.dim), np.float32), False
    if cache_dir is not None:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(str(ds.name)).name)
        stem = f"{safe}-{ds.split}-{ds.resolution}px-{net.name}-{_cache_key(key_fields)[:16]}"
        folder = Path(cache_dir).expanduser() / "ref_stats"
        path = folder / f"{stem}-n{count}.npz"
        sizes = sorted(int(p.stem.rsplit("-n", 1)[1]) for p in folder.glob(f"{stem}-n*.npz")
                       if p.stem.rsplit("-n", 1)[1].isdigit())
        for size in [s for s in sizes if s >= count] + [s for s in reversed(sizes) if s < count]:
            feats = _read_cached(folder / f"{stem}-n{size}.npz", net.dim)
            if feats is None or len(feats) != size:
                continue
            if size >= count:
                return feats[:count], {**info, "cache": str(folder / f"{stem}-n{size}.npz"), "cache_hit": True}
            done, hit = feats, "partial"
            break
    if len(done) < count:
        images = ds.uint8_images(indices=evaluation_order(ds.labels, seed)[len(done):count])  # (N - done, H, W, 3)
        new = extract_features(net, _batches(images, None, batch_size), total=len(images), progress=progress,
                               desc=f"{spec} features", distributed=distributed)
        feats = np.concatenate([done, new])
    if path is not None and (distributed is None or distributed.is_main):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnstableMetricWarning)  # the caller warns once, with context
            mu, sigma = feature_statistics(feats) if count >= 2 else (feats.mean(0), np.zeros((net.dim,) * 2))
        buf = io.BytesIO()
        np.savez(buf, features=feats, mu=mu, sigma=sigma, key=json.dumps({**key_fields, "n": count}, sort_keys=True))
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
    return feats, {**info, "cache": str(path) if path else None, "cache_hit": hit}


def _source_features(net: FeatureNet, source: Any, n: int | None, resolution: int | None, batch_size: int,
                     cache_dir, progress: bool, desc: str, seed: int = DEFAULT_SEED,
                     strict: bool = True, distributed: Any = None) -> tuple[np.ndarray, dict, int | None]:
    """Features + description + image resolution of samples or reference, whatever form they come in.

    `n` images (all when None): a seeded subset when fewer than the source holds (see the module
    docstring); more than it holds is an error when `strict`, else capped.
    """
    spec = _as_spec(source)
    if isinstance(spec, DatasetSpec):
        feats, info = dataset_features(net, spec, n, resolution, batch_size, cache_dir, progress, seed, strict,
                                       distributed)
        return feats, {"kind": "dataset", **info}, info["resolution"]
    if isinstance(spec, Path):
        if spec.is_file() and spec.suffix == ".npz":
            source, info = _load_npz(spec), {"kind": "npz", "path": str(spec)}
        elif spec.is_dir():
            from ..data import load_dataset

            ds = load_dataset(spec, split="all", resolution=resolution)
            count = _count(n, len(ds), f"{desc} folder {spec}", strict)
            idx = _subset(ds.labels, count, seed)
            source = ds.uint8_images(indices=idx) if idx is not None else ds.uint8_images()
            info = {"kind": "folder", "path": str(spec), **_subset_info(count, len(ds), seed, ds.conditional),
                    "skipped_files": len(ds.skipped)}
            if ds.warnings:
                info["folder_warnings"] = list(ds.warnings)
            n = None  # `source` now holds exactly the subset
        else:
            raise DataError(f"{spec}: expected a folder of images or an .npz of uint8 images (N, H, W, 3)")
    else:
        info = {"kind": "tensor" if isinstance(source, (Tensor, np.ndarray)) else "iterable"}
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, Tensor) and info["kind"] != "folder":
        available = len(source)
        count = _count(n, available, f"{desc} ({info.get('path', info['kind'])})", strict)
        idx = _subset(np.full(available, -1), count, seed)  # no labels: a plain seeded random subset
        if idx is not None:
            source = source[torch.from_numpy(idx)]
        info.update(_subset_info(count, available, seed, False))
        n = None
    total = len(source) if isinstance(source, Tensor) else n  # for the progress bar
    shape: list[int] = []

    def tracked() -> Iterator[Tensor]:
        for x in _batches(source, n, batch_size):
            shape[:] = list(x.shape)
            yield x

    feats = extract_features(net, tracked(), total=total, progress=progress, desc=desc, distributed=distributed)
    if info["kind"] == "iterable":
        if n is not None and len(feats) < n and strict:
            raise DataError(f"{desc}: asked for {n} images but the iterable gave only {len(feats)}; pass "
                            f"n={len(feats)} or fewer (CLI: --n), or leave n out to use all it gives")
        info["subset"] = (f"the first {len(feats)} images the iterable gave" if n is not None
                          else f"all {len(feats)} images the iterable gave")
    info["n"] = len(feats)
    h, w = shape[-2:]  # extract_features raised if there was no batch
    info["resolution"] = h if h == w else [h, w]
    return feats, info, h


# ----------------------------------------------------------------------------- metrics

def metric_names(net: FeatureNet) -> dict[str, str]:
    """Result keys for this feature network: plain for Inception (fid, kid_mean, ...), suffixed otherwise."""
    if net.metric_prefix == "FID":
        return {"fd": "fid", "kd_mean": "kid_mean", "kd_std": "kid_std", "precision": "precision", "recall": "recall"}
    tag = net.name
    return {"fd": f"fd_{tag}", "kd_mean": f"kd_{tag}_mean", "kd_std": f"kd_{tag}_std",
            "precision": f"precision_{tag}", "recall": f"recall_{tag}"}


def compute_metrics(gen: np.ndarray, ref: np.ndarray, names: dict[str, str], seed: int = DEFAULT_SEED,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3) -> tuple[dict, dict]:
    """All distances between generated and reference features -> (metrics, settings used)."""
    check_sample_size(len(gen), gen.shape[1], "generated features")
    check_sample_size(len(ref), ref.shape[1], "reference features")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableMetricWarning)  # already warned above with context
        mu_g, sigma_g = feature_statistics(gen)
        mu_r, sigma_r = feature_statistics(ref)
    metrics = {names["fd"]: frechet_distance(mu_g, sigma_g, mu_r, sigma_r)}
    subset = min(kid_subset_size, len(gen), len(ref))
    # A subset of all of both sides is the same set every draw (the unbiased MMD ignores order), so
    # repeated draws would only repeat one value and report a spread of exactly 0: compute it once.
    whole = subset == len(gen) == len(ref)
    used = 1 if whole else kid_subsets
    kd_mean, kd_std = kernel_distance(gen, ref, used, subset, seed)
    metrics[names["kd_mean"]], metrics[names["kd_std"]] = kd_mean, (None if used == 1 else kd_std)
    metrics[names["precision"]], metrics[names["recall"]] = precision_recall(gen, ref, k=pr_k)
    settings = {"kid_subsets": used, "kid_subset_size": subset, "kid_kernel": "(x.y/d + 1)^3",
                "pr_k": pr_k, "pr_manifold": "k-NN radii (ADM evaluator)", "fd_sqrtm": "scipy float64"}
    if used == 1:
        settings["kid_std"] = ("undefined: each subset is all of both sides' samples, so every subset is the same"
                               if whole else "undefined: a single subset")
    return metrics, settings


def summary_line(result: dict) -> str:
    """One line: 'FID 12.345 | KID 0.00123 ± 0.00030 | precision 0.7100 | recall 0.6500 | <net>, N ...'.

    With one KID subset (or subsets that are all the samples) the spread is undefined, and the line
    says so ('KID 0.01230 (one subset: spread undefined)') instead of printing '± 0.00000'.
    """
    m, p = result["metrics"], result["protocol"]
    names = p["metric_names"]
    fd_label = p["metric_label"]
    kd_label = "KID" if fd_label == "FID" else "KD" + fd_label[2:]
    ref = p["reference"]
    ref_txt = f"{ref['dataset']}:{ref['split']}" if ref["kind"] == "dataset" else ref.get("path", ref["kind"])
    std = m[names["kd_std"]]
    spread = "(one subset: spread undefined)" if std is None else f"± {std:.5f}"
    return (f"{fd_label} {m[names['fd']]:.3f} | {kd_label} {m[names['kd_mean']]:.5f} {spread} | "
            f"precision {m[names['precision']]:.4f} | recall {m[names['recall']]:.4f} | {p['feature_net']}, "
            f"N {p['n_gen']} vs {p['n_ref']} ({ref_txt}), seed {p['seed']}")


def evaluate(samples: Any, reference: Any = "fashion-mnist:test", features: str | FeatureNet = "inception",
             n: int | None = None, seed: int = DEFAULT_SEED, *, n_ref: int | None = None, kid_subsets: int = 100,
             kid_subset_size: int = 1000, pr_k: int = 3, batch_size: int = 64,
             device: str | torch.device = "cpu", cache_dir: str | Path = DEFAULT_CACHE_DIR,
             stats_cache: bool = True, weights: str | Path | None = None, out: str | Path | None = None,
             progress: bool = False, distributed: Any = None) -> dict:
    """Compare `samples` with `reference` on a feature network; see the module docstring.

    `features` is a registered feature-network name ('inception', 'lenet-fmnist') or a loaded FeatureNet;
    `weights` overrides where its weights come from (default: found under `cache_dir`).
    `n` (and an explicit `n_ref`) above what a source holds raises DataError saying how many there are.
    `seed` draws the evaluated subsets and the KID subsets. `stats_cache=False` neither reads nor writes `<cache_dir>/ref_stats/`. With `out`, the result is
    also written there as JSON (atomically). Returns {"metrics", "protocol", "warnings", "summary"}.
    `distributed` (an `argen.train` strategy, set up, e.g. under torchrun): the ranks share the feature
    extraction and gather the features (`extract_features`); every rank returns the result, rank 0 writes.
    """
    if n is not None and n < 2:
        raise ValueError(f"n must be >= 2 (a covariance needs two samples), got {n}")
    if isinstance(features, FeatureNet):
        net = features
    else:
        net = load_feature_net(features, cache_dir=cache_dir, weights=weights, device=device)
    stats_dir = cache_dir if stats_cache else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnstableMetricWarning)
        gen, gen_info, gen_res = _source_features(net, samples, n, None, batch_size, stats_dir, progress, "samples",
                                                  seed, distributed=distributed)
        # An explicit n_ref above the reference's size is refused; the default (as many as the samples) is capped.
        ref, ref_info, _ = _source_features(net, reference, n_ref if n_ref is not None else len(gen), gen_res,
                                            batch_size, stats_dir, progress, "reference", seed,
                                            strict=n_ref is not None, distributed=distributed)
        metrics, settings = compute_metrics(gen, ref, metric_names(net), seed, kid_subsets, kid_subset_size, pr_k)
    notes = [str(w.message) for w in caught if issubclass(w.category, UnstableMetricWarning)]
    for w in caught:  # re-emit so callers still see them
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    protocol = {
        **net.protocol(),
        "metric_label": net.label, "metric_names": metric_names(net),
        "n_gen": len(gen), "n_ref": len(ref),
        "n_ref_rule": "as given" if n_ref is not None else "as many as the samples, capped at the reference's size",
        "subset_rule": "when N is below a set's size: the first N of a seeded order, class-stratified where the "
                       "set has labels (argen.data.splits.evaluation_order); iterables: their first N",
        "subset_seed": seed,
        "samples": gen_info, "reference": ref_info,
        "seed": seed, **settings,
        "uint8_conversion": "round((x + 1) * 127.5), clamp [0, 255] (argen.imageio.to_uint8)",
        "argen_version": __version__, "torch_version": torch.__version__, "numpy_version": np.__version__,
        "device": str(device), "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result = {"metrics": metrics, "protocol": protocol, "warnings": notes}
    result["summary"] = summary_line(result)
    if distributed is not None:
        protocol["processes"] = distributed.world_size
    if out is not None and (distributed is None or distributed.is_main):
        write_result(result, out)
    return result


def write_result(result: dict, path: str | Path) -> Path:
    """Write a result dict as indented JSON, atomically."""
    path = Path(path).expanduser()
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    return path
