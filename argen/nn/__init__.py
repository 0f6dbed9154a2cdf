"""Shared neural-network layers (no paradigm logic here): norms, MLPs, RoPE, attention with a static KV
cache, AdaLN and the pre-norm transformer block; conv blocks for tokenizers live in `conv.py`."""
from .adaln import AdaLNModulation, modulate
from .attention import Attention
from .block import Block, DropPath
from .fast_linear import Linear, packed_linears
from .kv_cache import KVCache, LayerKV
from .mlp import GeluMLP, SwiGLU, find_multiple, llama_hidden_dim, make_mlp
from .norms import LayerNorm, RMSNorm, make_norm
from .rope import apply_rope, grid_positions, grid_rope_table, rope_1d, rope_2d, with_prefix

__all__ = ["AdaLNModulation", "modulate", "Attention", "Block", "DropPath", "Linear", "packed_linears", "KVCache", "LayerKV", "GeluMLP",
           "SwiGLU", "find_multiple", "llama_hidden_dim", "make_mlp", "LayerNorm", "RMSNorm", "make_norm",
           "apply_rope", "grid_positions", "grid_rope_table", "rope_1d", "rope_2d", "with_prefix"]
