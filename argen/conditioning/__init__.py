"""Conditioners: raw conditioning -> the embeddings generators consume (`base.py` has the interface).
Importing this package registers every conditioner kind: `class` (labels.py), `text` (text.py)."""
from .base import Conditioner, ConditionerConfig
from .labels import NULL_LABEL, ClassConditioner, ClassConditionerConfig
from .text import TextConditioner, TextConditionerConfig, TextEncoder, load_text_encoder

__all__ = ["Conditioner", "ConditionerConfig", "NULL_LABEL", "ClassConditioner", "ClassConditionerConfig",
           "TextConditioner", "TextConditionerConfig", "TextEncoder", "load_text_encoder"]
