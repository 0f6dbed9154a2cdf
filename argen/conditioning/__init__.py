"""Conditioning inputs: class labels with a null id for CFG (`labels.py`); text and image inputs are
added by their own modules."""
from .labels import NULL_LABEL, ClassEmbedder, as_cond, null_like

__all__ = ["NULL_LABEL", "ClassEmbedder", "as_cond", "null_like"]
