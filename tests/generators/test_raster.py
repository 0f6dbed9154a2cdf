import pytest
import torch

import argen
from argen import registry
from argen.errors import ConfigError
from argen.generators.raster import RasterConfig, RasterGenerator
from argen.presets import get_config
from argen.sampling import Force, generate
from argen.types import TokenLayout
from gen_helpers import class_conditioner, embed, perturb, teacher_forced


def tiny(**kw):
    torch.manual_seed(0)
    cfg = RasterConfig(vocab_size=40, scales=((3, 4),), dim=32, depth=2, num_heads=4, embed_dropout=0.0,
                       resid_dropout=0.0, ffn_dropout=0.0, **kw)
    g = RasterGenerator(cfg)
    perturb(g)
    return g.eval(), class_conditioner(g)


def cached_logits(g, c, tokens: torch.Tensor) -> torch.Tensor:
    """Step the sampler with teacher forcing and collect every step's logits."""
    return torch.cat([out for _, _, out in teacher_forced(g, c, tokens)], 1)


@pytest.mark.parametrize("prefix_rope", ["identity", "zero"])
def test_kv_cache_logits_equal_full_forward(prefix_rope):
    g, cond = tiny(prefix_rope=prefix_rope)
    tokens = torch.randint(0, 40, (3, 12))
    c = embed(cond, [0, 4, -1])
    with torch.no_grad():
        full = g(tokens, c)  # (B, N, V)
    assert full.shape == (3, 12, 40)
    assert torch.allclose(cached_logits(g, c, tokens), full, atol=1e-4)


def test_kv_cache_logits_with_cfg_doubled_batch():
    g, cond = tiny()
    tokens = torch.randint(0, 40, (2, 12))
    c = embed(cond, [1, 2], guided=True)
    with torch.no_grad():
        full = g(tokens.repeat(2, 1), c)
    assert torch.allclose(cached_logits(g, c, tokens), full, atol=1e-4)
    assert not torch.allclose(full[:2], full[2:], atol=1e-3)  # the halves really are conditioned differently


def test_a_longer_prefix_shifts_every_position():
    """The prefix length comes from the conditioning at run time (a caption has many tokens)."""
    g, cond = tiny()
    tokens = torch.randint(0, 40, (2, 12))
    c = embed(cond, [1, 2])
    two = type(c)(prefix=c.prefix.repeat(1, 2, 1), vector=c.vector)  # (B, 2, C)
    with torch.no_grad():
        full = g(tokens, two)
    assert full.shape == (2, 12, 40) and not torch.allclose(full, g(tokens, c), atol=1e-3)
    assert torch.allclose(cached_logits(g, two, tokens), full, atol=1e-4)


def test_seeds_cfg_and_chunking():
    g, cond = tiny()
    a = generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=10)
    assert a.shape == (3, 12) and a.dtype == torch.long and int(a.max()) < 40
    assert torch.equal(a, generate(g, cond, [0, 1, 2], seed=0, cfg=2.0, top_k=10))
    assert not torch.equal(a, generate(g, cond, [0, 1, 2], seed=1, cfg=2.0, top_k=10))
    assert not torch.equal(a, generate(g, cond, [0, 1, 2], seed=0, cfg=1.0, top_k=10))  # guidance changes samples
    greedy = generate(g, cond, torch.tensor([0, 1, 2]), temperature=0.0, cfg=1.5)
    assert torch.equal(greedy, generate(g, cond, [0, 1, 2], temperature=0.0, cfg=1.5, batch_size=2))


def test_force_keeps_known_tokens_and_conditions_on_them():
    g, cond = tiny()
    known = torch.randint(0, 40, (2, 12))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :5] = True
    mask[0, 8] = True
    out = generate(g, cond, [1, 3], seed=0, force=Force(known, mask))
    assert torch.equal(out[mask], known[mask])
    # all but the last token forced + greedy: the last token is the argmax given the forced prefix
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, -1] = False
    out = generate(g, cond, [1, 3], temperature=0.0, force=(known, mask))
    with torch.no_grad():
        expected = g(known, embed(cond, [1, 3]))[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], expected) and torch.equal(out[:, :-1], known[:, :-1])


def test_tiny_model_overfits_a_handful_of_sequences():
    torch.manual_seed(0)
    g = RasterGenerator(RasterConfig(vocab_size=32, scales=((4, 4),), dim=64, depth=2, num_heads=4,
                                     embed_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0))
    cond = class_conditioner(g, num_classes=4)
    tokens = torch.randint(0, 32, (4, 16))
    opt = torch.optim.AdamW([*g.parameters(), *cond.parameters()], lr=5e-3)
    g.train()
    first = None
    for _ in range(60):
        out = g.loss(tokens, embed(cond, [0, 1, 2, 3]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.metrics["nll"].item()
    assert first > 3.0  # ~ln 32 at init (zero output head)
    assert out.metrics["nll"].item() < 0.3 and out.metrics["accuracy"] > 0.95
    assert abs(out.metrics["bits_per_token"].item() - out.metrics["nll"].item() / 0.6931471805599453) < 1e-5
    # and sampling with the learned model reproduces the memorised sequences greedily
    assert torch.equal(generate(g, cond, [0, 1, 2, 3], temperature=0.0), tokens)


def test_save_load_identical_outputs(tmp_path):
    g, cond = tiny()
    argen.save(g, tmp_path / "gen")
    back = argen.load(tmp_path / "gen")
    assert isinstance(back, RasterGenerator) and back.config == g.config
    tokens = torch.randint(0, 40, (2, 12))
    c = embed(cond, [0, 1])
    with torch.no_grad():
        assert torch.equal(g(tokens, c), back(tokens, c))
    assert torch.equal(generate(g, cond, [0, 1], seed=5, cfg=2.0), generate(back, cond, [0, 1], seed=5, cfg=2.0))
    assert not any("rope" in k for k in back.state_dict())  # tables are derived, not stored


def test_label_handling_and_layout_check():
    g, cond = tiny()
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        embed(cond, [5])
    with pytest.raises(ValueError, match="LongTensor"):
        g.loss(torch.zeros(1, 7, dtype=torch.long), embed(cond, [0]))
    with pytest.raises(TypeError, match="Conditioning"):
        g.loss(torch.zeros(1, 12, dtype=torch.long), torch.tensor([0]))  # raw labels: embed them first
    with pytest.raises(ValueError, match="rows"):
        g.loss(torch.zeros(2, 12, dtype=torch.long), embed(cond, [0]))
    g.check_layout(TokenLayout(scales=((3, 4),), vocab_size=40))
    with pytest.raises(ConfigError, match="vocab_size"):
        g.check_layout(TokenLayout(scales=((3, 4),), vocab_size=64))
    with pytest.raises(ConfigError, match="grids"):
        g.check_layout(TokenLayout(scales=((4, 4),), vocab_size=40))
    drops = cond.drop(cond.parse(torch.zeros(10000, dtype=torch.long)), 0.1, torch.Generator().manual_seed(0))
    assert 800 < int(cond.is_null(drops).sum()) < 1200  # CFG label dropout to the null class


@pytest.mark.parametrize("name, params, tensors, head_dim", [
    ("llamagen-b", 110_888_448, 88, 64), ("llamagen-l", 342_910_976, 172, 64), ("llamagen-3b", 3_096_659_200, 172, 100)])
def test_official_preset_sizes(name, params, tensors, head_dim):
    """The official GPT sizes: generator + its 1000-class conditioner hold exactly LlamaGen's parameters."""
    cfg = get_config(name)
    with torch.device("meta"):
        g = registry.build(cfg)
        cond = registry.build(registry.config_class("class")(dim=cfg.dim, num_classes=1000))
    sd = g.state_dict()
    total = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in cond.parameters())
    assert total == params and len(sd) + 1 == tensors and cfg.head_dim == head_dim
    assert {"tok_embeddings.weight", "layers.0.attention.wqkv.weight", "layers.0.attention.wo.weight",
            "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight", "layers.0.feed_forward.w3.weight",
            "layers.0.attention_norm.weight", "layers.0.ffn_norm.weight", "norm.weight", "output.weight"} <= set(sd)
    assert set(cond.state_dict()) == {"embedding_table.weight"}
    assert cfg.prefix_rope == "zero"


def test_config_validation_messages():
    with pytest.raises(ValueError, match="divisible by 4"):
        RasterConfig(dim=36, num_heads=6)
    with pytest.raises(ValueError, match="one token grid"):
        RasterConfig(scales=((1, 1), (2, 2)))
    cfg = get_config("llamagen-tiny", ["dim=128", "scales=[[4,4]]"])
    assert cfg.dim == 128 and cfg.grid == (4, 4)


def _text_like(B: int = 3, T: int = 5, C: int = 32, seed: int = 3):
    """A caption-like Conditioning: T prefix tokens, the later ones padding in some rows."""
    from argen.types import Conditioning

    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2:] = False
    mask[1, 4:] = False
    return Conditioning(prefix=torch.randn(B, T, C, generator=g), vector=torch.randn(B, C, generator=g),
                        prefix_mask=mask)


@pytest.mark.parametrize("cond_mode", ["prefix", "cross", "adaln"])
def test_cond_modes_kv_cache_equals_full_forward_and_ignore_padding(cond_mode):
    g, _ = tiny(cond_mode=cond_mode)
    perturb(g, seed=5)  # the cross / AdaLN branches start at zero: give them something to say
    c = _text_like()
    tokens = torch.randint(0, 40, (3, 12))
    with torch.no_grad():
        full = g(tokens, c)
        assert torch.allclose(cached_logits(g, c, tokens), full, atol=1e-4)
        # padded caption slots are never read: changing them changes nothing
        noisy = type(c)(prefix=torch.where(c.prefix_mask[..., None], c.prefix, torch.randn_like(c.prefix) * 5),
                        vector=c.vector, prefix_mask=c.prefix_mask)
        assert torch.allclose(g(tokens, noisy), full, atol=1e-5)
        # ... while the real tokens (or, for AdaLN, the pooled vector) condition every position
        if cond_mode == "adaln":
            other = type(c)(prefix=c.prefix, vector=c.vector.flip(0), prefix_mask=c.prefix_mask)
        else:
            other = type(c)(prefix=c.prefix.flip(0), vector=c.vector, prefix_mask=c.prefix_mask.flip(0))
        assert not torch.allclose(g(tokens, other)[:, -1], full[:, -1], atol=1e-3)


def test_cond_modes_start_as_the_unconditioned_decoder_and_refuse_unknown_modes():
    """New cross / AdaLN branches are zero at init (the decoder starts as if they were absent)."""
    def build(mode):
        return RasterGenerator(RasterConfig(vocab_size=40, scales=((3, 4),), dim=32, depth=2, num_heads=4,
                                            cond_mode=mode))

    assert all(torch.count_nonzero(b.cross_attention.wo.weight) == 0 for b in build("cross").layers)
    assert all(torch.count_nonzero(b.ada_lin[1].weight) == 0 for b in build("adaln").layers)
    with pytest.raises(ValueError, match="cond_mode"):
        RasterConfig(vocab_size=40, scales=((3, 4),), dim=32, depth=1, num_heads=4, cond_mode="film")
