"""Shared neural-network layers (no paradigm logic here): norms, MLPs, RoPE, attention with a static KV
cache, AdaLN, the pre-norm blocks and the `Trunk` every sequence generator composes; conv blocks for
tokenizers live in `conv.py`."""
from .adaln import AdaLNModulation, modulate
from .attention import Attention, AttnMask
from .block import AdaLNBlock, Block, DropPath
from .fast_linear import Linear, packed_linears
from .kv_cache import NO_CACHE, KVCache, LayerKV, NoCache, PositionKV
from .mlp import GeluMLP, SwiGLU, find_multiple, llama_hidden_dim, make_mlp
from .norms import LayerNorm, RMSNorm, make_norm
from .rope import GridRope, apply_rope, grid_positions, grid_rope_table, rope_1d, rope_2d, with_prefix
from .trunk import Trunk

__all__ = ["AdaLNModulation", "modulate", "Attention", "AttnMask", "AdaLNBlock", "Block", "DropPath", "Linear",
           "packed_linears", "NO_CACHE", "KVCache", "LayerKV", "NoCache", "PositionKV", "GeluMLP", "SwiGLU",
           "find_multiple", "llama_hidden_dim", "make_mlp", "LayerNorm", "RMSNorm", "make_norm", "GridRope",
           "apply_rope", "grid_positions", "grid_rope_table", "rope_1d", "rope_2d", "with_prefix", "Trunk"]
