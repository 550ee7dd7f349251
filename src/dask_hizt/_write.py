"""An owner task: read-add-write its own chunks through its own icechunk fork."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from collections.abc import Awaitable, Buffer, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import icechunk
import numpy as np
import numpy.typing as npt
from icechunk.store import IcechunkStore
from zarr.core.sync import sync

from ._chunkio import (
    OFFLOAD_BYTES,
    ChunkFormat,
    delete_or_set,
    fetch,
    gather,
    open_format,
)
from ._damage import READ_ERRORS, corrupt
from ._partial import Partial, combine
from .layout import Layout

__all__ = ["Owner", "Segment", "Written"]


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
class Written:
    """What one owner task wrote: its fork, the chunks it touched per array,
    and the ``(target, identity)`` of the partitions in what it merged."""

    fork: icechunk.ForkSession
    chunks: dict[str, list[tuple[int, ...]]]
    inputs: frozenset[tuple[int, str]]


@dataclass(frozen=True)
class Owner:
    """A run of consecutive chunks of a key space, and the fork that writes them.

    The run may span several histograms (one :class:`Segment` each).
    ``dense`` and ``concurrency`` are the ``dask_hizt.dense-fraction`` and
    ``dask_hizt.write-concurrency`` settings, captured with the graph.
    """

    segments: tuple[Segment, ...]
    fork: icechunk.ForkSession
    dense: float
    concurrency: int

    @property
    def key_range(self) -> tuple[int, int]:
        """Keys of the owned chunks."""
        return self.segments[0].key_range[0], self.segments[-1].key_range[1]

    def __call__(self, partials: Sequence[Partial]) -> Written:
        """Merge the partials into the owned chunks; return the fork and what it wrote."""
        return self.write(partials, self.fork)

    def write(self, partials: Sequence[Partial], fork: icechunk.ForkSession) -> Written:
        """Merge the partials into the owned chunks through ``fork``."""
        # Work on a fresh copy of the fork: a retried task must not find the
        # writes of an earlier attempt in an object it shares with it.
        fork = pickle.loads(pickle.dumps(fork))
        lo, hi = self.key_range
        total = combine(partials, lo, hi, self.dense)
        jobs = []
        written: dict[str, list[tuple[int, ...]]] = {}
        for seg in self.segments:
            s_lo, s_hi = seg.key_range
            local = combine([total], s_lo, s_hi, self.dense).shifted(-seg.offset)
            touched = _touched_chunks(local, seg.layout.chunk_size)
            if len(touched):
                coords = [seg.layout.chunk_coords(int(c)) for c in touched]
                written.update({f"{seg.path}/{f}": coords for f in seg.fields})
                jobs.append((seg, local, touched))
        if jobs:
            sync(_write(fork, jobs, self.concurrency))
        return Written(fork, written, total.inputs)


async def _write(
    fork: icechunk.ForkSession,
    jobs: list[tuple[Segment, Partial, npt.NDArray[np.int64]]],
    concurrency: int,
    *,
    raw: bool = True,
) -> None:
    """Read-merge-write every touched chunk of every field, many at a time.

    Chunks go through the store with the codecs applied by hand (see
    :mod:`dask_hizt._chunkio`) unless ``raw`` is false or an array's codecs
    are not the plain ones; then through zarr's async API. Both store the
    same bytes, with one exception: where a partial is sparse, the raw path
    leaves the bins it has no entry for alone, where zarr's path adds zeros
    to them (which turns a stored ``-0.0`` into ``0.0``, an infinite mean
    into NaN). A damaged chunk object raises
    :class:`~dask_hizt.errors.CorruptChunkError` (the compute then fails
    before its commit: nothing is added).
    """
    limit = asyncio.Semaphore(concurrency)
    store = fork.store
    opened = await gather(
        *(
            open_format(store, f"{seg.path}/{f}")
            for seg, _, _ in jobs
            for f in seg.fields
        )
    )
    tasks: list[Awaitable[None]] = []
    at = 0
    for seg, part, touched in jobs:
        formats = [fmt for fmt, _ in opened[at : at + len(seg.fields)]]
        arrays = [array for _, array in opened[at : at + len(seg.fields)]]
        at += len(seg.fields)
        plain = [fmt for fmt in formats if fmt is not None]
        if raw and len(plain) == len(formats):
            tasks.extend(
                _raw_chunk(store, seg, plain, part, int(c), limit) for c in touched
            )
        else:
            tasks.extend(_zarr_chunk(seg, arrays, part, int(c), limit) for c in touched)
    await gather(*tasks)


def _delta(
    seg: Segment, part: Partial, chunk_id: int
) -> tuple[tuple[npt.NDArray[Any], ...], tuple[slice, ...], tuple[slice, ...]]:
    """What ``part`` adds to one chunk (its part inside the array), and where.

    Returns the per-field blocks of the in-array part of the chunk, the
    chunk's selection in the array and the ``inner`` slices of a full block.
    """
    layout = seg.layout
    cs = layout.chunk_size
    block = part.restrict(chunk_id * cs, (chunk_id + 1) * cs).to_dense()
    selection, inner = layout.chunk_region(chunk_id)
    return tuple(f.reshape(layout.chunks)[inner] for f in block), selection, inner


async def _raw_chunk(
    store: IcechunkStore,
    seg: Segment,
    formats: Sequence[ChunkFormat],
    part: Partial,
    chunk_id: int,
    limit: asyncio.Semaphore,
) -> None:
    """Read-merge-write all fields of one chunk with the store's get/set."""
    layout = seg.layout
    coords = layout.chunk_coords(chunk_id)
    keys = [fmt.key(coords) for fmt in formats]

    async def get(field: str, key: str) -> Buffer | None:
        with _translated(seg, field, coords):
            return await fetch(store, key)

    def merge(stored: Sequence[Buffer | None]) -> list[bytes | None]:
        _, inner = layout.chunk_region(chunk_id)
        edge = any(s.stop != c for s, c in zip(inner, layout.chunks, strict=True))
        chunks = []
        for field, fmt, data in zip(seg.fields, formats, stored, strict=True):
            with _translated(seg, field, coords):
                chunk = fmt.decode(data)
            if edge and data is not None:
                # zarr writes a fresh chunk when a write covers all of its
                # part inside the array (an owner's always does): the rest
                # is written as the fill value
                fresh = np.zeros_like(chunk)
                fresh[inner] = chunk[inner]
                chunk = fresh
            chunks.append(chunk)
        cs = layout.chunk_size
        _merge_into(chunks, part.restrict(chunk_id * cs, (chunk_id + 1) * cs), inner)
        return [fmt.encode(c) for fmt, c in zip(formats, chunks, strict=True)]

    async with limit:
        stored = await gather(
            *(get(f, k) for f, k in zip(seg.fields, keys, strict=True))
        )
        # codec work on big chunks in a thread (see OFFLOAD_BYTES)
        if layout.chunk_size * formats[0].native.itemsize >= OFFLOAD_BYTES:
            encoded = await asyncio.to_thread(merge, stored)
        else:
            encoded = merge(stored)
        await gather(
            *(delete_or_set(store, k, b) for k, b in zip(keys, encoded, strict=True))
        )


def _merge_into(
    chunks: Sequence[npt.NDArray[Any]], part: Partial, inner: tuple[slice, ...]
) -> None:
    """Merge ``part`` (the keys of one chunk) into its decoded fields, in place.

    Sparse parts touch only their bins (gather, merge, scatter), so a bin
    with no entry keeps its stored bits exactly; dense parts merge the
    in-array part of the chunk.
    """
    if part.keys is not None:
        flat = tuple(c.reshape(-1) for c in chunks)
        local = part.keys - part.lo
        merged = part.algebra.merge(tuple(f[local] for f in flat), part.fields)
        for f, m in zip(flat, merged, strict=True):
            f[local] = m
        return
    shape = chunks[0].shape
    delta = tuple(f.reshape(shape)[inner] for f in part.to_dense())
    part.algebra.merge_into(tuple(c[inner] for c in chunks), delta)


@contextlib.contextmanager
def _translated(seg: Segment, field: str, coords: tuple[int, ...]) -> Iterator[None]:
    """Raise :class:`~dask_hizt.errors.CorruptChunkError` for errors of a chunk
    read that say the chunk object is damaged; let the others through."""
    try:
        yield
    except READ_ERRORS as err:
        error = corrupt(err, seg.path, field, coords)
        if error is None:
            raise
        raise error from err


async def _zarr_chunk(
    seg: Segment,
    arrays: Sequence[Any],
    part: Partial,
    chunk_id: int,
    limit: asyncio.Semaphore,
) -> None:
    """Read-merge-write all fields of one chunk through zarr's async API."""
    coords = seg.layout.chunk_coords(chunk_id)

    async def read(field: str, array: Any, selection: Any) -> Any:
        with _translated(seg, field, coords):
            return await array.getitem(selection)

    async with limit:
        delta, selection, _ = _delta(seg, part, chunk_id)
        old = await gather(
            *(read(f, a, selection) for f, a in zip(seg.fields, arrays, strict=True))
        )
        new = part.algebra.merge(tuple(np.asarray(o) for o in old), delta)
        await gather(
            *(a.setitem(selection, v) for a, v in zip(arrays, new, strict=True))
        )


def _touched_chunks(p: Partial, chunk_size: int) -> npt.NDArray[np.int64]:
    """Ids of the chunks in which ``p`` (covering whole chunks) has a non-zero value."""
    if p.keys is not None:
        # The keys are sorted: so are their chunks, and a mask finds the
        # distinct ones (np.unique would sort them again: 10x slower).
        ids = p.keys // chunk_size
        return ids[np.r_[True, ids[1:] != ids[:-1]]] if len(ids) else ids
    filled = np.zeros(p.hi - p.lo, dtype=bool)
    for f in p.fields:
        filled |= f != 0
    per_chunk = filled.reshape(-1, chunk_size).any(axis=1)
    return np.flatnonzero(per_chunk).astype(np.int64) + p.lo // chunk_size
