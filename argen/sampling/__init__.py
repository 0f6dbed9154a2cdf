"""Sampling: `generate` (the one loop), logit processing, guidance (CFG) and step schedules."""
from .generate import Force, generate
from .guidance import combine, double, guidance_scale
from .logits import apply_temperature, filter_logits, sample_logits, top_k_filter, top_p_filter

__all__ = ["Force", "generate", "combine", "double", "guidance_scale", "apply_temperature", "filter_logits",
           "sample_logits", "top_k_filter", "top_p_filter"]
