"""Pixel-level AR likelihood: train argen's sub-pixel generator on downsampled Fashion-MNIST for a few CPU
minutes and report test bits/dim.

    python benchmarks/pixel_bpd.py [--resolution 14] [--minutes 6] [--channels grey|rgb] [--threads 1]

Images go through argen's own pieces: `argen.data` (Fashion-MNIST resized to the resolution), the pixel identity
tokenizer (8-bit values as tokens) and the `pixel-ar` generator. `--channels grey` models the one grey value per
pixel (sub_tokens=1, bits/dim over H*W, the usual MNIST-style unit); `rgb` models the tokenizer's three
(identical) sub-pixels, bits/dim over 3*H*W. Unconditional (no labels), so the number is a plain likelihood.
References printed alongside: uniform (8 bits/dim) and independent per-position histograms fitted on the
training set (add-one smoothing), which the model must beat by using context.
"""
from __future__ import annotations

import argparse
import math
import time

import torch


def histogram_bpd(train: torch.Tensor, test: torch.Tensor, levels: int = 256) -> float:
    """Bits/dim of independent per-position categorical distributions (add-one smoothing) on test tokens."""
    counts = torch.ones(train.shape[1], levels)  # (L, V)
    counts.scatter_add_(1, train.T, torch.ones_like(train.T, dtype=torch.float))
    logp = (counts / counts.sum(1, keepdim=True)).log()
    return -logp.gather(1, test.T).mean().item() / math.log(2.0)


def main() -> None:
    from argen.data import load_dataset
    from argen.generators.pixel import PixelGenerator, PixelGeneratorConfig
    from argen.tokenizers.pixel import PixelConfig, PixelTokenizer

    p = argparse.ArgumentParser()
    p.add_argument("--resolution", type=int, default=14)
    p.add_argument("--minutes", type=float, default=6.0, help="training time budget (wall clock)")
    p.add_argument("--channels", choices=["grey", "rgb"], default="grey")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-n", type=int, default=60000)
    p.add_argument("--test-n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    tok = PixelTokenizer(PixelConfig(resolution=args.resolution))

    def tokens(split: str, n: int) -> torch.Tensor:
        u8 = load_dataset("fashion-mnist", split=split, resolution=args.resolution).uint8_images(n)  # (N, H, W, 3)
        images = u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, H, W) in [-1, 1]
        t = torch.cat([tok.encode(images[i:i + 4096]) for i in range(0, len(images), 4096)])  # (N, L, 3)
        return t[..., 0].contiguous() if args.channels == "grey" else t

    train, test = tokens("train", args.train_n), tokens("test", args.test_n)
    grey = args.channels == "grey"
    cfg = PixelGeneratorConfig(vocab_size=256, num_classes=0, scales=((args.resolution, args.resolution),),
                               sub_tokens=1 if grey else 3, image_channels=1 if grey else 3, dim=args.dim,
                               depth=args.depth, num_heads=args.heads, embed_dropout=0.0, resid_dropout=0.0,
                               ffn_dropout=0.0, class_dropout=0.0)
    g = PixelGenerator(cfg)
    params = sum(q.numel() for q in g.parameters())
    print(f"data: {len(train)} train / {len(test)} test images, {args.resolution}x{args.resolution} {args.channels}, "
          f"{cfg.num_tokens} tokens per image; model {params / 1e6:.2f}M params")
    flat = lambda t: t.reshape(len(t), -1)  # noqa: E731
    print(f"reference: uniform 8.000 bits/dim; independent per-position histograms "
          f"{histogram_bpd(flat(train), flat(test)):.3f} bits/dim (test)")

    opt = torch.optim.AdamW(g.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = torch.Generator().manual_seed(args.seed)
    labels = torch.full((args.batch,), -1)
    budget, warmup = args.minutes * 60.0, 100
    g.train()
    start, step, running = time.perf_counter(), 0, None
    while (elapsed := time.perf_counter() - start) < budget:
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))  # cosine over the budget
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(train), (args.batch,), generator=rng)
        out = g.loss(train[idx], labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(g.parameters(), 1.0)
        opt.step()
        bpd = out.metrics["bits_per_dim"].item()
        running = bpd if running is None else 0.98 * running + 0.02 * bpd
        step += 1
        if step % 200 == 0:
            print(f"step {step:5d}  {elapsed / 60:5.2f} min  train bits/dim {running:.3f}  lr {lr:.2e}", flush=True)
    train_time = time.perf_counter() - start

    g.eval()
    t = time.perf_counter()
    with torch.no_grad():
        nll = torch.cat([g.nll_bits_per_dim(test[i:i + 256], torch.full((len(test[i:i + 256]),), -1))
                         for i in range(0, len(test), 256)])
    print(f"trained {step} steps x {args.batch} images in {train_time / 60:.2f} min "
          f"({step * args.batch / len(train):.2f} epochs, {train_time / step * 1e3:.0f} ms/step)")
    print(f"TEST bits/dim {nll.mean().item():.3f} (+/- {nll.std().item() / math.sqrt(len(nll)):.3f} s.e.) over "
          f"{len(nll)} images; eval {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
