"""Zero-shot editing: known tokens survive every paradigm's loop exactly, unknown ones are sampled; pixel -> token
masks (single grid, pyramid, non-divisible, thresholds); out-painting geometry; pasting; the `argen edit` CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import argen
from argen import registry
from argen.cli import main
from argen.generators.base import GeneratorConfig
from argen.pipeline import PipelineConfig
from argen.presets import get_config, list_presets
from argen.sampling.editing import (border_mask, box_mask, edit, edit_tokens, extend_canvas, paste_known,
                                    pixel_mask_to_token_mask, plan_edit)
from argen.sampling.loop import guided_conditioning, resolve_options
from argen.sampling.samplers import Force, sampler_for
from argen.types import TokenLayout


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _tiny_pipeline_preset(kind: str) -> str | None:
    """The first class-conditional `*-tiny` pipeline preset whose generator is `kind`."""
    for name in sorted(list_presets()):
        if name.endswith("-tiny"):
            cfg = get_config(name)
            if isinstance(cfg, PipelineConfig) and type(cfg.generator).kind == kind and \
                    type(cfg.conditioner).kind == "class":
                return name
    return None


def _build(name: str, seed: int = 0):
    cfg = get_config(name)
    grid = cfg.generator.layout.grid
    if len(cfg.generator.scales) == 1 and grid[0] * grid[1] > 64:  # keep CPU time small: an 8x8 grid
        f = cfg.tokenizer.resolution // grid[0]
        cfg = cfg.replace(tokenizer=cfg.tokenizer.replace(resolution=8 * f),
                          generator=cfg.generator.replace(scales=((8, 8),)))
    torch.manual_seed(seed)
    return registry.build(cfg).eval()


KINDS = registry.names(GeneratorConfig)


def _kind_param(kind: str):
    name = _tiny_pipeline_preset(kind)
    marks = () if name else pytest.mark.skip(reason=f"no '*-tiny' pipeline preset pairs a tokenizer with '{kind}'")
    return pytest.param(kind, name, marks=marks, id=kind)


def _images(pipe, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gh, gw = pipe.generator.layout.grid
    f = pipe.tokenizer.downsample
    return torch.rand(batch, 3, gh * f, gw * f, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_every_generator_kind_is_covered():
    assert {"raster", "random-order", "next-scale", "pixel-ar"} <= set(KINDS)


@pytest.mark.parametrize("kind, preset_name", [_kind_param(k) for k in KINDS])
def test_known_tokens_are_kept_exactly_and_the_rest_is_sampled(kind, preset_name):
    pipe = _build(preset_name)
    x = _images(pipe)
    H, W = x.shape[-2:]
    mask = box_mask(H, W, (W // 4, H // 4, 3 * W // 4, 3 * H // 4), batch_size=2)
    mask[1] = box_mask(H, W, (0, 0, W // 2, H))  # a different region per sample (the left half)
    labels = [1, 3]
    plan = plan_edit(pipe, x, mask, labels, mode="class")
    known, ref = plan.force.mask, plan.force.tokens
    assert torch.equal(ref, pipe.tokenizer.encode(x))  # known tokens are the input's own tokens
    assert known.any(dim=1).all() and (~known).any(dim=1).all()
    a = edit_tokens(pipe, plan, seed=0, cfg=2.0)
    b = edit_tokens(pipe, plan, seed=1, cfg=2.0)
    assert a.shape == ref.shape
    for out in (a, b):
        assert torch.equal(out[known], ref[known])
    assert (a[~known] != b[~known]).float().mean() > 0.5  # unknown positions are really sampled
    assert torch.equal(edit_tokens(pipe, plan, seed=0, cfg=2.0), a)  # seeded

    # images: decoding of the same tokens, and the kept pixels pasted back exactly
    raw = edit(pipe, x, mask, labels, mode="class", seed=0, cfg=2.0, paste="none")
    assert torch.allclose(raw, pipe.decode(a), atol=1e-6)
    pasted = edit(pipe, x, mask, labels, mode="class", seed=0, cfg=2.0, paste="hard")
    keep = ~mask.expand_as(x)
    assert torch.equal(pasted[keep], x[keep]) and torch.equal(pasted[~keep], raw[~keep])


def test_unconditional_edits_skip_guidance():
    pipe = _build("fmnist-raster-tiny")
    x = _images(pipe, batch=1)
    plan = plan_edit(pipe, x, box_mask(32, 32, (8, 8, 24, 24)))
    assert torch.equal(edit_tokens(pipe, plan, seed=3, cfg=4.0), edit_tokens(pipe, plan, seed=3, cfg=1.0))


# ----------------------------------------------------------------------------- pixel -> token masks

def _layout(*scales):
    return TokenLayout(scales=tuple(scales), vocab_size=16)


def test_single_grid_token_is_unknown_if_any_pixel_of_its_cell_is():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 1, 2] = True  # pixel row 1, col 2 -> cell (0, 1) of the 2x2 grid
    assert pixel_mask_to_token_mask(m, _layout((2, 2))).tolist() == [[False, True, False, False]]
    m[0, 3, 0] = True  # cell (1, 0)
    assert pixel_mask_to_token_mask(m[:, None], _layout((2, 2))).tolist() == [[False, True, True, False]]
    # non-square grid (2 x 4 tokens of 2 x 2 pixels over a 4 x 8 image)
    m = torch.zeros(1, 1, 4, 8, dtype=torch.bool)
    m[..., 2:4, 5] = True
    assert pixel_mask_to_token_mask(m, _layout((2, 4))).tolist() == [[False] * 6 + [True, False]]


def test_cells_that_do_not_divide_overlap_like_adaptive_pooling():
    # 3x3 tokens over 4x4 pixels: cell rows/cols are [0,2), [1,3), [2,4)
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 1, 1] = True
    got = pixel_mask_to_token_mask(m, _layout((3, 3)))[0]
    assert got.nonzero().flatten().tolist() == [0, 1, 3, 4]


def test_min_known_threshold():
    m = torch.zeros(1, 2, 4, dtype=torch.bool)  # one row of two 2x2 cells
    m[0, :, 0] = True  # cell 0: 2 of 4 pixels regenerated
    m[0, :, 2] = True  # cell 1: 2 of 4 ...
    m[0, 0, 3] = True  # ... plus one: 3 of 4
    assert pixel_mask_to_token_mask(m, _layout((1, 2))).tolist() == [[True, True]]
    assert pixel_mask_to_token_mask(m, _layout((1, 2)), min_known=0.5).tolist() == [[False, True]]
    assert pixel_mask_to_token_mask(m, _layout((1, 2)), min_known=0.25).tolist() == [[False, False]]
    with pytest.raises(ValueError, match="min_known"):
        pixel_mask_to_token_mask(m, _layout((1, 2)), min_known=0.0)


def test_pyramid_maps_every_scale_and_keeps_coarse_scales():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 0, 0] = True  # top-left pixel
    m[0, 5, 6] = True  # a pixel in the bottom-right quadrant: 2x2 cell (1, 1), 4x4 cell (2, 3)
    layout = _layout((1, 1), (2, 2), (4, 4))
    expect = [True] + [True, False, False, True] + [i in (0, 2 * 4 + 3) for i in range(16)]
    assert pixel_mask_to_token_mask(m, layout).tolist() == [expect]
    kept = pixel_mask_to_token_mask(m, layout, keep_coarse=3)[0]  # 1x1 kept (1 <= 3), 2x2 not (4 > 3)
    assert kept.tolist() == [False] + expect[1:]
    assert pixel_mask_to_token_mask(m, layout, keep_coarse=4)[0, :5].tolist() == [False] * 5
    # a single grid is never kept whole, whatever keep_coarse says
    assert pixel_mask_to_token_mask(torch.ones(1, 4, 4, dtype=torch.bool), _layout((1, 1)), keep_coarse=3).all()


def test_pixel_mask_validation():
    with pytest.raises(ValueError, match="0/1"):
        pixel_mask_to_token_mask(torch.full((1, 4, 4), 0.5), _layout((2, 2)))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        pixel_mask_to_token_mask(torch.zeros(1, 3, 4, 4, dtype=torch.bool), _layout((2, 2)))
    assert pixel_mask_to_token_mask(torch.ones(1, 4, 4, dtype=torch.long), _layout((2, 2))).all()


# ----------------------------------------------------------------------------- geometry and pasting

def test_box_and_border_masks():
    m = box_mask(4, 6, (1, 2, 10, 3), batch_size=2)  # clipped to the image
    assert m.shape == (2, 1, 4, 6) and m.sum() == 2 * 5 and m[0, 0, 2, 1:].all()
    with pytest.raises(ValueError, match="covers no pixel"):
        box_mask(4, 6, (6, 0, 8, 4))
    b = border_mask(6, 8, 1)
    assert b.sum() == 6 * 8 - 4 * 6 and not b[0, 0, 1:5, 1:7].any()
    b = border_mask(6, 8, (2, 0, 0, 1))  # left 2 columns and the bottom row
    expect = torch.zeros(6, 8, dtype=torch.bool)
    expect[:, :2] = True
    expect[-1] = True
    assert torch.equal(b[0, 0], expect)
    with pytest.raises(ValueError, match="narrower"):
        border_mask(6, 8, 3)


@pytest.mark.parametrize("anchor, offset", [("center", (1, 2)), ("left", (1, 0)), ("right", (1, 4)),
                                            ("top", (0, 2)), ("bottom", (2, 2))])
def test_extend_canvas_places_the_image_by_anchor(anchor, offset):
    img = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    canvas, mask = extend_canvas(img, (4, 6), anchor=anchor, fill=-1.0)
    y, x = offset
    assert canvas.shape == (2, 3, 4, 6) and mask.shape == (2, 1, 4, 6)
    assert torch.equal(canvas[..., y:y + 2, x:x + 2], img)
    assert not mask[..., y:y + 2, x:x + 2].any() and mask.sum() == 2 * (24 - 4)
    assert (canvas[mask.expand_as(canvas)] == -1).all()
    with pytest.raises(ValueError, match="larger than the canvas"):
        extend_canvas(img, 1)


def test_soft_paste_keeps_generated_pixels_and_far_kept_pixels():
    edited, images = torch.ones(1, 3, 12, 12), -torch.ones(1, 3, 12, 12)
    mask = box_mask(12, 12, (4, 4, 8, 8))
    out = paste_known(edited, images, mask, paste="soft", feather=1)
    assert torch.equal(out[mask.expand_as(out)], edited[mask.expand_as(out)])
    far = torch.ones(12, 12, dtype=torch.bool)
    far[2:10, 2:10] = False  # more than 2 * feather from the box
    assert (out[..., far] == -1).all()
    seam = out[0, 0, 3, 4:8]  # one pixel outside the box: blended
    assert ((seam > -1) & (seam < 1)).all()
    assert torch.equal(paste_known(edited, images, mask, paste="none"), edited)
    assert torch.equal(paste_known(edited, images, mask, paste="hard"), torch.where(mask, edited, images))


def test_outpaint_extends_small_images_and_border_frames():
    pipe = _build("fmnist-raster-tiny")
    small = _images(pipe, batch=1)[..., :24, :24]
    plan = plan_edit(pipe, small, mode="outpaint", anchor="left")
    assert plan.images.shape == (1, 3, 32, 32) and torch.equal(plan.images[..., 4:28, :24], small)
    # 4-pixel tokens: token rows 1..6 (pixels 4..28) x cols 0..5 (pixels 0..24) are known
    known = plan.force.mask.view(8, 8)
    expect = torch.zeros(8, 8, dtype=torch.bool)
    expect[1:7, :6] = True
    assert torch.equal(known, expect)
    plan = plan_edit(pipe, _images(pipe, batch=1), mode="outpaint", border=4)
    assert plan.force.mask.view(8, 8)[1:7, 1:7].all() and plan.force.mask.sum() == 36
    out = edit(pipe, small, mode="outpaint", anchor="left", seed=0)
    assert out.shape == (1, 3, 32, 32) and torch.equal(out[..., 4:28, :24], small)


def test_edit_errors_say_how_to_fix():
    pipe = _build("fmnist-raster-tiny")
    x = _images(pipe, batch=1)
    m = box_mask(32, 32, (8, 8, 16, 16))
    with pytest.raises(ValueError, match="class label"):
        plan_edit(pipe, x, m, mode="class")
    with pytest.raises(ValueError, match="needs a mask"):
        plan_edit(pipe, x)
    with pytest.raises(ValueError, match="out-painting needs"):
        plan_edit(pipe, x, mode="outpaint")
    with pytest.raises(ValueError, match="resize them"):
        plan_edit(pipe, x[..., :16, :16], m[..., :16, :16])
    with pytest.raises(ValueError, match="one per image"):
        plan_edit(pipe, x.expand(3, -1, -1, -1), m, [1, 2])
    with pytest.raises(ValueError, match="mode must be"):
        plan_edit(pipe, x, m, mode="paint")


# ----------------------------------------------------------------------------- next-scale with Gumbel smoothing

def test_next_scale_forced_tokens_stay_hard_under_gumbel_smoothing():
    """VAR's editing overwrites the smoothed embeddings with the reference's wherever a token is known, also
    where the sampled id happens to equal it: with every token forced, each scale's logits are teacher-forced."""
    torch.manual_seed(0)
    pipe = argen.create("fmnist-var-tiny").eval()
    gen, cond = pipe.generator, pipe.conditioner
    with torch.no_grad():
        gen.quantizer.embedding.weight.normal_()
    tokens = argen.generate(gen, cond, [1, 4], temperature=0)  # greedy: the sampled ids equal the forced ones
    opts, dec = resolve_options(gen, temperature=0, gumbel=0.27)
    sampler = sampler_for(gen)(gen, opts, dec)
    rng = torch.Generator().manual_seed(0)
    force = Force(tokens, torch.ones_like(tokens, dtype=torch.bool))
    with torch.inference_mode():
        c = guided_conditioning(cond, cond.parse([1, 4]), False, gen.device)
        ref = gen(tokens, c)
        state = sampler.begin(c, 2, rng)
        sampler.force(state, force)
        while not state.done:
            a, b = gen.config.bounds[state.step]
            out = sampler.predict(state, rng)
            torch.testing.assert_close(out, ref[:, a:b], atol=1e-5, rtol=0)
            sampled, scores = gen.head.sample(out, opts, rng)
            sampler.commit(state, sampled, scores, rng=rng, cfg_scale=1.0)
            assert state.soft is not None  # smoothing is on: the forced tokens must still win
            sampler.force(state, force)


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    d = tmp_path_factory.mktemp("edit") / "pipe"
    argen.save(_build("fmnist-raster-tiny"), d)
    return d


def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return str(path)


def _read(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_cli_edit_with_mask_png_box_and_outpaint(saved_pipeline, tmp_path, capsys):
    rs = np.random.RandomState(0)
    img = rs.randint(0, 256, (32, 32, 3), dtype=np.uint8)
    image = _png(tmp_path / "in.png", img)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 4:28] = 255  # white = regenerate
    mask_png = _png(tmp_path / "mask.png", mask)

    out = tmp_path / "edited.png"
    assert main(["edit", str(saved_pipeline), "--image", image, "--mask", mask_png, "--seed", "0",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert str(out) in capsys.readouterr().out
    got = _read(out)
    keep = mask == 0
    assert got.shape == (32, 32, 3) and np.array_equal(got[keep], img[keep])  # kept pixels pasted back exactly
    assert not np.array_equal(got[~keep], img[~keep])

    # a box in input pixels with a class label, two variations in one grid
    out2 = tmp_path / "grid.png"
    assert main(["edit", str(saved_pipeline), "--image", image, "--box", "8,8,24,24", "--label", "sneaker",
                 "--num", "2", "--seed", "1", "--out", str(out2), "--device", "cpu"]) == 0
    assert "class: 2 edits" in capsys.readouterr().out and _read(out2).shape[1] > 64

    # extend: the image shrinks to 24 px at the left, the rest is generated
    out3 = tmp_path / "wide.png"
    assert main(["edit", str(saved_pipeline), "--image", image, "--outpaint", "4", "--extend", "--anchor", "left",
                 "--out", str(out3), "--device", "cpu"]) == 0
    assert _read(out3).shape == (32, 32, 3)


def test_cli_edit_errors_are_one_line(saved_pipeline, tmp_path, capsys):
    image = _png(tmp_path / "in.png", np.zeros((32, 32, 3), np.uint8))
    bad_mask = _png(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    assert main(["edit", str(saved_pipeline), "--image", image, "--mask", bad_mask, "--out",
                 str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert "mask is 16x16" in err and len(err.strip().splitlines()) == 1
    assert main(["edit", str(saved_pipeline), "--image", image, "--box", "1,1,9,9", "--label", "no-such-class",
                 "--out", str(tmp_path / "o.png")]) == 1
    assert "unknown class" in capsys.readouterr().err
