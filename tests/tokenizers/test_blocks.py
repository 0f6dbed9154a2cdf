"""Conv backbone, KL-VAE, pixel tokenizer and loss pieces (no quantizer needed)."""
import pytest
import torch

from argen import registry
from argen.errors import CheckpointError
from argen.nn.conv import ConvNetConfig, Decoder, Encoder
from argen.tokenizers.base import token_shape
from argen.tokenizers.losses import (LPIPS, PatchGAN, PatchGANConfig, TokenizerLoss, TokenizerLossConfig,
                                     adaptive_weight, d_loss_fn, g_loss_fn)
from argen.tokenizers.pixel import PixelConfig
from argen.tokenizers.vae import KLVAEConfig
from argen.types import TokenizerOutput

TINY_NET = ConvNetConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, norm_groups=8)


def test_conv_names_follow_taming_layout():
    enc, dec = Encoder(TINY_NET, 16), Decoder(TINY_NET, 16)
    keys = set(enc.state_dict()) | {f"dec.{k}" for k in dec.state_dict()}
    for k in ("down.0.block.0.conv1.weight", "down.0.downsample.conv.weight", "down.1.attn.0.q.weight",
              "mid.block_1.norm1.weight", "mid.attn_1.proj_out.weight", "conv_out.weight",
              "dec.up.1.upsample.conv.weight", "dec.up.0.block.1.conv2.weight", "dec.up.1.attn.1.v.weight"):
        assert k in keys, k
    assert "down.1.downsample.conv.weight" not in keys  # no resampler at the last level
    x = torch.randn(2, 3, 16, 16)
    assert enc(x).shape == (2, 4, 8, 8)
    assert dec(enc(x)).shape == (2, 3, 16, 16)


def test_conv_config_validation_says_how_to_fix():
    with pytest.raises(ValueError, match="norm_groups"):
        ConvNetConfig(ch=12, norm_groups=8)


def test_pixel_round_trip_is_exact_for_every_bit_depth():
    for bits in (8, 3):
        tok = registry.build(PixelConfig(resolution=8, bits=bits))
        levels = 2 ** bits
        k = torch.randint(0, levels, (2, 3, 8, 8), generator=torch.Generator().manual_seed(bits))
        images = k.float().div((levels - 1) / 2).sub(1)  # the dataset's uint8 -> [-1, 1] formula
        tokens = tok.encode(images)
        assert tokens.dtype == torch.int64 and tokens.shape == token_shape(tok.layout, 2) == (2, 64, 3)
        assert torch.equal(tokens[:, 9], k[:, :, 1, 1])  # raster row-major: position 9 = (row 1, col 1)
        assert torch.equal(tok.decode(tokens), images)
        assert torch.equal(tok.encode(tok.decode(tokens)), tokens)
        assert tok.layout.vocab_size == levels and tok.layout.tokens_per_position == 3


def test_pixel_rounds_off_grid_values_and_rejects_float_tokens():
    tok = registry.build(PixelConfig(resolution=4))
    x = torch.rand(1, 3, 4, 4) * 2 - 1
    assert (tok(x).recon - x).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="integers"):
        tok.decode(torch.zeros(1, 16, 3))


def _tiny_vae():
    return registry.build(KLVAEConfig(resolution=16, net=TINY_NET, embed_dim=4, scale_factor=0.5))


def test_vae_tokens_are_scaled_latents_and_sampling_needs_rng():
    torch.manual_seed(0)
    vae = _tiny_vae().eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mode = vae.encode(x)
    assert mode.shape == (2, 64, 4) and mode.dtype == torch.float32
    mean, _ = vae.posterior(x)
    assert torch.allclose(mode, 0.5 * mean.flatten(2).transpose(1, 2))
    assert torch.equal(mode, vae.encode(x))  # no rng -> deterministic mode
    s1 = vae.encode(x, torch.Generator().manual_seed(1))
    s2 = vae.encode(x, torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.equal(s1, mode)
    img = vae.decode(mode)
    assert img.shape == x.shape and img.min() >= -1 and img.max() <= 1
    # decode divides the scale back out: decoding the mode equals decoding the unscaled mean
    assert torch.allclose(img, vae.decode_latent(mean).clamp(-1, 1), atol=1e-5)


def test_vae_forward_kl_is_zero_for_standard_normal_posterior():
    vae = _tiny_vae()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = vae(x, torch.Generator().manual_seed(0))
    assert isinstance(out, TokenizerOutput) and out.losses["kl"] > 0
    with torch.no_grad():
        vae.quant_conv.weight.zero_()
        vae.quant_conv.bias.zero_()
    assert vae(x).losses["kl"].abs() < 1e-6  # mean 0, logvar 0 -> KL 0


def test_layout_for_other_sizes_and_bad_sizes():
    vae = _tiny_vae()
    assert vae.layout_for(32, 16).grid == (16, 8)
    with pytest.raises(ValueError, match="multiple of"):
        vae.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode(torch.zeros(1, 1, 16, 16))
    tokens = torch.zeros(1, 16 * 8, 4)
    assert vae.decode(tokens, grid=(16, 8)).shape == (1, 3, 32, 16)
    with pytest.raises(ValueError, match="grid"):
        vae.decode(torch.zeros(1, 50, 4))


def test_patchgan_shapes_and_losses():
    d = PatchGAN(PatchGANConfig(ndf=8, n_layers=2))
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1, 6, 6)
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
    assert d_loss_fn("hinge", real, fake) == 0  # both margins satisfied
    assert d_loss_fn("non-saturating", real, fake) > 0
    assert g_loss_fn("hinge", fake) == 2.0


def test_adaptive_weight_is_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.ones(3))
    rec, g = (2 * w).sum(), (0.5 * w).sum()
    assert torch.allclose(adaptive_weight(rec, g, w), torch.tensor(4.0), rtol=1e-3)


def test_generator_loss_weights_terms_and_gan_starts_late():
    torch.manual_seed(0)
    vae = _tiny_vae()
    cfg = TokenizerLossConfig(disc=PatchGANConfig(ndf=8, n_layers=2), disc_start=5, kl_weight=0.1, pixel_loss="l2")
    loss = TokenizerLoss(cfg)
    assert "off" in loss.perceptual_status and "perceptual_path" in loss.perceptual_status
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = vae(x)
    early = loss.generator_loss(out, x, step=0, last_layer=vae.last_layer)
    expect = (out.recon - x).pow(2).mean() + 0.1 * out.losses["kl"]
    assert torch.allclose(early.loss, expect) and "g_adv" not in early.metrics
    late = loss.generator_loss(vae(x), x, step=5, last_layer=vae.last_layer)
    assert "g_adv" in late.metrics and late.metrics["adaptive_weight"] > 0
    late.loss.backward()
    assert vae.encoder.conv_in.weight.grad is not None
    d = loss.discriminator_loss(out.recon, x)
    d.loss.backward()
    assert loss.discriminator.main[0].weight.grad is not None


def test_lpips_loads_from_a_directory_and_is_zero_on_identical_images(tmp_path):
    ref = LPIPS()
    torch.save({f"features.{k}": v for k, v in ref.features.state_dict().items()}, tmp_path / "vgg16-test.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand_like(m.weight) for i, m in enumerate(ref.lins)}, tmp_path / "vgg.pth")
    model = LPIPS.from_directory(tmp_path)
    assert torch.equal(model.features[0].weight, ref.features[0].weight)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert model(x, x).abs() < 1e-6 and model(x, -x) > 0
    with pytest.raises(CheckpointError, match="vgg"):
        LPIPS.from_directory(tmp_path / "missing")
