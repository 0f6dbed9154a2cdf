"""Per-token diffusion head for continuous tokens: MAR's "Diffusion Loss" (Li et al., "Autoregressive Image
Generation without Vector Quantization", https://arxiv.org/abs/2406.11838).

A generator hands the head one condition vector z (cond_dim) per token; the head models p(x | z) for the
token x (token_dim) with a small denoising MLP and a Gaussian diffusion (DDPM, Ho et al.
https://arxiv.org/abs/2006.11239, with IDDPM's learned variances, Nichol & Dhariwal https://arxiv.org/abs/2102.09672):

    network    h = input_proj(x_t);  y = time_embed(t) + cond_embed(z)
               depth x  h <- h + g * MLP(LN(h) * (1 + s) + b),  (b, s, g) = Linear(SiLU(y))   (AdaLN-zero)
               out = Linear(LN(h) * (1 + s') + b'),  (b', s') = Linear(SiLU(y))  ->  [eps (token_dim), v (token_dim)]
    schedule   T = 1000 steps, cosine alpha_bar(t) = cos^2((t/T + 0.008)/1.008 * pi/2), beta <= 0.999
    variance   learned range: log sigma^2 = f log beta_t + (1 - f) log beta~_t with f = (v + 1) / 2
    training   loss = |eps - eps_theta|^2 (mean over dims) + L_vlb (bits; the mean's gradient stopped, so the VLB
               only trains v); t ~ U{0..T-1}; each (z, x) pair is repeated `batch_mul` times (MAR's
               diffusion_batch_mul) with its own (t, eps)
    sampling   respaced to `sampling_steps` (IDDPM striding); ancestral steps x_{t-1} = mu + temperature * sigma * e,
               the predicted x_0 unclipped (as the official code) unless `x0_clip` bounds it; classifier-free
               guidance on the noise prediction inside the loop, eps = u + s (c - u), both halves fed the same
               x_t, rows [cond; uncond].

Why `x0_clip`: at the first (noisiest) sampling step alpha_bar is ~2e-9, so the posterior mean multiplies the error of
the noise prediction by coef_x0 * sqrt(1/alpha_bar - 1): ~32 with 1000 steps, ~316 with 100, ~1674 with 20. A fully
trained head predicts eps there accurately enough; a small or briefly trained one does not, and its samples diverge
(|x| in the hundreds; a tiny MAR trained 20 CPU-minutes on Fashion-MNIST did). Clamping x_0 to the range the training
tokens occupy removes that failure; argen's trainer sets the bound from the token cache (train/recipes.py).

Parameter names are the official ones (`net.time_embed.mlp.0`, `net.res_blocks.{i}.adaLN_modulation.1`, ...;
MAR's checkpoints prefix them with `diffloss.`), so official weights load by name.

Speed: at the few rows a sampling step has (MAR-B reveals ~4 tokens per step, 8 rows with CFG) a step is bound by
streaming the weights. Everything that does not depend on x_t -- the cond embedding, the time embeddings of all
sampling steps and every block's AdaLN modulation Linear(SiLU(c + t_k)) for all steps k -- is computed once per
call as large GEMMs (chunked over steps to bound memory), so each step only runs input_proj, the res-block MLPs
and the output Linear (a third of the weights). `sample(..., precompute=False)` is the plain per-step path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import Config
from ..nn.fast_linear import Linear
from ..nn.norms import LayerNorm
from ..sampling.guidance import combine
from ..types import LossOutput, SampleOptions

NoiseSchedule = Literal["cosine", "linear"]
NOISE_SCHEDULES = ("cosine", "linear")
LN2 = math.log(2.0)
# Bytes of precomputed AdaLN modulations held at once while sampling (chunks of steps are computed in turn).
MODULATION_BUDGET = 128 << 20


@dataclass(frozen=True, kw_only=True)
class DiffusionHeadConfig(Config):
    """Shape and process of the diffusion head (a plain group nested in a generator's config).

    Defaults are MAR-B's head (6 x 1024 on 768-d conditions, 16-d KL-16 tokens); MAR-L uses 8 x 1280 on 1024,
    MAR-H 12 x 1536 on 1280. `sampling_steps` is the official `num_sampling_steps` ("100"), `batch_mul` the
    official `diffusion_batch_mul` (4 in the README's training command)."""

    token_dim: int = 16
    cond_dim: int = 768
    depth: int = 6
    width: int = 1024
    freq_dim: int = 256  # sinusoidal timestep features fed to time_embed
    num_timesteps: int = 1000
    sampling_steps: int = 100
    noise_schedule: NoiseSchedule = "cosine"
    batch_mul: int = 4
    grad_checkpointing: bool = False
    # sampling: the predicted clean token is clamped to [-x0_clip, x0_clip]; None or 0: unclipped (the official code)
    x0_clip: float | None = None

    def __post_init__(self):
        for name in ("token_dim", "cond_dim", "depth", "width", "batch_mul"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.freq_dim, bool) or not isinstance(self.freq_dim, int) or self.freq_dim < 2:
            raise ValueError(f"freq_dim must be an integer >= 2 (MAR uses 256), got {self.freq_dim!r}")
        if isinstance(self.num_timesteps, bool) or not isinstance(self.num_timesteps, int) or self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be an integer >= 2 (MAR trains with 1000), "
                             f"got {self.num_timesteps!r}")
        check_steps(self.sampling_steps, self.num_timesteps, "sampling_steps")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {', '.join(NOISE_SCHEDULES)} (MAR: 'cosine'); "
                             f"got {self.noise_schedule!r}")
        if self.x0_clip is not None:
            check_x0_clip(self.x0_clip)


def check_x0_clip(value: object, name: str = "x0_clip") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (the bound on the predicted clean token at sampling; "
                         f"0 = unclipped), got {value!r}")
    return float(value)


def check_steps(steps: int, num_timesteps: int, name: str = "num_steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= num_timesteps:
        raise ValueError(f"{name} must be an integer in [2, {num_timesteps}] (respaced denoising steps; MAR samples "
                         f"with 100), got {steps!r}")
    return steps


# ----------------------------------------------------------------------------- the diffusion process

def beta_schedule(name: NoiseSchedule, num_timesteps: int) -> list[float]:
    """Per-step betas (float64) of the named schedule: 'cosine' (IDDPM) or 'linear' (DDPM, scaled to T)."""
    T = num_timesteps
    if name == "cosine":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
    if name == "linear":
        scale = 1000 / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64, device="cpu").tolist()
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(NOISE_SCHEDULES)}")


def respaced_timesteps(num_timesteps: int, sections: int | Sequence[int]) -> list[int]:
    """IDDPM's striding: split [0, T) into len(sections) equal parts (the first T % n one longer) and take
    `count` evenly spaced steps from each, both ends included, positions rounded half to even."""
    counts = [sections] if isinstance(sections, int) else list(sections)
    size, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        n = size + (1 if i < extra else 0)
        if not 1 <= count <= n:
            raise ValueError(f"cannot take {count} steps from a section of {n} (of {num_timesteps} timesteps)")
        stride = 1 if count <= 1 else (n - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.append(start + round(pos))
            pos += stride
        start += n
    return sorted(set(kept))


class Diffusion:
    """Coefficient tables of a Gaussian diffusion over the kept `timesteps` of a base schedule (float64, CPU).

    Index i runs over the kept steps (0 = least noisy); `timesteps[i]` is the base step the network is told.
    Betas of the kept steps are 1 - alpha_bar[k_i] / alpha_bar[k_{i-1}], which is also how the full
    schedule is rebuilt when every step is kept (as the official code does)."""

    def __init__(self, base_betas: Sequence[float], timesteps: Sequence[int]):
        cpu = dict(dtype=torch.float64, device="cpu")  # explicit: heads are also built under torch.device("meta")
        base = torch.tensor(list(base_betas), **cpu)
        acp_base = torch.cumprod(1.0 - base, 0).tolist()
        betas, last = [], 1.0
        for k in timesteps:
            betas.append(1.0 - acp_base[k] / last)
            last = acp_base[k]
        self.timesteps = list(timesteps)
        b = torch.tensor(betas, **cpu)
        acp = torch.cumprod(1.0 - b, 0)
        prev = torch.cat([torch.ones(1, **cpu), acp[:-1]])
        var = b * (1.0 - prev) / (1.0 - acp)  # posterior variance beta~_t (0 at t = 0)
        self.betas = b
        self.log_betas = b.log()
        self.sqrt_acp = acp.sqrt()
        self.sqrt_1m_acp = (1.0 - acp).sqrt()
        self.sqrt_recip_acp = (1.0 / acp).sqrt()
        self.sqrt_recipm1_acp = (1.0 / acp - 1.0).sqrt()
        self.post_logvar = torch.cat([var[1:2], var[1:]]).log()  # log beta~_t with t = 0 clipped to t = 1
        self.coef_x0 = b * prev.sqrt() / (1.0 - acp)
        self.coef_xt = (1.0 - prev) * (1.0 - b).sqrt() / (1.0 - acp)
        self._device_tables: dict = {}
        self._lists: dict[str, list[float]] = {}

    def scalar(self, name: str, i: int) -> float:
        """Table `name` at index i as a Python float (fp32-rounded by the tensor ops it enters, as `at` is)."""
        if name not in self._lists:
            self._lists[name] = getattr(self, name).tolist()
        return self._lists[name][i]

    @classmethod
    def make(cls, schedule: NoiseSchedule, num_timesteps: int, steps: int | None = None) -> "Diffusion":
        keep = list(range(num_timesteps)) if steps is None else respaced_timesteps(num_timesteps, steps)
        return cls(beta_schedule(schedule, num_timesteps), keep)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def at(self, name: str, t: Tensor) -> Tensor:
        """Table `name` at integer steps t (N,) as fp32 (N, 1) on t's device."""
        key = (name, t.device)
        table = self._device_tables.get(key)
        if table is None:
            table = self._device_tables[key] = getattr(self, name).to(t.device)
        return table[t].float().unsqueeze(-1)

    # ------------------------------------------------------------------ training terms

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self.at("sqrt_acp", t) * x0 + self.at("sqrt_1m_acp", t) * noise

    def vb_bits(self, x0: Tensor, x_t: Tensor, t: Tensor, eps: Tensor, v: Tensor) -> Tensor:
        """Per-row VLB term in bits: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the discretised
        decoder NLL of x_0 at t = 0 (IDDPM's L_t / L_0), each averaged over the token's dims."""
        true_mean = self.at("coef_x0", t) * x0 + self.at("coef_xt", t) * x_t
        true_logvar = self.at("post_logvar", t)
        x0_hat = self.at("sqrt_recip_acp", t) * x_t - self.at("sqrt_recipm1_acp", t) * eps
        mean = self.at("coef_x0", t) * x0_hat + self.at("coef_xt", t) * x_t
        logvar = self.model_logvar(v, self.at("log_betas", t), self.at("post_logvar", t))
        kl = 0.5 * (-1.0 + logvar - true_logvar + torch.exp(true_logvar - logvar)
                    + (true_mean - mean) ** 2 * torch.exp(-logvar))
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)
        return torch.where(t == 0, nll.mean(-1) / LN2, kl.mean(-1) / LN2)

    @staticmethod
    def model_logvar(v: Tensor, max_log: Tensor | float, min_log: Tensor | float) -> Tensor:
        frac = (v + 1) / 2  # v in [-1, 1] spans [beta~_t, beta_t]
        return frac * max_log + (1 - frac) * min_log


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(bin of x) under N(means, exp(log_scales)^2) with bins of width 2/255 on [-1, 1] (open-ended
    outer bins), as IDDPM's L_0; elementwise, in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


# ----------------------------------------------------------------------------- the network (official names)

def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features [cos(t f_k), sin(t f_k)] with f_k = max_period^(-k / (dim/2)), fp32 (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(Linear(freq_dim, width), nn.SiLU(), Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """h + g * MLP(LN(h) * (1 + s) + b) with (b, s, g) from the condition."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(Linear(width, width), nn.SiLU(), Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(width, 3 * width))

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return h + gate * self.mlp(self.in_ln(h) * (1 + scale) + shift)

    def modulations(self, y_act: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(a, b, g) from SiLU(y) so that LN_affine(h) * (1 + s) + shift = LN(h) * a + b; computed in place."""
        m = self.adaLN_modulation[1](y_act)
        shift, scale, gate = m.chunk(3, dim=-1)
        scale.add_(1.0)
        if self.in_ln.bias is not None:
            shift.addcmul_(scale, self.in_ln.bias.to(m.dtype))
        if self.in_ln.weight is not None:
            scale.mul_(self.in_ln.weight.to(m.dtype))
        return scale, shift, gate

    def forward_modulated(self, h: Tensor, a: Tensor, b: Tensor, g: Tensor) -> Tensor:
        u = F.layer_norm(h.float(), h.shape[-1:], eps=self.in_ln.eps).to(h.dtype)
        u = self.mlp[0](torch.addcmul(b, u, a))
        u = self.mlp[2](F.silu(u, inplace=True))
        return torch.addcmul(h, g, u)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm_final = LayerNorm(width, eps=1e-6, affine=False)
        self.linear = Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(width, 2 * width))

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm_final(h) * (1 + scale) + shift)

    def modulations(self, y_act: Tensor) -> tuple[Tensor, Tensor]:
        shift, scale = self.adaLN_modulation[1](y_act).chunk(2, dim=-1)
        return scale.add_(1.0), shift

    def forward_modulated(self, h: Tensor, a: Tensor, b: Tensor) -> Tensor:
        u = F.layer_norm(h.float(), h.shape[-1:], eps=self.norm_final.eps).to(h.dtype)
        return self.linear(torch.addcmul(b, u, a))


class DenoiserMLP(nn.Module):
    """MAR's SimpleMLPAdaLN: (x_t (N, token_dim), t (N,), z (N, cond_dim)) -> [eps; v] (N, 2 token_dim)."""

    def __init__(self, cfg: DiffusionHeadConfig):
        super().__init__()
        W = cfg.width
        self.grad_checkpointing = cfg.grad_checkpointing
        self.time_embed = TimestepEmbedder(W, cfg.freq_dim)
        self.cond_embed = Linear(cfg.cond_dim, W)
        self.input_proj = Linear(cfg.token_dim, W)
        self.res_blocks = nn.ModuleList(ResBlock(W) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(W, 2 * cfg.token_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linears with zero biases, N(0, 0.02) time MLP, zeroed AdaLN and output (AdaLN-zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        zeroed = [b.adaLN_modulation[1] for b in self.res_blocks]
        zeroed += [self.final_layer.adaLN_modulation[1], self.final_layer.linear]
        for lin in zeroed:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.input_proj.weight.dtype

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        h = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(z)
        for block in self.res_blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, y, use_reentrant=False)
            else:
                h = block(h, y)
        return self.final_layer(h, y)

    def modulations(self, c_emb: Tensor, t_emb: Tensor, *, ends_only: bool = False) -> list[tuple[Tensor, ...]]:
        """Every block's modulation for conditions c_emb (R, W) at the times t_emb (S, W): (S, R, W) each.
        ends_only: only the first and last res-blocks' and the final layer's (the others are ()): what a step of
        the head cache runs."""
        y_act = F.silu(c_emb[None] + t_emb[:, None])  # (S, R, W)
        last = len(self.res_blocks) - 1
        mods = [block.modulations(y_act) if not ends_only or i in (0, last) else ()
                for i, block in enumerate(self.res_blocks)]
        return mods + [self.final_layer.modulations(y_act)]

    def forward_modulated(self, x: Tensor, mods: Sequence[tuple[Tensor, ...]], *,
                          residuals: dict[int, Tensor] | None = None, reuse: bool = False,
                          rows: int | None = None) -> Tensor:
        """forward() at one time step from its precomputed modulations (R, W) each; x (R, token_dim).

        residuals (the head cache, approximate): with reuse=False every block runs and each middle block's (all but
        the first and the last) residual h_out - h_in of the first `rows` rows (default all) is stored there; with
        reuse=True those blocks are skipped and their stored residuals added instead (LazyMAR's head cache)."""
        h = self.input_proj(x)
        last = len(self.res_blocks) - 1
        for i, (block, m) in enumerate(zip(self.res_blocks, mods)):
            if residuals is None or i in (0, last):
                h = block.forward_modulated(h, *m)
            elif reuse:
                h = h + residuals[i]
            else:
                out = block.forward_modulated(h, *m)
                residuals[i] = (out - h)[:rows]
                h = out
        return self.final_layer.forward_modulated(h, *mods[-1])


# ----------------------------------------------------------------------------- the head

def _flat(t: Tensor, dim: int, what: str, name: str) -> Tensor:
    if t.ndim < 1 or t.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}) ({what}), got {tuple(t.shape)}")
    return t.reshape(-1, dim)


class DiffusionHead(nn.Module):
    """Continuous-token head: `loss(z, target, mask)` (Diffusion Loss) and `sample(z, opts, rng)` (DDPM)."""

    def __init__(self, config: DiffusionHeadConfig):
        super().__init__()
        self.config = config
        self.net = DenoiserMLP(config)
        self.train_diffusion = Diffusion.make(config.noise_schedule, config.num_timesteps)
        self._sampling: dict[int, Diffusion] = {}
        self.modulation_budget = MODULATION_BUDGET  # bytes of precomputed modulations per chunk of steps

    def sampling_diffusion(self, num_steps: int | None = None) -> Diffusion:
        """The respaced process for `num_steps` denoising steps (config.sampling_steps by default)."""
        cfg = self.config
        steps = check_steps(cfg.sampling_steps if num_steps is None else num_steps, cfg.num_timesteps)
        if steps not in self._sampling:
            self._sampling[steps] = Diffusion.make(cfg.noise_schedule, cfg.num_timesteps, steps)
        return self._sampling[steps]

    # ------------------------------------------------------------------ training

    def terms(self, z: Tensor, target: Tensor, timesteps: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """Per-row loss terms for conditions z (N, cond_dim), clean tokens target (N, token_dim), integer
        timesteps (N,) in [0, num_timesteps) and noise (N, token_dim): `mse`, `vb` (bits) and `loss` = mse + vb."""
        cfg, diff = self.config, self.train_diffusion
        x0 = target.float()
        x_t = diff.q_sample(x0, timesteps, noise.float())
        out = self.net(x_t.to(self.net.dtype), timesteps, z.to(self.net.dtype)).float()
        eps, v = out.split(cfg.token_dim, dim=-1)
        mse = ((noise.float() - eps) ** 2).mean(-1)
        vb = diff.vb_bits(x0, x_t, timesteps, eps.detach(), v)  # learns v only: the mean's gradient is stopped
        return {"mse": mse, "vb": vb, "loss": mse + vb}

    def loss(self, z: Tensor, target: Tensor, mask: Tensor | None = None, *, rng: torch.Generator | None = None,
             timesteps: Tensor | None = None, noise: Tensor | None = None) -> LossOutput:
        """Diffusion Loss averaged over the tokens where `mask` is True (all if None).

        z (..., cond_dim) and target (..., token_dim) share their leading shape (e.g. (B, L)); mask has that
        shape. The N flattened pairs are tiled `batch_mul` times ([all N; all N; ...], MAR's `.repeat`), each
        copy with its own timestep and noise: `timesteps` (batch_mul * N,) and `noise` (batch_mul * N,
        token_dim) in that order, or drawn from `rng` (timesteps first, then noise). Metrics: `mse`, `vb`."""
        cfg = self.config
        zf = _flat(z, cfg.cond_dim, "condition vectors", "z")
        xf = _flat(target, cfg.token_dim, "clean tokens", "target")
        if zf.shape[0] != xf.shape[0] or z.shape[:-1] != target.shape[:-1]:
            raise ValueError(f"z {tuple(z.shape)} and target {tuple(target.shape)} must share their leading shape")
        n = cfg.batch_mul * xf.shape[0]
        if n == 0:
            raise ValueError("DiffusionHead.loss got no tokens (z and target are empty)")
        device = xf.device
        if timesteps is None or noise is None:
            if rng is None:
                raise ValueError("DiffusionHead.loss draws timesteps and noise from rng=: pass a torch.Generator "
                                 "(or explicit timesteps= and noise=)")
        if timesteps is None:
            timesteps = torch.randint(0, cfg.num_timesteps, (n,), generator=rng, device=rng.device)
        else:  # given ones are checked (drawn ones are valid by construction and need no device sync)
            if timesteps.shape != (n,) or timesteps.dtype.is_floating_point:
                raise ValueError(f"timesteps must be integers of shape ({n},) (batch_mul {cfg.batch_mul} x "
                                 f"{xf.shape[0]} tokens), got {tuple(timesteps.shape)} {timesteps.dtype}")
            if int(timesteps.min()) < 0 or int(timesteps.max()) >= cfg.num_timesteps:
                raise ValueError(f"timesteps must lie in [0, {cfg.num_timesteps}), got {int(timesteps.min())}.."
                                 f"{int(timesteps.max())}")
        if noise is None:
            noise = torch.randn((n, cfg.token_dim), generator=rng, device=rng.device)
        elif noise.shape != (n, cfg.token_dim):
            raise ValueError(f"noise must have shape ({n}, {cfg.token_dim}), got {tuple(noise.shape)}")
        rep = cfg.batch_mul
        terms = self.terms(zf.repeat(rep, 1), xf.repeat(rep, 1), timesteps.to(device), noise.to(device))
        if mask is None:
            w = None
        else:
            if mask.shape != z.shape[:-1]:
                raise ValueError(f"mask must have shape {tuple(z.shape[:-1])} (one flag per token), "
                                 f"got {tuple(mask.shape)}")
            w = mask.reshape(-1).float().repeat(rep)

        def reduce(v: Tensor) -> Tensor:
            return v.mean() if w is None else (v * w).sum() / w.sum().clamp(min=1.0)

        metrics = {"mse": reduce(terms["mse"]).detach(), "vb": reduce(terms["vb"]).detach()}
        return LossOutput(reduce(terms["loss"]), metrics)

    # ------------------------------------------------------------------ sampling

    def sample(self, z: Tensor, opts: SampleOptions, rng: torch.Generator | None = None, *, cfg_scale: float = 1.0,
               guided: bool = False, temperature: float | None = None, num_steps: int | None = None,
               noise: Tensor | None = None, precompute: bool = True, refresh: int = 1,
               x0_clip: float | None = None) -> tuple[Tensor, Tensor]:
        """Draw tokens (B', ..., token_dim) for conditions z (R, ..., cond_dim) by ancestral sampling.

        guided: z's rows are [cond; uncond] (R = 2B'), the noise prediction is u + cfg_scale (c - u) and the
        variance the conditional row's; otherwise B' = R. temperature scales the per-step noise (default
        opts.temperature); num_steps the respaced steps (default config.sampling_steps). Randomness: `noise`
        (S + 1, N, token_dim) or (S, N, token_dim) with N = the flattened output rows -- noise[0] is x_T and
        noise[j] the noise added at denoising step j (the step at t = 0 adds none, so an (S + 1)-th entry, which
        the official code draws, is ignored) -- or drawn from `rng`. Scores are zeros (tokens.shape[:-1]).
        precompute=False runs the plain per-step network (the reference the fast path is tested against).
        refresh > 1 (approximate, LazyMAR's head cache): only every `refresh`-th denoising step and the last run the
        whole network; the others run the conditional rows only (guidance from the cond - uncond noise difference
        of the last full step) and skip the middle res-blocks (their residuals from the last full step).
        x0_clip: the bound on the predicted clean token (default config.x0_clip; 0 = unclipped)."""
        cfg = self.config
        x0_clip = check_x0_clip((cfg.x0_clip or 0.0) if x0_clip is None else x0_clip)
        if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 1:
            raise ValueError(f"refresh must be an integer >= 1 (1 = exact), got {refresh!r}")
        if refresh > 1 and not precompute:
            raise ValueError("the head cache (refresh > 1) works on the precomputed path: leave precompute=True")
        temperature = opts.temperature if temperature is None else temperature
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        zf = _flat(z, cfg.cond_dim, "condition vectors", "z")
        lead = tuple(z.shape[:-1])
        if guided:
            if z.shape[0] % 2:
                raise ValueError(f"guided sampling needs rows [cond; uncond]: z has an odd first dim {z.shape[0]}")
            lead = (z.shape[0] // 2, *lead[1:])
        N = zf.shape[0] // 2 if guided else zf.shape[0]
        diff = self.sampling_diffusion(num_steps)
        S = diff.num_steps
        device = zf.device
        if noise is None:
            if rng is None:
                raise ValueError("DiffusionHead.sample draws noise from rng=: pass a torch.Generator (or noise=)")
            noise = torch.randn((S, N, cfg.token_dim), generator=rng, device=rng.device)
        elif noise.shape not in ((S + 1, N, cfg.token_dim), (S, N, cfg.token_dim)):
            raise ValueError(f"noise must have shape ({S} + 1, {N}, {cfg.token_dim}) or ({S}, {N}, {cfg.token_dim}) "
                             f"for {S} steps and {N} tokens, got {tuple(noise.shape)}")
        noise = noise.to(device=device, dtype=torch.float32)
        with torch.no_grad():
            x = self._denoise(zf, noise, diff, float(cfg_scale), guided, float(temperature), precompute, refresh,
                              x0_clip)
        tokens = x.to(z.dtype).reshape(*lead, cfg.token_dim)
        return tokens, torch.zeros(lead, dtype=torch.float32, device=device)

    def _denoise(self, z: Tensor, noise: Tensor, diff: Diffusion, cfg_scale: float, guided: bool,
                 temperature: float, precompute: bool, refresh: int = 1, x0_clip: float = 0.0) -> Tensor:
        net, D = self.net, self.config.token_dim
        z = z.to(net.dtype)
        order = list(range(diff.num_steps))[::-1]  # respaced index i = S-1 (noisiest) .. 0
        x = noise[0]
        model_t = torch.tensor([diff.timesteps[i] for i in order], device=z.device)
        if precompute:
            c_emb = net.cond_embed(z)
            t_emb = net.time_embed(model_t)
            per_step = (3 * len(net.res_blocks) + 2) * c_emb.shape[-1] * c_emb.shape[0] * c_emb.element_size()
            chunk = max(1, int(self.modulation_budget) // max(per_step, 1))
        else:
            chunk = len(order)
        residuals: dict[int, Tensor] | None = {} if refresh > 1 else None
        cfg_delta = None  # eps_cond - eps_uncond at the last full step (head cache with guidance)
        N = x.shape[0]
        for start in range(0, len(order), chunk):
            steps = range(start, min(start + chunk, len(order)))
            # head cache: a full step every `refresh`-th and the last one; the others need fewer modulations
            lazy = [j for j in steps if residuals is not None and j % refresh != 0 and order[j] != 0]
            full = [j for j in steps if j not in lazy]
            if precompute:
                full_at, lazy_at = {j: k for k, j in enumerate(full)}, {j: k for k, j in enumerate(lazy)}
                full_mods = net.modulations(c_emb, t_emb[full]) if full else []
                lazy_mods = net.modulations(c_emb[:N], t_emb[lazy], ends_only=True) if lazy else []
            for j in steps:
                if precompute and j in lazy_at:  # the conditional rows only, the middle blocks' stored residuals
                    k = lazy_at[j]
                    out = net.forward_modulated(x.to(net.dtype), [tuple(m[k] for m in ms) for ms in lazy_mods],
                                                residuals=residuals, reuse=True).float()
                    eps, v = out[:, :D], out[:, D:]
                    if guided:
                        eps = eps + (cfg_scale - 1.0) * cfg_delta
                else:
                    xin = (torch.cat([x, x]) if guided else x).to(net.dtype)
                    if precompute:
                        k = full_at[j]
                        out = net.forward_modulated(xin, [tuple(m[k] for m in ms) for ms in full_mods],
                                                    residuals=residuals, rows=N)
                    else:
                        out = net(xin, model_t[j].expand(xin.shape[0]), z)
                    out = out.float()
                    eps = combine(out[:, :D], cfg_scale) if guided else out[:, :D]
                    v = out[:N, D:]  # guided: the conditional rows' variance
                    if guided and residuals is not None:
                        cfg_delta = out[:N, :D] - out[N:, :D]
                x = self._step(diff, order[j], x, eps, v, noise[j + 1] if order[j] > 0 else None, temperature,
                               x0_clip)
        return x

    @staticmethod
    def _step(diff: Diffusion, i: int, x: Tensor, eps: Tensor, v: Tensor, noise: Tensor | None,
              temperature: float, x0_clip: float = 0.0) -> Tensor:
        """x_{t-1} = mu_theta(x_t) + temperature * sigma_theta * noise at respaced index i (no noise at i = 0);
        the predicted x_0 in mu clamped to [-x0_clip, x0_clip] when x0_clip > 0."""
        f = lambda name: diff.scalar(name, i)  # noqa: E731
        x0_hat = f("sqrt_recip_acp") * x - f("sqrt_recipm1_acp") * eps
        if x0_clip > 0:
            x0_hat = x0_hat.clamp(-x0_clip, x0_clip)
        mean = f("coef_x0") * x0_hat + f("coef_xt") * x
        if noise is None:
            return mean
        logvar = Diffusion.model_logvar(v, f("log_betas"), f("post_logvar"))
        return mean + torch.exp(0.5 * logvar) * noise * temperature


__all__ = ["DiffusionHeadConfig", "DiffusionHead", "DenoiserMLP", "Diffusion", "beta_schedule", "respaced_timesteps",
           "timestep_embedding", "discretized_gaussian_log_likelihood", "NOISE_SCHEDULES"]
