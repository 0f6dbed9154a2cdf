"""`argen edit`: zero-shot in-painting, out-painting and class- or text-conditional editing with a saved pipeline.

    argen edit runs/ar --image in.png --mask mask.png --seed 0 --out edited.png        # mask: white = regenerate
    argen edit runs/ar --image in.png --box 8,8,24,24 --label sneaker --out edited.png  # class-conditional edit
    argen edit runs/var --image in.png --outpaint 4 --out edited.png                   # regenerate a 4 px frame
    argen edit runs/var --image in.png --outpaint 8 --extend --anchor left --out wide.png
    argen edit runs/ar --image in.png --box 8,8,24,24 --num 8 --out variations.png      # 8 edits in one grid
    argen edit runs/t2i --image in.png --box 8,8,24,24 --prompt "red heart" --out edited.png  # text-guided

The image (and mask) are resized and center-cropped to the pipeline's image size; --box is in the input
image's pixels. See argen/sampling/editing.py for the pixel -> token rule and the paste options.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_device_argument, add_sampling_arguments, add_threads_argument, apply_threads, positive_int,
                      resolve_device, sampling_overrides, say)

COMMAND = "edit"
HELP = "in-paint / out-paint / class-edit an image with a saved pipeline (known tokens are kept every step)"


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"--box takes x0,y0,x1,y1 in pixels (x1, y1 exclusive), got {text!r}")
    return vals  # type: ignore[return-value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved pipeline directory, or the --out directory of `argen train`")
    p.add_argument("--image", required=True, help="the image to edit (any size; resized to the pipeline's)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="mask image of the same size as --image: white = regenerate, black = keep")
    where.add_argument("--box", type=_box, help="regenerate the box x0,y0,x1,y1 (input-image pixels)")
    where.add_argument("--outpaint", type=int, metavar="PIXELS",
                       help="regenerate a frame this wide (pixels of the output image)")
    p.add_argument("--extend", action="store_true",
                   help="with --outpaint: shrink the image to leave the frame and generate the frame around it")
    p.add_argument("--anchor", default="center", choices=["center", "top", "bottom", "left", "right"],
                   help="with --extend: where the shrunk image sits (the frame on the other sides is doubled)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--label", default=None,
                      help="class id or name to regenerate the region as (default: unconditional, -1)")
    what.add_argument("--prompt", default=None,
                      help="text-to-image pipelines: the caption to regenerate the region as (default: unconditional)")
    p.add_argument("--num", type=positive_int, default=1, help="number of edits (N > 1 writes one grid)")
    add_sampling_arguments(p, seed_help="random seed (same seed -> same edit on the same device)",
                           cfg_help="guidance scale with --label / --prompt, 1 = off (default: pipeline's)")
    p.add_argument("--paste", default="hard", choices=["hard", "soft", "none"],
                   help="put the kept pixels back after decoding: exactly, feathered at the seam, or not")
    p.add_argument("--feather", type=int, default=None, help="--paste soft: seam width in pixels (default: one token)")
    p.add_argument("--min-known", type=float, default=1.0,
                   help="a token is kept if at least this fraction of its pixels is kept (1 = all of them)")
    p.add_argument("--keep-coarse", type=int, default=3,
                   help="multi-scale pipelines: scales with at most this many tokens are always kept (VAR: 3)")
    p.add_argument("--out", required=True, help="output PNG path")
    add_device_argument(p)
    add_threads_argument(p)


def _load_inputs(args: argparse.Namespace, size: int):
    """(image (1, 3, S, S), pixel mask (1, 1, S, S) or None) resized/cropped to the pipeline's size S."""
    import numpy as np
    import torch
    from PIL import Image

    from ..errors import DataError
    from ..imageio import from_uint8, open_rgb, pil_to_uint8, resize_center_crop

    img = open_rgb(args.image)
    inner = size - 2 * args.outpaint if (args.outpaint is not None and args.extend) else size
    if inner < 1:
        raise ValueError(f"--outpaint {args.outpaint} --extend leaves no room for the image in {size}x{size}")
    image = from_uint8(np.array(pil_to_uint8(resize_center_crop(img, inner))))[None]  # (1, 3, inner, inner)
    if args.mask is None and args.box is None:
        return image, None
    if args.mask is not None:
        m = open_rgb(args.mask)
        if m.size != img.size:
            raise DataError(f"{args.mask}: mask is {m.size[0]}x{m.size[1]} but the image is {img.size[0]}x{img.size[1]}; "
                            "give a mask of the image's size (white = regenerate)")
        m = m.convert("L")
    else:
        from ..sampling.editing import box_mask

        box = box_mask(img.size[1], img.size[0], args.box)[0, 0].numpy()  # (H, W) bool at the input's size
        m = Image.fromarray(box.astype(np.uint8) * 255, mode="L")
    arr = np.asarray(resize_center_crop(m, size), dtype=np.uint8)  # (S, S), the image's geometry
    mask = torch.from_numpy(arr >= 128)[None, None]  # (1, 1, S, S) True = regenerate
    if not bool(mask.any()):
        raise DataError("the mask selects nothing to regenerate (white = regenerate)")
    return image, mask


def run(args: argparse.Namespace) -> int:
    from ..imageio import save_grid, save_image
    from ..pipeline import Pipeline
    from ..sampling.editing import edit
    from ..train.recipes import find_pipeline

    if args.extend and args.outpaint is None:
        raise ValueError("--extend goes with --outpaint PIXELS (the width of the new frame)")
    apply_threads(args.threads)
    device = resolve_device(args.device)
    pipe = Pipeline.load(find_pipeline(Path(args.path)), map_location=device)
    gh, gw = pipe.generator.layout.grid
    if gh != gw:
        raise ValueError(f"argen edit handles square pipelines; this one's token grid is {gh}x{gw} "
                         "(use argen.sampling.editing.edit from Python)")
    size = gh * pipe.tokenizer.downsample
    image, mask = _load_inputs(args, size)
    kind = pipe.conditioner.describe()["kind"]
    if args.prompt is not None and kind != "text":
        raise ValueError(f"this pipeline is conditioned on {kind} labels, not text: use --label")
    if args.label is not None and kind == "text":
        raise ValueError("this pipeline is text-conditional: use --prompt TEXT")
    given = args.prompt if args.prompt is not None else args.label
    cond = None if given is None else pipe.conditioner.parse([given])
    conditioned = cond is not None and not bool(pipe.conditioner.is_null(cond).any())
    mode = "outpaint" if args.outpaint is not None else ("class" if conditioned else "inpaint")
    edited = edit(pipe, image.expand(args.num, -1, -1, -1), mask, cond, mode=mode,
                  border=args.outpaint if args.outpaint is not None and not args.extend else 0, anchor=args.anchor, paste=args.paste,
                  feather=args.feather, min_known=args.min_known, keep_coarse=args.keep_coarse, seed=args.seed,
                  pack_weights=args.pack_weights, **sampling_overrides(args)).cpu()
    out = save_image(edited, args.out) if args.num == 1 else save_grid(edited, args.out, nrow=min(args.num, 8))
    shown = "text" if mode == "class" and kind == "text" else mode  # "class" mode = under a required condition
    say(f"{shown}: {args.num} edit{'s' if args.num > 1 else ''} of {args.image} ({size}x{size}) written to {out}")
    return 0
