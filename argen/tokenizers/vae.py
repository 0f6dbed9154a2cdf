"""Continuous KL-regularised autoencoder (LDM's AutoencoderKL), as used by MAR's KL-16 tokenizer.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models" (https://arxiv.org/abs/2112.10752);
Li et al., "Autoregressive Image Generation without Vector Quantization" (MAR, https://arxiv.org/abs/2406.11838).

The encoder predicts a diagonal Gaussian posterior (mean, log-variance) per latent position. Tokens are
the latents multiplied by `scale_factor` (MAR: 0.2325 = 1/std of sampled ImageNet latents) so that a
generator sees roughly unit-variance values; `decode` divides it out again. Tokens: (B, L, C) float,
raster row-major, C = `embed_dim`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..nn.conv import ConvNetConfig, Decoder, Encoder
from ..registry import register
from ..types import TokenizerOutput, TokenLayout
from .base import Tokenizer, TokenizerConfig


def _kl16_net() -> ConvNetConfig:
    # MAR's KL-16: LDM widths, attention at 16x16 and mid in the encoder, only mid in the decoder.
    return ConvNetConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                         decoder_attn=False, z_channels=16)


@dataclass(frozen=True, kw_only=True)
class KLVAEConfig(TokenizerConfig):
    """`net.z_channels` is the latent width of the encoder (doubled for mean and log-variance);
    `embed_dim` the token width after `quant_conv` (LDM keeps both equal)."""

    net: ConvNetConfig = field(default_factory=_kl16_net)
    embed_dim: int = 16
    scale_factor: float = 0.2325
    logvar_range: tuple[float, float] = (-30.0, 20.0)

    def __post_init__(self):
        super().__post_init__()
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if self.scale_factor <= 0:
            raise ValueError(f"scale_factor must be > 0 (1/std of the latents), got {self.scale_factor}")
        if self.logvar_range[0] >= self.logvar_range[1]:
            raise ValueError(f"logvar_range must be (low, high) with low < high, got {self.logvar_range}")

    @property
    def downsample(self) -> int:
        return self.net.downsample


@register("kl-vae", KLVAEConfig)
class KLVAE(Tokenizer):
    """Continuous tokenizer: images -> scaled latents (B, L, C); `encode(x, rng)` samples, `encode(x)` = mode."""

    config: KLVAEConfig

    def __init__(self, config: KLVAEConfig):
        super().__init__(config)
        net = config.net
        self.encoder = Encoder(net, config.resolution, out_channels=2 * net.z_channels)
        self.quant_conv = nn.Conv2d(2 * net.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, net.z_channels, 1)
        self.decoder = Decoder(net, config.resolution, in_channels=net.z_channels)

    def _layout(self, grid: tuple[int, int]) -> TokenLayout:
        return TokenLayout(scales=(grid,), latent_dim=self.config.embed_dim)

    @property
    def last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight

    # ------------------------------------------------------------------ posterior

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each (B, C, h, w) (unscaled latent space)."""
        moments = self.quant_conv(self.encoder(images))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*self.config.logvar_range)

    @staticmethod
    def sample(mean: Tensor, logvar: Tensor, rng: torch.Generator | None) -> Tensor:
        """Reparameterised sample (mode when `rng` is None); noise comes only from `rng`."""
        if rng is None:
            return mean
        eps = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=torch.float32).to(mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def decode_latent(self, z: Tensor) -> Tensor:
        """Unscaled latent (B, C, h, w) -> images (B, 3, H, W), unclamped (training path)."""
        return self.decoder(self.post_quant_conv(z))

    # ------------------------------------------------------------------ contract

    def _encode(self, images: Tensor, rng: torch.Generator | None) -> Tensor:
        z = self.sample(*self.posterior(images), rng) * self.config.scale_factor
        return z.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, L, C)

    def _decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        B, L, C = tokens.shape
        z = tokens.transpose(1, 2).reshape(B, C, *grid) / self.config.scale_factor  # (B, L, C) -> (B, C, h, w)
        return self.decode_latent(z).clamp(-1, 1)

    def _forward(self, images: Tensor, rng: torch.Generator | None) -> TokenizerOutput:
        mean, logvar = self.posterior(images)
        z = self.sample(mean, logvar, rng)
        recon = self.decode_latent(z)
        # KL(q || N(0, I)) summed over latent dims, averaged over the batch (LDM's convention, weight ~1e-6).
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(dim=(1, 2, 3)).mean()
        tokens = (z * self.config.scale_factor).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, L, C)
        stats = {"latent_std": z.detach().float().std(), "posterior_std": torch.exp(0.5 * logvar.detach().float()).mean()}
        return TokenizerOutput(recon=recon, tokens=tokens, losses={"kl": kl}, stats=stats)
