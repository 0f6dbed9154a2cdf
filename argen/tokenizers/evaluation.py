"""Reconstruction quality of a tokenizer on a dataset: PSNR, SSIM, rFID, codebook usage and perplexity.

rFID follows the usual protocol (LlamaGen, taming): the Frechet distance between the features of the
first N images of a split and of their reconstructions, through `argen.metrics.evaluate` (TF-Inception
for "FID"; other feature networks are labelled with their name, e.g. FD_lenet-fmnist). Reconstructions
go through `decode(encode(x))`, i.e. through the tokens a generator would see, and are quantised to
8 bits like any saved image before the metrics.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..imageio import from_uint8, to_uint8
from .base import Tokenizer


class _TokenCounter:
    """Code histograms per token slot: one for (B, L) tokens, D for (B, L, D) (RVQ depth, sub-pixels)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.counts: Tensor | None = None

    def update(self, tokens: Tensor) -> None:
        ids = tokens.detach().long().cpu()
        ids = ids.reshape(-1, 1) if ids.ndim == 2 else ids.reshape(-1, ids.shape[-1])  # (N, slots)
        slots = ids.shape[1]
        offsets = torch.arange(slots) * self.vocab_size
        counts = torch.bincount((ids + offsets).flatten(), minlength=slots * self.vocab_size).view(slots, -1)
        self.counts = counts if self.counts is None else self.counts + counts

    def as_dict(self) -> dict[str, float]:
        from ..metrics.codebook import perplexity_from_counts, usage_from_counts

        usage = [usage_from_counts(c) for c in self.counts]
        ppl = [perplexity_from_counts(c) for c in self.counts]
        out = {"codebook_usage_pct": sum(usage) / len(usage), "codebook_perplexity": sum(ppl) / len(ppl),
               "codebook_size": self.vocab_size}
        if len(usage) > 1:  # per residual level / sub-pixel slot
            out["codebook_usage_pct_per_slot"] = usage
            out["codebook_perplexity_per_slot"] = ppl
        return out


@torch.no_grad()
def reconstruct(tokenizer: Tokenizer, images: Tensor) -> tuple[Tensor, Tensor]:
    """(tokens, reconstructions) of a batch, reconstructions clamped to [-1, 1]."""
    tokens = tokenizer.encode(images)
    grid = tokenizer.layout_for(images.shape[2], images.shape[3]).grid
    return tokens, tokenizer.decode(tokens, grid=grid)


@torch.no_grad()
def evaluate_tokenizer(tokenizer: Tokenizer, data: str, split: str = "test", resolution: int | None = None,
                       n: int = 1000, features: str = "inception", batch_size: int = 64,
                       device: str | torch.device = "cpu", out: str | Path | None = None,
                       feature_kwargs: dict | None = None) -> dict:
    """Evaluate reconstructions of `n` images of `data:split` (the evaluator's seeded, class-stratified subset, so
    the reference statistics are of the same images); returns the evaluator's result dict
    with PSNR / SSIM / codebook numbers added to `metrics` (and written to `out` as JSON if given)."""
    from ..data import load_dataset
    from ..metrics import evaluate, psnr, ssim, write_result
    from ..metrics.evaluator import DatasetSpec, evaluation_indices

    tokenizer = tokenizer.eval().to(device)
    resolution = resolution or tokenizer.config.resolution
    ds = load_dataset(data, split=split, resolution=resolution)
    if n > len(ds):
        raise ValueError(f"{data}:{split} holds {len(ds)} images, fewer than the {n} asked for; pass n <= {len(ds)} "
                         "(--n) or a larger split")
    real = ds.uint8_images(indices=evaluation_indices(ds, n))  # (N, H, W, 3) uint8: the evaluator's own subset
    layout = tokenizer.layout_for(resolution, resolution)
    counter = _TokenCounter(layout.vocab_size) if layout.discrete else None
    recons, psnrs, ssims = [], [], []
    for start in range(0, n, batch_size):
        x = from_uint8(real[start:start + batch_size]).to(device)  # (b, 3, H, W) in [-1, 1]
        tokens, recon = reconstruct(tokenizer, x)
        r8 = to_uint8(recon.float())  # (b, H, W, 3): what a saved reconstruction would hold
        r = from_uint8(r8).to(device)
        psnrs.append(psnr(r, x).cpu())
        ssims.append(ssim(r, x).cpu())
        recons.append(r8.cpu())
        if counter is not None:
            counter.update(tokens)
    result = evaluate(torch.cat(recons), reference=DatasetSpec(data, split, resolution), features=features, n=n,
                      device=device, **(feature_kwargs or {}))
    metrics = {"psnr": torch.cat(psnrs).clamp(max=100.0).mean().item(), "ssim": torch.cat(ssims).mean().item()}
    if counter is not None:
        metrics.update(counter.as_dict())
    result["metrics"] = {**metrics, **result["metrics"]}
    result["protocol"]["tokenizer"] = {"kind": type(tokenizer.config).kind, "tokens": layout.num_tokens,
                                      "grid": list(layout.grid), "scales": [list(s) for s in layout.scales],
                                      "vocab_size": layout.vocab_size, "latent_dim": layout.latent_dim,
                                      "resolution": resolution, "psnr_ssim": "on 8-bit reconstructions, data range [0, 1]"}
    fd = result["summary"].split(" | ")[0]
    usage = (f" | usage {metrics['codebook_usage_pct']:.1f}% | perplexity {metrics['codebook_perplexity']:.1f}"
             if counter is not None else "")
    result["summary"] = f"PSNR {metrics['psnr']:.2f} dB | SSIM {metrics['ssim']:.4f} | r{fd}{usage} | N {n}"
    if out is not None:
        write_result(result, out)
    return result
