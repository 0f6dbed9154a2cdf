"""Helpers shared by CLI subcommands: argument types that refuse bad values before anything loads, device
choice, --set, threads, the sampling options, output lines."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings

from ..types import CFG_SCHEDULES

MAX_SEED = 2**63 - 1


# ----------------------------------------------------------------------------- argument types

def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    parse.__name__ = f"int >= {lo}"  # argparse names the type in its messages
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def seed_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2**63), got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**63), got {v}")
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def nonnegative_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


# ----------------------------------------------------------------------------- shared arguments

def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: argen runs on cpu or cuda; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev


# ----------------------------------------------------------------------------- torchrun

def add_strategy_arguments(p: argparse.ArgumentParser) -> None:
    """--strategy and --activation-checkpointing for the training commands."""
    p.add_argument("--strategy", default="auto", choices=["auto", "single", "ddp", "fsdp"],
                   help="how processes share the work: single (one process), ddp (every rank holds the model), fsdp "
                        "(FSDP2: parameters, gradients and optimizer state sharded; DCP checkpoints); launch ddp/fsdp "
                        "with torchrun --nproc_per_node N -m argen ...; auto: ddp under torchrun, else single")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute transformer-block activations in backward (less memory, ~1/3 more compute)")


def world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment (0, 0, 1 outside torchrun)."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env.get("WORLD_SIZE", "1"))


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_device(name: str, strategy: str):
    """The device of this process: `--device` alone for one process; under torchrun `cuda:LOCAL_RANK` (made
    the current CUDA device) unless --device cpu (or no GPU), so N ranks of a node use N GPUs."""
    import torch

    _, local_rank, size = world()
    if strategy == "single" and size == 1:
        return resolve_device(name)
    if name.startswith("cuda:") and size > 1:
        raise ValueError(f"--device {name}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda "
                         "(or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    dev = resolve_device(name)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); start "
                             f"torchrun with --nproc_per_node {torch.cuda.device_count()} or fewer")
        dev = torch.device("cuda", local_rank if size > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    return dev


def make_strategy(args: argparse.Namespace):
    """The training strategy of --strategy, with its process-group settings (not yet set up). Under torchrun
    init_process_group reads the rendezvous from the environment; --strategy ddp/fsdp without torchrun runs
    a one-process group on a free local port (e.g. to try FSDP on one GPU)."""
    from ..train.distributed import STRATEGIES

    name = getattr(args, "strategy", "auto") or "auto"
    _, _, size = world()
    if name == "auto":
        name = "ddp" if size > 1 else "single"
    if name == "single" and size > 1:
        raise ValueError(f"--strategy single under torchrun would train {size} separate copies of the run; use "
                         "--strategy ddp or fsdp (or run without torchrun)")
    ac = bool(getattr(args, "activation_checkpointing", False))
    if name == "single":
        return STRATEGIES[name](activation_checkpointing=ac)
    kwargs = {"timeout_minutes": 60.0}  # rank 0 alone writes the token cache / saved models while others wait
    if "MASTER_ADDR" not in os.environ:
        kwargs.update(init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    return STRATEGIES[name](activation_checkpointing=ac, **kwargs)


def main_process_log():
    """`say` on rank 0, a silent logger on the other ranks (one copy of every message)."""
    rank, _, _ = world()
    return say if rank == 0 else None


def finish(strategy) -> None:
    """Leave the process group, if the command joined one."""
    close = getattr(strategy, "close", None)
    if callable(close):
        close()


@contextlib.contextmanager
def training_run(args: argparse.Namespace):
    """The keyword arguments a training recipe (train_tokenizer, train_generator) takes from the shared CLI flags:
    this rank's device, the --strategy, the progress choice, the data options and (on ranks other than 0) a silent
    log. Leaves the process group at the end, however the recipe ends."""
    strategy = make_strategy(args)
    kwargs = {"device": rank_device(args.device, strategy.name), "distributed": strategy,
              "progress": resolve_progress(args.progress), "data_options": data_options(args)}
    log = main_process_log()
    if log:
        kwargs["log"] = log
    try:
        yield kwargs
    finally:
        finish(strategy)


def add_set_argument(p: argparse.ArgumentParser, subject: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config value with a dotted key (repeatable): train.*, loss.*, tokenizer.*, "
                        f"conditioner.*, generator.*, sampling.* go to that part; other keys to the {subject}")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; results can differ between thread counts)")


def apply_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--check / --on-error / --max-pixels for the image folders a command reads (as `argen data`)."""
    p.add_argument("--check", default="verify", choices=["verify", "decode"],
                   help="folder scan before training: header check (fast) or a full decode of every file")
    p.add_argument("--on-error", default="skip", choices=["skip", "raise"],
                   help="unreadable images: leave them out and report them (skip) or fail (raise)")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="refuse images with more pixels than this (decompression bombs; default 64 Mi)")


def data_options(args: argparse.Namespace):
    from ..train.recipes import DataOptions

    return DataOptions(check=args.check, on_error=args.on_error, max_pixels=args.max_pixels)


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when the terminal shows it; otherwise one line per log record)")


def resolve_progress(flag: bool | None) -> bool:
    """--progress / --no-progress, else a bar when stderr is a terminal (logs get one line per record)."""
    return sys.stderr.isatty() if flag is None else flag


@contextlib.contextmanager
def warnings_as_lines():
    """Collect Python warnings raised inside the block and print each distinct one as a single
    `warning: ...` line afterwards (no file/line noise, no repeats)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        line = str(w.message).strip().splitlines()[0] if str(w.message).strip() else type(w.message).__name__
        if line not in seen:
            seen.add(line)
            say(f"warning: {line}")


def say(msg: str) -> None:
    """Print a user-facing line (CLI only; the library never prints)."""
    print(msg, file=sys.stdout, flush=True)


def _order(text: str):
    if text in ("random", "raster"):
        return text
    try:
        return seed_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--order takes random, raster or an integer seed, got {text!r}") from None


def _prune(text: str) -> float:
    v = finite_float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"a prune ratio is a fraction in [0, 1), got {v}")
    return v


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed_help: str, cfg_help: str) -> None:
    """The shared sampling options (None = the pipeline's stored default) and the paradigm-only ones."""
    p.add_argument("--seed", type=seed_int, default=0, help=seed_help)
    p.add_argument("--cfg", type=finite_float, default=None, help=cfg_help)
    p.add_argument("--cfg-schedule", default=None, choices=CFG_SCHEDULES,
                   help="how the guidance scale varies over steps (default: the pipeline's)")
    p.add_argument("--temperature", type=finite_float, default=None, help="sampling temperature, 0 = greedy")
    p.add_argument("--top-k", type=nonnegative_int, default=None, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=finite_float, default=None, help="nucleus sampling mass in (0, 1] (1 = all)")
    g = p.add_argument_group("paradigm options (refused by generators they do not apply to)")
    g.add_argument("--order", type=_order, default=None,
                   help="random order, MAR: the decoding order, random | raster | an integer seed (default: the model's)")
    g.add_argument("--num-steps", type=positive_int, default=None,
                   help="random order, masked, MAR: decoding steps (several tokens per step; default: the model's)")
    g.add_argument("--choice-temperature", type=finite_float, default=None,
                   help="masked: Gumbel noise on the confidence that picks which tokens to keep (MaskGIT 4.5; 0 = "
                        "keep the most confident)")
    g.add_argument("--diffusion-steps", type=positive_int, default=None,
                   help="MAR: the diffusion head's denoising steps per token (default: the model's, 100 for MAR)")
    g.add_argument("--x0-clip", type=nonnegative_float, default=None, metavar="BOUND",
                   help="MAR / diffusion head: clamp the predicted clean token to [-BOUND, BOUND] at every denoising "
                        "step (default: the model's; argen-trained models carry their tokens' range, official "
                        "checkpoints none; 0 = unclipped)")
    g.add_argument("--cfg-refresh", type=positive_int, default=None,
                   help="MAR, approximate speed-up (LazyMAR-style condition cache): run the unconditional rows "
                        "every N-th step only (default 1: exact)")
    g.add_argument("--token-refresh", type=positive_int, default=None,
                   help="MAR, approximate speed-up (LazyMAR-style token cache): run every position through the "
                        "network every N-th step only, in between just the new and the predicted tokens "
                        "(default 1: exact)")
    g.add_argument("--head-refresh", type=positive_int, default=None,
                   help="MAR, approximate speed-up (LazyMAR-style diffusion-head cache): run the whole head every "
                        "N-th denoising step only, in between the conditional rows and the outer blocks (LazyMAR "
                        "uses 7; default 1: exact)")
    g.add_argument("--gumbel", type=finite_float, default=None,
                   help="next-scale: VAR's Gumbel smoothing of the next scale's inputs (0.27 is VAR's; default off)")
    g.add_argument("--prune", type=_prune, nargs="+", default=None, metavar="RATIO",
                   help="next-scale, approximate speed-up (FastVAR-style): fraction of tokens the transformer "
                        "skips at each of the last scales, e.g. --prune 0.4 0.5 (default: exact sampling)")
    p.add_argument("--pack-weights", action="store_true",
                   help="CPU fast path: prepacked oneDNN weights while sampling (faster decoding, rounds "
                        "differently from the default path; see nn/fast_linear.py)")


_KNOBS = ("cfg", "cfg_schedule", "temperature", "top_k", "top_p", "order", "num_steps", "choice_temperature",
          "diffusion_steps", "x0_clip", "cfg_refresh", "token_refresh", "head_refresh", "gumbel", "prune")


def sampling_overrides(args: argparse.Namespace) -> dict:
    """The sampling options the user gave (unset ones fall back to the pipeline's defaults)."""
    given = {k: getattr(args, k, None) for k in _KNOBS}
    if given["prune"] is not None:
        given["prune"] = tuple(given["prune"])
    return {k: v for k, v in given.items() if v is not None}
