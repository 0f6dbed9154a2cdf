"""Exceptions that carry a user-facing message (the CLI prints them as one line)."""


class ArgenError(Exception):
    """A problem the user can fix; the message says what was wrong and how to fix it."""


class ConfigError(ArgenError, ValueError):
    """A config value or key is invalid."""


class CheckpointError(ArgenError):
    """A saved model or checkpoint is missing, truncated or does not match the model."""


class DataError(ArgenError):
    """A dataset or image file cannot be read."""
