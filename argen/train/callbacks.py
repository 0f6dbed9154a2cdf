"""Callbacks: hooks the Trainer calls around steps, for periodic evaluation, sampling or exports.

Subclass `Callback` and override what you need, or wrap a function with `Every(n, fn)`. Callbacks run on
every process (call collectives freely); guard file writes with `trainer.is_main`. To log numbers, call
`trainer.log_eval({"name": value, ...})` — they go to `eval.jsonl` (and TensorBoard if enabled).

Order within a step: train step -> log record -> `on_step_end` -> checkpoint. Callbacks therefore run
before the checkpoint of their step, so whatever randomness they consume is inside the saved RNG state
and resumed runs stay exact. Use your own `torch.Generator` for sampling; the Trainer puts the task back
in train mode before the next step, so a callback may call `.eval()` freely.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .loop import Trainer


class Callback:
    """Base class: every hook is a no-op."""

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        """After optimizer step `step` (1-based count of completed steps)."""

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        """After a training log record was written (main process only)."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        """After a checkpoint was written (main process only)."""

    def on_fit_end(self, trainer: "Trainer") -> None:
        pass


class Every(Callback):
    """Call `fn(trainer, step)` every `n` steps and, if `at_end`, after the last step of the run."""

    def __init__(self, n: int, fn: Callable[["Trainer", int], None], *, at_end: bool = True):
        if n < 1:
            raise ValueError(f"Every(n=...) needs n >= 1, got {n}")
        self.n, self.fn, self.at_end = n, fn, at_end

    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        if step % self.n == 0 or (self.at_end and step == trainer.config.steps):
            self.fn(trainer, step)
