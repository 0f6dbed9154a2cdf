"""Contract tests over every tokenizer `-tiny` preset (timm-style registry iteration)."""
import pytest
import torch

import argen
from argen import registry
from argen.presets import get_config, list_presets
from argen.tokenizers.base import Tokenizer, TokenizerConfig, token_shape
from argen.types import TokenizerOutput


def _tiny_tokenizer_presets():
    names = []
    for name in list_presets():
        if not name.endswith("-tiny"):
            continue
        try:
            cfg = get_config(name)
        except Exception:  # a preset of another family whose kind is not built yet
            continue
        if isinstance(cfg, TokenizerConfig):
            names.append(name)
    return names


TINY = _tiny_tokenizer_presets()


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float().div(127.5).sub(1)


def _build(name, seed=0):
    torch.manual_seed(seed)
    return registry.build(get_config(name))


def test_every_family_has_a_tiny_preset():
    kinds = {name.removesuffix("-tiny") for name in TINY}
    assert {"vq", "rvq", "fsq", "vae", "pixel"} <= kinds, kinds
    assert len(registry.names(TokenizerConfig)) >= 3


@pytest.mark.parametrize("name", TINY)
def test_encode_decode_shapes_ranges_dtypes(name):
    tok = _build(name).eval()
    assert isinstance(tok, Tokenizer)
    x = _images()
    layout = tok.layout
    tokens = tok.encode(x)
    assert tuple(tokens.shape) == token_shape(layout, 2)
    assert tokens.shape[1] * (tokens.shape[2] if tokens.ndim == 3 and layout.discrete else 1) == layout.num_tokens
    if layout.discrete:
        assert tokens.dtype == torch.int64
        assert tokens.min() >= 0 and tokens.max() < layout.vocab_size
    else:
        assert tokens.dtype == torch.float32 and tokens.shape[-1] == layout.latent_dim
    images = tok.decode(tokens)
    assert images.shape == x.shape and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    out = tok(x)
    assert isinstance(out, TokenizerOutput) and out.recon.shape == x.shape
    assert torch.equal(out.tokens, tokens) if layout.discrete else torch.allclose(out.tokens, tokens)


@pytest.mark.parametrize("name", TINY)
def test_other_image_sizes_follow_layout_for(name):
    tok = _build(name).eval()
    x = _images(1, size=16)
    if len(tok.layout.scales) > 1:  # multi-scale layouts are fixed by their scale list
        with pytest.raises(ValueError):
            tok.decode(tok.encode(_images(1, size=32))[:, :-1])
        return
    tokens = tok.encode(x)
    assert tuple(tokens.shape) == token_shape(tok.layout_for(16, 16), 1)
    assert tok.decode(tokens).shape == x.shape


@pytest.mark.parametrize("name", TINY)
def test_save_load_gives_identical_outputs(name, tmp_path):
    tok = _build(name).eval()
    x = _images()
    argen.save(tok, tmp_path / name)
    back = argen.load(tmp_path / name)
    assert back.config == tok.config
    t1, t2 = tok.encode(x), back.encode(x)
    assert torch.equal(t1, t2)
    assert torch.equal(tok.decode(t1), back.decode(t2))


@pytest.mark.parametrize("name", TINY)
def test_seeded_build_and_forward_are_deterministic(name):
    x = _images()
    a, b = _build(name, seed=3), _build(name, seed=3)
    oa = a(x, rng=torch.Generator().manual_seed(1))
    ob = b(x, rng=torch.Generator().manual_seed(1))
    assert torch.equal(oa.recon, ob.recon) and torch.equal(oa.tokens, ob.tokens)


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_the_encoder(name):
    tok = _build(name)
    params = [p for p in tok.parameters() if p.requires_grad]
    if not params:
        assert name.startswith("pixel")
        return
    x = _images()
    out = tok(x, rng=torch.Generator().manual_seed(0))
    loss = (out.recon - x).abs().mean() + sum(out.losses.values())
    loss.backward()
    enc = tok.encoder.conv_in.weight.grad
    dec = tok.decoder.conv_out.weight.grad
    assert enc is not None and enc.abs().sum() > 0, "no gradient through the bottleneck to the encoder"
    assert dec is not None and dec.abs().sum() > 0
    assert tok.last_layer is tok.decoder.conv_out.weight


def test_pixel_tiny_round_trip_is_exact():
    tok = _build("pixel-tiny")
    x = _images(3)
    assert torch.equal(tok.decode(tok.encode(x)), x)
    assert tok.layout.tokens_per_position == 3 and tok.layout.vocab_size == 256


def test_published_presets_have_the_published_shapes():
    cfg = get_config("vq-f16-c16384")
    assert cfg.downsample == 16 and cfg.quantizer.codebook_size == 16384 and cfg.quantizer.dim == 8
    assert get_config("vq-f8-c16384").downsample == 8
    vae = get_config("vae-kl16")
    assert vae.downsample == 16 and vae.embed_dim == 16 and vae.scale_factor == 0.2325
    if "msvq" in registry.names():
        var = get_config("msvq-f16-c4096")
        assert var.net.ch == 160 and var.quant_conv_kernel == 3 and var.quantizer.codebook_size == 4096


def test_wrong_images_give_clear_errors():
    tok = _build("vq-tiny")
    with pytest.raises(ValueError, match="multiple of 4"):
        tok.encode(_images(1, size=30))
    with pytest.raises(ValueError, match="3 channels"):
        tok.encode(torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("name", TINY)
def test_a_greyscale_tokenizer_decodes_grey(name):
    """channels=1 (trained on grey data): the decoder's three channels are averaged into equal ones."""
    colour = _build(name).eval()
    grey = registry.build(get_config(name).replace(channels=1)).eval()
    grey.load_state_dict(colour.state_dict())
    tokens = colour.encode(_images())
    if colour.layout.discrete:  # encoding is unchanged (a VAE's posterior sample is random)
        assert torch.equal(grey.encode(_images()), tokens)
    c, g = colour.decode(tokens), grey.decode(tokens)
    assert g.shape == c.shape and torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 0], g[:, 2])
    torch.testing.assert_close(g[:, 0], c.mean(dim=1))
    with pytest.raises(ValueError, match="channels"):
        get_config(name).replace(channels=2)
