"""In-painting quality of a trained pipeline on Fashion-MNIST (argen.sampling.editing).

    python benchmarks/editing.py --pipeline runs/demo/generator/pipeline --n 500 --mask center --threads 1

For the first N test images (at the pipeline's resolution) it regenerates a masked region with the known
tokens forced, and reports:
  * known tokens kept: the share of known token positions whose edited token equals the input's (must be 1);
  * kept-region PSNR of the raw decode (paste none) next to the tokenizer's own reconstruction of the input
    (the ceiling), and the largest kept-pixel error after paste="hard" (must be 0);
  * FD on the LeNet trained on Fashion-MNIST (not FID) against the train split for: the in-painted images,
    full samples of the same pipeline with the same labels, the test images with the hole filled grey (a
    floor any in-painter should beat) and the untouched test images (the real-data floor at this N);
  * seconds per image for editing and for plain sampling.
Labels: the true class of each test image ("class") or none ("uncond", as VAR's in-painting).
Prints a markdown table; nothing is written unless --out is given (JSON).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

MASKS = ("center", "left", "bottom", "border")


def region_mask(kind: str, size: int, n: int) -> torch.Tensor:
    from argen.sampling.editing import border_mask, box_mask

    q = size // 4
    if kind == "center":
        return box_mask(size, size, (q, q, size - q, size - q), batch_size=n)
    if kind == "left":
        return box_mask(size, size, (0, 0, size // 2, size), batch_size=n)
    if kind == "bottom":
        return box_mask(size, size, (0, size // 2, size, size), batch_size=n)
    return border_mask(size, size, q, batch_size=n)


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    """PSNR (dB) over the selected pixels of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a - b) ** 2)[where.expand_as(a)].mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True, help="a trained pipeline directory (or an `argen train` --out)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--mask", default="center", choices=MASKS)
    p.add_argument("--labels", default="class", choices=["class", "uncond"])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", default="lenet-fmnist")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from argen.cli.sample import locate_pipeline
    from argen.data import load_dataset
    from argen.metrics.evaluator import evaluate
    from argen.pipeline import Pipeline
    from argen.sampling.editing import edit_tokens, paste_known, plan_edit

    pipe = Pipeline.load(locate_pipeline(Path(args.pipeline))).eval()
    size = pipe.generator.layout.grid[0] * pipe.tokenizer.downsample
    ds = load_dataset("fashion-mnist", split="test", resolution=size)
    n = min(args.n, len(ds))
    real = ds.uint8_images(n).movedim(-1, 1).float().div(127.5).sub(1.0)  # (N, H, W, 3) -> (N, 3, H, W)
    labels = torch.as_tensor(ds.labels[:n], dtype=torch.long) if args.labels == "class" else torch.full((n,), -1)
    mask = region_mask(args.mask, size, n)
    rng = torch.Generator().manual_seed(args.seed)

    edited, raw, recon, kept_ok, kept_total = [], [], [], 0, 0
    t_edit = 0.0
    for s in range(0, n, args.batch_size):
        x, m, y = real[s:s + args.batch_size], mask[s:s + args.batch_size], labels[s:s + args.batch_size]
        t0 = time.perf_counter()
        plan = plan_edit(pipe, x, m, y, mode="inpaint")
        tokens = edit_tokens(pipe, plan, rng=rng)
        out = pipe.decode(tokens)
        t_edit += time.perf_counter() - t0
        known = plan.force.mask
        kept_ok += int((tokens[known] == plan.force.tokens[known]).sum())
        kept_total += int(known.sum())
        raw.append(out)
        edited.append(paste_known(out, x, m, paste="hard"))
        recon.append(pipe.decode(plan.force.tokens))
    raw, edited, recon = torch.cat(raw), torch.cat(edited), torch.cat(recon)
    keep = ~mask

    t0 = time.perf_counter()
    samples = torch.cat([pipe(labels[s:s + args.batch_size], rng=rng) for s in range(0, n, args.batch_size)])
    t_sample = time.perf_counter() - t0
    grey = torch.where(mask, torch.zeros_like(real), real)

    def fd(images: torch.Tensor) -> float:
        r = evaluate(images, reference=f"fashion-mnist:train@{size}", features=args.features, n=n, n_ref=5000,
                     kid_subsets=10)
        return next(v for k, v in r["metrics"].items() if k.startswith("fd"))

    res = {
        "n": n, "mask": args.mask, "labels": args.labels, "regenerated_share": mask.float().mean().item(),
        "known_tokens_kept": kept_ok / max(kept_total, 1),
        "kept_psnr_raw": psnr(raw, real, keep), "kept_psnr_tokenizer_recon": psnr(recon, real, keep),
        "kept_max_abs_err_pasted": (edited - real)[keep.expand_as(real)].abs().max().item(),
        "hole_psnr_vs_original": psnr(edited, real, mask),
        "fd_inpainted": fd(edited), "fd_samples": fd(samples), "fd_grey_hole": fd(grey), "fd_real_test": fd(real),
        "s_per_image_edit": t_edit / n, "s_per_image_sample": t_sample / n,
    }
    name = args.features
    print(f"| pipeline | mask (share) | labels | N | known tokens kept | kept PSNR raw / tokenizer | kept max err pasted "
          f"| FD_{name}: in-painted | samples | grey hole | real test | s/img edit / sample |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.pipeline} | {args.mask} ({res['regenerated_share']:.2f}) | {args.labels} | {n} "
          f"| {res['known_tokens_kept']:.4f} | {res['kept_psnr_raw']:.2f} / {res['kept_psnr_tokenizer_recon']:.2f} dB "
          f"| {res['kept_max_abs_err_pasted']:.1e} | {res['fd_inpainted']:.2f} | {res['fd_samples']:.2f} "
          f"| {res['fd_grey_hole']:.2f} | {res['fd_real_test']:.2f} "
          f"| {res['s_per_image_edit']:.3f} / {res['s_per_image_sample']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
