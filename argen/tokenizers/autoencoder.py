"""Discrete tokenizer = taming/LDM conv encoder + any registered quantizer + conv decoder (VQGAN family).

Esser et al., "Taming Transformers for High-Resolution Image Synthesis" (https://arxiv.org/abs/2012.09841);
Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation" (LlamaGen VQ-16,
https://arxiv.org/abs/2406.06525); Tian et al., "Visual Autoregressive Modeling" (VAR's multi-scale VQVAE,
https://arxiv.org/abs/2404.02905).

    images -> encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder -> images

The `quantizer` field is polymorphic (any `QuantizerConfig`: vq, rvq, fsq, lfq, bsq, msvq); its `dim` is
the width of the quantised latent (LlamaGen: 8, VAR: 32). Token shapes follow `base.token_shape` and are
plain reshapes of the quantizer's ids: (B, h, w) -> (B, L); (B, h, w, D) -> (B, L, D); multi-scale ids are
already flat (B, sum h*w).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from .. import registry
from ..nn.conv import ConvNetConfig, Decoder, Encoder
from ..registry import register
from ..types import TokenizerOutput, TokenLayout
from .base import Tokenizer, TokenizerConfig, token_shape
from .quantizers.base import QuantizerConfig


def _default_quantizer() -> QuantizerConfig:
    # LlamaGen's VQ-16 codebook: 16384 l2-normalised 8-d codes (defaults of the "vq" kind).
    return registry.config_class("vq")(dim=8, codebook_size=16384, metric="cosine")


@dataclass(frozen=True, kw_only=True)
class AutoencoderConfig(TokenizerConfig):
    """`quant_conv_kernel`: 1 for taming/LlamaGen (1x1 convs around the quantizer), 3 for VAR."""

    net: ConvNetConfig = field(default_factory=ConvNetConfig)
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    quant_conv_kernel: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.quantizer, QuantizerConfig):
            raise ValueError(f"quantizer must be a QuantizerConfig (kinds: {', '.join(registry.names(QuantizerConfig))}), "
                             f"got {type(self.quantizer).__name__}")
        if self.quant_conv_kernel not in (1, 3):
            raise ValueError(f"quant_conv_kernel must be 1 (taming/LlamaGen) or 3 (VAR), got {self.quant_conv_kernel}")

    @property
    def downsample(self) -> int:
        return self.net.downsample


@register("autoencoder", AutoencoderConfig)
class Autoencoder(Tokenizer):
    """Conv autoencoder with a quantizer bottleneck; `self.quantizer` is the registered quantizer module."""

    config: AutoencoderConfig

    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        net, k = config.net, config.quant_conv_kernel
        dim = config.quantizer.dim
        self.encoder = Encoder(net, config.resolution)
        self.quant_conv = nn.Conv2d(net.z_channels, dim, k, padding=k // 2)
        self.quantizer = registry.build(config.quantizer)
        self.post_quant_conv = nn.Conv2d(dim, net.z_channels, k, padding=k // 2)
        self.decoder = Decoder(net, config.resolution)

    def _layout(self, grid: tuple[int, int]) -> TokenLayout:
        return self.quantizer.token_layout(grid)

    @property
    def last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight

    # ------------------------------------------------------------------ latent-level pieces

    def encode_latent(self, images: Tensor) -> Tensor:
        """Images -> continuous latent (B, dim, h, w) before quantisation."""
        return self.quant_conv(self.encoder(images))

    def decode_latent(self, z_q: Tensor) -> Tensor:
        """Quantised latent (B, dim, h, w) -> images (B, 3, H, W), unclamped (training path)."""
        return self.decoder(self.post_quant_conv(z_q))

    def ids_to_tokens(self, ids: Tensor, grid: tuple[int, int]) -> Tensor:
        """Quantizer ids -> flat tokens (see module docstring)."""
        return ids.reshape(token_shape(self._layout(grid), ids.shape[0]))  # (B, h, w[, D]) -> (B, L[, D])

    def tokens_to_ids(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Flat tokens -> the quantizer's id layout (inverse of `ids_to_tokens`)."""
        if len(self._layout(grid).scales) > 1:
            return tokens  # multi-scale ids are flat already
        return tokens.reshape(tokens.shape[0], *grid, *tokens.shape[2:])  # (B, L[, D]) -> (B, h, w[, D])

    # ------------------------------------------------------------------ contract

    def _encode(self, images: Tensor, rng) -> Tensor:
        z = self.encode_latent(images)
        return self.ids_to_tokens(self.quantizer(z).ids, (z.shape[2], z.shape[3]))

    def _decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        z_q = self.quantizer.lookup(self.tokens_to_ids(tokens.long(), grid))
        return self.decode_latent(z_q).clamp(-1, 1)

    def _forward(self, images: Tensor, rng) -> TokenizerOutput:
        z = self.encode_latent(images)
        q = self.quantizer(z)
        recon = self.decode_latent(q.z_q)
        tokens = self.ids_to_tokens(q.ids, (z.shape[2], z.shape[3]))
        return TokenizerOutput(recon=recon, tokens=tokens, losses={"quant": q.loss}, stats=dict(q.stats))
