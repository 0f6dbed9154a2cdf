"""Zero-shot editing for every paradigm: in-painting, out-painting and class-conditional editing.

One mechanism (design.md §2): the input image is encoded, the tokens whose whole area lies in the kept part
of the image are *known*, and `argen.generate(..., force=Force(tokens, known))` writes them into the
generator's state before the first step and after every step (`Generator.force`). Each paradigm's `force`
decides what "known" means for its order: raster / pixel decoding feed them as the next inputs, random order
puts them first so they are context for every sampled token, next-scale (VAR, https://arxiv.org/abs/2404.02905,
zero-shot editing as in its demo_zero_shot_edit notebook) forces them in every scale so they enter f_hat and
every later scale's input. Nothing here branches on the paradigm; only the token layout (single grid or a
coarse -> fine pyramid) shapes the mask.

    edited = edit(pipe, images, mask)                              # in-paint where mask is True
    edited = edit(pipe, images, mode="outpaint", border=4)         # regenerate a 4-pixel frame
    edited = edit(pipe, small, mode="outpaint", anchor="left")     # extend a smaller image to the model size
    edited = edit(pipe, images, mask, cond=[7], mode="class")      # regenerate the region as class 7

Pixel masks are bool (B, 1, H, W) or (B, H, W), True = regenerate. Token rule (`pixel_mask_to_token_mask`):
a token of a (h, w) grid covers the pixels of its adaptive-pooling cell (exactly an (H/h) x (W/w) block when
the sizes divide); it is known only if its whole cell is known (`min_known=1`). In a multi-scale layout every
scale is mapped the same way, and scales with at most `keep_coarse` tokens are always known: a pyramid's
fine tokens are residuals of the coarse ones, so regenerating the 1x1 scale would shift every kept pixel
(VAR's notebook keeps scales with <= 3 tokens; its own per-token rule is a bilinear resize thresholded at
0.5, i.e. about `min_known=0.5`).

After decoding, `paste="hard"` puts the input's kept pixels back exactly, `"soft"` feathers the seam over
`feather` pixels into the kept side only (regenerated pixels stay generated), `"none"` returns the decoder's
output as is (kept pixels are then the tokenizer's reconstruction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import TokenLayout
from ..types import Cond
from .loop import evaluating, generate
from .samplers import Force

Mode = Literal["inpaint", "outpaint", "class"]
Paste = Literal["hard", "soft", "none"]
Anchor = Literal["center", "top", "bottom", "left", "right"]
MODES = ("inpaint", "outpaint", "class")
PASTES = ("hard", "soft", "none")
ANCHORS = ("center", "top", "bottom", "left", "right")


# ----------------------------------------------------------------------------- masks

def as_pixel_mask(mask: Tensor) -> Tensor:
    """A pixel mask (B, 1, H, W) or (B, H, W), bool or 0/1 -> bool (B, 1, H, W)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"a pixel mask must be (B, 1, H, W) or (B, H, W) with True = regenerate; got shape "
                         f"{tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"a pixel mask must be bool (True = regenerate) or hold only 0/1; got {mask.dtype} "
                             "(threshold a soft mask first, e.g. mask > 0.5)")
        mask = mask.bool()
    return mask


def pixel_mask_to_token_mask(mask: Tensor, layout: TokenLayout, *, min_known: float = 1.0,
                             keep_coarse: int = 0) -> Tensor:
    """Token mask (B, P) bool in layout order, True = regenerate, for a pixel mask (True = regenerate).

    P counts token positions over all scales (coarse -> fine, row-major each); sub-tokens of a position (RVQ
    depth, sub-pixels) share it. A token is known iff at least `min_known` of its cell is known (1.0: the
    whole cell; cells are adaptive-pooling regions of the pixel grid on the token grid). With several scales,
    scales of at most `keep_coarse` tokens are known entirely (see the module docstring).
    """
    if not 0.0 < min_known <= 1.0:
        raise ValueError(f"min_known must be in (0, 1] (1 = a token is known only if its whole area is known), "
                         f"got {min_known}")
    if keep_coarse < 0:
        raise ValueError(f"keep_coarse must be >= 0 (0 = no scale is kept whole), got {keep_coarse}")
    regen = as_pixel_mask(mask).float()  # (B, 1, H, W)
    multi = len(layout.scales) > 1
    out = []
    for h, w in layout.scales:
        if multi and h * w <= keep_coarse:
            r = torch.zeros(regen.shape[0], h * w, dtype=torch.bool, device=regen.device)
        elif min_known >= 1.0:  # exact: any regenerated pixel in the cell makes the token unknown
            r = (F.adaptive_max_pool2d(regen, (h, w)) > 0).flatten(1)  # (B, 1, h, w) -> (B, h*w)
        else:
            r = (1.0 - F.adaptive_avg_pool2d(regen, (h, w)) < min_known).flatten(1)  # (B, 1, h, w) -> (B, h*w)
        out.append(r)
    return torch.cat(out, dim=1)  # (B, P)


def box_mask(height: int, width: int, box: Sequence[int], *, batch_size: int = 1,
             device: torch.device | str | None = None) -> Tensor:
    """Mask (B, 1, H, W), True inside box = (x0, y0, x1, y1) in pixels (x1, y1 exclusive, clipped to the image)."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1) in pixels; got {tuple(box)}")
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"box {tuple(box)} covers no pixel of a {height}x{width} image; need x0 < x1 and y0 < y1 "
                         "inside the image")
    mask = torch.zeros(batch_size, 1, height, width, dtype=torch.bool, device=device)
    mask[..., y0:y1, x0:x1] = True
    return mask


def border_mask(height: int, width: int, border: int | Sequence[int], *, batch_size: int = 1,
                device: torch.device | str | None = None) -> Tensor:
    """Out-painting mask (B, 1, H, W): True on a frame `border` pixels wide, one int or (left, top, right, bottom)."""
    b = (border,) * 4 if isinstance(border, int) else tuple(int(v) for v in border)
    if len(b) != 4 or min(b) < 0:
        raise ValueError(f"border must be pixels >= 0, one int or (left, top, right, bottom); got {border}")
    left, top, right, bottom = b
    if left + right >= width or top + bottom >= height:
        raise ValueError(f"border {border} leaves nothing of a {height}x{width} image; use a narrower border")
    mask = torch.ones(batch_size, 1, height, width, dtype=torch.bool, device=device)
    mask[..., top:height - bottom, left:width - right] = False
    return mask


def _offsets(inner: tuple[int, int], outer: tuple[int, int], anchor: str) -> tuple[int, int]:
    (h, w), (H, W) = inner, outer
    cy, cx = (H - h) // 2, (W - w) // 2
    return {"center": (cy, cx), "top": (0, cx), "bottom": (H - h, cx), "left": (cy, 0), "right": (cy, W - w)}[anchor]


def extend_canvas(images: Tensor, size: int | Sequence[int], *, anchor: Anchor = "center",
                  fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Place smaller images (B, 3, h, w) on a canvas of `size` (H, W): returns the canvas (B, 3, H, W) (the new
    area filled with `fill`) and the out-painting mask (B, 1, H, W), True where the canvas is new. `anchor`
    puts the image at the center or against one side (centered along it)."""
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}; got {anchor!r}")
    H, W = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    B, C, h, w = images.shape
    if h > H or w > W:
        raise ValueError(f"images {h}x{w} are larger than the canvas {H}x{W}; resize them first")
    y, x = _offsets((h, w), (H, W), anchor)
    canvas = images.new_full((B, C, H, W), fill)
    canvas[..., y:y + h, x:x + w] = images
    mask = torch.ones(B, 1, H, W, dtype=torch.bool, device=images.device)
    mask[..., y:y + h, x:x + w] = False
    return canvas, mask


def paste_known(edited: Tensor, images: Tensor, mask: Tensor, *, paste: Paste = "hard",
                feather: int = 1) -> Tensor:
    """Put the input's kept pixels (mask False) back into `edited` (B, 3, H, W).

    "hard": kept pixels are the input's exactly. "soft": the regenerated region, grown by `feather` pixels
    and box-blurred over the same width, is the weight of the edit, so regenerated pixels stay generated and
    kept pixels within 2 * feather of the seam blend. "none": `edited` unchanged."""
    if paste not in PASTES:
        raise ValueError(f"paste must be one of {', '.join(PASTES)}; got {paste!r}")
    if paste == "none":
        return edited
    regen = as_pixel_mask(mask).to(edited.device)
    images = images.to(edited.device, edited.dtype)
    if paste == "hard" or feather <= 0:
        return torch.where(regen, edited, images)
    k = 2 * feather + 1
    grown = F.max_pool2d(regen.float(), k, stride=1, padding=feather)  # (B, 1, H, W) dilated by `feather`
    weight = F.avg_pool2d(grown, k, stride=1, padding=feather, count_include_pad=False).to(edited.dtype)
    return weight * edited + (1 - weight) * images


# ----------------------------------------------------------------------------- plan + run

@dataclass
class EditPlan:
    """Everything an edit needs before sampling: the canvas at the model's size, the pixel mask, the
    conditioning and the known tokens. `force.mask` (B, P) is True where a token is known (the complement of
    the token mask)."""

    images: Tensor  # (B, 3, H, W) in [-1, 1]
    mask: Tensor  # (B, 1, H, W) bool, True = regenerate
    cond: Cond  # B rows; unconditional rows are the conditioner's null
    force: Force


def _parts(model: Any) -> tuple[nn.Module, nn.Module, nn.Module, dict[str, Any]]:
    """(tokenizer, conditioner, generator, sampling defaults) of a Pipeline or such a triple."""
    if all(hasattr(model, a) for a in ("tokenizer", "conditioner", "generator")):
        return model.tokenizer, model.conditioner, model.generator, model.sample_defaults()
    if isinstance(model, (tuple, list)) and len(model) == 3:
        return model[0], model[1], model[2], {}
    raise ValueError("edit needs a Pipeline or a (tokenizer, conditioner, generator) triple")


def _image_size(tokenizer: nn.Module, generator: nn.Module) -> tuple[int, int]:
    """The image size whose token layout is the generator's."""
    gh, gw = generator.layout.grid
    f = tokenizer.downsample
    return gh * f, gw * f


def _cond(conditioner: nn.Module, cond: Any, batch_size: int, device: torch.device) -> Cond:
    """The edit's conditioning: none = unconditional, else one row per image or one for all."""
    if cond is None:
        return conditioner.null(batch_size, device)
    cond = conditioner.parse(cond, device)
    n = cond.batch_size
    if n == 1 and batch_size > 1:
        cond = Cond(*(None if t is None else t.expand(batch_size, *t.shape[1:]).clone()
                      for t in (cond.labels, cond.text, cond.text_mask, cond.image)))
    elif n != batch_size:
        raise ValueError(f"got {n} conditions (labels) for {batch_size} images; give one per image or one for all")
    return cond


def plan_edit(model: Any, images: Tensor, mask: Tensor | None = None, cond: Any = None, *,
              mode: Mode = "inpaint", border: int | Sequence[int] = 0, anchor: Anchor = "center",
              min_known: float = 1.0, keep_coarse: int = 3) -> EditPlan:
    """Build the canvas, pixel mask and known tokens of an edit (see `edit` for the arguments)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    tokenizer, conditioner, generator, _ = _parts(model)
    if images.dim() == 3:
        images = images.unsqueeze(0)  # (3, H, W) -> (1, 3, H, W)
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, 3, H, W) in [-1, 1]; got {tuple(images.shape)} {images.dtype}")
    device = generator.device
    images = images.to(device)
    B, H, W = images.shape[0], *_image_size(tokenizer, generator)

    if mode == "outpaint" and mask is None:
        if tuple(images.shape[-2:]) != (H, W):
            images, mask = extend_canvas(images, (H, W), anchor=anchor)
            if border:
                mask = mask | border_mask(H, W, border, batch_size=B, device=device)
        elif border:
            mask = border_mask(H, W, border, batch_size=B, device=device)
        else:
            raise ValueError(f"out-painting needs a mask, a border width, or images smaller than the model's "
                             f"{H}x{W} to extend")
    if mask is None:
        raise ValueError(f"{mode} needs a mask (B, 1, H, W) with True where to regenerate (e.g. box_mask)")
    if tuple(images.shape[-2:]) != (H, W):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but this model edits {H}x{W} images; "
                         f"resize them (argen.imageio.resize_center_crop) or extend them with mode='outpaint'")
    mask = as_pixel_mask(mask).to(device)
    if mask.shape[0] == 1 and B > 1:
        mask = mask.expand(B, -1, -1, -1)
    if tuple(mask.shape) != (B, 1, H, W):
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(images.shape)}; give one "
                         f"(1 or {B}, 1, {H}, {W}) mask")
    cond = _cond(conditioner, cond, B, device)
    if mode == "class" and bool(conditioner.is_null(cond).any()):
        raise ValueError("class-conditional editing needs a condition (a class label) for every image (got -1 / none)")

    layout = generator.layout
    regen = pixel_mask_to_token_mask(mask, layout, min_known=min_known, keep_coarse=keep_coarse)  # (B, P)
    with evaluating(tokenizer):
        param = next((p for p in tokenizer.parameters() if p.is_floating_point()), None)
        tokens = tokenizer.encode(images if param is None else images.to(param.dtype))
    return EditPlan(images=images, mask=mask, cond=cond, force=Force(tokens.to(device), ~regen))


def edit_tokens(model: Any, plan: EditPlan, **sample_kwargs: Any) -> Tensor:
    """Sample the edit's tokens (layout order) with the known ones forced; kwargs go to `argen.generate`
    (cfg, temperature, top_k, top_p, seed, rng, ...), over a Pipeline's stored defaults. With every row
    unconditional, guidance is switched off (its two halves would be the same model)."""
    _, conditioner, generator, defaults = _parts(model)
    kwargs = {**defaults, **{k: v for k, v in sample_kwargs.items() if v is not None}}
    if bool(conditioner.is_null(plan.cond).all()):
        kwargs["cfg"] = 1.0
    return generate(generator, conditioner, plan.cond, force=plan.force, **kwargs)


def edit(model: Any, images: Tensor, mask: Tensor | None = None, cond: Any = None, *, mode: Mode = "inpaint",
         border: int | Sequence[int] = 0, anchor: Anchor = "center", paste: Paste = "hard",
         feather: int | None = None, min_known: float = 1.0, keep_coarse: int = 3,
         cfg: float | None = None, temperature: float | None = None, top_k: int | None = None,
         top_p: float | None = None, seed: int | None = None, rng: torch.Generator | None = None,
         **sample_kwargs: Any) -> Tensor:
    """Edit images (B, 3, H, W) in [-1, 1] with a Pipeline (or a (tokenizer, conditioner, generator) triple);
    returns the edited images (B, 3, H, W) in [-1, 1] at the model's image size.

    mask: (B or 1, 1, H, W) / (B, H, W) bool, True = regenerate. cond: what the conditioner parses (class ids
    or names; -1 = unconditional), one per image or one for all; None (the default, as VAR's in-painting) is
    unconditional.
    mode: "inpaint" (regenerate the mask), "outpaint" (the mask, else a `border` frame, else extend images
    smaller than the model's size to it, placed by `anchor`), "class" (the mask, under a required condition).
    paste / feather: put kept pixels back after decoding (see `paste_known`; feather defaults to the width of
    one finest-grid token). min_known / keep_coarse: the pixel -> token rule (`pixel_mask_to_token_mask`).
    cfg, temperature, top_k, top_p, seed, rng and other `argen.generate` kwargs: sampling (None = the
    Pipeline's defaults).
    """
    tokenizer, _, generator, _ = _parts(model)
    plan = plan_edit(model, images, mask, cond, mode=mode, border=border, anchor=anchor, min_known=min_known,
                     keep_coarse=keep_coarse)
    tokens = edit_tokens(model, plan, cfg=cfg, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                         rng=rng, **sample_kwargs)
    with evaluating(tokenizer):
        out = tokenizer.decode(tokens).clamp(-1.0, 1.0).to(plan.images.dtype)
    if feather is None:
        feather = max(1, plan.images.shape[-1] // generator.layout.grid[1])
    return paste_known(out, plan.images, plan.mask, paste=paste, feather=feather)
