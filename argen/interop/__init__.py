"""Converters for official checkpoints -> argen models, each with a strict key/shape report.

    from argen.interop.llamagen import convert_pipeline   # LlamaGen VQ + c2i GPT -> argen Pipeline

`common.py` holds the shared steps (safe loading with `torch.load(weights_only=True)`, unwrapping training
containers, renaming tables, strict loading with errors that name the official keys); one module per
source (`llamagen.py`, ...) holds its renaming table and config inference. The CLI front end is
`argen convert SOURCE ...` (argen/cli/convert.py).
"""
