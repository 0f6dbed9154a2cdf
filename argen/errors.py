"""Exceptions that carry a user-facing message (the CLI prints them as one line)."""


class ArgenError(Exception):
    """A problem the user can fix; the message says what was wrong and how to fix it."""


class ConfigError(ArgenError, ValueError):
    """A config value or key is invalid."""


class CheckpointError(ArgenError):
    """A saved model or checkpoint is missing, truncated or does not match the model."""


class DataError(ArgenError):
    """A dataset or image file cannot be read."""


class DiskFullError(ArgenError, OSError):
    """A file could not be written because its filesystem is full (ENOSPC) or the user's quota is used up
    (EDQUOT). Also an OSError carrying that errno, so code that treats every failed write alike still does."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class RunLockedError(ArgenError):
    """Another process holds the lock of a run directory (`argen.train.lock.RunLock`)."""
