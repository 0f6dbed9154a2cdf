"""Next-scale (VAR) generator: size rule, block-causal attention, KV-cached sampling == teacher forcing,
CFG/seeds, non-square scales, editing, training signal, save/load and tokenizer binding."""
from __future__ import annotations

import pytest
import torch

import argen
from argen import registry
from argen.errors import ConfigError
from argen.generators.next_scale import NextScaleConfig
from argen.presets import get_config
from gen_helpers import class_conditioner, embed, teacher_forced

SCALES = ((1, 1), (2, 2), (3, 3), (4, 4))


def make(scales=SCALES, vocab=32, classes=5, seed=0, **kw):
    """(generator, class conditioner); the generator's own quantizer (no tokenizer bound) has a random codebook."""
    q = registry.config_class("msvq")(dim=8, codebook_size=vocab, scales=scales)
    cfg = NextScaleConfig(vocab_size=vocab, scales=scales, quantizer=q,
                          **{"depth": 2, "dim": 64, "num_heads": 2, "init_adaln_gamma": 0.5, "init_head": 1.0, **kw})
    torch.manual_seed(seed)
    gen = registry.build(cfg).eval()
    with torch.no_grad():  # a random codebook so inputs differ between token ids
        gen.quantizer.embedding.weight.normal_()
    return gen, class_conditioner(gen, num_classes=classes)


@pytest.mark.parametrize("name, millions", [("var-d16", 310.28), ("var-d20", 600.92), ("var-d24", 1033.40),
                                            ("var-d30", 2010.02), ("var-d36", 2353.89)])
def test_presets_follow_var_size_rule(name, millions):
    """VAR's published sizes = the generator (without the tokenizer's quantizer) + the 1000-class table."""
    cfg = get_config(name)
    assert cfg.width == 64 * cfg.depth and cfg.heads == cfg.depth
    with torch.device("meta"):
        gen = registry.build(cfg)
    n = sum(p.numel() for k, p in gen.named_parameters() if not k.startswith("quantizer."))
    assert round((n + 1001 * cfg.width) / 1e6, 2) == millions
    assert not any(p.requires_grad for p in gen.quantizer.parameters())


def test_config_errors_say_how_to_fix():
    q = registry.config_class("msvq")(dim=8, codebook_size=32, scales=SCALES)
    with pytest.raises(ValueError, match="quantizer.scales"):
        NextScaleConfig(vocab_size=32, scales=SCALES[:3] + ((5, 5),), quantizer=q)
    with pytest.raises(ValueError, match="codebook_size"):
        NextScaleConfig(vocab_size=64, scales=SCALES, quantizer=q)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        NextScaleConfig(vocab_size=32, scales=SCALES, quantizer=q, dim=60, num_heads=7)
    with pytest.raises(ConfigError, match="depth"):
        get_config("var-tiny", ["depth=0"])


def test_block_causal_attention():
    gen, cond = make()
    tokens = torch.randint(0, 32, (2, 30), generator=torch.Generator().manual_seed(1))
    c = embed(cond, [0, 3])
    changed = tokens.clone()
    changed[:, 5:14] = (changed[:, 5:14] + 1) % 32  # scale 2 (3x3)
    with torch.no_grad():
        a, b = gen(tokens, c), gen(changed, c)
    # logits of scales 0..2 depend only on coarser scales; scale 3 (positions 14..29) sees scale 2
    torch.testing.assert_close(a[:, :14], b[:, :14])
    assert (a[:, 14:] - b[:, 14:]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", [{}, {"shared_adaln": True}, {"qk_norm": False}])
def test_kv_cached_steps_equal_teacher_forcing(variant):
    """Each sampling step's logits equal the full block-causal forward on the final tokens."""
    gen, cond = make(**variant)
    tokens = argen.generate(gen, cond, [1, 4, -1], top_k=8, seed=3)
    c = embed(cond, [1, 4, -1])
    with torch.no_grad():
        full = gen(tokens, c)
    for state, sampler, step_logits in teacher_forced(gen, c, tokens):
        a, b = gen.config.bounds[state.step]
        torch.testing.assert_close(step_logits, full[:, a:b], atol=1e-5, rtol=1e-5)
    assert torch.equal(sampler.result(state), tokens)


def test_seeds_cfg_and_filters():
    gen, cond = make()
    same = [argen.generate(gen, cond, [0, 1], cfg=3.0, cfg_schedule="linear_scale", top_k=10, top_p=0.9, seed=7)
            for _ in range(2)]
    assert torch.equal(*same) and same[0].shape == (2, 30) and same[0].dtype == torch.long
    other = argen.generate(gen, cond, [0, 1], cfg=3.0, cfg_schedule="linear_scale", top_k=10, top_p=0.9, seed=8)
    assert not torch.equal(same[0], other)
    # linear_scale guidance is off at the first scale: it equals unguided greedy there, and differs later
    g = argen.generate(gen, cond, [0, 1], cfg=8.0, cfg_schedule="linear_scale", temperature=0)
    u = argen.generate(gen, cond, [0, 1], temperature=0)
    assert torch.equal(g[:, 0], u[:, 0]) and not torch.equal(g, u)
    top1 = argen.generate(gen, cond, [0, 1], top_k=1, seed=1)
    assert torch.equal(top1, u)  # top-k 1 is greedy


def test_non_square_scales_and_any_class_count():
    scales = ((1, 2), (2, 3), (3, 5))
    gen, cond = make(scales=scales, classes=3, vocab=16)
    tokens = argen.generate(gen, cond, [0, 2, -1], cfg=2.0, cfg_schedule="linear_scale", seed=0)
    assert tokens.shape == (3, 2 + 6 + 15) and int(tokens.max()) < 16
    out = gen.loss(tokens, embed(cond, [0, 1, 2]))
    assert sorted(k for k in out.metrics if k.startswith("nll_scale")) == ["nll_scale0", "nll_scale1", "nll_scale2"]
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 3\)"):
        embed(cond, [0, 1, 3])
    uncond, none = make(scales=scales, classes=0, vocab=16)
    assert argen.generate(uncond, none, [-1, -1], seed=0).shape == (2, 23)


def test_forced_tokens_enter_later_scales():
    gen, cond = make()
    known = torch.zeros(2, 30, dtype=torch.long)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    known[:, 1:5], mask[:, 1:5] = torch.tensor([3, 1, 4, 1]), True  # fix scale 1 (2x2)
    out = argen.generate(gen, cond, [0, 1], force=(known, mask), temperature=0)
    assert torch.equal(out[:, 1:5], known[:, 1:5])
    # the result is what greedy decoding gives when conditioned on those tokens
    with torch.no_grad():
        assert torch.equal(gen(out, embed(cond, [0, 1])).argmax(-1)[:, 5:], out[:, 5:])


def test_loss_is_token_mean_and_trains():
    gen, cond = make(drop_path=0.0)
    gen.train()
    tokens = torch.randint(0, 32, (4, 30), generator=torch.Generator().manual_seed(0))
    labels = lambda: embed(cond, [0, 1, 2, 3])  # noqa: E731
    out = gen.loss(tokens, labels(), rng=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, 4.0, 9.0, 16.0]) / 30
    per = torch.stack([out.metrics[f"nll_scale{k}"] for k in range(4)])
    torch.testing.assert_close(out.loss.detach(), (per * weights).sum(), atol=1e-5, rtol=1e-5)
    opt = torch.optim.AdamW([p for p in [*gen.parameters(), *cond.parameters()] if p.requires_grad], lr=5e-3)
    first = None
    for _ in range(15):
        loss = gen.loss(tokens, labels(), rng=torch.Generator().manual_seed(0)).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    assert gen.quantizer.embedding.weight.grad is None  # the quantizer stays frozen


def test_save_load_and_bind_tokenizer(tmp_path):
    gen, cond = make()
    argen.save(gen, tmp_path / "g")
    loaded = argen.load(tmp_path / "g")  # a lone generator keeps its own quantizer
    tokens = argen.generate(gen, cond, [1, 2], seed=0)
    assert torch.equal(argen.generate(loaded, cond, [1, 2], seed=0), tokens)
    tok = argen.create("msvq-tiny")
    tiny = registry.build(get_config("var-tiny"))
    tiny.bind_tokenizer(tok)
    assert tiny.quantizer is tok.quantizer  # shared, not copied: one codebook in memory
    tiny.check_layout(tok.layout)
    with pytest.raises(ConfigError, match="disagree"):
        gen.bind_tokenizer(tok)


def test_gumbel_smoothing_changes_inputs_reproducibly():
    gen, cond = make()
    kw = dict(cfg=2.0, cfg_schedule="linear_scale", top_k=8)
    hard = argen.generate(gen, cond, [0, 1, 2, 3], seed=5, **kw)
    soft = [argen.generate(gen, cond, [0, 1, 2, 3], seed=5, gumbel=0.27, **kw) for _ in range(2)]
    assert torch.equal(*soft)
    assert torch.equal(soft[0][:, 0], hard[:, 0])  # scale 1 is sampled before any smoothing applies
    assert not torch.equal(soft[0], hard)


def _block_input_lengths(gen):
    seen = []
    hook = gen.blocks[0].register_forward_pre_hook(lambda m, args, kw: seen.append(args[0].shape[1]), with_kwargs=True)
    return seen, hook


def test_prune_skips_late_scale_tokens_and_keeps_coarser_scales_exact():
    scales = ((1, 1), (2, 2), (4, 4), (8, 8))
    gen, cond = make(scales=scales)
    kw = dict(cfg=2.0, cfg_schedule="linear_scale", top_k=8, seed=3)
    exact = argen.generate(gen, cond, [0, 1, 2], **kw)
    seen, hook = _block_input_lengths(gen)
    pruned = argen.generate(gen, cond, [0, 1, 2], prune=(0.25, 0.5), **kw)
    hook.remove()
    assert seen == [1, 4, 12, 32]  # 16 * 0.75 and 64 * 0.5 tokens through the blocks at the last two scales
    assert torch.equal(pruned[:, :5], exact[:, :5])  # unpruned scales are sampled exactly as before
    assert not torch.equal(pruned, exact)
    assert torch.equal(pruned, argen.generate(gen, cond, [0, 1, 2], prune=(0.25, 0.5), **kw))  # deterministic


def test_prune_that_keeps_every_token_is_exact():
    # A ratio that rounds to zero skipped tokens runs the pruned path (select, packed KV slots, restore, scatter)
    # on all tokens: it must reproduce exact sampling, which checks the gather/scatter and KV bookkeeping.
    scales = ((1, 1), (2, 2), (4, 4), (8, 8))
    gen, cond = make(scales=scales)
    kw = dict(cfg=2.0, cfg_schedule="linear_scale", top_k=8, seed=3)
    seen, hook = _block_input_lengths(gen)
    almost = argen.generate(gen, cond, [0, 1, 2], prune=(0.01, 0.005), **kw)
    hook.remove()
    assert seen == [1, 4, 16, 64]
    assert torch.equal(almost, argen.generate(gen, cond, [0, 1, 2], **kw))


def test_prune_errors_say_what_is_allowed():
    gen, cond = make()
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        argen.generate(gen, cond, [0], prune=(1.0,))
    with pytest.raises(ValueError, match="only the last 3"):
        argen.generate(gen, cond, [0], prune=(0.1, 0.1, 0.1, 0.1))
    raster = argen.create("llamagen-tiny")
    with pytest.raises(ValueError, match="unknown sampling option.*prune.*allowed"):
        argen.generate(raster, class_conditioner(raster), [0], prune=(0.5,))


def test_fmnist_pipeline_preset_samples_images():
    pipe = argen.create("fmnist-var-tiny")
    assert pipe.config.sampling.cfg_schedule == "linear_scale" and len(pipe.conditioner.config.class_names) == 10
    images = pipe(["sneaker", "bag"], seed=0)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1.0


def test_pipeline_shares_the_tokenizer_quantizer_and_saves_it_once(tmp_path):
    torch.manual_seed(0)
    pipe = argen.create("fmnist-var-tiny")
    assert pipe.generator.quantizer is pipe.tokenizer.quantizer
    argen.save(pipe, tmp_path / "p")
    from safetensors.torch import load_file

    gen_keys = load_file(str(tmp_path / "p" / "generator" / "model.safetensors")).keys()
    assert gen_keys and not any(k.startswith("quantizer.") for k in gen_keys)
    back = argen.load(tmp_path / "p")
    assert back.generator.quantizer is back.tokenizer.quantizer
    assert torch.equal(back(["bag"], seed=1), pipe(["bag"], seed=1))
    with pytest.raises(argen.errors.CheckpointError, match="load the pipeline directory"):
        argen.load(tmp_path / "p" / "generator")  # its quantizer is saved with the tokenizer


def test_sampling_does_not_pack_weights_unless_asked(monkeypatch):
    # Packing is an explicit opt-in for every generator (it rounds differently): off by default, on when asked.
    import argen.nn.fast_linear as fl

    monkeypatch.setattr(fl, "MIN_PACK_ELEMENTS", 1)  # make the tiny model's linears eligible
    gen, cond = make()
    packed_during = []
    hook = gen.blocks[0].register_forward_pre_hook(
        lambda m, args, kw: packed_during.append(any(getattr(x, "_packed", None) is not None for x in m.modules())),
        with_kwargs=True)
    argen.generate(gen, cond, [0, 1], seed=0)
    assert packed_during and not any(packed_during)
    packed_during.clear()
    argen.generate(gen, cond, [0, 1], seed=0, pack_weights=True)
    hook.remove()
    assert all(packed_during) == fl._ops_available()
