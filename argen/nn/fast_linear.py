"""Fast CPU decoding: run large linear layers from oneDNN-prepacked weights during sampling.

Autoregressive decoding multiplies a handful of rows (2B with CFG) by every weight matrix each step, so a
step is bound by how fast the weights stream through the CPU. PyTorch's default small-M fp32 GEMM repacks
the weight on every call; a weight packed once into oneDNN's blocked layout is read exactly as stored,
which measured 1.3-2x faster per step for LlamaGen-B on a 2-core AVX2 box (benchmarks/RESULTS.md). The gain is
only at few rows: from ~128 rows on the plain GEMM's own packing pays for itself and the prepacked kernel is 5-20%
slower (a 2-core AMD EPYC, 768-3072 wide layers), so calls with more than `MAX_PACKED_ROWS` rows -- a prompt's
prefill, MAR's bidirectional transformer over all 320 positions -- take the plain path even while packing is on.

`Linear` is an nn.Linear (same parameters, same state-dict names) that uses a packed copy while one is
attached and autograd is off; `packed_linears(module, rows, enabled=True)` attaches copies for the duration
of a `with` block (sampling) and drops them afterwards, so the extra memory (one more copy of the large
weights) is only held while generating.

It is an explicit opt-in (`argen.generate(..., pack_weights=True)`, `argen sample --pack-weights`), off by
default, because the packed GEMM rounds differently from `F.linear`: results agree to fp32 rounding, not
bit for bit, so the same seed gives the same images with packing on or off only within one setting. Whether it
is used depends only on that flag and on the weights themselves (fp32 CPU matrices of at least
`MIN_PACK_ELEMENTS`, and an op present in this torch build) and on each call's row count, never on free memory
or load, so a seeded run is reproducible on a given machine.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_PACK_ELEMENTS = 1 << 19  # ~0.5M weights (768x768): below this the plain GEMM is as fast
MAX_PACKED_ROWS = 128  # above this many input rows per call the plain GEMM is as fast or faster


def _ops_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (ops is not None and torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


class Linear(nn.Linear):
    """nn.Linear with an optional prepacked weight used only for inference (see module docstring)."""

    _packed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        packed = self._packed
        if (packed is None or torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu"
                or x.numel() > MAX_PACKED_ROWS * x.shape[-1]):
            return F.linear(x, self.weight, self.bias)
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])


def _eligible(m: nn.Module) -> bool:
    if not isinstance(m, Linear):
        return False
    w = m.weight
    return w.device.type == "cpu" and w.dtype == torch.float32 and w.numel() >= MIN_PACK_ELEMENTS


@contextmanager
def packed_linears(module: nn.Module, rows: int, enabled: bool = False) -> Iterator[bool]:
    """Attach prepacked weights to the large CPU `Linear`s of `module` inside the block when `enabled`.

    `rows` is the expected number of input rows per call (a layout hint; other row counts still work).
    Yields whether packing is active (False when disabled, or nothing in `module` is eligible).
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"pack_weights must be True or False, got {enabled!r}")
    mods = [m for m in module.modules() if _eligible(m)] if enabled and _ops_available() else []
    if not mods:
        yield False
        return
    try:
        with torch.no_grad():
            for m in mods:
                m._packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), max(int(rows), 1))
        yield True
    finally:
        for m in mods:
            m._packed = None
