import json
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from argen.data import emoji, load_dataset
from argen.errors import DataError

CATEGORIES = {"Smileys & Emotion", "People & Body", "Component", "Animals & Nature", "Food & Drink",
              "Travel & Places", "Activities", "Objects", "Symbols", "Flags"}


def test_count_categories_and_captions(emoji_all):
    ds = emoji_all
    assert len(ds) == 3786
    assert set(ds.classes) == CATEGORIES and ds.num_classes == 10
    assert ds.classes[0] == "Smileys & Emotion" and ds.classes[-1] == "Flags"  # Unicode order
    assert len(ds.captions) == 3786 and all(c.strip() for c in ds.captions) and not ds.grey
    assert ((ds.labels >= 0) & (ds.labels < 10)).all()
    assert sum(ds.class_counts().values()) == 3786 and ds.class_counts()["People & Body"] == 2261
    assert sum("skin tone" in c for c in ds.captions) == 1875  # every skin-tone variant got a caption
    assert len(set(ds.files)) == 3786


def test_images_are_rgb_on_white(emoji_all):
    u = emoji_all.uint8_images()
    assert u.shape == (3786, 64, 64, 3) and u.dtype == torch.uint8
    corners = u[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (N, 4, 3)
    assert (corners == 255).all(dim=-1).any(dim=1).float().mean() > 0.9  # transparent corners -> white
    x, y = emoji_all[0]
    assert x.shape == (3, 64, 64) and -1 <= x.min() and x.max() == 1.0 and isinstance(y, int)
    assert torch.equal(((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0), u[0])


def test_split_is_fixed_and_disjoint(emoji_all):
    train, test = load_dataset("emoji", download=False), load_dataset("emoji", split="test", download=False)
    assert len(train) + len(test) == 3786 and not set(train.files) & set(test.files)
    assert 0.07 < len(test) / 3786 < 0.13
    assert load_dataset("emoji", split="test", download=False).files == test.files
    assert [emoji_all.captions[emoji_all.files.index(f)] for f in test.files[:5]] == test.captions[:5]


def test_other_resolution(emoji_all):
    ds = emoji.Emoji(split="test", resolution=32, download=False)
    assert ds[0][0].shape == (3, 32, 32) and ds.uint8_images(2).shape == (2, 32, 32, 3)


def test_missing_data_and_failed_npm_are_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji, "default_cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(DataError, match="scripts/setup.sh"):
        load_dataset("emoji", download=False)
    with pytest.raises(DataError, match="not found there"):
        load_dataset("emoji", root=tmp_path)
    monkeypatch.setattr(emoji.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(emoji.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a[0], 1, "", "npm ERR! network request failed, reason: getaddrinfo EAI_AGAIN"))
    with pytest.raises(DataError, match="npm pack.*EAI_AGAIN"):
        load_dataset("emoji")


def test_npm_fallback_extracts_the_package(tmp_path, monkeypatch, make_image):
    """Fake `npm pack` producing a tiny package tarball; the loader extracts and reads it."""
    src = tmp_path / "src" / "package"
    make_image(src / "img" / "google" / "64" / "1f600.png", size=(64, 64), mode="RGBA")
    make_image(src / "img" / "google" / "64" / "1f44b-1f3fb.png", size=(64, 64))
    make_image(src / "img" / "google" / "64" / "1f44b.png", size=(64, 64))
    make_image(src / "img" / "apple" / "64" / "ignored.png", size=(64, 64))
    entries = [
        {"name": "GRINNING FACE", "image": "1f600.png", "category": "Smileys & Emotion", "sort_order": 1,
         "has_img_google": True},
        {"name": "WAVING HAND SIGN", "image": "1f44b.png", "category": "People & Body", "sort_order": 2,
         "has_img_google": True, "skin_variations": {"1F3FB": {"image": "1f44b-1f3fb.png", "has_img_google": True}}},
    ]
    (src / "emoji.json").write_text(json.dumps(entries))

    def fake_npm(cmd, cwd, **kwargs):
        with tarfile.open(f"{cwd}/{emoji.PACKAGE}-{emoji.VERSION}.tgz", "w:gz") as tar:
            tar.add(src, arcname="package")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(emoji, "default_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(emoji.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(emoji.subprocess, "run", fake_npm)
    ds = load_dataset("emoji", split="all")
    assert ds.captions == ["grinning face", "waving hand sign", "waving hand sign: light skin tone"]
    assert ds.classes == ["Smileys & Emotion", "People & Body"] and ds.labels.tolist() == [0, 1, 1]
    cached = tmp_path / "cache" / f"{emoji.PACKAGE}-{emoji.VERSION}" / "package"
    assert (cached / "emoji.json").is_file() and not (cached / "img" / "apple").exists()
    assert np.asarray(ds.uint8_images()).shape == (3, 64, 64, 3)
