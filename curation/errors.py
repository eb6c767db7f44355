"""One base error for the whole tool; each area subclasses it.

Messages say what was expected, what was found and what to do next. The CLI turns a
`CurationError` into a red message and its `exit_code`, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "CurationError",
    "ConfigError",
    "InputError",
    "StoreError",
    "LabelStudioError",
    "ModelError",
    "ExportError",
    "LockError",
]


class CurationError(Exception):
    """Base class: an actionable failure the user can fix."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ConfigError(CurationError):
    """The project config (curate.toml) or a command-line option is invalid."""

    exit_code = 2


class InputError(CurationError):
    """An input file or column is missing or unreadable; nothing was written."""

    exit_code = 2


class StoreError(CurationError):
    """The store cannot be opened, migrated or written."""


class LabelStudioError(CurationError):
    """Label Studio is unreachable, rejected the key, or refused a request."""


class ModelError(CurationError):
    """An encoder or classifier cannot be loaded or trained."""


class ExportError(CurationError):
    """An export would be wrong (e.g. a leak between splits) and was refused."""


class LockError(CurationError):
    """Another run holds the lock."""

    exit_code = 3
