"""An owner task: read-add-write its own chunks through its own icechunk fork."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

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
        arrays = [zarr.open_array(fork.store, path=f"{self.path}/{f}") for f in self.fields]
        cs = self.layout.chunk_size
        coords = []
        for chunk_id in touched:
            block = total.restrict(int(chunk_id) * cs, (int(chunk_id) + 1) * cs)
            selection, inner = self.layout.chunk_region(int(chunk_id))
            for arr, values in zip(arrays, block.to_dense(), strict=True):
                delta = values.reshape(self.layout.chunks)[inner]
                arr[selection] = arr[selection] + delta
            coords.append(self.layout.chunk_coords(int(chunk_id)))
        return Written(fork, {f"{self.path}/{f}": coords for f in self.fields})


def _touched_chunks(p: Partial, chunk_size: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Ids of the chunks in which ``p`` has a non-zero value."""
    if p.keys is not None:
        return np.unique(p.keys // chunk_size)
    filled = np.zeros(p.hi - p.lo, dtype=bool)
    for f in p.fields:
        filled |= f != 0
    per_chunk = filled.reshape(-1, chunk_size).any(axis=1)
    return np.flatnonzero(per_chunk).astype(np.int64) + p.lo // chunk_size
