"""Data loading speed: the fast uint8 paths the evaluator uses and per-item throughput for training.

    python benchmarks/data_loading.py [--threads 1] [--folder-images 500]

Measures Fashion-MNIST (IDX read, uint8_images(5000) at 28/32/64, __getitem__), emoji (index,
full decode, __getitem__ from cache) and an image folder written to a temp dir (scan with header
check vs full decode, __getitem__ with resize). Prints one line per figure, in markdown.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    from argen.data import emoji, fashion_mnist, load_dataset, scan_folder

    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--folder-images", type=int, default=500)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    if fashion_mnist.find_root() is not None:
        t, ds = timed(lambda: load_dataset("fashion-mnist"))
        print(f"- fashion-mnist train: first load (gunzip + parse 60k IDX) {t:.3f} s")
        t, _ = timed(lambda: load_dataset("fashion-mnist"), 3)
        print(f"- fashion-mnist train: load again (process cache) {t * 1e3:.1f} ms")
        for res in (28, 32, 64):
            d = load_dataset("fashion-mnist", split="test", resolution=res)
            t, u = timed(lambda: d.uint8_images(5000), 3)
            print(f"- fashion-mnist uint8_images(5000) at {res}: {t * 1e3:.1f} ms -> {tuple(u.shape)}")
        t, _ = timed(lambda: [ds[i] for i in range(2000)])
        print(f"- fashion-mnist __getitem__ at 28: {2000 / t:,.0f} items/s")

    if emoji.find_root() is not None:
        t, ds = timed(lambda: load_dataset("emoji", split="all", download=False))
        print(f"- emoji index (emoji.json, 3,786 entries): {t * 1e3:.1f} ms")
        t, _ = timed(lambda: [ds[i] for i in range(500)])
        print(f"- emoji __getitem__ (PNG decode + composite): {500 / t:,.0f} items/s")
        t, u = timed(ds.uint8_images)
        print(f"- emoji uint8_images() full decode: {t:.2f} s -> {tuple(u.shape)}")
        t, _ = timed(lambda: [ds[i] for i in range(2000)])
        print(f"- emoji __getitem__ after full decode (cached): {2000 / t:,.0f} items/s")

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        ramp = np.linspace(0, 255, 320 * 240).reshape(240, 320).astype(np.uint8)
        for i in range(args.folder_images):  # 4 classes, half PNG half JPEG
            arr = np.stack([ramp, np.roll(ramp, i, 1), rng.integers(0, 255, (240, 320), dtype=np.uint8)], -1)
            class_dir = Path(tmp) / f"c{i % 4}"
            class_dir.mkdir(exist_ok=True)
            Image.fromarray(arr).save(class_dir / f"{i}.{('png', 'jpg')[i % 2]}")
        n = args.folder_images
        t, _ = timed(lambda: scan_folder(tmp, check="verify"))
        print(f"- folder scan, header check (320x240 PNG/JPEG): {n / t:,.0f} files/s")
        t, _ = timed(lambda: scan_folder(tmp, check="decode"))
        print(f"- folder scan, full decode: {n / t:,.0f} files/s")
        ds = load_dataset(tmp, resolution=64)
        t, _ = timed(lambda: [ds[i] for i in range(n)])
        print(f"- folder __getitem__ 320x240 -> 64 (decode + box/bicubic + crop): {n / t:,.0f} items/s")


if __name__ == "__main__":
    main()
