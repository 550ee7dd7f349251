"""An owner task: read-add-write its own chunks through its own icechunk fork."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt
import zarr
import zarr.api.asynchronous
from zarr.core.sync import sync

from ._partial import Partial, combine
from .layout import Layout
from .transaction import Written

__all__ = ["Owner"]


@dataclass(frozen=True)
class Owner:
    """The chunks ``[first, stop)`` of one histogram and the fork that writes them."""

    path: str
    fields: tuple[str, ...]
    layout: Layout
    first: int
    stop: int
    fork: Any

    @property
    def key_range(self) -> tuple[int, int]:
        """Keys of the owned chunks."""
        cs = self.layout.chunk_size
        return self.first * cs, self.stop * cs

    def __call__(self, partials: Sequence[Partial]) -> Written:
        """Add the partials' sums to the owned chunks; return the fork and what it wrote."""
        # Work on a fresh copy of the fork: a retried task must not find the
        # writes of an earlier attempt in an object it shares with it.
        fork = pickle.loads(pickle.dumps(self.fork))
        lo, hi = self.key_range
        total = combine(partials, lo, hi)
        touched = _touched_chunks(total, self.layout.chunk_size)
        if not len(touched):
            return Written(fork, {})
        coords = [self.layout.chunk_coords(int(c)) for c in touched]
        sync(self._write(fork, total, touched))
        return Written(fork, {f"{self.path}/{f}": coords for f in self.fields})

    async def _write(
        self, fork: Any, total: Partial, touched: npt.NDArray[np.int64]
    ) -> None:
        """Read-add-write every touched chunk of every field, many at a time."""
        arrays = [
            await zarr.api.asynchronous.open_array(
                store=fork.store, path=f"{self.path}/{f}"
            )
            for f in self.fields
        ]
        cs = self.layout.chunk_size
        limit = asyncio.Semaphore(int(dask.config.get("dask_hizt.write-concurrency")))

        async def one(chunk_id: int) -> None:
            part = total.restrict(chunk_id * cs, (chunk_id + 1) * cs).to_dense()
            selection, inner = self.layout.chunk_region(chunk_id)
            delta = tuple(f.reshape(self.layout.chunks)[inner] for f in part)
            async with limit:
                old = await asyncio.gather(*(a.getitem(selection) for a in arrays))
                new = total.algebra.merge(tuple(np.asarray(o) for o in old), delta)
                await asyncio.gather(
                    *(a.setitem(selection, v) for a, v in zip(arrays, new, strict=True))
                )

        await asyncio.gather(*(one(int(c)) for c in touched))


def _touched_chunks(p: Partial, chunk_size: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Ids of the chunks in which ``p`` has a non-zero value."""
    if p.keys is not None:
        return np.unique(p.keys // chunk_size)
    filled = np.zeros(p.hi - p.lo, dtype=bool)
    for f in p.fields:
        filled |= f != 0
    per_chunk = filled.reshape(-1, chunk_size).any(axis=1)
    return np.flatnonzero(per_chunk).astype(np.int64) + p.lo // chunk_size
