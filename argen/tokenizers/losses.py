"""Tokenizer training losses: pixel L1/L2, LPIPS (when its weights are supplied), PatchGAN + hinge /
non-saturating GAN loss with VQGAN's adaptive weight, quantizer / KL terms. Training only.

Esser et al., "Taming Transformers" (VQGAN adaptive weight, https://arxiv.org/abs/2012.09841);
Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (PatchGAN, https://arxiv.org/abs/1611.07004);
Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric" (LPIPS, https://arxiv.org/abs/1801.03924).

LPIPS needs ImageNet VGG16 weights plus the LPIPS linear-layer weights, which cannot be downloaded here.
`perceptual_path` points at a directory holding both (`vgg16*.pth` from torchvision, `vgg.pth` from the
`lpips` package, v0.1); without it the perceptual term is off and `TokenizerLoss.perceptual_status` says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..errors import CheckpointError
from ..registry import register
from ..types import LossOutput, TokenizerOutput

# ----------------------------------------------------------------------------- discriminator


@dataclass(frozen=True, kw_only=True)
class PatchGANConfig(Config):
    """pix2pix NLayerDiscriminator: `n_layers` stride-2 convs, `ndf` base width, one logit per patch."""

    ndf: int = 64
    n_layers: int = 3
    norm: Literal["batch", "group", "none"] = "batch"

    def __post_init__(self):
        if self.ndf < 1 or self.n_layers < 1:
            raise ValueError(f"ndf ({self.ndf}) and n_layers ({self.n_layers}) must be >= 1")
        if self.norm == "group" and self.ndf % 8:
            raise ValueError(f"norm='group' uses 8 groups; ndf must be a multiple of 8, got {self.ndf}")


@register("patchgan", PatchGANConfig)
class PatchGAN(nn.Module):
    """(B, 3, H, W) -> patch logits (B, 1, h, w). Weights N(0, 0.02), norm scales N(1, 0.02) (pix2pix)."""

    def __init__(self, config: PatchGANConfig):
        super().__init__()
        self.config = config
        ndf, n = config.ndf, config.n_layers
        norm = {"batch": nn.BatchNorm2d, "group": lambda c: nn.GroupNorm(8, c), "none": lambda c: nn.Identity()}[config.norm]
        bias = config.norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = ndf
        for i in range(1, n + 1):
            c_out = ndf * min(2 ** i, 8)
            stride = 2 if i < n else 1  # the last hidden conv keeps the resolution (pix2pix)
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=bias), norm(c_out), nn.LeakyReLU(0.2, True)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.main(images)


def d_loss_fn(kind: str, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator loss: hinge (taming default) or non-saturating (= vanilla BCE)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def g_loss_fn(kind: str, logits_fake: Tensor) -> Tensor:
    """Generator adversarial loss: hinge -E[D(G)] or non-saturating E[softplus(-D(G))]."""
    if kind == "hinge":
        return -logits_fake.mean()
    return F.softplus(-logits_fake).mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN: ||grad rec|| / ||grad G|| at the decoder's last layer, clamped to [0, max_weight], no grad."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# ----------------------------------------------------------------------------- LPIPS


_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features


class LPIPS(nn.Module):
    """LPIPS-VGG distance (frozen). Layer indices match torchvision's `vgg16().features` for loading."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(ch, 1, 1, bias=False) for ch in (64, 128, 256, 512, 512))
        # LPIPS' input scaling layer (inputs in [-1, 1]).
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_directory(cls, path: str | Path) -> "LPIPS":
        """Load `vgg16*.pth` (torchvision ImageNet weights) and `vgg.pth` (LPIPS v0.1 lins) from `path`."""
        path = Path(path)
        vgg = sorted(path.glob("vgg16*.pth")) if path.is_dir() else []
        lin = path / "vgg.pth"
        if not vgg or not lin.is_file():
            raise CheckpointError(f"LPIPS weights not found in {path}: need torchvision's vgg16-*.pth and the lpips "
                                  "package's weights/v0.1/vgg.pth in that directory")
        model = cls()
        vgg_state = torch.load(vgg[0], map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")}
        model.features.load_state_dict(feats, strict=True)
        lin_state = torch.load(lin, map_location="cpu", weights_only=True)  # keys lin{i}.model.1.weight
        for i, m in enumerate(model.lins):
            m.weight.data.copy_(lin_state[f"lin{i}.model.1.weight"])
        return model

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean LPIPS distance between two image batches in [-1, 1] (scalar)."""
        x = (torch.cat([a, b]) - self.shift) / self.scale
        total = x.new_zeros(())
        tap = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == _LPIPS_TAPS[tap]:
                fa, fb = x.chunk(2)
                fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.lins[tap]((fa - fb).pow(2)).mean()
                tap += 1
                if tap == len(_LPIPS_TAPS):
                    break
        return total


# ----------------------------------------------------------------------------- the full objective


@dataclass(frozen=True, kw_only=True)
class TokenizerLossConfig(Config):
    """Weights of the tokenizer objective. Defaults follow taming's VQGAN recipe, scaled to short runs.

    `quant_weight` multiplies the quantizer's own loss (which already contains its beta);
    `kl_weight` the KL-VAE's KL term (LDM: 1e-6). GAN terms start at `disc_start` (generator steps).
    """

    pixel_loss: Literal["l1", "l2"] = "l1"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_path: str | None = None
    quant_weight: float = 1.0
    kl_weight: float = 1e-6
    disc: PatchGANConfig = field(default_factory=PatchGANConfig)
    disc_weight: float = 0.8
    disc_start: int = 0
    disc_loss: Literal["hinge", "non-saturating"] = "hinge"
    gen_loss: Literal["hinge", "non-saturating"] = "hinge"
    adaptive_weight: bool = True

    def __post_init__(self):
        for name in ("pixel_weight", "perceptual_weight", "quant_weight", "kl_weight", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 switches the term off), got {getattr(self, name)}")
        if self.disc_start < 0:
            raise ValueError(f"disc_start must be >= 0 steps, got {self.disc_start}")

    @property
    def use_gan(self) -> bool:
        return self.disc_weight > 0


class TokenizerLoss(nn.Module):
    """Holds the discriminator and (optionally) LPIPS; computes the generator and discriminator losses."""

    def __init__(self, config: TokenizerLossConfig):
        super().__init__()
        self.config = config
        self.discriminator = PatchGAN(config.disc) if config.use_gan else None
        self.lpips: LPIPS | None = None
        if config.perceptual_weight > 0 and config.perceptual_path:
            self.lpips = LPIPS.from_directory(config.perceptual_path)
            self.perceptual_status = f"perceptual loss: LPIPS-VGG from {config.perceptual_path}"
        elif config.perceptual_weight > 0:
            self.perceptual_status = ("perceptual loss: off (LPIPS backbone weights are not available offline); "
                                      "to enable it pass --set loss.perceptual_path=DIR with torchvision's "
                                      "vgg16-*.pth and lpips' v0.1 vgg.pth in DIR")
        else:
            self.perceptual_status = "perceptual loss: off (perceptual_weight=0)"

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config.disc_start

    def generator_loss(self, out: TokenizerOutput, images: Tensor, step: int, last_layer: Tensor | None) -> LossOutput:
        """Reconstruction + perceptual + quantizer/KL + (after disc_start) adaptive-weighted GAN loss."""
        cfg = self.config
        recon = out.recon.float()
        target = images.float()
        pixel = (recon - target).abs().mean() if cfg.pixel_loss == "l1" else (recon - target).pow(2).mean()
        rec = cfg.pixel_weight * pixel
        metrics: dict[str, Tensor | float] = {"pixel": pixel.detach()}
        if self.lpips is not None:
            p = self.lpips(recon, target)
            rec = rec + cfg.perceptual_weight * p
            metrics["lpips"] = p.detach()
        total = rec
        for name, value in out.losses.items():
            weight = {"quant": cfg.quant_weight, "kl": cfg.kl_weight}.get(name, 1.0)
            total = total + weight * value.float()
            metrics[name] = value.detach()
        if self.gan_active(step):
            g = g_loss_fn(cfg.gen_loss, self.discriminator(out.recon))
            if cfg.adaptive_weight and last_layer is not None and torch.is_grad_enabled():
                w = adaptive_weight(rec, g, last_layer)
            else:
                w = torch.ones((), device=g.device)
            total = total + cfg.disc_weight * w * g
            metrics.update(g_adv=g.detach(), adaptive_weight=w)
        for name, value in out.stats.items():
            metrics[name] = value.detach() if isinstance(value, Tensor) else value
        return LossOutput(loss=total, metrics=metrics)

    def discriminator_loss(self, recon: Tensor, images: Tensor) -> LossOutput:
        """D loss on real images vs detached reconstructions."""
        real = self.discriminator(images.detach())
        fake = self.discriminator(recon.detach())
        loss = d_loss_fn(self.config.disc_loss, real, fake)
        return LossOutput(loss=loss, metrics={"d_loss": loss.detach(), "logits_real": real.detach().mean(),
                                              "logits_fake": fake.detach().mean()})


__all__ = ["PatchGANConfig", "PatchGAN", "LPIPS", "TokenizerLossConfig", "TokenizerLoss", "adaptive_weight",
           "d_loss_fn", "g_loss_fn"]
