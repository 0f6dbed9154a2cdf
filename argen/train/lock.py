"""Run-directory lock: one run writes a run directory at a time.

Two runs started with the same `--out` would both train, overwrite each other's checkpoints, and one log
would be lost. A run holds `RunLock(out)` for its whole length:

    with RunLock(out):
        ...  # train, save the model, write run.json

or, for a function taking the directory as `out=` (the recipes), `@holds_run_lock` — which, for a run of
several processes (torchrun), lets rank 0 alone hold the lock for all of them.

The lock is `fcntl.flock` on `OUT/.lock`, taken without waiting: a second run fails at once with a
one-line `RunLockedError` naming the directory and the holder's pid (recorded in the file for that message
only), rather than queueing behind a run that may last days. The kernel drops the lock when the holder's
process ends in any way, kill -9 included, so a crashed run never leaves a lock to delete by hand; the
file itself stays (deleting it would let a third run lock a new file while the second holds the old one).
Locks are per open file, so a second `RunLock` on the same directory in the same process fails too.
Platforms without `fcntl` (Windows) get no lock: `RunLock` is then a no-op.
"""
from __future__ import annotations

import errno
import functools
import inspect
import os
import socket
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import ConfigError, RunLockedError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"

__all__ = ["RunLock", "RunLockedError", "holds_run_lock", "LOCK_NAME"]
F = TypeVar("F", bound=Callable[..., Any])


class RunLock:
    """Exclusive, non-blocking lock of a run directory (created if absent); a context manager."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise `RunLockedError` at once (never waits)."""
        if self._fd is not None:
            raise RuntimeError(f"the lock of {self.directory} is held by this RunLock already")
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"{self.directory} is a file; give a directory for the run")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"{self.directory} is in use by another run{holder}; wait for it to finish or "
                                 "write to another directory") from None
        try:  # only for the message of a later competitor: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the kernel does it too when the process ends); a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                os.ftruncate(fd, 0)  # no stale pid for a later competitor to report
                fcntl.flock(fd, fcntl.LOCK_UN)  # explicit: forked children (data workers) share the descriptor
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.directory)!r}, held={self.held})"


def holds_run_lock(fn: F) -> F:
    """Decorate a function whose `out` argument is a run directory: it runs holding `RunLock(out)`.

    Under several processes (a `distributed=` strategy argument with world size > 1, e.g. torchrun) only
    rank 0 takes the lock — the ranks are one run — and every rank fails with the same `RunLockedError`
    when another run holds it. The strategy is set up first (on the call's `device`) to learn the rank."""
    signature = inspect.signature(fn)
    if "out" not in signature.parameters:
        raise TypeError(f"{fn.__qualname__} has no `out` parameter to lock")

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        out, strategy = bound.arguments["out"], bound.arguments.get("distributed")
        if strategy is not None:
            import torch

            strategy.setup(torch.device(bound.arguments.get("device") or "cpu"))
        if strategy is None or strategy.world_size == 1:
            with RunLock(out):
                return fn(*args, **kwargs)
        lock, error = None, None
        if strategy.is_main:
            try:
                lock = RunLock(out).acquire()
            except (RunLockedError, ConfigError) as e:
                error = (type(e).__name__, str(e))
        error = strategy.broadcast(error)  # every rank stops if rank 0 could not lock
        if error is not None:
            raise (ConfigError if error[0] == "ConfigError" else RunLockedError)(error[1])
        try:
            return fn(*args, **kwargs)
        finally:
            if lock is not None:
                lock.release()

    return locked  # type: ignore[return-value]


def _read_holder(fd: int) -> str:
    """' (pid N on HOST)' from the lock file, or '' when nothing (readable) is recorded."""
    try:
        words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        return ""
    fields = dict(zip(words[::2], words[1::2]))
    if "pid" not in fields:
        return ""
    host = fields.get("host")
    return f" (pid {fields['pid']}{f' on {host}' if host and host != socket.gethostname() else ''})"
