import math

import pytest
import torch

import argen
from argen.errors import ConfigError
from argen.generators.pixel import PixelGenerator, PixelGeneratorConfig
from argen.pipeline import Pipeline
from argen.presets import get_config
from argen.sampling import Force, generate
from argen.tokenizers.pixel import PixelConfig, PixelTokenizer
from gen_helpers import class_conditioner, embed, perturb, teacher_forced

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny(grid=(3, 3), **kw):
    torch.manual_seed(0)
    cfg = PixelGeneratorConfig(scales=(grid,), dim=32, depth=2, num_heads=4, embed_dropout=0.0, resid_dropout=0.0,
                               ffn_dropout=0.0, **kw)
    g = PixelGenerator(cfg)
    perturb(g)
    return g.eval(), class_conditioner(g, num_classes=4)


def test_layout_matches_the_pixel_tokenizer_and_pipeline_makes_images():
    tok = PixelTokenizer(PixelConfig(resolution=3))
    g, cond = tiny()
    g.check_layout(tok.layout)  # (3, 3) grid, 256 values, 3 tokens per position
    assert g.config.num_tokens == 27 and g.layout.num_tokens == 27
    images = torch.rand(2, 3, 3, 3) * 2 - 1
    assert g(tok.encode(images), embed(cond, [0, 1])).shape == (2, 27, 256)
    pipe = Pipeline.from_parts(tok, cond, g)
    out = pipe([0, 3], seed=0, cfg=2.0)
    assert out.shape == (2, 3, 3, 3) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(tok.decode(tok.encode(out)), out)  # on the 8-bit grid
    with pytest.raises(ConfigError, match="tokens per position"):
        tiny(sub_tokens=1, image_channels=3)[0].check_layout(tok.layout)


def test_subpixel_sequence_positions():
    g, _ = tiny()
    P = 1
    cos, _ = g.rope.table(P)
    # the three sub-pixels of a pixel share its RoPE row; the next pixel rotates differently
    assert torch.equal(cos[P + 3], cos[P + 5]) and not torch.equal(cos[P + 5], cos[P + 6])
    assert cos.shape[0] == P + 27 and not any("rope" in k for k in g.state_dict())
    # a value means something different in another channel: the channel embedding separates them
    one = torch.full((1, 2), 7)
    e = g.embed(one, 0)
    assert not torch.allclose(e[0, 0], e[0, 1])


def test_kv_cache_logits_equal_full_forward_with_cfg_rows():
    g, cond = tiny()
    tokens = torch.randint(0, 256, (2, 9, 3))
    c = embed(cond, [0, 2], guided=True)  # [cond; uncond] rows
    with torch.no_grad():
        full = g(tokens.repeat(2, 1, 1), c)  # (R, 27, V)
    out = []
    for state, sampler, logits in teacher_forced(g, c, tokens):
        out.append(logits)
    assert torch.allclose(torch.cat(out, 1), full, atol=1e-4)
    assert torch.equal(sampler.result(state), tokens)


def test_seeds_cfg_and_force():
    g, cond = tiny()
    a = generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=50)
    assert a.shape == (3, 9, 3) and a.dtype == torch.long and int(a.max()) < 256
    assert torch.equal(a, generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=50))
    assert not torch.equal(a, generate(g, cond, [0, 1, 2], seed=1, cfg=2.0, top_k=50))
    known = torch.randint(0, 256, (3, 9, 3))
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[:, :4] = True
    mask[1, 7] = True
    out = generate(g, cond, [0, 1, 2], seed=0, force=Force(known, mask))
    assert torch.equal(out[mask], known[mask]) and not torch.equal(out[~mask], known[~mask])
    # every pixel but the last known + greedy: its R value is the argmax given the known prefix
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[:, -1] = False
    out = generate(g, cond, [0, 1, 2], temperature=0.0, force=(known, mask))
    with torch.no_grad():
        expected = g(known, embed(cond, [0, 1, 2]))[:, 24].argmax(-1)
    assert torch.equal(out[:, -1, 0], expected)


def test_bits_per_dim_falls_on_a_tiny_overfit():
    torch.manual_seed(0)
    g = PixelGenerator(PixelGeneratorConfig(scales=((8, 8),), dim=32, depth=2, num_heads=4, embed_dropout=0.0,
                                            resid_dropout=0.0, ffn_dropout=0.0))
    cond = class_conditioner(g, num_classes=0)  # unconditional: one learned start token
    images = torch.randint(0, 256, (8, 64, 3), generator=torch.Generator().manual_seed(0))
    labels = lambda: embed(cond, [-1] * 8)  # noqa: E731
    opt = torch.optim.AdamW([*g.parameters(), *cond.parameters()], lr=5e-3)
    g.train()
    history = []
    for _ in range(40):
        out = g.loss(images, labels())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(out.metrics["bits_per_dim"].item())
    assert abs(history[0] - 8.0) < 1e-3  # zero output head: exactly uniform over 256 values
    assert history[-1] < 4.0, history[-1]  # well below uniform: the model memorises the 8 images
    assert out.metrics["bits_per_dim"].item() == pytest.approx(out.metrics["bits_per_token"].item())
    g.eval()
    with torch.no_grad():
        per_sample = g.nll_bits_per_dim(images, labels())
    assert per_sample.shape == (8,) and per_sample.mean().item() < history[-1] + 0.5


def test_one_token_per_pixel_and_bits_per_dim_units():
    grey, cond = tiny(sub_tokens=1, image_channels=1)
    palette, _ = tiny(sub_tokens=1, image_channels=3, vocab_size=512)
    c = embed(cond, [0, 1])
    assert grey.layout.tokens_per_position == 1 and grey.config.num_tokens == 9
    t = torch.randint(0, 256, (2, 9))
    out = grey.loss(t, c)
    assert out.metrics["bits_per_dim"].item() == pytest.approx(out.metrics["bits_per_token"].item())
    out = palette.loss(torch.randint(0, 512, (2, 9)), c)
    assert out.metrics["bits_per_dim"].item() == pytest.approx(out.metrics["bits_per_token"].item() / 3)
    assert generate(grey, cond, [0, 1], seed=0).shape == (2, 9)
    with pytest.raises(ValueError, match=r"LongTensor \(B, 9\)"):
        grey.loss(torch.zeros(2, 9, 3, dtype=torch.long), c)
    with pytest.raises(ValueError, match=r"\(B, 9, 3\)"):
        tiny()[0].loss(torch.zeros(2, 27, dtype=torch.long), c)


def test_save_load_identical_outputs(tmp_path):
    g, cond = tiny()
    argen.save(g, tmp_path / "gen")
    back = argen.load(tmp_path / "gen")
    assert isinstance(back, PixelGenerator) and back.config == g.config
    tokens = torch.randint(0, 256, (2, 9, 3))
    c = embed(cond, [0, 1])
    with torch.no_grad():
        assert torch.equal(g(tokens, c), back(tokens, c))
    assert torch.equal(generate(g, cond, [0, 1], seed=5, cfg=2.0), generate(back, cond, [0, 1], seed=5, cfg=2.0))


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="sub_tokens"):
        PixelGeneratorConfig(sub_tokens=2)
    with pytest.raises(ValueError, match="image_channels=3"):
        PixelGeneratorConfig(sub_tokens=3, image_channels=1)
    cfg = get_config("pixel-ar-tiny")
    assert cfg.kind == "pixel-ar" and cfg.num_tokens == 8 * 8 * 3 and cfg.dims == 192
    pipe = argen.registry.build(get_config("fmnist-pixel-tiny"))
    assert pipe.tokenizer.layout == pipe.generator.layout and pipe.generator.config.num_tokens == 768
    c = pipe.conditioner(pipe.conditioner.parse([0]))
    assert math.isclose(pipe.generator.loss(torch.zeros(1, 256, 3, dtype=torch.long), c).metrics[
        "bits_per_dim"].item(), 8.0, rel_tol=1e-4)  # fresh model: uniform
