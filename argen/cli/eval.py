"""`argen eval`: FID / KID / precision / recall of samples against a reference, with the protocol in JSON.

    argen eval --samples runs/samples/ --ref fashion-mnist:test --n 1000
    argen eval --samples samples.npz --ref fashion-mnist:test@32 --features lenet-fmnist --out m.json
    argen eval --real-floor fashion-mnist --n 1000           # train split vs test split
    argen eval --train-features lenet-fmnist                 # train the fast feature net once (CPU, minutes)
    argen eval --list-features
    torchrun --nproc_per_node 8 -m argen eval --samples samples/ --ref fashion-mnist:test   # features split over 8 ranks
    argen eval --train-alignment emoji                       # train argen's contrastive text-image model (CPU, minutes)
    argen eval --alignment --samples samples/ --prompts prompts.txt   # TIS_align-minilm-emoji (not CLIPScore)
    argen eval --alignment --samples samples/ --clip-weights open_clip_model.safetensors --clip-model ViT-B-32

`--alignment` reads the prompts from --prompts (prompts.txt: one per line in sorted file-name order;
prompts.json: {"file name": "prompt"}; captions.jsonl: {"file": ..., "caption": ...} per line), else from the
samples folder's prompts.json (what `argen sample --prompt` writes), captions.jsonl or name.txt sidecars.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from ._common import (add_device_argument, add_threads_argument, apply_threads, finish, positive_int, rank_device,
                      resolve_device, say, world)

COMMAND = "eval"
HELP = "evaluate samples (FID/KID/precision/recall) against a reference dataset or folder"

DEFAULT_CACHE = "~/.cache/argen"


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--samples", help="folder of images, .npz (arr_0 uint8 NxHxWx3) or dataset spec name:split")
    what.add_argument("--real-floor", metavar="DATASET",
                      help="the evaluator's floor: DATASET:train against DATASET:test (e.g. fashion-mnist, or fashion-mnist@32 for 32 px)")
    what.add_argument("--train-features", metavar="NAME", choices=["lenet-fmnist"],
                      help="train the small feature network NAME on Fashion-MNIST and save it in the cache")
    what.add_argument("--list-features", action="store_true", help="list the feature networks")
    what.add_argument("--train-alignment", metavar="DATASET",
                      help="train argen's contrastive text-image model on a captioned DATASET (emoji, or a folder "
                           "with name.txt captions) and save it in the cache as align-minilm-<dataset>")
    p.add_argument("--alignment", action="store_true",
                   help="with --samples: text-image alignment of the samples with their prompts, labelled "
                        "TIS_<model> (argen's own model, not CLIPScore), with real-image reference rows")
    p.add_argument("--prompts", default=None,
                   help="--alignment: prompts.txt (one per line, sorted file order), prompts.json or captions.jsonl; "
                        "default: the samples folder's prompts.json / captions.jsonl / name.txt sidecars")
    p.add_argument("--align-model", default="align-minilm-emoji",
                   help="--alignment: the contrastive model, a name in the cache or a saved-model directory")
    p.add_argument("--align-ref", default="auto",
                   help="--alignment: captioned reference dataset spec for the real-image rows (default: the "
                        "held-out split of the model's training data), or none")
    p.add_argument("--pool", type=positive_int, default=100,
                   help="--alignment: retrieval pool size (each image's prompt among about this many)")
    p.add_argument("--clip-weights", default=None,
                   help="--alignment: also compute CLIPScore with open_clip and this LOCAL checkpoint file")
    p.add_argument("--clip-model", default="ViT-B-32", help="--clip-weights: the open_clip architecture name")
    p.add_argument("--clip-pretrained", default=None,
                   help="--clip-weights: the weights' open_clip tag for the label, e.g. laion2b_s34b_b79k")
    p.add_argument("--ref", default="fashion-mnist:test",
                   help="reference: dataset spec name:split[@resolution], a folder, or an .npz")
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                   help="number of samples to use (default: all); fewer than there are: a seeded random subset, "
                        "class-stratified where there are labels; more than there are is an error (under torchrun "
                        "write --num-samples: torchrun takes --n for its own options)")
    p.add_argument("--n-ref", type=int, default=None,
                   help="number of reference images (default: as many as the samples, capped at the reference's "
                        "size); chosen like --n")
    p.add_argument("--features", default="inception", help="feature network: inception | lenet-fmnist")
    p.add_argument("--weights", default=None,
                   help="feature weights: a file/saved-model dir, or 'torch-fidelity' (download); default: cache")
    p.add_argument("--out", default=None, help="result JSON path (default: runs/eval/<name>.json)")
    p.add_argument("--seed", type=int, default=2020, help="seed of the evaluated subsets and of the KID subsets")
    p.add_argument("--kid-subsets", type=int, default=100, help="number of KID subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (capped at N)")
    p.add_argument("--batch-size", type=int, default=64, help="feature extraction batch size")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="weights and reference-statistics cache")
    p.add_argument("--no-cache", action="store_true", help="do not read or write reference statistics")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default: 2 for --train-features, 20 for --train-alignment)")
    add_device_argument(p)
    add_threads_argument(p)


def _default_out(args: argparse.Namespace) -> Path:
    if args.real_floor:
        stem = f"real-floor-{args.real_floor.replace('@', '-')}"
    else:
        stem = Path(str(args.samples).rstrip("/")).stem.replace(":", "-") or "samples"
    n = f"-n{args.n}" if args.n else ""
    return Path("runs") / "eval" / f"{stem}-{args.features}{n}.json"


def _train_features(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_dataset
    from ..metrics.features.lenet import accuracy, default_lenet_dir, save_lenet, train_lenet

    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    x_train = train.uint8_images().movedim(-1, 1)  # (N, H, W, 3) -> (N, 3, H, W)
    x_test = test.uint8_images().movedim(-1, 1)
    y_train, y_test = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(2 if args.epochs is None else args.epochs) * -(-len(x_train) // 128),
                   desc="train lenet-fmnist", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    t0 = time.time()
    epochs = 2 if args.epochs is None else args.epochs
    model = train_lenet(x_train, y_train, epochs=epochs, rng=torch.Generator().manual_seed(args.seed),
                        progress=progress)
    if bar is not None:
        bar.close()
    acc = accuracy(model, x_test, y_test)
    out = Path(args.out) if args.out else default_lenet_dir(Path(args.cache_dir).expanduser())
    save_lenet(model, out, extra={"trained_on": "fashion-mnist:train", "test_accuracy": acc, "epochs": epochs,
                                  "seed": args.seed, "train_seconds": round(time.time() - t0, 1)})
    from ..metrics.features.lenet import load_lenet

    digest = load_lenet(Path(args.cache_dir).expanduser(), weights=out).weights_hash
    say(f"saved {out}")
    say(f"lenet-fmnist: test accuracy {acc:.4f}, sha256 {digest}, {time.time() - t0:.0f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    if args.list_features:
        from ..metrics.features import describe_feature_nets

        for name, desc in describe_feature_nets().items():
            say(f"{name:<22} {desc}")
        return 0
    if args.train_features:
        return _train_features(args)
    if args.train_alignment:
        return _train_alignment(args)
    if args.alignment:
        return _alignment(args)
    if args.prompts or args.clip_weights:
        raise ValueError("--prompts and --clip-weights go with --alignment (text-image alignment of --samples)")
    from ..metrics.evaluator import evaluate
    from ..metrics.frechet import UnstableMetricWarning

    if args.n is not None and args.n < 2:
        raise ValueError(f"--n must be >= 2, got {args.n}")
    samples, ref = args.samples, args.ref
    if args.real_floor:
        name, _, res = args.real_floor.partition("@")  # "fashion-mnist@32" -> both splits at 32 px
        suffix = f"@{res}" if res else ""
        samples, ref = f"{name}:train{suffix}", f"{name}:test{suffix}"
    out = Path(args.out) if args.out else _default_out(args)
    strategy, device = None, None
    if world()[2] > 1:  # torchrun: the ranks share the feature extraction, rank 0 reports
        from ..train.distributed import DDP

        strategy = DDP(timeout_minutes=60.0)
        device = rank_device(args.device, "ddp")
        strategy.setup(device)
    try:
        with warnings.catch_warnings():  # printed below as one line each, from result["warnings"]
            warnings.simplefilter("ignore", UnstableMetricWarning)
            result = evaluate(samples, reference=ref, features=args.features, n=args.n, seed=args.seed,
                              n_ref=args.n_ref, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                              batch_size=args.batch_size, device=device or resolve_device(args.device),
                              cache_dir=Path(args.cache_dir).expanduser(), stats_cache=not args.no_cache,
                              weights=args.weights, out=out, progress=not args.no_progress, distributed=strategy)
    finally:
        finish(strategy)
    if strategy is not None and strategy.rank != 0:
        return 0
    for note in result["warnings"]:
        say(f"warning: {note}")
    for side in ("samples", "reference"):
        info = result["protocol"][side]
        if "subset" in info:
            say(f"{side}: {info['subset']}")
        for line in info.get("folder_warnings", ()):
            say(f"warning: {side}: {line}")
    say(f"wrote {out}")
    say(result["summary"])
    return 0


def _train_alignment(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_dataset
    from ..metrics.alignment import validate
    from ..metrics.features.contrastive import (ContrastiveConfig, default_contrastive_dir, load_contrastive,
                                                model_name, save_contrastive, train_contrastive)

    cpu0, t0 = time.process_time(), time.time()
    name = model_name(args.train_alignment)
    train = load_dataset(args.train_alignment, split="train")
    test = load_dataset(args.train_alignment, split="test")
    for ds in (train, test):
        if not ds.captions:
            raise ValueError(f"{args.train_alignment} has no captions to align images with: give a captioned "
                             "dataset (emoji, or a folder with a name.txt caption beside every image)")
    epochs = 20 if args.epochs is None else args.epochs
    say(f"{name}: training on {train.name}:train ({len(train)} captioned images), {epochs} epochs, seed {args.seed}")
    bar = None

    def progress(step: int, total: int, loss: float) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"train {name}", unit="step")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    model = train_contrastive(train, ContrastiveConfig(name=name), epochs=epochs,
                              rng=torch.Generator().manual_seed(args.seed), progress=progress)
    if bar is not None:
        bar.close()
    train_seconds = time.time() - t0
    val = validate(model, test, pool=args.pool, seed=args.seed)
    out = Path(args.out) if args.out else default_contrastive_dir(Path(args.cache_dir).expanduser(), name)
    save_contrastive(model, out, extra={"trained_on": f"{train.name}:train", "num_train": len(train),
                                        "epochs": epochs, "seed": args.seed, "threads": torch.get_num_threads(),
                                        "train_seconds": round(train_seconds, 1), "validation": val,
                                        "temperature": model.temperature()})
    digest = load_contrastive(out, check_text_encoder=False).weights_hash
    say(f"saved {out}")
    say(f"{name}: validation ({val['dataset']}, N {val['n']}, pools of {val['pool']:.0f}): retrieval top-1 "
        f"{val['retrieval_top1']:.3f} top-5 {val['retrieval_top5']:.3f} (chance {val['chance_top1']:.3f} / "
        f"{val['chance_top5']:.3f}); TIS_{name} own captions {val['tis_own_captions']:.2f}, shuffled captions "
        f"{val['tis_shuffled_captions']:.2f}")
    say(f"{name}: sha256 {digest}, {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
    return 0


def _alignment(args: argparse.Namespace) -> int:
    from ..metrics.alignment import alignment_score

    if not args.samples:
        raise ValueError("--alignment needs --samples: a folder of generated images (with prompts.json or "
                         "--prompts) or an .npz with --prompts")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    stem = Path(str(args.samples).rstrip("/")).stem or "samples"
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{stem}-alignment.json"
    result = alignment_score(args.samples, args.prompts, model=args.align_model,
                             reference=None if args.align_ref == "none" else args.align_ref, n=args.n,
                             n_ref=args.n_ref, seed=args.seed, pool=args.pool, device=resolve_device(args.device),
                             cache_dir=Path(args.cache_dir).expanduser(), clip_weights=args.clip_weights,
                             clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, out=out)
    say(f"wrote {out}")
    for line in result["summary"]:
        say(line)
    return 0
