"""Quarantine: move the image files a scan rejected out of a dataset folder, keeping a record of why.

Skipping a bad file costs a check on every scan and a line in every report; moving it aside once
(`argen data FOLDER --check decode --quarantine DIR`) makes later scans clean and keeps the file for
inspection. It is an explicit step before training, never done while a dataset reads its files:
a dataset whose files move under it changes length, and a resumed run could no longer read exactly
the samples an uninterrupted one would. Each file keeps its path relative to the dataset folder
under `dest`, and `dest/quarantine.jsonl` gets one JSON line per file (from, to, reason).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from ..errors import DataError

RECORD = "quarantine.jsonl"


def _inside_unhidden(dest: Path, root: Path) -> bool:
    """Whether `dest` lies under `root` in a folder a scan would read (no hidden component)."""
    try:
        rel = dest.relative_to(root)
    except ValueError:
        return False
    return not any(part.startswith(".") for part in rel.parts)


def quarantine(files: Iterable[tuple[str, str] | str | os.PathLike], dest: str | os.PathLike,
               root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Move `files` ((path, reason) pairs as in `ds.skipped`, or paths) from under `root` into `dest`.

    Returns the (from, to) pairs moved; a file already gone is passed over. `dest` must not be a
    folder the next scan of `root` reads (outside it, or hidden like root/.quarantine), else the
    files would come straight back.
    """
    root, dest = Path(root).expanduser().resolve(), Path(dest).expanduser().resolve()
    if _inside_unhidden(dest, root):
        raise DataError(f"quarantine folder {dest} is inside {root}, so the next scan would read the files again; "
                        f"pick a folder outside it or a hidden one ({root / '.quarantine'})")
    moved: list[tuple[Path, Path]] = []
    lines = []
    for item in files:
        path, reason = (item if isinstance(item, tuple) else (item, ""))
        src = Path(path).expanduser().resolve()
        if not src.is_file():
            continue
        rel = src.relative_to(root) if src.is_relative_to(root) else Path(src.name)
        target = dest / rel
        k = 1
        while target.exists():  # never overwrite an earlier quarantined file of the same name
            target = dest / rel.with_name(f"{rel.stem}.{k}{rel.suffix}")
            k += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(str(src), str(target))
        except OSError as e:
            raise DataError(f"cannot move {src} to {target} ({e.strerror or e}); check the permissions of both "
                            "folders") from None
        moved.append((src, target))
        lines.append(json.dumps({"from": str(src), "to": str(target), "reason": reason}))
    if lines:
        with open(dest / RECORD, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return moved
