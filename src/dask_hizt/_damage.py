"""Telling a damaged chunk object apart from other errors of a chunk read.

What zarr 3.4 and icechunk 2.3 raise when a chunk object of a local
repository is damaged (each case is reproduced in tests/test_faults.py):

* bytes overwritten so that the zstd frame is no longer valid: numcodecs'
  Zstd codec raises ``RuntimeError("Zstd decompression error: ...")``;
* the object shorter than its manifest entry says (truncated):
  ``icechunk.StorageError`` of kind ``OBJECT_STORE``, "Requested range was
  invalid";
* the object (or the manifest listing it) missing: ``icechunk.StorageError``
  of kind ``OBJECT_NOT_FOUND``.

Arrays made with other codecs (gzip) fail in the codec: ``gzip.BadGzipFile``
for a damaged header, ``EOFError`` for a stream cut short, ``zlib.error``
for damaged compressed data.

Bytes changed *inside* a zstd frame fail its checksum (the arrays are
created with ``ZstdCodec(checksum=True)``), which raises the same
decompression error. Only these exact errors are translated; anything else
(a network error, a bug) propagates unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import icechunk
import numpy as np
import numpy.typing as npt
import zarr
import zarr.core.sync

from .errors import CorruptChunkError

__all__ = ["READ_ERRORS", "corrupt", "damage", "read"]

#: The exception types a damaged chunk object raises; :func:`damage` tells
#: which instances are about damage.
READ_ERRORS = (
    RuntimeError,
    icechunk.StorageError,
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
)

# icechunk's error context names the chunk it was fetching: chunk=[0, 2]
_CONTEXT_CHUNK = re.compile(r"\bchunk=\[([0-9, ]*)\]")

# Most chunks probed to find the damaged one after a failed read of a region.
_PROBE_LIMIT = 4096


def damage(err: BaseException) -> str | None:
    """What ``err``, raised by a chunk read, says is wrong with the chunk object.

    Returns
    -------
    str or None
        A short description (``"corrupt (...)"``, ``"missing"``, ...), or
        ``None`` if the error is not one of a damaged object.
    """
    if isinstance(err, RuntimeError) and str(err).startswith(
        "Zstd decompression error"
    ):
        detail = str(err).removeprefix("Zstd decompression error").strip(": ")
        return f"corrupt (zstd cannot decode it: {detail})"
    if isinstance(err, gzip.BadGzipFile | EOFError | zlib.error):
        return f"corrupt (gzip cannot decode it: {err})"
    if isinstance(err, icechunk.StorageError):
        kind = getattr(err, "kind", None)
        if kind == icechunk.ErrorKind.OBJECT_NOT_FOUND:
            return "missing from the repository's storage"
        if kind == icechunk.ErrorKind.OBJECT_STORE and (
            "Requested range was invalid" in str(err)
        ):
            return "shorter than its manifest entry (truncated)"
    return None


def corrupt(
    err: BaseException, path: str, field: str, chunk: tuple[int, ...] | None
) -> CorruptChunkError | None:
    """The :class:`CorruptChunkError` for ``err``, or ``None`` if it is no damage.

    ``chunk`` is used when given; otherwise the coordinates are taken from
    icechunk's error context where it names them.
    """
    why = damage(err)
    if why is None:
        return None
    if chunk is None:
        found = _CONTEXT_CHUNK.search(str(err))
        if found is not None:
            chunk = tuple(int(c) for c in found.group(1).split(",") if c.strip())
    return CorruptChunkError(path, field, chunk, why)


def read(
    arr: zarr.Array[Any],
    path: str,
    field: str,
    selection: Any,
    *,
    orthogonal: bool = False,
) -> npt.NDArray[Any]:
    """``arr[selection]`` (or ``arr.oindex[selection]``) as a NumPy array,
    raising :class:`CorruptChunkError` if a chunk object it needs is damaged.

    When the error does not say which chunk it was, the chunks of the region
    read are probed one by one (at most a few thousand) to name it.
    """
    try:
        out = arr.oindex[selection] if orthogonal else arr[selection]
    except READ_ERRORS as err:
        error = corrupt(err, path, field, None)
        if error is None:
            raise
        if error.chunk is None:
            region = _region(selection, arr.shape)
            found = None if region is None else _locate(arr, region)
            error = CorruptChunkError(path, field, found, error.reason)
        raise error from err
    return np.asarray(out)


def _region(selection: Any, shape: Sequence[int]) -> list[range] | None:
    """Bounding box of a basic or orthogonal selection, or ``None`` if unknown."""
    parts = list(selection) if isinstance(selection, tuple) else [selection]
    if parts.count(Ellipsis) > 1:
        return None
    if Ellipsis in parts:
        at = parts.index(Ellipsis)
        parts[at : at + 1] = [slice(None)] * (len(shape) - len(parts) + 1)
    parts += [slice(None)] * (len(shape) - len(parts))
    out = []
    for part, n in zip(parts, shape, strict=True):
        if isinstance(part, slice):
            start, stop, step = part.indices(n)
            if step < 0:
                start, stop = stop + 1, start + 1
            out.append(range(start, stop))
        elif isinstance(part, int | np.integer):
            i = int(part) % n
            out.append(range(i, i + 1))
        else:
            picked = np.asarray(part)
            if picked.dtype.kind not in "iu" or picked.size == 0:
                return None
            out.append(range(int(picked.min()) % n, int(picked.max()) % n + 1))
    return out


def _locate(arr: zarr.Array[Any], region: Sequence[range]) -> tuple[int, ...] | None:
    """The first chunk within ``region`` whose read fails with damage."""
    grid = [
        range(r.start // c, (r.stop - 1) // c + 1) if len(r) else range(0)
        for r, c in zip(region, arr.chunks, strict=True)
    ]
    if math.prod(len(g) for g in grid) > _PROBE_LIMIT:
        return None
    arrays = arr.async_array

    async def bad(coords: tuple[int, ...]) -> bool:
        sel = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(coords, arr.chunks, arr.shape, strict=True)
        )
        try:
            await arrays.getitem(sel)
        except READ_ERRORS as err:
            if damage(err) is None:
                raise
            return True
        return False

    async def probe() -> tuple[int, ...] | None:
        coords = list(itertools.product(*grid))
        for start in range(0, len(coords), 64):
            batch = coords[start : start + 64]
            hits = await asyncio.gather(*(bad(c) for c in batch))
            for c, hit in zip(batch, hits, strict=True):
                if hit:
                    return tuple(int(i) for i in c)
        return None

    found: tuple[int, ...] | None = zarr.core.sync.sync(probe())
    return found
