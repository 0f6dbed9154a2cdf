"""Tokenizer training task for `argen.train.Trainer`: reconstruction + quantizer/KL + PatchGAN.

With the GAN on (`loss.disc_weight > 0`) the task declares two Trainer phases, "generator" (the
tokenizer) and "discriminator", each with its own AdamW — taming's two-optimizer VQGAN scheme. The
generator phase runs first; the discriminator phase then trains on the reconstructions that the
generator phase produced for the same micro-batches (detached and cached, so the tokenizer is not run
twice per step). Before `disc_start` the discriminator phase returns a constant loss and the Trainer
skips its optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import Config
from ..types import LossOutput
from .base import Tokenizer
from .losses import TokenizerLoss, TokenizerLossConfig


@dataclass(frozen=True, kw_only=True)
class TokenizerTaskConfig(Config):
    """`disc_lr` is the discriminator's learning rate (None = the Trainer's lr); `flip` = random
    horizontal flips (drawn from the Trainer's generator)."""

    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    disc_lr: float | None = None
    flip: bool = False

    def __post_init__(self):
        if self.disc_lr is not None and self.disc_lr <= 0:
            raise ValueError(f"disc_lr must be > 0 or None (= the training lr), got {self.disc_lr}")


def images_of(batch) -> Tensor:
    """The image tensor of a dataset batch `(images, labels)` or a bare image tensor."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class TokenizerTask(nn.Module):
    """`forward(batch, ctx) -> LossOutput` for the Trainer; `self.tokenizer` is what gets saved."""

    def __init__(self, tokenizer: Tokenizer, config: TokenizerTaskConfig | None = None):
        super().__init__()
        if not any(p.requires_grad for p in tokenizer.parameters()):
            raise ValueError(f"{type(tokenizer).__name__} has no trainable parameters (the pixel tokenizer needs "
                             "no training); train an autoencoder or KL-VAE preset instead")
        self.config = config or TokenizerTaskConfig()
        self.tokenizer = tokenizer
        self.loss = TokenizerLoss(self.config.loss)
        self._recon_cache: dict[int, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ Trainer hooks

    def phases(self) -> dict:
        gen = [p for p in self.tokenizer.parameters() if p.requires_grad]
        if self.loss.discriminator is None:
            return {"generator": gen}
        disc = {"params": list(self.loss.discriminator.parameters())}
        if self.config.disc_lr is not None:
            disc["lr"] = self.config.disc_lr
        return {"generator": gen, "discriminator": disc}

    def ema_module(self) -> nn.Module:
        return self.tokenizer

    # ------------------------------------------------------------------ steps

    def forward(self, batch, ctx) -> LossOutput:
        if ctx.phase == "discriminator":
            return self._discriminator_step(ctx)
        images = images_of(batch)
        if self.config.flip:
            flip = torch.rand(images.shape[0], generator=ctx.rng, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        out = self.tokenizer(images, rng=ctx.rng)
        result = self.loss.generator_loss(out, images, ctx.step, self.tokenizer.last_layer)
        if self.loss.discriminator is not None:
            self._recon_cache[ctx.micro_step] = (out.recon.detach(), images)
        return result

    def _discriminator_step(self, ctx) -> LossOutput:
        recon, images = self._recon_cache.pop(ctx.micro_step)
        if not self.loss.gan_active(ctx.step):
            return LossOutput(loss=torch.zeros((), device=images.device))
        return self.loss.discriminator_loss(recon, images)


__all__ = ["TokenizerTask", "TokenizerTaskConfig", "images_of"]
