import numpy as np
import pytest
import torch
from PIL import Image

from argen.errors import DataError
from argen.imageio import from_uint8, load_images, make_grid, save_grid, save_image, to_uint8


def test_uint8_round_trip_is_exact():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(2, 16, 16, 3).contiguous()
    x = from_uint8(u)
    assert x.shape == (2, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), u)
    assert to_uint8(torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1)).flatten().tolist() == [0, 128, 255]  # clamps
    with pytest.raises(ValueError, match="B, 3, H, W"):
        to_uint8(torch.zeros(2, 4, 8, 8))


def test_save_grid_layout_and_labels(tmp_path):
    imgs = -torch.ones(5, 3, 8, 8)  # black tiles on the white background
    out = save_grid(imgs, tmp_path / "sub" / "grid.png", nrow=3)
    arr = np.asarray(Image.open(out))
    assert arr.shape == (2 * 10 + 2, 3 * 10 + 2, 3)  # 2 rows x 3 cols of 8 px + 2 px padding
    assert (arr[2:10, 2:10] == 0).all() and (arr[0] == 255).all() and (arr[12:20, 22:30] == 255).all()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["grid.png"]  # no temp files left behind
    labelled = make_grid(-torch.ones(2, 3, 64, 64) + 2, nrow=2, labels=["cat", "a very long caption indeed"])
    assert labelled.shape[0] > 64 + 4 and (labelled[66:78] < 128).any()  # text drawn under the tiles
    with pytest.raises(ValueError, match="one label per image"):
        save_grid(imgs, tmp_path / "x.png", labels=["a"])


def test_save_image_and_load_images(tmp_path):
    x = torch.rand(3, 6, 6) * 2 - 1
    save_image(x, tmp_path / "a.png")
    save_image(x[None], tmp_path / "b.png")
    back = load_images(tmp_path / "a.png")
    assert back.shape == (1, 3, 6, 6) and (back - x).abs().max() <= 1 / 127.5 + 1e-6
    both = load_images(tmp_path)
    assert both.shape == (2, 3, 6, 6) and torch.equal(both[0], both[1])
    assert load_images([tmp_path / "b.png"]).shape == (1, 3, 6, 6)
    Image.new("RGBA", (10, 4), (0, 0, 0, 0)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="pass a resolution"):
        load_images(tmp_path)
    out = load_images(tmp_path, resolution=4)
    assert out.shape == (3, 3, 4, 4) and (out[2] == 1).all()  # transparent -> white
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="bad.png"):
        load_images([tmp_path / "bad.png"])
