"""Exceptions raised by dask_hizt; all derive from :class:`HiztError`."""

from __future__ import annotations

__all__ = [
    "CommitError",
    "FillError",
    "HiztError",
    "NotAHistogramError",
    "SchemaMismatchError",
    "StoreError",
    "UnsupportedAxisError",
    "UnsupportedStorageError",
]


class HiztError(Exception):
    """Base class of every error raised by dask_hizt."""


class UnsupportedAxisError(HiztError, ValueError):
    """An axis that has no faithful on-disk form."""


class UnsupportedStorageError(HiztError, ValueError):
    """A storage that has no faithful on-disk form."""


class SchemaMismatchError(HiztError, ValueError):
    """A stored histogram does not have the axes or storage that were asked for."""


class NotAHistogramError(HiztError, KeyError):
    """A path in the repository that does not hold a dask_hizt histogram."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FillError(HiztError, ValueError):
    """Bad arguments to ``fill``: unknown axes, misaligned inputs, wrong types."""


class StoreError(HiztError, ValueError):
    """A ``store=`` or ``path=`` that cannot be used."""


class CommitError(HiztError, RuntimeError):
    """The final commit could not be made; nothing was committed."""
