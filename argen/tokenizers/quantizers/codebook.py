"""A learnable codebook (K, d) with memory-lean nearest-code search and its training-time state updates.

Shared by VQ (vq.py), residual VQ (rvq.py) and the multi-scale quantizer (msvq.py). It holds no loss logic.

- Search: squared-L2 (`argmin ||e||^2 - 2 x.e`) or cosine (`argmax x.e` on l2-normalised vectors) via one
  matmul per chunk of rows into a reused buffer, so memory is O(chunk x K), never O(N x K).
- EMA update (van den Oord et al. 2017, "Neural Discrete Representation Learning", App. A.1,
  https://arxiv.org/abs/1711.00937): the codebook follows Laplace-smoothed running means of its assignments.
- K-means init (on the first training batch, seeded) and dead-code restart (replace codes with random
  vectors of the current batch), as in Dhariwal et al. 2020 ("Jukebox", https://arxiv.org/abs/2005.00341).

Distributed: assignment statistics are all-reduced and random draws are made on rank 0 and broadcast, so
every rank keeps an identical codebook.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import all_reduce_sum_, broadcast_

# Distance-buffer elements per search chunk (fp32), measured on a 2-core x86 CPU for K in [1k, 16k]. One thread:
# 1 MiB, which stays in cache (larger falls out, smaller pays per-call overhead). Several threads: every op
# ends in a barrier, so chunks must be large enough (16 MiB per thread) to amortise it.
_AUTO_CHUNK_ELEMENTS = 1 << 18
_AUTO_CHUNK_ELEMENTS_PER_THREAD = 1 << 22


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on `device` seeded with `seed` (all training-time randomness derives from the config seed)."""
    return torch.Generator(device=device).manual_seed(int(seed))


class Codebook(nn.Module):
    """K codes of dimension d. `weight` is trained by gradient, or by EMA when `ema_decay > 0`."""

    def __init__(self, num_codes: int, dim: int, *, cosine: bool = False, ema_decay: float = 0.0,
                 kmeans_iters: int = 0, chunk_size: int = 0, eps: float = 1e-5):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.cosine, self.ema_decay, self.kmeans_iters = cosine, ema_decay, kmeans_iters
        self.chunk_size, self.eps = chunk_size, eps
        self.weight = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes),
                                   requires_grad=ema_decay == 0.0)
        if ema_decay > 0:
            self.register_buffer("ema_count", torch.zeros(num_codes))
            self.register_buffer("ema_sum", self.weight.detach().clone())
        if kmeans_iters > 0:
            self.register_buffer("initted", torch.zeros(()))

    # ------------------------------------------------------------------ lookup and search

    def codes(self) -> Tensor:
        """The codebook as matched: (K, d), l2-normalised in cosine mode."""
        w = self.weight
        return F.normalize(w, dim=-1) if self.cosine else w

    def embed(self, ids: Tensor) -> Tensor:
        """ids (...) -> codes (..., d); differentiable w.r.t. the codebook."""
        return F.embedding(ids, self.codes())

    def chunk_rows(self) -> int:
        if self.chunk_size > 0:
            return self.chunk_size
        threads = torch.get_num_threads()
        budget = _AUTO_CHUNK_ELEMENTS if threads == 1 else _AUTO_CHUNK_ELEMENTS_PER_THREAD * threads
        return max(1, budget // self.num_codes)

    @torch.no_grad()
    def search(self, x: Tensor, codes: Tensor | None = None) -> Tensor:
        """Nearest code id (N,) int64 of each row of x (N, d); cosine mode expects normalised x."""
        return nearest(x, self.codes() if codes is None else codes, self.cosine, self.chunk_rows())

    # ------------------------------------------------------------------ training-time state

    @torch.no_grad()
    def maybe_kmeans_init_(self, x: Tensor, seed: int) -> None:
        """On the first training batch, set the codes to k-means centroids of x (N, d) (Lloyd iterations).

        Initial centroids are drawn on rank 0 and broadcast; sums and counts are all-reduced, so the
        centroids are those of k-means over the union of all ranks' batches.
        """
        if self.kmeans_iters == 0 or bool(self.initted):
            return
        x = x.float()
        gen = seeded_generator(x.device, seed)
        n, k = x.shape[0], self.num_codes
        pick = torch.randperm(n, generator=gen, device=x.device)[:k] if n >= k else \
            torch.randint(n, (k,), generator=gen, device=x.device)
        centroids = broadcast_(x[pick].contiguous())
        counts = torch.zeros(k, device=x.device)
        for _ in range(self.kmeans_iters):
            ids = nearest(x, centroids, self.cosine, self.chunk_rows())
            sums, counts = _assignment_sums(x, ids, k)
            all_reduce_sum_(sums)
            all_reduce_sum_(counts)
            means = sums / counts.clamp_min(1).unsqueeze(1)
            centroids = torch.where(counts.unsqueeze(1) > 0, means, centroids)  # empty clusters keep their seed
            if self.cosine:
                centroids = F.normalize(centroids, dim=-1)
        self.weight.copy_(centroids)
        self.initted.fill_(1.0)
        if self.ema_decay > 0:
            self.ema_count.copy_(counts)
            self.ema_sum.copy_(centroids * counts.unsqueeze(1))

    @torch.no_grad()
    def ema_update_(self, x: Tensor, ids: Tensor) -> None:
        """Move each code towards the mean of the vectors assigned to it (x (N, d), ids (N,))."""
        sums, counts = _assignment_sums(x.float(), ids, self.num_codes)
        all_reduce_sum_(sums)
        all_reduce_sum_(counts)
        d = self.ema_decay
        self.ema_count.mul_(d).add_(counts, alpha=1 - d)
        self.ema_sum.mul_(d).add_(sums, alpha=1 - d)
        total = self.ema_count.sum()
        # Laplace smoothing keeps never-hit codes from dividing by zero.
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.weight.copy_(self.ema_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_(self, dead: Tensor, x: Tensor, seed: int) -> int:
        """Replace the codes marked in `dead` (K,) bool with random rows of x (N, d). Returns how many.

        `dead` must be identical on every rank (it comes from all-reduced usage counters); the
        replacements are drawn on rank 0 and broadcast.
        """
        idx = dead.nonzero().squeeze(1)
        if idx.numel() == 0:
            return 0
        gen = seeded_generator(x.device, seed)
        pick = torch.randint(x.shape[0], (idx.numel(),), generator=gen, device=x.device)
        new = broadcast_(x[pick].float().contiguous())
        self.weight.index_copy_(0, idx, new.to(self.weight.dtype))
        if self.ema_decay > 0:
            self.ema_count.index_fill_(0, idx, 1.0)
            self.ema_sum.index_copy_(0, idx, new)
        return int(idx.numel())


def _assignment_sums(x: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-code sums (K, d) and counts (K,) of x (N, d) assigned by ids (N,)."""
    sums = torch.zeros(k, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, ids, x)
    counts = torch.bincount(ids, minlength=k).to(x.dtype)
    return sums, counts


@torch.no_grad()
def nearest(x: Tensor, codes: Tensor, cosine: bool, chunk: int) -> Tensor:
    """Chunked nearest-neighbour search: ids (N,) int64 of the closest row of codes (K, d) for each row of x.

    Euclidean: argmin_k ||e_k||^2 - 2 x.e_k (||x||^2 is constant per row). Cosine: argmax_k x.e_k (inputs
    already normalised). Computed in fp32 with autocast off, one (chunk, K) buffer reused for all chunks.
    """
    n, k = x.shape[0], codes.shape[0]
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        codes_t = codes.float().t().contiguous()  # (d, K)
        bias = None if cosine else codes.float().square().sum(1)  # (K,)
        out = torch.empty(n, dtype=torch.long, device=x.device)
        chunk = max(1, min(chunk, n))
        buf = torch.empty(chunk, k, device=x.device)
        for start in range(0, n, chunk):
            xc = x[start:start + chunk]
            scores = buf[: xc.shape[0]]
            if cosine:
                torch.mm(xc, codes_t, out=scores)
                torch.argmax(scores, dim=1, out=out[start:start + xc.shape[0]])
            else:
                torch.addmm(bias, xc, codes_t, alpha=-2.0, out=scores)
                torch.argmin(scores, dim=1, out=out[start:start + xc.shape[0]])
    return out
