"""Fixtures for tests/data: tiny image folders made with PIL, and the emoji set decoded once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, color=(200, 30, 30), size=(12, 10), mode="RGB", fmt=None) -> Path:
    """A solid image of `color` saved in `mode`; RGBA/LA get a fully transparent left column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(np.full((h, w), 257 * color[0], dtype=np.uint16))
    else:
        img = Image.new("RGB", size, color)
        if mode in ("RGBA", "LA"):
            img = img.convert(mode)
            alpha = np.full((h, w), 255, dtype=np.uint8)
            alpha[:, 0] = 0
            img.putalpha(Image.fromarray(alpha))
        elif mode != "RGB":
            img = img.convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def make_image():
    """The `write_image` helper, as a fixture (tests/ has no packages to import it from)."""
    return write_image


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """root/cat/... and root/dog/... covering every mode and format, with nesting."""
    root = tmp_path / "classes"
    write_image(root / "cat" / "a.png", mode="L")
    write_image(root / "cat" / "b.png", mode="RGBA")
    write_image(root / "cat" / "nested" / "deeper" / "c.png", mode="P")
    write_image(root / "cat" / "d.png", mode="I;16")
    write_image(root / "dog" / "e.jpg", size=(20, 12))
    write_image(root / "dog" / "f.webp", mode="RGBA")
    write_image(root / "dog" / "g.bmp")
    write_image(root / "dog" / "h.png", mode="LA")
    (root / "dog" / "notes.json").write_text("{}")  # non-images are ignored
    return root


@pytest.fixture(scope="session")
def emoji_all():
    """The whole emoji set, decoded once for the session (skips when the npm package is not extracted)."""
    from argen.data import emoji

    if emoji.find_root() is None:
        pytest.skip("emoji data not installed: run scripts/setup.sh (npm pack emoji-datasource-google@16.0.0)")
    ds = emoji.Emoji(split="all", download=False)
    ds.uint8_images()  # fills the in-memory cache once
    return ds


@pytest.fixture(scope="session")
def fashion_root():
    from argen.data import fashion_mnist

    root = fashion_mnist.find_root()
    if root is None:
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (scripts/setup.sh does this)")
    return root
