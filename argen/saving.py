"""Saved models: a directory with `config.json` (kind, version, config) + `model.safetensors`.

`load(dir)` needs nothing else. Every file is written atomically (temp file + rename) so a crash never
leaves a half-written model, and weights are loaded with a strict key/shape report. Loading is strict about
the rest too: config.json must list every field (`from_dict(require_all=True)`), the weights must be the
bytes that were saved (a sha256 recorded in config.json) and finite; `verify=False` skips the two checks of
the weights for speed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import __version__
from .config import CONFIG_VERSION, Config, MissingFieldsError, from_dict, to_dict
from .errors import CheckpointError, ConfigError, DiskFullError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it over `path`, on error delete it.

    The temp file is created as `open(path, "w")` would create a new `path`: mode 0o666 less the process
    umask (0644 under umask 022), so another account (a web server) can read what argen writes where the
    umask allows it; `mkstemp`'s fixed 0600 did not. A rewritten file gets that mode too, like a new one.
    The temp name `.NAME.PID-RANDOM.tmp` records the writer's pid, so `remove_stale_temps` can tell the
    leftovers of a killed writer from a live one's. A write or rename that fails because the filesystem is
    full (ENOSPC, EDQUOT: also from torch.save and safetensors, which wrap the OSError) raises a one-line
    `DiskFullError` naming the file and the free space; `path` is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, mode = _create_temp(path)
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            # the writer replaced our file with its own (safetensors >= 0.8 renames a 0600 temp file over it)
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except Exception as e:
        err = disk_full_error(e, path, f"nothing was replaced ({path.name} is as it was)")
        if err is None:
            raise
        raise err from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone already after a successful rename


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new empty temp file beside `path` and its permission bits: 0o666 less the umask, applied by the
    kernel as for any new file (reading the umask itself would mean setting it, process-wide)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:  # O_EXCL: the name is ours
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # Through a Python file: torch.save to a path writes in C++ and reports a full disk as a bare
        # "unexpected pos" RuntimeError; through `f` the OSError (ENOSPC) stays in the exception's context.
        torch.save(obj, f)


# Temp files of `atomic_path` (".NAME.PID-RANDOM.tmp"), and of earlier argen (mkstemp: ".NAME.XXXXXXXX.tmp").
_TEMP_NAME = re.compile(r"^\..+\.(?:(?P<pid>\d+)-[0-9a-f]{8}|[a-z0-9_]{8})\.tmp$")


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files that writers killed mid-write (kill -9, power loss) left in `directory` (not
    recursive); returns them. Only `atomic_path` temps whose writing process is gone are removed: complete
    files, and temps of a live writer on this machine, are never touched."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in sorted(directory.iterdir()):
        m = _TEMP_NAME.match(p.name)
        if m is None or not p.is_file() or (m.group("pid") and _alive(int(m.group("pid")))):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        except PermissionError:
            continue  # Windows: still open by its writer
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # possibly a write in progress in another thread of this process
    if os.name != "posix":
        return False  # no signal 0 (os.kill would terminate it); an open file cannot be deleted there anyway
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# ----------------------------------------------------------------------------- full disks

_DISK_FULL = {errno.ENOSPC: "the disk is full"}
if hasattr(errno, "EDQUOT"):
    _DISK_FULL[errno.EDQUOT] = "the disk quota is used up"
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")  # how Rust (safetensors) prints an I/O error's errno


def disk_full_error(exc: BaseException, path: Path, outcome: str) -> DiskFullError | None:
    """A `DiskFullError` for writing `path` if `exc` (or an exception it wraps) is ENOSPC / EDQUOT, else None.
    `outcome` says what became of the file ("nothing was replaced ...")."""
    code = _disk_full_errno(exc)
    if code is None:
        return None
    return DiskFullError(f"cannot write {path}: {_DISK_FULL[code]} ({_free_space(path)} free on that filesystem); "
                         f"{outcome}. Free some space or write elsewhere, then retry", errno=code)


def _disk_full_errno(exc: BaseException) -> int | None:
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return e.errno
        m = _OS_ERROR_CODE.search(str(e)) if not isinstance(e, OSError) else None
        if m and int(m.group(1)) in _DISK_FULL:
            return int(m.group(1))
        todo += [e.__cause__, e.__context__]
    return None


def _free_space(path: Path) -> str:
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError:
        return "unknown space"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return ""  # unreachable


# ----------------------------------------------------------------------------- integrity

def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks into one reused buffer (memory stays at `chunk_size`)."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(chunk_size))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict with a NaN or inf in any floating tensor: such weights give NaN images (or NaN
    losses the moment training resumes), far from the cause; the error names the tensor."""
    for key, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not _finite(t):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise CheckpointError(f"{source}: tensor '{key}' holds {nan} NaN and {inf} inf of {t.numel()} values; "
                                  "the weights are damaged or come from a diverged run. Use an earlier checkpoint "
                                  "(argen.load(..., verify=False) loads them anyway)")


def _finite(t: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass with no temporary: min and max propagate NaN and show
    +-inf (10x faster than `isfinite(t).all()`, which writes a bool per value)."""
    if t.numel() == 0:
        return True
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    try:
        lo, hi = torch.aminmax(t)
    except (RuntimeError, NotImplementedError):  # a dtype without the kernel (float8): widen
        lo, hi = torch.aminmax(t.float())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


# ----------------------------------------------------------------------------- strict loading

@dataclass
class KeyReport:
    """Result of matching a state dict against a model: nothing is ever silently ignored."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8, name: Callable[[str], str] = str, model: str = "model") -> str:
        """One line naming the missing, unexpected and mis-shaped keys (`name` maps a key for display,
        e.g. to its official name; `model` names the other side of the comparison)."""
        def listed(items: list, fmt: Callable, sep: str = ", ") -> str:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            return sep.join(fmt(k) for k in items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file: {listed(self.missing, str)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected in the file: {listed(self.unexpected, name)}")
        if self.mismatched:
            shown = listed(self.mismatched, lambda m: f"{name(m[0])} file {tuple(m[1])} vs {model} {tuple(m[2])}", "; ")
            parts.append(f"{len(self.mismatched)} shape mismatches: {shown}")
        return "; ".join(parts) if parts else "all keys matched"


def _storage_id(t: torch.Tensor) -> int:
    """Identifies the memory behind `t`; meta tensors (data_ptr 0) by their storage object."""
    return t.untyped_storage()._cdata if t.is_meta else t.data_ptr()


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> KeyReport:
    """Compare `state` with the model's persistent state dict, treating tied (aliased) tensors as one."""
    own = model.state_dict()
    report = KeyReport()
    # Keys whose tensor aliases another key's storage (tied weights) may be absent from a deduplicated file.
    ptr_to_keys: dict[int, list[str]] = {}
    for k, v in own.items():
        ptr_to_keys.setdefault(_storage_id(v), []).append(k)
    for k, v in own.items():
        if k not in state:
            aliases = ptr_to_keys.get(_storage_id(v), [])
            if not (v.numel() > 0 and any(a in state for a in aliases if a != k)):
                report.missing.append(k)
        elif tuple(state[k].shape) != tuple(v.shape):
            report.mismatched.append((k, tuple(state[k].shape), tuple(v.shape)))
    report.unexpected = [k for k in state if k not in own]
    return report


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict",
                            assign: bool = False) -> KeyReport:
    """Load `state` into `model` only if every key and shape matches; otherwise raise with the report.

    `assign=True` makes the model's tensors *be* the given ones (cast to the model's dtypes) instead of copying
    into them: what a model built on the meta device needs (see `deferred_init`)."""
    report = check_state_dict(model, state)
    if not report.ok:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: {report.summary()}")
    own = model.state_dict()
    full = dict(state)
    for k in own:  # fill aliased keys from their twin so load_state_dict(strict=True) passes
        if k not in full:
            twin = next(a for a in own if a in state and _storage_id(own[a]) == _storage_id(own[k]))
            full[k] = state[twin]
    if assign:  # copy_ would cast to the model's dtype; assignment must do it explicitly
        full = {k: v.to(own[k].dtype) for k, v in full.items()}
    model.load_state_dict(full, strict=True, assign=assign)
    return report


class _EmptyOnMeta(TorchFunctionMode):
    """Puts every default-device `torch.empty` on the meta device. PyTorch layers allocate their parameters
    with `torch.empty` and then initialise them at random; on meta both cost nothing. Tensors from other
    factories (`zeros`, `arange`, `tensor`: the constant buffers a module computes) stay real."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "meta"}
        elif getattr(func, "__name__", "") in _INIT_OPS:
            target = args[0] if args else kwargs.get("tensor")  # nn.init passes its tensor by keyword
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target  # nothing to fill; meta kernels of some import torch's compiler stack (seconds)
        return func(*args, **kwargs)


# In-place initialisers (torch.nn.init and Tensor methods) that keep the tensor's shape: no-ops on meta.
_INIT_OPS = {"uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "orthogonal_", "erfinv_", "random_", "bernoulli_", "exponential_", "zeros_", "ones_",
             "constant_", "fill_", "zero_", "copy_", "mul_", "div_", "add_", "sub_", "clamp_"}


def deferred_init(build: Callable[[], nn.Module]) -> nn.Module | None:
    """`build()` with parameters on the meta device (no memory, no random init), for loading weights with
    `assign=True`. Returns None when the model cannot be built that way (a module computed something from
    an uninitialised tensor, or ties parameters), so the caller builds it normally instead."""
    try:
        with _EmptyOnMeta():
            model = build()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    if _tied_across_modules(model):
        return None  # tied parameters: assignment would untie them
    return model


def _leftover_meta(model: nn.Module) -> list[str]:
    """Names of tensors still on the meta device (not in the state dict, e.g. a non-persistent buffer)."""
    return [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]


# ----------------------------------------------------------------------------- save / load
#
# A saved model is a directory with config.json ({"format", "kind", "version", "argen_version", "config"})
# and model.safetensors. A model with `components` (a Pipeline) is saved as one sub-directory per component,
# each such a directory itself, plus a config.json holding its own fields and the component names; a
# component whose weights partly belong to another (the next-scale generator's bound quantizer) records them
# as "shared" and leaves them out.


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: exact aliases (tied weights) kept once, other views of a shared storage
    copied, everything contiguous. The loader accepts the dropped aliases (check_state_dict)."""
    seen: dict[tuple, str] = {}
    storages: dict[int, int] = {}
    for v in state.values():
        storages[_storage_id(v)] = storages.get(_storage_id(v), 0) + 1
    out = {}
    for k, v in state.items():
        sig = (_storage_id(v), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if sig in seen:
            continue
        seen[sig] = k
        v = v.detach()
        out[k] = v.clone().contiguous() if storages[_storage_id(v)] > 1 else v.contiguous()
    return out


def _meta(model: nn.Module, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"format": "argen", "kind": type(model.config).kind, "version": CONFIG_VERSION,
            "argen_version": __version__, **fields, "config": config}


def _save_one(model: nn.Module, directory: Path, extra: dict[str, Any] | None = None,
              shared: tuple[str, ...] = (), shared_with: str = "") -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(shared)} if shared else model.state_dict()
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(_dedupe(state), str(tmp), metadata={"format": "pt", "kind": type(model.config).kind})
        digest = file_sha256(tmp)  # of the bytes on disk, before they take the real name
    # `load` checks the digest: weights changed since (a damaged disk or copy, a file from another save) are refused.
    meta = _meta(model, to_dict(model.config), weights_sha256=digest)
    if shared:
        meta["shared"] = {"prefixes": list(shared), "with": shared_with}
    if extra:
        meta["extra"] = extra
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")


def save(model: nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (which must have `.config`, a registered Config) to `directory`."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, Config) or not type(cfg).kind:
        raise CheckpointError(f"{type(model).__name__} has no registered `.config`; only registry-built models can be saved")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot save to {directory}: it is a file; choose a directory path")
    parts = tuple(getattr(model, "components", ()))
    if not parts:
        _save_one(model, directory, extra)
        return directory
    for name in parts:
        skip = model.component_skip(name)
        _save_one(getattr(model, name), directory / name, shared=skip, shared_with="tokenizer" if skip else "")
    meta = _meta(model, {k: v for k, v in to_dict(cfg).items() if k not in parts})
    meta["components"] = list(parts)
    if extra:
        meta["extra"] = extra
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    stale = directory / WEIGHTS_NAME  # a flat (version 1) save in the same place: now superseded
    if stale.is_file():
        stale.unlink()
    return directory


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        hint = " (it is a file; pass the directory that holds config.json)" if directory.is_file() else ""
        raise CheckpointError(f"{directory} is not a saved argen model: {CONFIG_NAME} not found{hint}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); the file is corrupt") from None
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{path} lacks 'kind' and 'config'; was it written by argen.save?")
    return meta


def _read_weights(directory: Path, meta: dict[str, Any], map_location: str | torch.device,
                  verify: bool) -> dict[str, torch.Tensor]:
    """The state dict of `directory/model.safetensors`. With `verify`, first the file's sha256 is compared
    with the one config.json recorded at save time (directories from before checksums record none: not
    checked), then every floating tensor must be finite. Hashing first reads the file into the page cache,
    from which safetensors' mmap then loads it, so the disk is read once."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; the saved model is incomplete (re-save it with argen.save)")
    expected = meta.get("weights_sha256")
    if verify and expected is not None:
        try:
            digest = file_sha256(weights)
        except OSError as e:
            raise CheckpointError(f"{weights} cannot be read ({e})") from None
        if digest != expected:
            raise CheckpointError(f"{weights}: the weights file changed since it was saved: corrupt or replaced "
                                  f"(sha256 {digest[:12]}..., {CONFIG_NAME} recorded {str(expected)[:12]}...); "
                                  "restore both files from one save (argen.load(..., verify=False) loads it anyway)")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt") from None
    if verify:
        check_finite(state, str(weights))
    return state


def read_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu", *,
               as_component: bool = False, verify: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(meta, state) of a saved directory, assembled from its component folders and migrated to the current
    config version: meta["config"] is the whole nested config, state the whole state dict. `verify`: check
    each weights file's checksum and finiteness (see `_read_weights`)."""
    from .migrations import migrate

    directory = Path(directory)
    meta = _read_meta(directory)
    if "shared" in meta and not as_component:
        raise CheckpointError(f"{directory} is a component of {directory.parent} and shares weights with its "
                              f"{meta['shared'].get('with', 'other component')}; load the pipeline directory "
                              f"{directory.parent} instead")
    if "components" in meta:
        config, state = dict(meta["config"]), {}
        for name in meta["components"]:
            sub_meta, sub_state = read_model(directory / name, map_location, as_component=True, verify=verify)
            config[name] = {"kind": sub_meta["kind"], **sub_meta["config"]}
            state.update({f"{name}.{k}": v for k, v in sub_state.items()})
        meta = {k: v for k, v in meta.items() if k != "components"} | {"config": config}
    else:
        state = _read_weights(directory, meta, map_location, verify)
    return migrate(meta, state, str(directory))


def _config_of(directory: Path, meta: dict[str, Any]) -> Config:
    """The config in `meta` (migrated), read strictly: every field must be there (see `config.from_dict`)."""
    from . import registry

    try:
        return from_dict(registry.config_class(meta["kind"]), meta["config"], require_all=True)
    except MissingFieldsError as e:
        raise CheckpointError(_missing_message(directory, e.paths)) from None
    except ConfigError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {e}") from None


def _missing_message(directory: Path, paths: list[str]) -> str:
    """Name each absent field in the file it belongs in: a component's own config.json for its fields."""
    by_file: dict[Path, list[str]] = {}
    for dotted in paths:
        head, _, rest = dotted.partition(".")
        if rest and (directory / head / CONFIG_NAME).is_file():
            by_file.setdefault(directory / head / CONFIG_NAME, []).append(rest)
        else:
            by_file.setdefault(directory / CONFIG_NAME, []).append(dotted)
    listed = "; ".join(f"{file} lacks {', '.join(names)}" for file, names in by_file.items())
    return (f"{listed}. A saved config lists every field, so the file is damaged or was edited, and today's "
            "default need not be the value the model was trained with; restore the field (or the file) from the "
            "save that wrote the weights")


def read_config(directory: str | os.PathLike, *, verify: bool = False) -> Config:
    """The validated config of a saved model directory, read as strictly as `load` reads it. The weights are
    read too (migrations may need them), by default without the checksum and finiteness checks: a config
    read is no reason to hash gigabytes."""
    directory = Path(directory)
    meta, _ = read_model(directory, verify=verify)
    return _config_of(directory, meta)


def _tied_across_modules(model: nn.Module) -> bool:
    """Whether one Parameter object is held by two different modules (tied weights: assignment would untie
    them). A module shared by two parents (a bound quantizer) holds its parameters once and is fine."""
    owners: dict[int, tuple[int, str]] = {}
    for _, mod in model.named_modules():  # remove_duplicate: a shared module is visited once
        for name, p in mod._parameters.items():
            if p is None:
                continue
            if id(p) in owners and owners[id(p)] != (id(mod), name):
                return True
            owners[id(p)] = (id(mod), name)
    return False


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu", *, verify: bool = True) -> nn.Module:
    """Build the model described by `directory/config.json` and load its weights strictly.

    Refused with a CheckpointError: a config.json that lacks a field (unless a migration supplies it), weights
    whose sha256 differs from the one recorded at save time, and NaN / inf weights. `verify=False` skips the
    two weight checks, which read every byte at load time (about 0.4 s for 440 MB on a 2-core CPU, most of it
    sha256 at ~1.7 GB/s) where an unverified load maps the file and reads it only when the weights are used."""
    from . import registry

    directory = Path(directory)
    meta, state = read_model(directory, map_location, verify=verify)
    cfg = _config_of(directory, meta)
    source = str(directory)
    # Building the model on the meta device skips a random initialisation that the weights overwrite anyway
    # (seconds for a 300M-parameter model); anything that cannot be built or filled that way is built normally.
    model = deferred_init(lambda: registry.build(cfg))
    if model is not None:
        load_state_dict_checked(model, state, source=source, assign=True)
        if _leftover_meta(model):
            model = None
    if model is None:
        model = registry.build(cfg)
        load_state_dict_checked(model, state, source=source)
    return model.to(map_location).eval()
