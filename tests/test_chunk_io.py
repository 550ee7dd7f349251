"""The chunks a compute writes, against zarr's.

dask_hizt writes chunks through the store with the codecs applied by hand
where an array has the plain codecs of docs/format.md, and through zarr
otherwise. Here real computes fill histograms, and every stored chunk is
compared with what zarr stores for the same array contents (edge and absent
chunks included), decoded by hand as the format describes it, damaged, and
read back in regions.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boost_histogram as bh
import dask
import dask.array as da
import hist
import icechunk
import numcodecs
import numpy as np
import numpy.typing as npt
import pytest
import zarr
import zarr.buffer
from conftest import damage
from zarr.core.metadata import ArrayV3Metadata

import dask_hizt as dh

# the one private name: the raw-read rule has no public effect but speed
from dask_hizt._chunkio import basic_region
from dask_hizt.testing import assert_hist_equal

STORAGES: dict[str, type[bh.storage.Storage]] = {
    "double": bh.storage.Double,
    "int64": bh.storage.Int64,
    "weight": bh.storage.Weight,
    "mean": bh.storage.Mean,
    "weighted_mean": bh.storage.WeightedMean,
}
# 4 x 202 bins (flow included) in chunks of 1 x 64 (512 bytes of doubles):
# the last chunk row holds only the category overflow bin, the last chunk
# column 10 of 64 bins.
AXES = (
    hist.axis.StrCategory(["a", "b", "c"], name="c"),
    hist.axis.Regular(200, 0, 1, name="x"),
)
CHUNKS = (1, 64)
GRID = (4, 4)


@pytest.fixture(autouse=True)
def _config() -> Iterator[None]:
    with dask.config.set(
        {"dask_hizt.write-concurrency": 4, "dask_hizt.chunk-bytes": "512B"}
    ):
        yield


def _columns(storage: str, seed: int, cats: list[str], n: int = 3000) -> dict[str, Any]:
    """Fill arguments: x spills into both flow bins, ``zz`` into the category
    overflow; weights and samples are not integers, so chunks do not
    compress to nothing."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"c": rng.choice(cats, n), "x": rng.uniform(-0.05, 1.05, n)}
    w, s = rng.uniform(0.5, 2.0, n), rng.normal(3.0, 1.0, n)
    if storage in ("double", "weight", "weighted_mean"):
        out["weight"] = w
    if storage in ("mean", "weighted_mean"):
        out["sample"] = s
    return out


def _compute(repo: Path, storage: str, columns: dict[str, Any]) -> dh.StoredHist:
    """One compute of these columns into histogram ``h`` (in 3 partitions)."""
    h = dh.Hist(*AXES, storage=STORAGES[storage](), store=repo, path="h")
    h.fill(**{k: da.from_array(v, chunks=1000) for k, v in columns.items()})
    stored: dh.StoredHist = h.compute(scheduler="sync")
    return stored


def _eager(storage: str, *fills: dict[str, Any]) -> hist.Hist[Any]:
    h = hist.Hist(*AXES, storage=STORAGES[storage]())
    for columns in fills:
        h.fill(**columns)
    return h


def _fields(storage: str) -> tuple[str, ...]:
    """The arrays of a storage: the fields of its view (docs/format.md)."""
    h = bh.Histogram(bh.axis.Regular(1, 0, 1), storage=STORAGES[storage]())
    return np.asarray(h.view()).dtype.names or ("value",)


def _like(arr: zarr.Array[Any]) -> dict[str, Any]:
    """The creation arguments of a new array like ``arr`` (its codecs too)."""
    meta = arr.metadata
    assert isinstance(meta, ArrayV3Metadata)
    return {
        "shape": arr.shape,
        "chunks": arr.chunks,
        "dtype": arr.dtype,
        "fill_value": arr.fill_value,
        "dimension_names": meta.dimension_names,
    }


def _field_of(view: npt.NDArray[Any], field: str) -> npt.NDArray[Any]:
    """A field of a boost-histogram view (the view itself for one field)."""
    if view.dtype.names is None:
        return view
    out: npt.NDArray[Any] = view[field]
    return out


def _tip(repo: Path) -> str:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return str(r.lookup_branch("main"))


def _store(repo: Path) -> Any:
    """The store of the branch tip, read only."""
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return r.readonly_session(branch="main").store


def _chunk_bytes(store: Any, keys: Sequence[str]) -> dict[str, bytes | None]:
    proto = zarr.buffer.default_buffer_prototype()

    async def get_all() -> list[Any]:
        return [await store.get(k, proto) for k in keys]

    got = asyncio.run(get_all())
    return {
        k: None if b is None else b.to_bytes() for k, b in zip(keys, got, strict=True)
    }


def _keys(field: str) -> list[str]:
    return [f"h/{field}/c/{i}/{j}" for i in range(GRID[0]) for j in range(GRID[1])]


def _stored(repo: Path, fields: Sequence[str]) -> dict[str, bytes | None]:
    """The stored bytes of every chunk key of every field array."""
    return _chunk_bytes(_store(repo), [k for f in fields for k in _keys(f)])


def _as_zarr_stores(repo: Path, fields: Sequence[str]) -> dict[str, bytes | None]:
    """The bytes zarr stores for the same arrays: the same contents written
    by zarr into new arrays of the same metadata."""
    source = _store(repo)
    scratch = zarr.storage.MemoryStore()
    for f in fields:
        arr = zarr.open_array(source, path=f"h/{f}", mode="r")
        assert arr.serializer is not None
        copy = zarr.create_array(
            scratch,
            name=f"h/{f}",
            serializer=arr.serializer,
            compressors=arr.compressors,
            **_like(arr),
        )
        copy[...] = arr[...]
    return _chunk_bytes(scratch, [k for f in fields for k in _keys(f)])


def _read(repo: Path, fields: Sequence[str]) -> list[npt.NDArray[Any]]:
    """Every field array, read by plain zarr."""
    store = _store(repo)
    return [
        np.asarray(zarr.open_array(store, path=f"h/{f}", mode="r")[...]) for f in fields
    ]


@pytest.mark.parametrize("storage", list(STORAGES))
def test_stored_chunks_are_the_bytes_zarr_stores(tmp_path: Path, storage: str) -> None:
    repo, fields = tmp_path / "repo", _fields(storage)
    # Round 1 into new arrays: chunks are absent before; the category
    # overflow row stays untouched (absent after too).
    first = _columns(storage, 1, ["a", "b"])
    stored = _compute(repo, storage, first)
    assert stored.layout.chunks == CHUNKS
    got = _stored(repo, fields)
    assert got == _as_zarr_stores(repo, fields)
    assert got[f"h/{fields[0]}/c/3/0"] is None
    # categories a and b, 4 chunk columns each, per field
    assert sum(b is not None for b in got.values()) == 2 * 4 * len(fields)

    # Round 2 onto stored chunks, into the edge row (category overflow) as well.
    second = _columns(storage, 2, ["a", "c", "zz"])
    _compute(repo, storage, second)
    got = _stored(repo, fields)
    assert got == _as_zarr_stores(repo, fields)
    assert all(b is not None for b in got.values())

    # plain zarr reads the chunks back as the eager sum; summed partition by
    # partition (means merged pairwise) vs filled in one go: equal up to rounding
    tol = 1e-12  # (Int64: exact all the same)
    assert_hist_equal(
        dh.open(repo, "h"), _eager(storage, first, second), rtol=tol, atol=tol
    )
    view = np.asarray(_eager(storage, first, second).view(flow=True))
    for f, arr in zip(fields, _read(repo, fields), strict=True):
        want = _field_of(view, f)
        np.testing.assert_allclose(arr, want, rtol=tol, atol=tol)


def test_sparse_and_dense_partials_agree(tmp_path: Path) -> None:
    """A partial kept as (key, value) pairs and its dense form write the same."""
    columns = _columns("weight", 3, ["b"], n=50)
    stored: dict[float, dict[str, bytes | None]] = {}
    for fraction in (2.0, 0.0):  # sparse (50 of 808 bins), dense
        repo = tmp_path / f"repo-{fraction}"
        with dask.config.set({"dask_hizt.dense-fraction": fraction}):
            _compute(repo, "weight", columns)
        stored[fraction] = _stored(repo, _fields("weight"))
    assert stored[2.0] == stored[0.0]
    assert any(b is not None for b in stored[0.0].values())


@pytest.mark.parametrize("write_empty", [False, True])
def test_a_chunk_that_adds_up_to_zero_is_deleted_as_zarr_does(
    tmp_path: Path, write_empty: bool
) -> None:
    repo = tmp_path / "repo"
    columns = _columns("double", 4, ["a"])
    _compute(repo, "double", columns)
    minus = columns | {"weight": -columns["weight"]}
    with zarr.config.set({"array.write_empty_chunks": write_empty}):
        _compute(repo, "double", minus)
    got = _stored(repo, ["value"])
    assert got == _as_zarr_stores(repo, ["value"]) or write_empty
    # the chunks of category "a" are deleted (or stored as zeros)
    assert (got["h/value/c/0/0"] is None) is not write_empty
    for arr in _read(repo, ["value"]):
        assert not arr.any()


def _recreate_with_gzip(repo: Path, fields: Sequence[str]) -> None:
    """Give histogram ``h``'s arrays the gzip codec instead of zstd: a zarr
    reader takes them as they are; dask_hizt writes them through zarr."""
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    session = r.writable_session("main")
    for f in fields:
        arr = zarr.open_array(session.store, path=f"h/{f}")
        data = arr[...]
        copy = zarr.create_array(
            session.store,
            name=f"h/{f}",
            compressors=zarr.codecs.GzipCodec(),
            overwrite=True,
            **_like(arr),
        )
        copy[...] = data
    session.commit("gzip")


def _gunzipped(chunks: dict[str, bytes | None]) -> dict[str, bytes | None]:
    return {k: None if b is None else gzip.decompress(b) for k, b in chunks.items()}


def test_arrays_with_other_codecs_go_through_zarr(tmp_path: Path) -> None:
    repo, fields = tmp_path / "repo", _fields("weight")
    first = _columns("weight", 5, ["a", "c"])
    _compute(repo, "weight", first)
    _recreate_with_gzip(repo, fields)
    second = _columns("weight", 6, ["a", "b"])
    _compute(repo, "weight", second)
    got = _stored(repo, fields)
    chunk = got["h/value/c/0/1"]
    assert chunk is not None
    assert chunk[:2] == b"\x1f\x8b"  # still gzip
    # gzip puts the time into its header: compare what the chunks hold
    assert _gunzipped(got) == _gunzipped(_as_zarr_stores(repo, fields))
    assert_hist_equal(dh.open(repo, "h"), _eager("weight", first, second), rtol=1e-12)


def test_chunk_format_as_the_format_page_says(tmp_path: Path) -> None:
    """Little-endian bytes, zstd level 1 with its checksum, fill value 0,
    chunk keys ``<path>/<field>/c/<i>/<j>``: decoded by hand, a chunk is the
    block zarr reads."""
    repo = tmp_path / "repo"
    _compute(repo, "int64", _columns("int64", 7, ["a", "b", "c", "zz"]))
    store = _store(repo)
    arr = zarr.open_array(store, path="h/value", mode="r")
    meta: dict[str, Any] = arr.metadata.to_dict()
    assert meta["fill_value"] == 0
    assert tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]) == CHUNKS
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd"]
    assert meta["codecs"][0]["configuration"] == {"endian": "little"}
    assert meta["codecs"][1]["configuration"] == {"level": 1, "checksum": True}
    data = _chunk_bytes(store, ["h/value/c/1/3"])["h/value/c/1/3"]
    assert data is not None
    raw = numcodecs.Zstd(level=1, checksum=True).decode(data)
    chunk = np.frombuffer(raw, dtype="<i8").reshape(CHUNKS)
    # the last chunk column: 10 bins in the array, the rest padding
    np.testing.assert_array_equal(chunk[:, :10], arr[1:2, 192:202])
    assert chunk[:, :10].any()


def test_write_concurrency_bounds_chunks_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    _compute(repo, "double", _columns("double", 6, ["a", "zz"]))
    state = {"now": 0, "most": 0}
    original = icechunk.IcechunkStore.get

    async def get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/c/" not in key:
            return await original(self, key, *args, **kwargs)
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        try:
            await asyncio.sleep(0.005)
            return await original(self, key, *args, **kwargs)
        finally:
            state["now"] -= 1

    monkeypatch.setattr(icechunk.IcechunkStore, "get", get)
    # one owner reads-adds-writes the 8 stored chunks, 2 at a time
    with dask.config.set({"dask_hizt.write-concurrency": 2, "dask_hizt.owners": 1}):
        _compute(repo, "double", _columns("double", 7, ["a", "zz"]))
    assert state["most"] == 2


def _column_one(seed: int) -> dict[str, Any]:
    """Entries in chunk column 1 only (bins 64-127 of x) of categories a-c,
    every bin filled with non-integer sums: too big to be inlined into the
    manifest."""
    rng = np.random.default_rng(seed)
    return {
        "c": rng.choice(["a", "b", "c"], 3000),
        "x": rng.uniform(0.321, 0.635, 3000),
        "weight": rng.uniform(0.5, 2, 3000),
    }


@pytest.mark.parametrize(
    ("how", "codec"),
    [
        *[(how, "zstd") for how in ("overwritten", "flipped", "truncated", "missing")],
        *[
            (how, "gzip (zarr)")
            for how in ("overwritten", "flipped", "truncated", "missing")
        ],
    ],
)
def test_damaged_chunk_raises_corrupt_chunk_error(
    tmp_path: Path, how: str, codec: str
) -> None:
    repo = tmp_path / "repo"
    if codec != "zstd":  # arrays with gzip before any chunk is written
        dh.Hist(*AXES, storage=bh.storage.Weight(), store=repo, path="h").compute()
        _recreate_with_gzip(repo, _fields("weight"))
    _compute(repo, "weight", _column_one(8))
    objects = sorted((repo / "chunks").iterdir())
    # value and variance of chunks (0, 1), (1, 1), (2, 1)
    assert len(objects) == 6
    for obj in objects:
        damage(obj, how)
    tip = _tip(repo)
    with pytest.raises(dh.CorruptChunkError) as caught:
        _compute(repo, "weight", _column_one(9))  # reads-adds-writes them
    err = caught.value
    assert err.path == "h"
    assert err.chunk in {(0, 1), (1, 1), (2, 1)}
    assert err.array in _fields("weight")
    assert _tip(repo) == tip  # nothing added


SELECTIONS: dict[str, Any] = {
    "all": ...,
    "row": (1, slice(None)),
    "block": (slice(1, 4), slice(60, 130)),
    "negative int": (-1, slice(150, None)),
    "one bin": (0, 70),
    "edge corner": (3, slice(190, 202)),
    "empty": (slice(2, 2), slice(None)),
    "stepped": (slice(None), slice(None, None, 3)),
    "list": (np.array([0, 2]), slice(5, 90)),
}


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_region_reads_equal_zarr_reads(tmp_path: Path, name: str) -> None:
    """The stored field as a dask array (raw region reads, chunk by chunk)
    against plain zarr reads; the category overflow row stays absent."""
    repo = tmp_path / "repo"
    stored = _compute(repo, "double", _columns("double", 9, ["a", "b", "c"]))
    arr = stored.to_dask_array("value", flow=True)
    assert arr.chunks == ((1, 1, 1, 1), (64, 64, 64, 10))
    selection = SELECTIONS[name]
    zarr_array = zarr.open_array(_store(repo), path="h/value", mode="r")
    want = np.asarray(zarr_array.oindex[selection])
    got = np.asarray(arr[selection].compute(scheduler="sync"))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert _stored(repo, ["value"])["h/value/c/3/0"] is None


def test_basic_region() -> None:
    """Which selections the raw region reads take (the others go to zarr):
    not visible through the public API but in speed, so tested on its own."""
    shape = (4, 202)
    assert basic_region(..., shape) == ((slice(0, 4), slice(0, 202)), ())
    assert basic_region((2,), shape) == ((slice(2, 3), slice(0, 202)), (0,))
    assert basic_region((..., -2), shape) == ((slice(0, 4), slice(200, 201)), (1,))
    assert basic_region((slice(3, 1), 0), shape) == ((slice(3, 3), slice(0, 1)), (1,))
    assert basic_region((4, 0), shape) is None  # out of bounds: zarr's error
    assert basic_region((0, 0, 0), shape) is None
    assert basic_region((..., ...), shape) is None
    assert basic_region(([0, 1], 0), shape) is None
    for name, selection in SELECTIONS.items():
        raw = basic_region(selection, shape) is not None
        assert raw is (name not in ("stepped", "list")), name


def test_bins_a_sparse_partial_has_no_entry_for_keep_their_bits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _compute(
        repo, "mean", {"c": np.array(["a"]), "x": np.array([0.9]), "sample": [1.0]}
    )
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    session = r.writable_session("main")
    # a chunk holding a -0.0 count and an infinite mean in bins nobody fills
    zarr.open_array(session.store, path="h/count")[0, 3:5] = [-0.0, 1.0]
    zarr.open_array(session.store, path="h/value")[0, 4] = np.inf
    session.commit("odd bins")
    # x bin 21 of chunk (0, 0): one entry, a sparse partial
    with dask.config.set({"dask_hizt.dense-fraction": 0.25}):
        _compute(
            repo, "mean", {"c": np.array(["a"]), "x": np.array([0.1]), "sample": [2.0]}
        )
    count, value, _ = _read(repo, _fields("mean"))
    assert np.signbit(count[0, 3])
    assert value[0, 4] == np.inf
    assert (count[0, 21], value[0, 21]) == (1.0, 2.0)
