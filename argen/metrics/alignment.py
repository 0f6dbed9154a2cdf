"""Text-image alignment of generated images with their prompts, labelled with the model that measured it.

    from argen.metrics.alignment import alignment_score, clip_score
    result = alignment_score(images, prompts, model="align-minilm-emoji", out="alignment.json")
    result["metrics"]     # {"tis_align-minilm-emoji": 27.3, "retrieval_top1_align-minilm-emoji": 0.12, ...}
    result["reference"]   # the same numbers for real images with their own captions, and with shuffled ones
    result["protocol"]    # model name + weights sha256 + text encoder sha256, N, resolution, seed, pool, formula
    clip_score(images, prompts, weights="open_clip_model.safetensors", model_name="ViT-B-32",
               pretrained="laion2b_s34b_b79k")   # real CLIPScore, only from local CLIP weights

The score is the CLIPScore formula (Hessel et al. 2021, https://arxiv.org/abs/2104.08718, with torchmetrics'
w = 100): mean over images of 100 * max(cos(image embedding, prompt embedding), 0). Computed with argen's own
contrastive model (`argen.metrics.features.contrastive`, trained on emoji names offline) it is NOT CLIPScore
(no CLIP weights offline): it is named after the model, "TIS_<model>" (text-image similarity on <model>), and
comparable only with numbers from the same model (same sha256). Its scale means nothing by itself, so every
result carries reference rows on real images of the model's held-out split: with their own captions (what
good alignment scores) and with shuffled captions (what unrelated prompts score).

Retrieval accuracy is the sanity metric beside it: for each image, is its own prompt among the top-1 / top-5
most similar prompts of its pool? The N pairs are split into pools of about `pool` pairs (a seeded shuffle,
then `tensor_split`), so the chance level (1/pool, 5/pool, recorded) does not depend on N; a prompt with the
same text as the image's own counts as right.

`clip_score` computes the real CLIPScore through open_clip when CLIP weights are available as a local file;
it never downloads, and its result is labelled "CLIPScore (open_clip <model> <pretrained>)".
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..data.captions import read_caption_file as read_prompts
from ..data.captions import sidecar_captions
from ..errors import CheckpointError, ConfigError, DataError
from .evaluator import DEFAULT_SEED, DatasetSpec, to_uint8_nchw, write_result
from .features.base import DEFAULT_CACHE_DIR
from .features.contrastive import DEFAULT_NAME, ContrastiveTextImage, load_contrastive

W = 100.0  # torchmetrics' CLIPScore weight (the paper's 2.5 rescales the same quantity)
DEFAULT_POOL = 100
FORMULA = "mean over images of 100 * max(cos(image_emb, text_emb), 0) (the CLIPScore formula)"
PROMPTS_FILE = "prompts.json"  # written by `argen sample --prompt ...`: {"0000_x.png": "a prompt", ...}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- formulas

def similarity_scores(image_emb: Tensor, text_emb: Tensor, w: float = W) -> Tensor:
    """Per pair w * max(cos(image_emb[i], text_emb[i]), 0): (N, E), (N, E) -> (N,). Inputs need not be normalised."""
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(f"image and text embeddings must both be (N, E), got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return w * cos.clamp(min=0)


def retrieval_accuracy(image_emb: Tensor, text_emb: Tensor, captions: Sequence[str] | None = None,
                       pool: int | None = DEFAULT_POOL, seed: int = DEFAULT_SEED, ks: Sequence[int] = (1, 5)) -> dict:
    """Image -> text retrieval: the fraction of images whose own caption ranks in the top k of their pool.

    Pools: a seeded permutation of the N pairs split into round(N / pool) near-equal groups (all N when `pool`
    is None or >= N). With `captions`, any caption equal to the image's own counts as right (duplicates).
    Returns {"top1": .., "top5": .., "pool": mean pool size, "pools": count, "chance_top1": .., "chance_top5": ..}.
    """
    n = len(image_emb)
    if n != len(text_emb) or n < 1:
        raise ValueError(f"retrieval needs as many captions as images (>= 1), got {n} and {len(text_emb)}")
    if captions is not None and len(captions) != n:
        raise ValueError(f"{n} images but {len(captions)} captions")
    img = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    txt = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    groups = 1 if pool is None or pool >= n else max(1, round(n / pool))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    hits = {k: 0 for k in ks}
    chance = {k: 0.0 for k in ks}
    ids = None
    if captions is not None:  # caption -> id, so equal texts share an id
        table: dict[str, int] = {}
        ids = torch.tensor([table.setdefault(c, len(table)) for c in captions])
    for g in perm.tensor_split(groups):
        sim = img[g] @ txt[g].T  # (b, b)
        order = sim.argsort(dim=1, descending=True)
        own = g if ids is None else ids[g]
        right = own[order] == own[:, None]  # (b, b): is the r-th retrieved caption the image's own?
        for k in ks:
            hits[k] += int(right[:, :k].any(dim=1).sum())
            chance[k] += min(k, len(g))  # per image: min(k, b) / b
    out: dict[str, Any] = {f"top{k}": hits[k] / n for k in ks}
    out.update({"pool": n / groups, "pools": groups})
    out.update({f"chance_top{k}": chance[k] / n for k in ks})
    return out


# ----------------------------------------------------------------------------- metric names

def metric_names(model_name: str) -> dict[str, str]:
    """Result keys, all carrying the model's name: never 'clipscore' for argen's own model."""
    return {"score": f"tis_{model_name}", "score_std": f"tis_{model_name}_std",
            "top1": f"retrieval_top1_{model_name}", "top5": f"retrieval_top5_{model_name}"}


def describe(model_name: str) -> str:
    return f"text-image similarity on {model_name} (not CLIPScore)"


# ----------------------------------------------------------------------------- embedding

@torch.inference_mode()
def embed_pairs(model: ContrastiveTextImage, images: Tensor, prompts: Sequence[str],
                batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """uint8 (N, 3, H, W) images and N prompts -> (image embeddings (N, E), text embeddings (N, E)) on CPU."""
    img = torch.cat([model.embed_images(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])
    txt = model.embed_prompts(list(prompts), batch_size).cpu()
    return img, txt


def score_pairs(model: ContrastiveTextImage, images: Tensor, prompts: Sequence[str], pool: int | None = DEFAULT_POOL,
                seed: int = DEFAULT_SEED, batch_size: int = 256, shuffle: bool = False) -> tuple[dict, dict]:
    """(metrics, retrieval details) of images against prompts; `shuffle` pairs each image with another's prompt
    (a seeded cyclic derangement), the floor that unrelated prompts score."""
    names = metric_names(model.name)
    img, txt = embed_pairs(model, images, prompts, batch_size)
    if shuffle and len(txt) > 1:
        perm = torch.randperm(len(txt), generator=torch.Generator().manual_seed(seed + 1))
        shuffled = torch.empty_like(perm)
        shuffled[perm] = perm.roll(-1)  # image perm[i] gets the prompt of perm[i + 1]: nobody keeps its own
        txt, prompts = txt[shuffled], [prompts[i] for i in shuffled.tolist()]
    per_image = similarity_scores(img, txt)
    retrieval = retrieval_accuracy(img, txt, list(prompts), pool=pool, seed=seed)
    metrics = {names["score"]: per_image.mean().item(),
               names["score_std"]: per_image.std().item() if len(per_image) > 1 else None,
               names["top1"]: retrieval["top1"], names["top5"]: retrieval["top5"]}
    return metrics, retrieval


def validate(model: ContrastiveTextImage, dataset, pool: int | None = DEFAULT_POOL, seed: int = DEFAULT_SEED,
             batch_size: int = 256) -> dict:
    """Held-out numbers of a trained model on a captioned dataset (its test split): retrieval top-1 / top-5
    in pools of about `pool`, with chance levels, and TIS with the images' own and with shuffled captions."""
    from .features.contrastive import dataset_pairs

    images, captions = dataset_pairs(dataset)
    key = metric_names(model.name)["score"]
    own, ret = score_pairs(model, images, captions, pool, seed, batch_size)
    shuffled, _ = score_pairs(model, images, captions, pool, seed, batch_size, shuffle=True)
    return {"dataset": f"{getattr(dataset, 'name', 'dataset')}:{getattr(dataset, 'split', '?')}", "n": len(images),
            "pool": ret["pool"], "retrieval_top1": ret["top1"], "retrieval_top5": ret["top5"],
            "chance_top1": ret["chance_top1"], "chance_top5": ret["chance_top5"], "tis_own_captions": own[key],
            "tis_shuffled_captions": shuffled[key]}


# ----------------------------------------------------------------------------- samples and prompts

def _read_image_files(paths: list[Path]) -> Tensor:
    from ..imageio import open_rgb, pil_to_uint8

    arrays = [pil_to_uint8(open_rgb(p)) for p in paths]
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise DataError(f"sample images have different sizes {sizes[:4]}; write them at one resolution")
    return torch.from_numpy(np.stack(arrays)).movedim(-1, 1).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)


def load_samples(source: str | Path, prompts: str | Path | None = None) -> tuple[Tensor, list[str], dict]:
    """(uint8 images (N, 3, H, W), prompts, info) from a folder of images (or an .npz with a prompts file).

    Without `prompts`, a folder's own `prompts.json` (from `argen sample --prompt`), else `captions.jsonl`,
    else `name.txt` captions beside every image are used.
    """
    from ..imageio import list_images

    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".npz":
        from .evaluator import _load_npz

        if prompts is None:
            raise DataError(f"{path}: an .npz holds no prompts; pass a prompts file (one per line, in order)")
        images = to_uint8_nchw(_load_npz(path))
        texts = read_prompts(prompts)  # one per line / a list, in the array's order
        if len(texts) != len(images):
            raise DataError(f"{prompts}: {len(texts)} prompts for {len(images)} images in {path}")
        return images, texts, {"kind": "npz", "path": str(path), "prompts": str(prompts)}
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of images (with prompts.json) or an .npz with --prompts")
    paths = list_images(path)
    if not paths:
        raise DataError(f"{path}: no image files in this folder")
    files = [p.relative_to(path).as_posix() for p in paths]
    if prompts is None:
        for name in (PROMPTS_FILE, "captions.jsonl"):
            if (path / name).is_file():
                prompts = path / name
                break
    if prompts is not None:
        texts = read_prompts(prompts, files)
        where = str(prompts)
    else:
        texts, problems = sidecar_captions(paths)
        if texts is None:
            raise DataError(f"{path}: no prompts: pass a prompts file (--prompts prompts.txt | captions.jsonl), or "
                            f"put {PROMPTS_FILE} (file name -> prompt) or a name.txt beside every image there"
                            + (f" ({'; '.join(problems[:3])})" if problems else ""))
        where = "name.txt sidecars"
    images = _read_image_files(paths)
    if len(texts) != len(images):
        raise DataError(f"{where}: {len(texts)} prompts for {len(images)} images")
    return images, texts, {"kind": "folder", "path": str(path), "prompts": where}


def _reference_spec(model: ContrastiveTextImage, reference: Any) -> DatasetSpec | None:
    """The reference dataset: given, or (reference='auto') the held-out split of the model's training data."""
    if reference is None or reference is False or reference == "none":
        return None
    if isinstance(reference, DatasetSpec):
        return reference
    if reference == "auto":
        trained_on = (getattr(model, "training_info", None) or {}).get("trained_on")
        if not trained_on:
            return None
        name, _, _ = str(trained_on).rpartition(":")
        return DatasetSpec(name, "test")
    return DatasetSpec.parse(str(reference))


def _reference_pairs(spec: DatasetSpec, resolution: int | None, n: int | None, seed: int) -> tuple[Tensor, list, dict]:
    from ..data import load_dataset
    from .evaluator import evaluation_indices

    ds = load_dataset(spec.name, split=spec.split, resolution=spec.resolution or resolution)
    if not ds.captions:
        raise DataError(f"reference {spec}: the dataset has no captions; give a captioned dataset (emoji, or a "
                        "folder with name.txt captions) or reference=None")
    idx = evaluation_indices(ds, n, seed)
    images = ds.uint8_images(indices=idx).movedim(-1, 1).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)
    captions = [ds.captions[int(i)] for i in idx]
    return images, captions, {"dataset": ds.name, "split": ds.split, "resolution": ds.resolution, "n": len(idx),
                              "of": len(ds), "subset_seed": seed}


# ----------------------------------------------------------------------------- the score

def alignment_score(images: Any, prompts: Sequence[str] | None = None,
                    model: str | Path | ContrastiveTextImage = DEFAULT_NAME, *, reference: Any = "auto",
                    n: int | None = None, n_ref: int | None = None, seed: int = DEFAULT_SEED,
                    pool: int | None = DEFAULT_POOL, batch_size: int = 256, device: str | torch.device = "cpu",
                    cache_dir: str | Path = DEFAULT_CACHE_DIR, clip_weights: str | Path | None = None,
                    clip_model: str = "ViT-B-32", clip_pretrained: str | None = None,
                    out: str | Path | None = None) -> dict:
    """TIS_<model> and retrieval accuracy of `images` against their `prompts`, with reference rows.

    `images`: uint8 (N, 3, H, W) / (N, H, W, 3) or float (N, 3, H, W) in [-1, 1] with N `prompts`, or a folder
    of samples (its prompts from `prompts` if that is a file path, else from the folder: see `load_samples`).
    `model`: a trained contrastive model, its name (found under `<cache_dir>/feature_nets/`) or directory.
    `reference`: "auto" (the held-out split of the model's training data, e.g. emoji:test), a dataset spec, or
    None; its images are read at the samples' resolution and scored with their own and with shuffled
    captions. `n` / `n_ref`: seeded subsets. With `clip_weights` (a local open_clip checkpoint), the same images
    are also scored with real CLIP (`clip_score`), under result["clipscore"]. Returns {"metrics", "reference",
    "protocol", "summary"} (summary: a list of lines).
    """
    net = model if isinstance(model, ContrastiveTextImage) else load_contrastive(model, cache_dir, device)
    net = net.eval()
    if isinstance(images, (str, Path)):
        prompt_file = prompts if isinstance(prompts, (str, Path)) else None
        x, texts, info = load_samples(images, prompt_file)
        if prompts is not None and prompt_file is None:
            texts = list(prompts)
    else:
        if prompts is None or isinstance(prompts, (str, Path)):
            raise ValueError("give one prompt per image (a list of strings)")
        x, texts = to_uint8_nchw(torch.as_tensor(images)), list(prompts)
        info = {"kind": "tensor"}
    if len(texts) != len(x):
        raise DataError(f"{len(x)} images but {len(texts)} prompts; give one prompt per image")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("prompts must be strings")
    total = len(x)
    if n is not None:
        if n > total:
            raise DataError(f"asked for {n} images but there are only {total}; pass n={total} or fewer")
        if n < total:
            idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
            x, texts = x[idx], [texts[i] for i in idx.tolist()]
    info.update({"n": len(x), "of": total, "resolution": list(x.shape[-2:]) if x.shape[-1] != x.shape[-2]
                 else int(x.shape[-1])})
    clip = None
    if clip_weights is not None:  # first: a missing open_clip / file fails before any work
        clip = clip_score(x, texts, clip_weights, clip_model, clip_pretrained, device=device)
    metrics, retrieval = score_pairs(net, x, texts, pool, seed, batch_size)
    rows: dict[str, Any] = {}
    spec = _reference_spec(net, reference)
    ref_info = None
    if spec is not None:
        res = int(x.shape[-1]) if x.shape[-1] == x.shape[-2] else None
        rx, rcap, ref_info = _reference_pairs(spec, res, n_ref, seed)
        real, real_ret = score_pairs(net, rx, rcap, pool, seed, batch_size)
        floor, floor_ret = score_pairs(net, rx, rcap, pool, seed, batch_size, shuffle=True)
        rows = {"real_captions": {**real, "retrieval": real_ret},
                "shuffled_captions": {**floor, "retrieval": floor_ret}}
    names = metric_names(net.name)
    protocol = {
        **net.protocol(),
        "alignment_model_training": {k: v for k, v in net.training_info.items()
                                     if k in ("trained_on", "epochs", "seed", "threads", "validation")} or None,
        "metric_label": net.label, "metric_description": describe(net.name),
        "metric_names": names, "formula": FORMULA,
        "retrieval": {"direction": "image -> text", "pool": pool, "pools": retrieval["pools"],
                      "mean_pool_size": retrieval["pool"], "chance_top1": retrieval["chance_top1"],
                      "chance_top5": retrieval["chance_top5"],
                      "rule": "seeded permutation of the pairs split into round(N / pool) pools; a caption equal "
                              "to the image's own counts as right"},
        "n": len(x), "samples": info, "reference": ref_info,
        "reference_rows": ("real_captions: the reference images with their own captions; shuffled_captions: each "
                           "with another image's caption (seeded derangement)") if ref_info else None,
        "seed": seed, "uint8_conversion": "round((x + 1) * 127.5), clamp [0, 255] (argen.imageio.to_uint8)",
        "argen_version": __version__, "torch_version": torch.__version__, "device": str(device),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result = {"metrics": metrics, "reference": rows, "protocol": protocol}
    if clip is not None:
        result["clipscore"] = clip
    result["summary"] = summary_lines(result)
    if out is not None:
        write_result(result, out)
    return result


def _line(label: str, metrics: dict, names: dict, what: str) -> str:
    return (f"{label} {metrics[names['score']]:.2f} | retrieval top-1 {metrics[names['top1']]:.3f} top-5 "
            f"{metrics[names['top5']]:.3f} | {what}")


def summary_lines(result: dict) -> list[str]:
    """The samples' line, then one per reference row, e.g.
    'TIS_align-minilm-emoji 27.31 | retrieval top-1 0.120 top-5 0.300 | samples, N 64 (text-image similarity ...)'."""
    p, m = result["protocol"], result["metrics"]
    names, label = p["metric_names"], p["metric_label"]
    r = p["retrieval"]
    what = (f"samples, N {p['n']}, seed {p['seed']}; {p['metric_description']}; pools of {r['mean_pool_size']:.0f} "
            f"(chance {r['chance_top1']:.3f} / {r['chance_top5']:.3f})")
    lines = [_line(label, m, names, what)]
    ref = p.get("reference")
    for key, what in (("real_captions", "own captions"), ("shuffled_captions", "shuffled captions")):
        if key in result.get("reference", {}):
            lines.append(_line(label, result["reference"][key], names,
                               f"real {ref['dataset']}:{ref['split']} with {what}, N {ref['n']}"))
    if "clipscore" in result:
        lines.append(result["clipscore"]["summary"])
    return lines


# ----------------------------------------------------------------------------- CLIPScore (real CLIP weights only)

def load_open_clip(weights: str | Path | None, model_name: str = "ViT-B-32", device: str | torch.device = "cpu"):
    """(model, tokenizer) of open_clip `model_name` with the weights of a LOCAL state-dict file; never downloads.

    `weights` is an open_clip checkpoint: `open_clip_model.safetensors` / `open_clip_pytorch_model.bin` as the
    hub ships them, or a training checkpoint with a "state_dict". Pickled files are read with
    `torch.load(weights_only=True)`.
    """
    if weights is None:
        raise ConfigError("CLIPScore needs real CLIP weights as a local file: pass weights=PATH (CLI --clip-weights) "
                          "to an open_clip checkpoint, e.g. open_clip_model.safetensors of "
                          "laion/CLIP-ViT-B-32-laion2B-s34B-b79K, downloaded where there is network access")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such CLIP weights file; pass the local path of an open_clip checkpoint "
                              "(.safetensors / .bin / .pt): argen never downloads CLIP weights")
    try:
        import open_clip
    except ImportError:
        raise ConfigError("CLIPScore needs open_clip: pip install open_clip_torch (the weights stay the local file "
                          f"{path})") from None
    try:
        model = open_clip.create_model(model_name, pretrained=None)  # architecture only: no download
    except RuntimeError as e:
        raise ConfigError(f"open_clip has no model {model_name!r} ({e}); see open_clip.list_models()") from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: not a plain state-dict checkpoint ({str(e).splitlines()[0]}); OpenAI's "
                                  "TorchScript files are not read: use open_clip's safetensors/bin release") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    from ..saving import load_state_dict_checked

    load_state_dict_checked(model, state, source=str(path))
    return model.to(device).eval(), open_clip.get_tokenizer(model_name)


def _clip_preprocess(images: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, 3, H, W) -> CLIP input: shorter side bicubic (antialiased) to `size`, centre crop, normalise."""
    x = images.float() / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                                            align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.inference_mode()
def clip_score(images: Any, prompts: Sequence[str], weights: str | Path | None = None, model_name: str = "ViT-B-32",
               pretrained: str | None = None, *, device: str | torch.device = "cpu", batch_size: int = 64,
               model: Any = None, tokenizer: Any = None) -> dict:
    """CLIPScore (100 * max(cos, 0), mean over images) with open_clip and local CLIP `weights`.

    `pretrained` names the weights in the label ("laion2b_s34b_b79k"); it defaults to the file name. `model` /
    `tokenizer` may be given already loaded (anything with open_clip's `encode_image` / `encode_text`, and
    `visual.image_size`). Returns {"metrics": {"clipscore": ..}, "label": "CLIPScore (open_clip <model>
    <pretrained>)", "protocol": {...}}.
    """
    if model is None:
        model, tokenizer = load_open_clip(weights, model_name, device)
    if tokenizer is None:
        raise ValueError("a given CLIP model needs its tokenizer (open_clip.get_tokenizer(model_name))")
    tag = pretrained or (Path(weights).name if weights is not None else "given model")
    x = to_uint8_nchw(torch.as_tensor(images))
    prompts = list(prompts)
    if len(prompts) != len(x):
        raise DataError(f"{len(x)} images but {len(prompts)} prompts; give one prompt per image")
    visual = getattr(model, "visual", None)
    size = getattr(visual, "image_size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(visual, "image_std", None) or OPENAI_STD
    dev = next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")
    scores = []
    for i in range(0, len(x), batch_size):
        img = model.encode_image(_clip_preprocess(x[i:i + batch_size], size, mean, std).to(dev))
        txt = model.encode_text(tokenizer(prompts[i:i + batch_size]).to(dev))
        scores.append(similarity_scores(img.float().cpu(), txt.float().cpu()))
    per_image = torch.cat(scores)
    label = f"CLIPScore (open_clip {model_name} {tag})"
    protocol = {"metric_label": label, "formula": FORMULA, "clip_model": model_name, "clip_pretrained": tag,
                "clip_weights": str(weights) if weights is not None else None, "n": len(x),
                "resolution": int(x.shape[-1]), "preprocess": f"bicubic antialiased shorter side to {size}, centre "
                                                              f"crop, normalise mean {tuple(mean)} std {tuple(std)}"}
    if weights is not None and Path(weights).is_file():
        from ..saving import file_sha256

        protocol["clip_weights_sha256"] = file_sha256(weights)
    return {"metrics": {"clipscore": per_image.mean().item(),
                        "clipscore_std": per_image.std().item() if len(per_image) > 1 else None},
            "label": label, "protocol": protocol,
            "summary": f"{label} {per_image.mean().item():.2f} | N {len(x)}"}
