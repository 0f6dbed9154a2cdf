"""Captions for image files: sidecar files beside the images and caption files that name them.

An image folder is captioned by (first found wins)
  * `captions.jsonl` at its root: one JSON object per line, {"file": "sub/name.png", "caption": "..."}
    ("file_name" / "image" and "text" / "prompt" are accepted too), file names relative to the root;
  * a `name.txt` beside every `name.png`.
A caption that is missing, empty (an empty caption means *unconditional* to a text conditioner) or not
UTF-8 is a problem reported with its path; a dataset with problems has no captions (`captions is None`)
and keeps the problems for the error a text-to-image recipe raises. The same readers load the prompts of
generated samples (`argen eval --alignment`: prompts.txt, prompts.json, captions.jsonl).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import DataError

CAPTIONS_FILE = "captions.jsonl"


def read_caption_file(path: str | Path, files: Sequence[str] | None = None) -> list[str]:
    """Captions (or prompts) from a file, in the order of `files` (names relative to the file's folder) where
    the file names them.

    * `.txt`: one prompt per line, in the samples' order (sorted file names);
    * `.json`: {"file name": "prompt", ...} (what `argen sample --prompt` writes as prompts.json) or a list;
    * `.jsonl`: one object per line with "caption" / "prompt" / "text", and "file" / "file_name" / "image"
      to match images by name (without one, lines follow the samples' order).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such prompts file (give prompts.txt, prompts.json or captions.jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    by_name: dict[str, str] | None = None
    ordered: list[str] | None = None
    if path.suffix == ".txt":
        ordered = text.splitlines()
        while ordered and not ordered[-1].strip():
            ordered.pop()  # trailing blank lines
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            by_name = {str(k): v for k, v in data.items()}
        elif isinstance(data, list) and all(isinstance(v, str) for v in data):
            ordered = data
        else:
            raise DataError(f"{path}: expected {{\"file name\": \"prompt\", ...}} or a list of prompts")
    elif path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            prompt = next((row[k] for k in ("caption", "prompt", "text") if isinstance(row, dict) and k in row), None)
            if not isinstance(prompt, str):
                raise DataError(f"{path}:{i}: each line needs a \"caption\" (or \"prompt\" / \"text\") string")
            name = next((row[k] for k in ("file", "file_name", "image") if k in row), None)
            rows.append((name, prompt))
        if rows and all(name is not None for name, _ in rows):
            by_name = {str(name): prompt for name, prompt in rows}
        else:
            ordered = [prompt for _, prompt in rows]
    else:
        raise DataError(f"{path}: unknown prompts format {path.suffix!r}; use .txt (one per line), .json or .jsonl")
    if by_name is None:
        if files is not None and len(ordered) != len(files):
            raise DataError(f"{path}: {len(ordered)} prompts for {len(files)} images; give one prompt per image "
                            "(in sorted file-name order) or name the files (prompts.json / captions.jsonl)")
        return list(ordered)
    if files is None:
        raise DataError(f"{path} maps file names to prompts; the samples must then be a folder of images")
    out, missing = [], []
    for f in files:
        prompt = by_name.get(f, by_name.get(Path(f).name))
        if prompt is None:
            missing.append(f)
        out.append(prompt)
    if missing:
        raise DataError(f"{path}: no prompt for {len(missing)} of {len(files)} images (e.g. {', '.join(missing[:3])})")
    return out


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8").strip(), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"


def sidecar_captions(paths: Sequence[Path]) -> tuple[list[str] | None, list[str]]:
    """(captions, problems) from `name.txt` beside each image: (None, []) when no image has one; (None,
    problems) when some are missing, empty or unreadable; (captions, []) when every image has a good one."""
    sidecars = [Path(p).with_suffix(".txt") for p in paths]
    present = [s.is_file() for s in sidecars]
    if not any(present):
        return None, []
    captions, problems = [], []
    for s, ok in zip(sidecars, present):
        if not ok:
            problems.append(f"{s}: missing (every image needs a caption)")
            continue
        text, why = _read_text(s)
        if why or not text:
            problems.append(f"{s}: {why or 'empty caption'}")
        captions.append(text or "")
    return (None, problems) if problems else (captions, [])


def folder_captions(roots: Sequence[Path], paths: Sequence[Path]) -> tuple[list[str] | None, list[str]]:
    """(captions, problems) of images under the first of `roots` (e.g. root/train, then root) that holds a
    captions.jsonl, names relative to it; else from name.txt sidecars."""
    base = next((Path(r) for r in roots if (Path(r) / CAPTIONS_FILE).is_file()), None)
    if base is None:
        return sidecar_captions(paths)
    file = base / CAPTIONS_FILE
    names = [Path(p).relative_to(base).as_posix() for p in paths]
    try:
        captions = read_caption_file(file, names)
    except DataError as e:
        return None, [str(e)]
    empty = [f"{file}: empty caption for {n}" for n, c in zip(names, captions) if not c.strip()]
    return (None, empty) if empty else ([c.strip() for c in captions], [])
