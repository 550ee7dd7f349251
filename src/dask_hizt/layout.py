"""Schema -> zarr arrays: shapes, the chunk grid, chunk keys and chunk owners.

Every bin of a histogram gets a *key*: its chunk's linear index in the chunk
grid times the chunk size, plus its linear index inside the chunk. Keys are
"chunk-major", so the bins of one chunk, and of a run of consecutive chunks,
form one contiguous range of keys. Partial histograms are sorted by key,
which makes routing a partial to the owner of a range of chunks a
``searchsorted`` instead of a scan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt
from dask.utils import parse_bytes

from .schema import Schema

__all__ = ["Layout"]


def _parse_bytes(value: Any) -> int:
    return int(parse_bytes(value))


@dataclass(frozen=True)
class Layout:
    """How a histogram's bins are cut into zarr chunks and owners.

    Parameters
    ----------
    shape
        Extent of each axis, flow bins included.
    chunks
        Chunk shape of every field array.
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]

    @classmethod
    def for_schema(cls, schema: Schema, chunk_bytes: int | str | None = None) -> Layout:
        """Choose the chunk shape of a histogram.

        Axes share a budget of ``chunk_bytes`` (``dask_hizt.chunk-bytes`` in
        dask.config). Its default, ``"auto"``, is 1 MiB, raised for
        histograms so large that their arrays would have more than
        ``dask_hizt.max-chunks`` chunks: per-chunk costs (codec, I/O, the
        chunk's manifest entry) dominate below ~100 KiB, and a bounded chunk
        count keeps manifests and commits small.

        Dense axes take the budget first, from the last axis backwards,
        so that a chunk is a C-contiguous slab of the dense block; category
        axes take what is left, so a category combination is its own chunk
        whenever its dense block fills a chunk, and small histograms are not
        cut into thousands of tiny chunks (per-chunk I/O costs milliseconds).
        Growing category axes keep chunk size 1.
        """
        if chunk_bytes is None:
            chunk_bytes = dask.config.get("dask_hizt.chunk-bytes")
        if chunk_bytes == "auto":
            total = math.prod(schema.shape) * schema.dtype.itemsize
            most = max(1, int(dask.config.get("dask_hizt.max-chunks")))
            chunk_bytes = max(2**20, -(-total // most))
        budget = max(1, _parse_bytes(chunk_bytes) // schema.dtype.itemsize)
        shape = schema.shape
        chunks = [1] * len(shape)
        dense = [i for i, a in enumerate(schema.axes) if a.is_dense]
        # Boolean axes are chunked like category axes
        categories = [
            i for i, a in enumerate(schema.axes) if not a.is_dense and not a.growth
        ]
        for i in [*reversed(dense), *reversed(categories)]:
            chunks[i] = max(1, min(shape[i], budget))
            budget = max(1, budget // chunks[i])
        return cls(tuple(shape), tuple(chunks))

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))

    @property
    def n_chunks(self) -> int:
        """Number of chunks of each field array."""
        return math.prod(self.grid)

    @property
    def chunk_size(self) -> int:
        """Number of bins in a (full) chunk."""
        return math.prod(self.chunks)

    @property
    def n_keys(self) -> int:
        """Size of the key space: chunks times chunk size (edge chunks padded)."""
        return self.n_chunks * self.chunk_size

    def keys(self, indices: Sequence[npt.NDArray[np.intp]]) -> npt.NDArray[np.int64]:
        """Chunk-major keys of bins given by their per-axis indices (flow included)."""
        grid = self.grid
        keys = np.zeros(len(indices[0]) if len(indices) else 0, dtype=np.int64)
        grid_stride = self.chunk_size
        local_stride = 1
        for idx, c, g in zip(
            reversed(indices), reversed(self.chunks), reversed(grid), strict=True
        ):
            idx64 = idx.astype(np.int64, copy=False)
            if g == 1:
                keys += idx64 * local_stride
            elif c == 1:
                keys += idx64 * grid_stride
            else:
                chunk, local = np.divmod(idx64, c)
                keys += chunk * grid_stride + local * local_stride
            grid_stride *= g
            local_stride *= c
        return keys

    def chunk_major(self, dense: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Reorder a dense ``shape``-array into key order (edge chunks zero-padded)."""
        grid = self.grid
        if all(g == 1 for g in grid):
            return dense.reshape(-1)
        pad = [
            (0, g * c - n)
            for n, c, g in zip(self.shape, self.chunks, grid, strict=True)
        ]
        padded = np.pad(dense, pad) if any(p for _, p in pad) else dense
        split = [d for g, c in zip(grid, self.chunks, strict=True) for d in (g, c)]
        nd = len(grid)
        order = [2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)]
        return padded.reshape(split).transpose(order).reshape(-1)

    def chunk_coords(self, chunk_id: int) -> tuple[int, ...]:
        """Grid coordinates of a chunk from its linear index."""
        return tuple(int(i) for i in np.unravel_index(chunk_id, self.grid))

    def chunk_region(
        self, chunk_id: int
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Where a chunk lies in the array, and which part of a full block is inside it.

        Returns
        -------
        selection
            Slices of the field array covered by the chunk.
        inner
            Slices of a full ``chunks``-shaped block that fall inside the array
            (smaller than the block for edge chunks).
        """
        coords = self.chunk_coords(chunk_id)
        selection = []
        inner = []
        for i, c, n in zip(coords, self.chunks, self.shape, strict=True):
            start = i * c
            stop = min(start + c, n)
            selection.append(slice(start, stop))
            inner.append(slice(0, stop - start))
        return tuple(selection), tuple(inner)
