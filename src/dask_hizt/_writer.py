"""An owner task: read-add-write its own chunks through its own icechunk fork."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt
import zarr
import zarr.api.asynchronous
from zarr.core.sync import sync

from ._damage import READ_ERRORS, corrupt
from ._partial import Partial, combine
from .layout import Layout
from .transaction import Written

__all__ = ["Owner", "Segment"]


@dataclass(frozen=True)
class Segment:
    """The chunks ``[first, stop)`` of one histogram, whose keys start at ``offset``."""

    path: str
    fields: tuple[str, ...]
    layout: Layout
    offset: int
    first: int
    stop: int

    @property
    def key_range(self) -> tuple[int, int]:
        """Keys of the segment's chunks in the key space."""
        cs = self.layout.chunk_size
        return self.offset + self.first * cs, self.offset + self.stop * cs


@dataclass(frozen=True)
class Owner:
    """A run of consecutive chunks of a key space, and the fork that writes them.

    The run may span several histograms (one :class:`Segment` each).
    """

    segments: tuple[Segment, ...]
    fork: Any

    @property
    def key_range(self) -> tuple[int, int]:
        """Keys of the owned chunks."""
        return self.segments[0].key_range[0], self.segments[-1].key_range[1]

    def __call__(self, partials: Sequence[Partial]) -> Written:
        """Merge the partials into the owned chunks; return the fork and what it wrote."""
        return self.write(partials, self.fork)

    def write(self, partials: Sequence[Partial], fork: Any) -> Written:
        """Merge the partials into the owned chunks through ``fork``."""
        # Work on a fresh copy of the fork: a retried task must not find the
        # writes of an earlier attempt in an object it shares with it.
        fork = pickle.loads(pickle.dumps(fork))
        lo, hi = self.key_range
        total = combine(partials, lo, hi)
        jobs = []
        written: dict[str, list[tuple[int, ...]]] = {}
        for seg in self.segments:
            s_lo, s_hi = seg.key_range
            local = combine([total], s_lo, s_hi).shifted(-seg.offset)
            touched = _touched_chunks(local, seg.layout.chunk_size)
            if len(touched):
                coords = [seg.layout.chunk_coords(int(c)) for c in touched]
                written.update({f"{seg.path}/{f}": coords for f in seg.fields})
                jobs.append((seg, local, touched))
        if jobs:
            sync(_write(fork, jobs))
        return Written(fork, written)


async def _write(
    fork: Any, jobs: list[tuple[Segment, Partial, npt.NDArray[np.int64]]]
) -> None:
    """Read-merge-write every touched chunk of every field, many at a time.

    A damaged chunk object raises :class:`~dask_hizt.errors.CorruptChunkError`
    (the compute then fails before its commit: nothing is added).
    """
    limit = asyncio.Semaphore(int(dask.config.get("dask_hizt.write-concurrency")))

    async def read(
        seg: Segment, field: str, array: Any, selection: Any, chunk_id: int
    ) -> Any:
        try:
            return await array.getitem(selection)
        except READ_ERRORS as err:
            coords = seg.layout.chunk_coords(chunk_id)
            error = corrupt(err, seg.path, field, coords)
            if error is None:
                raise
            raise error from err

    async def one(
        seg: Segment, arrays: list[Any], part: Partial, chunk_id: int
    ) -> None:
        layout = seg.layout
        cs = layout.chunk_size
        block = part.restrict(chunk_id * cs, (chunk_id + 1) * cs).to_dense()
        selection, inner = layout.chunk_region(chunk_id)
        delta = tuple(f.reshape(layout.chunks)[inner] for f in block)
        async with limit:
            old = await _gather(
                *(
                    read(seg, f, a, selection, chunk_id)
                    for f, a in zip(seg.fields, arrays, strict=True)
                )
            )
            new = part.algebra.merge(tuple(np.asarray(o) for o in old), delta)
            await _gather(
                *(a.setitem(selection, v) for a, v in zip(arrays, new, strict=True))
            )

    tasks: list[Any] = []
    for seg, part, touched in jobs:
        arrays = [
            await zarr.api.asynchronous.open_array(
                store=fork.store, path=f"{seg.path}/{f}"
            )
            for f in seg.fields
        ]
        tasks.extend(one(seg, arrays, part, int(c)) for c in touched)
    await _gather(*tasks)


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather``, but the first failure cancels the others and waits
    for them before it is raised.

    A plain gather leaves the other reads and writes running in zarr's event
    loop after the owner task has failed: they would keep writing (orphaned)
    chunks after the compute has already reported its error.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:
        error = t.exception() if t in done else None
        if error is not None:
            raise error
    return [t.result() for t in tasks]


def _touched_chunks(p: Partial, chunk_size: int) -> npt.NDArray[np.int64]:
    """Ids of the chunks in which ``p`` (covering whole chunks) has a non-zero value."""
    if p.keys is not None:
        return np.unique(p.keys // chunk_size)
    filled = np.zeros(p.hi - p.lo, dtype=bool)
    for f in p.fields:
        filled |= f != 0
    per_chunk = filled.reshape(-1, chunk_size).any(axis=1)
    return np.flatnonzero(per_chunk).astype(np.int64) + p.lo // chunk_size
