"""Raw chunk I/O: a zarr array's chunks read and written through its store,
with the array's codecs applied by hand.

Going through zarr costs 0.5-1 ms per chunk on top of the store's own
``get`` and ``set`` and the codecs (selections, buffer prototypes, the
batched codec pipeline, a thread hop per codec); doing it by hand costs
0.1-0.3 ms (see benchmarks/chunk_io.py). :class:`ChunkFormat` reads from an
array's metadata what zarr would do with a chunk (its key, the bytes codec's
byte order, the zstd codec's level and checksum, the fill value) and does
exactly that, so the bytes written are the ones zarr writes, and zarr reads
them back. Arrays with any other codec chain get no :class:`ChunkFormat`:
their callers keep using zarr.

zarr's semantics kept here (zarr 3.4):

* a chunk absent from the store reads as the fill value (0);
* a chunk is stored at its full chunk shape; at the array's edge the part
  outside the array is padding, written as the fill value;
* a chunk equal to the fill value (bit for bit, so ``-0.0`` is not empty) is
  deleted instead of written, unless ``array.write_empty_chunks`` is set.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Buffer, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr
from numcodecs import Zstd
from zarr.abc.store import Store
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata

__all__ = [
    "OFFLOAD_BYTES",
    "ChunkFormat",
    "basic_region",
    "delete_or_set",
    "fetch",
    "gather",
    "open_format",
    "read_region",
]

#: Chunks of at least this many raw bytes are decoded (and encoded) in a
#: worker thread: zstd releases the GIL, so owners and reads sharing zarr's
#: one event loop use every core. Measured: two owners sharing the loop
#: gained from it at 256 KiB and 1 MiB, and lost a little at 64 KiB, where
#: the thread hop costs about as much as the codec.
OFFLOAD_BYTES = 128 * 1024

_PROTOTYPE = default_buffer_prototype()
_ORDER: dict[str, Literal["<", ">"]] = {"little": "<", "big": ">"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class ChunkFormat:
    """How the chunks of one zarr v3 array are keyed and encoded.

    Attributes
    ----------
    path
        Path of the array in its store.
    shape
        Shape of the array.
    chunks
        Chunk shape (edge chunks are stored at this shape too).
    dtype
        dtype of the stored bytes (the bytes codec's byte order).
    native
        dtype of the decoded arrays (the array's data type).
    zstd
        The zstd codec, or ``None`` when the chunks are not compressed.
    write_empty
        Whether chunks equal to the fill value are written (zarr's
        ``write_empty_chunks``) rather than deleted.
    metadata
        The array's metadata, for its chunk key encoding.
    """

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    native: np.dtype[Any]
    zstd: Zstd | None
    write_empty: bool
    metadata: ArrayV3Metadata

    @classmethod
    def of(
        cls, path: str, metadata: Any, *, write_empty: bool = False
    ) -> ChunkFormat | None:
        """The format of an array, or ``None`` if its chunks are not plain.

        Plain means: zarr v3, a regular chunk grid, no sharding or storage
        transformers, a numeric data type with fill value 0, and the codec
        chain ``bytes`` (any byte order) optionally followed by ``zstd``:
        the chain dask_hizt creates (see docs/format.md).
        """
        if not isinstance(metadata, ArrayV3Metadata):
            return None
        # a regular grid (RegularChunkGrid, RegularChunkGridMetadata in zarr
        # 3.4), where every chunk has one shape
        grid = metadata.chunk_grid
        chunks = getattr(grid, "chunk_shape", None)
        if chunks is None or not type(grid).__name__.startswith("RegularChunkGrid"):
            return None
        if metadata.storage_transformers:
            return None
        native = np.dtype(metadata.data_type.to_native_dtype())
        if native.kind not in "biuf" or metadata.fill_value != 0:
            return None
        codecs = tuple(metadata.codecs)
        if not codecs or type(codecs[0]) is not BytesCodec:
            return None
        zstd: Zstd | None = None
        if len(codecs) == 2 and type(codecs[1]) is ZstdCodec:
            # the codec zarr's own ZstdCodec wraps, with the same settings
            zstd = Zstd(level=codecs[1].level, checksum=codecs[1].checksum)
        elif len(codecs) != 1:
            return None
        # "little", "big" or None (an enum of them in older zarr versions)
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        stored = native if endian is None else native.newbyteorder(_ORDER[endian])
        return cls(
            path=path,
            shape=tuple(metadata.shape),
            chunks=tuple(chunks),
            dtype=stored,
            native=native,
            zstd=zstd,
            write_empty=write_empty,
            metadata=metadata,
        )

    def key(self, coords: Sequence[int]) -> str:
        """Store key of the chunk at grid coordinates ``coords``."""
        return f"{self.path}/{self.metadata.encode_chunk_key(tuple(coords))}"

    def decode(self, data: Buffer | None) -> npt.NDArray[Any]:
        """A chunk's bytes as a new, writable ``chunks``-shaped array (zeros
        if absent).

        Raises what the codec raises on damaged bytes (zstd's
        ``RuntimeError``), and ``ValueError`` if they do not hold one chunk.
        """
        if data is None:
            return np.zeros(self.chunks, dtype=self.native)
        out = np.empty(self.chunks, dtype=self.dtype)
        if self.zstd is not None and _zstd_content_size(data) == out.nbytes:
            # straight into the array: no copy of the decoded bytes
            self.zstd.decode(data, out=out)
        else:
            raw = self.zstd.decode(data) if self.zstd is not None else data
            out.reshape(-1)[...] = np.frombuffer(raw, dtype=self.dtype)
        return out if self.dtype == self.native else out.astype(self.native)

    def encode(self, chunk: npt.NDArray[Any]) -> bytes | None:
        """The bytes zarr stores for a ``chunks``-shaped array, or ``None``
        where zarr deletes the chunk (all bits zero, empty chunks not written)."""
        data = np.ascontiguousarray(chunk, dtype=self.dtype)
        if not self.write_empty and not data.view(np.uint8).any():
            return None
        if self.zstd is None:
            return data.tobytes()
        out: bytes = self.zstd.encode(data)
        return out


def _zstd_content_size(data: Buffer) -> int | None:
    """The decoded size a zstd frame's header declares, or ``None`` if it is
    not a zstd frame header or declares none (RFC 8878, section 3.1.1).

    numcodecs decodes into a buffer as large as *or larger than* the frame's
    content without complaint: the size is checked first, so that a frame of
    another size cannot leave part of a chunk undecoded.
    """
    head = memoryview(data).cast("B")[:18]
    if len(head) < 6 or bytes(head[:4]) != _ZSTD_MAGIC:
        return None
    descriptor = head[4]
    single_segment = (descriptor >> 5) & 1
    at = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
    width = (single_segment, 2, 4, 8)[descriptor >> 6]
    if width == 0 or len(head) < at + width:
        return None
    size = int.from_bytes(head[at : at + width], "little")
    return size + 256 if width == 2 else size


async def open_format(
    store: Store, path: str, *, mode: Literal["r", "r+", "a"] = "a"
) -> tuple[ChunkFormat | None, Any]:
    """The chunk format of the array at ``path``, and the zarr (async) array.

    The array's ``write_empty_chunks`` setting is zarr's configuration at the
    time of opening, as it is for a zarr array opened then.
    """
    array = await zarr.api.asynchronous.open_array(
        store=store, path=path, zarr_format=3, mode=mode
    )
    write_empty = bool(array.config.write_empty_chunks)
    return ChunkFormat.of(path, array.metadata, write_empty=write_empty), array


async def fetch(store: Store, key: str) -> Buffer | None:
    """A chunk's stored bytes (not copied), or ``None`` if the chunk is absent."""
    buf = await store.get(key, _PROTOTYPE)
    if buf is None:
        return None
    out: Buffer = buf.as_numpy_array()
    return out


async def delete_or_set(store: Store, key: str, data: bytes | None) -> None:
    """Write a chunk's bytes, or delete the chunk when ``data`` is ``None``."""
    if data is None:
        await store.delete(key)
    else:
        await store.set(key, _PROTOTYPE.buffer.from_bytes(data))


def basic_region(
    selection: Any, shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[int, ...]] | None:
    """A selection of integers and unit-step slices as slices, one per axis.

    Returns
    -------
    tuple or None
        The slices (``0 <= start <= stop <= n``) and the axes that an integer
        picks (dropped from the result), or ``None`` for any other selection
        (arrays, steps, a second ellipsis): those are left to zarr.
    """
    parts = list(selection) if isinstance(selection, tuple) else [selection]
    dots = [i for i, p in enumerate(parts) if p is Ellipsis]
    if len(dots) > 1:
        return None
    if dots:
        at = dots[0]
        parts[at : at + 1] = [slice(None)] * (len(shape) - len(parts) + 1)
    if len(parts) > len(shape):
        return None
    parts += [slice(None)] * (len(shape) - len(parts))
    region = []
    picked = []
    for axis, (part, n) in enumerate(zip(parts, shape, strict=True)):
        if isinstance(part, slice):
            start, stop, step = part.indices(n)
            if step != 1:
                return None
            region.append(slice(start, max(start, stop)))
        elif isinstance(part, int | np.integer) and not isinstance(part, bool):
            i = int(part) + n if part < 0 else int(part)
            if not 0 <= i < n:
                return None  # zarr raises its own IndexError
            region.append(slice(i, i + 1))
            picked.append(axis)
        else:
            return None
    return tuple(region), tuple(picked)


async def read_region(
    store: Store,
    fmt: ChunkFormat,
    region: Sequence[slice],
    *,
    concurrency: int,
    on_error: Callable[[BaseException, tuple[int, ...]], BaseException | None],
) -> npt.NDArray[Any]:
    """The bins of ``region`` (unit-step slices within the array), chunk by chunk.

    Absent chunks read as zeros. ``on_error(err, coords)`` may turn an error
    of one chunk's read or decoding into another exception to raise (or
    ``None`` to raise ``err``); the first error cancels the other reads.
    """
    out = np.zeros([s.stop - s.start for s in region], dtype=fmt.native)
    grid = [
        range(s.start // c, -(-s.stop // c))
        for s, c in zip(region, fmt.chunks, strict=True)
    ]
    big = math.prod(fmt.chunks) * fmt.native.itemsize >= OFFLOAD_BYTES
    limit = asyncio.Semaphore(concurrency)

    async def one(coords: tuple[int, ...]) -> None:
        async with limit:
            try:
                data = await fetch(store, fmt.key(coords))
                if data is None:
                    return  # the fill value, already there
                chunk = (
                    await asyncio.to_thread(fmt.decode, data)
                    if big
                    else fmt.decode(data)
                )
            except Exception as err:
                error = on_error(err, coords)
                if error is None:
                    raise
                raise error from err
        src = []
        dst = []
        for i, s, c in zip(coords, region, fmt.chunks, strict=True):
            lo, hi = max(s.start, i * c), min(s.stop, (i + 1) * c)
            src.append(slice(lo - i * c, hi - i * c))
            dst.append(slice(lo - s.start, hi - s.start))
        out[tuple(dst)] = chunk[tuple(src)]

    await gather(*(one(tuple(c)) for c in itertools.product(*grid)))
    return out


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather``, but the first failure cancels the others and waits
    for them before it is raised.

    A plain gather leaves the other reads and writes running in zarr's event
    loop after the caller has failed: an owner's would keep writing
    (orphaned) chunks after the compute has already reported its error.
    """
    if len(aws) <= 1:
        # nothing to cancel: skip the task, which costs an extra loop cycle
        return [await a for a in aws]
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        # also when this gather is itself cancelled: nothing keeps running
        for t in tasks:
            t.cancel()
        # waits for the cancelled ones, and retrieves every error (none is
        # then logged as "never retrieved")
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        error = None if t.cancelled() else t.exception()
        if error is not None:
            raise error
    return [t.result() for t in tasks]
