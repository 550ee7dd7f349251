"""Exceptions raised by dask_hizt; all derive from :class:`HiztError`."""

from __future__ import annotations

__all__ = [
    "CommitError",
    "CorruptChunkError",
    "DuplicateInputError",
    "FillError",
    "HiztError",
    "NotAHistogramError",
    "SchemaMismatchError",
    "StoreError",
    "UnsharedStoreError",
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


class UnsharedStoreError(StoreError):
    """A local repository that is not the same directory on the client and on
    a worker (each machine has its own disk at that path); nothing was
    written. Use an ``s3://`` store or a filesystem that all of them share.

    Parameters
    ----------
    path
        The repository directory.
    worker
        The worker (its address) or process that sees another directory.
    reason
        What that worker sees, in words.

    Attributes
    ----------
    path, worker, reason
        As given.
    """

    def __init__(self, path: str, worker: str, reason: str) -> None:
        self.path = path
        self.worker = worker
        self.reason = reason
        super().__init__(
            f"local repository {path!r} is not the same directory on the client "
            f"and on worker {worker}: {reason}. Chunks written there would never "
            "reach the commit; nothing was written. Use an s3:// store, or a "
            "directory on a filesystem that the client and every worker share "
            "(and open or create the repository on the client first)"
        )

    def __reduce__(self) -> tuple[type[UnsharedStoreError], tuple[str, str, str]]:
        # keyword-less pickling, so the error crosses process boundaries
        return type(self), (self.path, self.worker, self.reason)


class CommitError(HiztError, RuntimeError):
    """The final commit could not be made; nothing was committed."""


class DuplicateInputError(CommitError):
    """A compute would add input partitions that a racing compute committed
    while it ran; nothing was committed (computing again adds the rest)."""


class CorruptChunkError(StoreError):
    """A stored chunk of a histogram cannot be read back: its object in the
    repository is corrupt, truncated or missing.

    The repository itself is damaged (a disk or copy error, or a file changed
    by hand); nothing dask_hizt does creates this. Computes that would add to
    the chunk fail without committing anything. See ``docs/maintenance.md``.

    Parameters
    ----------
    path
        Path of the histogram's group.
    array
        The storage field's array (``"value"``, ``"variance"``, ...).
    chunk
        The chunk's grid coordinates, or ``None`` if they could not be found.
    reason
        What is wrong with it, in words.

    Attributes
    ----------
    path, array, chunk, reason
        As given.
    """

    def __init__(
        self, path: str, array: str, chunk: tuple[int, ...] | None, reason: str
    ) -> None:
        self.path = path
        self.array = array
        self.chunk = chunk
        self.reason = reason
        where = f"histogram {path!r}, array {array!r}"
        if chunk is not None:
            key = "/".join([path, array, "c", *map(str, chunk)])
            where += f", chunk {chunk} (key {key!r})"
        super().__init__(f"{where}: the stored chunk object is {reason}")

    def __reduce__(self) -> tuple[type[CorruptChunkError], tuple[object, ...]]:
        # keyword-less pickling, so the error crosses process boundaries (distributed)
        return type(self), (self.path, self.array, self.chunk, self.reason)
