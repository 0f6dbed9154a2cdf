"""Static key/value cache for autoregressive decoding (gpt-fast style: preallocated, written by index).

One buffer pair (num_layers, B, H, max_len, D) is allocated once per generation run; every forward
declares where its T new tokens go (`prepare`), each layer writes its keys/values there by index and
attends over the visible prefix `[0, length)` — a view, never a copy or a torch.cat.

Slots are positions in the *decoding* sequence (prefix tokens first, then tokens in generation order),
shared by every batch row. That covers:
  * batch and CFG-doubled batch ([cond; uncond] rows are just 2B rows);
  * multi-token steps (prefill, several tokens per forward);
  * arbitrary slot writes (`prepare(tensor_of_slots)`), e.g. re-writing a slot or filling out of order.
Generators pass `cache.attn_mask` as the attention mask of a cached forward; `NO_CACHE` stands in for a
cache in full-sequence forwards (training), so attention layers have one code path.
Visibility is slot-causal: a query written at slot s sees slots <= s. The boolean mask for that comes
from one precomputed table; the common single-token append needs no mask at all. `prepare(..., causal=False)`
makes the new slots see each other and every earlier slot (a whole block at once: VAR's scales).
"""
from __future__ import annotations

import torch
from torch import Tensor


class PassThroughKV:
    """The layer view of "no cache": a forward attends over its own keys/values only (training, full
    sequences). Attention always calls `kv.update`, so it has no cached/uncached modes of its own."""

    __slots__ = ()

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v


class NoCache:
    """Stands where a `KVCache` goes when there is none: every layer gets the pass-through view."""

    __slots__ = ()
    _layer = PassThroughKV()

    class _Layers:
        __slots__ = ()

        def __getitem__(self, i: int) -> PassThroughKV:
            return NoCache._layer

    layers = _Layers()


NO_CACHE = NoCache()


class LayerKV:
    """The view of one layer's buffers that an attention module writes to and reads from."""

    __slots__ = ("cache", "index")

    def __init__(self, cache: "KVCache | PositionKV", index: int):
        self.cache, self.index = cache, index

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.cache.update(self.index, k, v)


class KVCache:
    """Preallocated keys/values for `num_layers` attention layers.

    Usage per forward: `cache.prepare(start, count)` (contiguous slots) or `cache.prepare(slots)`,
    then run the model with `cache.layers[i]` passed to layer i. `cache.mask` is the (T, length) bool
    mask for this forward (None when the step is a plain append of one token).
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (num_layers, batch_size, num_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0  # slots [0, length) are visible
        self.mask: Tensor | None = None
        self.layers = [LayerKV(self, i) for i in range(num_layers)]
        self._write: slice | Tensor = slice(0, 0)
        self._causal: Tensor | None = None  # (max_len, max_len) lower-triangular, built on first need

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def reset(self) -> None:
        """Forget every slot (the buffers are reused, not zeroed: invisible slots are never read)."""
        self.length, self.mask, self._write = 0, None, slice(0, 0)

    def prepare(self, slots: int | Tensor, count: int = 1, *, causal: bool = True) -> None:
        """Declare the slots of the next forward: `start` + `count` contiguous slots, or a LongTensor (T,).
        `causal=False`: the new slots see all slots < length, each other included (no mask)."""
        if isinstance(slots, int):
            start, end = slots, slots + count
            if start < 0 or end > self.max_len:
                raise ValueError(f"KV cache slots {start}..{end - 1} are outside [0, {self.max_len}); "
                                 "allocate the cache with a larger max_len")
            append_one = count == 1 and start == self.length
            self._write = slice(start, end)
            self.length = max(self.length, end)
            self.mask = None if append_one or not causal else self._causal_rows(torch.arange(start, end))
            return
        slots = slots.to(device=self.k.device, dtype=torch.long).reshape(-1)
        end = int(slots.max()) + 1
        if int(slots.min()) < 0 or end > self.max_len:
            raise ValueError(f"KV cache slots must lie in [0, {self.max_len}); got {slots.tolist()}")
        self._write = slots
        self.length = max(self.length, end)
        self.mask = self._causal_rows(slots) if causal else None

    @property
    def attn_mask(self) -> "Tensor | str":
        """The attention mask of the prepared forward: the (T, length) bool table, or "full" (no mask needed:
        a plain one-token append, or slots prepared with causal=False)."""
        return "full" if self.mask is None else self.mask

    def _causal_rows(self, slots: Tensor) -> Tensor:
        if self._causal is None:
            self._causal = torch.ones(self.max_len, self.max_len, dtype=torch.bool, device=self.k.device).tril_()
        return self._causal[slots.to(self._causal.device), : self.length]  # (T, length)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H, T, D) at the prepared slots; return the visible keys/values (B, H, length, D)."""
        kb, vb = self.k[layer], self.v[layer]  # (B, H, max_len, D)
        if isinstance(self._write, slice):
            kb[:, :, self._write] = k
            vb[:, :, self._write] = v
        else:
            kb.index_copy_(2, self._write, k.to(kb.dtype))
            vb.index_copy_(2, self._write, v.to(vb.dtype))
        return kb[:, :, : self.length], vb[:, :, : self.length]


class PositionKV:
    """Keys/values of every position of a fixed-length bidirectional sequence, for forwards that recompute only
    some positions of each row and reuse the others' from an earlier forward (MAR's feature cache, LazyMAR-style).

    Per forward: `prepare(index, read_all)` with `index` (B, T) the positions (per row) of the T rows being
    computed; each layer scatters their keys/values there. `read_all=False` (a full or compacted forward that is
    being recorded) attends over the forward's own keys only, exactly as without a cache; `read_all=True`
    attends over every position's keys (fresh where just written, stale elsewhere). `rows(n)` is a view of
    the first n rows sharing the buffers (the conditional half of a guided batch)."""

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, length: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 buffers: tuple[Tensor, Tensor] | None = None):
        shape = (num_layers, batch_size, num_heads, length, head_dim)
        self.k, self.v = buffers if buffers is not None else (torch.zeros(shape, dtype=dtype, device=device),
                                                              torch.zeros(shape, dtype=dtype, device=device))
        self.layers = [LayerKV(self, i) for i in range(num_layers)]
        self._index: Tensor | None = None
        self._read_all = False

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def rows(self, n: int) -> "PositionKV":
        L, _, H, N, D = self.k.shape
        return PositionKV(L, n, H, N, D, buffers=(self.k[:, :n], self.v[:, :n]))

    def prepare(self, index: Tensor, *, read_all: bool) -> None:
        if index.dim() != 2 or index.shape[0] != self.batch_size:
            raise ValueError(f"index must be (B, T) = ({self.batch_size}, T) positions, got {tuple(index.shape)}")
        self._index = index.to(device=self.k.device, dtype=torch.long)
        self._read_all = read_all

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self._index is None:
            raise RuntimeError("PositionKV.prepare(index, read_all=...) must run before a forward")
        kb, vb = self.k[layer], self.v[layer]  # (B, H, N, D)
        idx = self._index[:, None, :, None].expand(-1, kb.shape[1], -1, kb.shape[3])
        kb.scatter_(2, idx, k.to(kb.dtype))
        vb.scatter_(2, idx, v.to(vb.dtype))
        return (kb, vb) if self._read_all else (k, v)
