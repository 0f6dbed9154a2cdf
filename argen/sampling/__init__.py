"""Sampling: `generate` (the one loop), the per-paradigm samplers, logit processing, guidance (CFG), step
schedules and editing. `generate` and the samplers load on first use, so the heads can import the logit and
guidance functions without pulling in every sampler."""
from .guidance import combine, guidance_scale
from .logits import apply_temperature, filter_logits, sample_logits, top_k_filter, top_p_filter

_LAZY = {"generate": "loop", "evaluating": "loop", "resolve_options": "loop", "Force": "samplers",
         "sampler_for": "samplers"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["generate", "evaluating", "resolve_options", "Force", "sampler_for", "combine", "guidance_scale",
           "apply_temperature", "filter_logits", "sample_logits", "top_k_filter", "top_p_filter"]
