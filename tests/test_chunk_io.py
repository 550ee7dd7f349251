"""The raw chunk path (``dask_hizt._chunkio``) against zarr's.

Writes: the same partial histograms go into two forks of one real icechunk
repository, once through zarr's async API (``raw=False``) and once through
the store's get/set with the codecs applied by hand, and the stored bytes of
every chunk key are compared, edge and absent chunks included. Reads: the
raw region reads of ``dask_hizt._read`` against plain zarr reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boost_histogram as bh
import dask
import hist
import icechunk
import numpy as np
import numpy.typing as npt
import pytest
import zarr
from conftest import damage
from zarr.core.sync import sync

import dask_hizt as dh
from dask_hizt._arrays import create_arrays
from dask_hizt._chunkio import ChunkFormat, basic_region, open_format
from dask_hizt._partial import Partial, finish
from dask_hizt._read import _Field
from dask_hizt._write import Segment, _touched_chunks, _write
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema

STORAGES = {
    "double": bh.storage.Double,
    "int64": bh.storage.Int64,
    "weight": bh.storage.Weight,
    "mean": bh.storage.Mean,
    "weighted_mean": bh.storage.WeightedMean,
}
# 4 x 202 bins (flow included) in chunks of 3 x 64: the last chunk row holds
# only the category overflow bin, the last chunk column 10 of 64 bins.
AXES = (
    hist.axis.StrCategory(["a", "b", "c"], name="c"),
    hist.axis.Regular(200, 0, 1, name="x"),
)
LAYOUT = Layout((4, 202), (3, 64))


@pytest.fixture(autouse=True)
def _config() -> Iterator[None]:
    with dask.config.set({"dask_hizt.write-concurrency": 4}):
        yield


def _repo(path: Path, schema: Schema, *, compressors: Any = None) -> Any:
    """A repository with the arrays of histogram ``h`` committed, still empty."""
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    if compressors is None:
        create_arrays(session.store, {"h": (schema, LAYOUT)})
    else:
        for field in schema.spec.fields:
            zarr.create_array(
                session.store,
                name=f"h/{field}",
                shape=LAYOUT.shape,
                chunks=LAYOUT.chunks,
                dtype=schema.dtype,
                fill_value=0,
                compressors=compressors,
            )
    session.commit("create h")
    return repo


def _eager(storage: str, seed: int, cats: list[str], n: int = 3000) -> hist.Hist:
    """A filled eager histogram; x spills into both flow bins, ``zz`` into the
    category overflow; weights and samples are not integers, so chunks do
    not compress to nothing."""
    rng = np.random.default_rng(seed)
    h = hist.Hist(*AXES, storage=STORAGES[storage]())
    c = rng.choice(cats, n)
    x = rng.uniform(-0.05, 1.05, n)
    w = rng.uniform(0.5, 2.0, n)
    s = rng.normal(3.0, 1.0, n)
    if storage in ("double", "weight"):
        h.fill(c=c, x=x, weight=w)
    elif storage == "int64":
        h.fill(c=c, x=x)
    elif storage == "mean":
        h.fill(c=c, x=x, sample=s)
    else:
        h.fill(c=c, x=x, weight=w, sample=s)
    return h


def _fields(h: hist.Hist, schema: Schema) -> list[npt.NDArray[Any]]:
    view: Any = np.asarray(h.view(flow=True))
    names = schema.spec.fields
    if names == ("value",):
        return [np.ascontiguousarray(view, dtype=schema.dtype)]
    return [np.ascontiguousarray(view[f], dtype=schema.dtype) for f in names]


def _partial(h: hist.Hist, schema: Schema) -> Partial:
    """The partial histogram a fill of ``h``'s entries gives (dense or sparse)."""
    fields = tuple(LAYOUT.chunk_major(f) for f in _fields(h, schema))
    return finish(0, LAYOUT.n_keys, fields, schema.spec.algebra)


def _write_one(
    repo: Any, schema: Schema, part: Partial, *, raw: bool, concurrency: int = 16
) -> Any:
    """Write ``part`` into a fork of the branch tip by one path; the fork."""
    segment = Segment("h", schema.spec.fields, LAYOUT, 0, 0, LAYOUT.n_chunks)
    jobs = [(segment, part, _touched_chunks(part, LAYOUT.chunk_size))]
    fork = repo.writable_session("main").fork()
    sync(_write(fork, jobs, concurrency, raw=raw))
    return fork


def _write_both(
    repo: Any, schema: Schema, part: Partial, concurrency: int = 16
) -> dict[bool, Any]:
    """Write ``part`` into a fork of the branch tip by each path; the forks."""
    return {
        raw: _write_one(repo, schema, part, raw=raw, concurrency=concurrency)
        for raw in (False, True)
    }


def _stored(store: Any, schema: Schema) -> dict[str, bytes | None]:
    """The stored bytes of every chunk key of every field array."""
    proto = zarr.core.buffer.default_buffer_prototype()
    keys = [
        f"h/{field}/c/{i}/{j}"
        for field in schema.spec.fields
        for i in range(LAYOUT.grid[0])
        for j in range(LAYOUT.grid[1])
    ]

    async def get_all() -> list[Any]:
        return [await store.get(k, proto) for k in keys]

    got = sync(get_all())
    return {
        k: None if b is None else b.to_bytes() for k, b in zip(keys, got, strict=True)
    }


def _commit(repo: Any, fork: Any) -> None:
    session = repo.writable_session("main")
    session.merge(fork)
    session.commit("fill")


def _read(store: Any, schema: Schema) -> list[npt.NDArray[Any]]:
    """Every field array, read by plain zarr."""
    return [
        zarr.open_array(store, path=f"h/{f}", mode="r")[...] for f in schema.spec.fields
    ]


@pytest.mark.parametrize("storage", list(STORAGES))
def test_raw_path_stores_the_bytes_zarr_stores(tmp_path: Path, storage: str) -> None:
    schema = Schema.from_axes(AXES, STORAGES[storage]())
    repo = _repo(tmp_path / "repo", schema)
    # Round 1 into empty arrays: chunks are absent before; the category
    # overflow row stays untouched (absent after too).
    first = _eager(storage, 1, ["a", "b"])
    forks = _write_both(repo, schema, _partial(first, schema))
    zarr_bytes, raw_bytes = (
        _stored(forks[False].store, schema),
        _stored(forks[True].store, schema),
    )
    assert raw_bytes == zarr_bytes
    assert raw_bytes["h/" + schema.spec.fields[0] + "/c/1/0"] is None
    assert sum(b is not None for b in raw_bytes.values()) == 4 * len(schema.spec.fields)
    _commit(repo, forks[True])

    # Round 2 onto stored chunks, into the edge row (category overflow) as well.
    second = _eager(storage, 2, ["a", "c", "zz"])
    forks = _write_both(repo, schema, _partial(second, schema))
    raw_bytes = _stored(forks[True].store, schema)
    assert raw_bytes == _stored(forks[False].store, schema)
    assert all(b is not None for b in raw_bytes.values())

    # plain zarr reads the raw path's chunks back as the eager sum
    expected = _fields(first + second, schema)
    for got, want in zip(_read(forks[True].store, schema), expected, strict=True):
        if storage in ("mean", "weighted_mean"):
            # merged pairwise vs filled in one go: equal up to rounding
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(got, want)


def test_sparse_and_dense_partials_agree(tmp_path: Path) -> None:
    """A partial kept as (key, value) pairs and its dense form write the same."""
    schema = Schema.from_axes(AXES, bh.storage.Weight())
    repo = _repo(tmp_path / "repo", schema)
    h = _eager("weight", 3, ["b"], n=50)
    sparse = _partial(h, schema)
    assert not sparse.dense
    dense = Partial(0, LAYOUT.n_keys, None, sparse.to_dense(), sparse.algebra)
    a = _stored(_write_both(repo, schema, sparse)[True].store, schema)
    b = _stored(_write_both(repo, schema, dense)[True].store, schema)
    assert a == b


@pytest.mark.parametrize("write_empty", [False, True])
def test_a_chunk_that_adds_up_to_zero_is_deleted_as_zarr_does(
    tmp_path: Path, write_empty: bool
) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Double())
    repo = _repo(tmp_path / "repo", schema)
    h = _eager("double", 4, ["a"])
    _commit(repo, _write_both(repo, schema, _partial(h, schema))[True])
    minus = _partial(h * -1, schema)
    with zarr.config.set({"array.write_empty_chunks": write_empty}):
        forks = _write_both(repo, schema, minus)
    raw_bytes = _stored(forks[True].store, schema)
    assert raw_bytes == _stored(forks[False].store, schema)
    # the chunks of category "a" are deleted (or stored as zeros)
    assert (raw_bytes["h/value/c/0/0"] is None) is not write_empty
    for got in _read(forks[True].store, schema):
        assert not got.any()


def test_arrays_with_other_codecs_go_through_zarr(tmp_path: Path) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Weight())
    repo = _repo(tmp_path / "repo", schema, compressors=zarr.codecs.GzipCodec())
    fmt, _ = sync(
        open_format(repo.readonly_session(branch="main").store, "h/value", mode="r")
    )
    assert fmt is None
    h = _eager("weight", 5, ["a", "c"])
    forks = _write_both(repo, schema, _partial(h, schema))
    assert _stored(forks[True].store, schema) == _stored(forks[False].store, schema)
    for got, want in zip(
        _read(forks[True].store, schema), _fields(h, schema), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_chunk_format_is_read_from_the_metadata(tmp_path: Path) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Int64())
    repo = _repo(tmp_path / "repo", schema)
    store = repo.readonly_session(branch="main").store
    fmt, array = sync(open_format(store, "h/value", mode="r"))
    assert fmt is not None
    assert (fmt.chunks, fmt.native, fmt.dtype.str) == (
        (3, 64),
        np.dtype("int64"),
        "<i8",
    )
    assert fmt.zstd is not None
    assert (fmt.zstd.level, fmt.zstd.checksum) == (1, True)
    assert fmt.key((1, 3)) == "h/value/c/1/3"
    # what zarr decodes, ChunkFormat decodes, and back
    chunk = np.arange(3 * 64, dtype=np.int64).reshape(3, 64) - 5
    data = fmt.encode(chunk)
    assert data is not None
    np.testing.assert_array_equal(fmt.decode(data), chunk)
    # a fill value other than 0 is not plain
    other = array.metadata.to_dict() | {"fill_value": 7}
    assert ChunkFormat.of("x", type(array.metadata).from_dict(other)) is None


def test_write_concurrency_bounds_chunks_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Double())
    repo = _repo(tmp_path / "repo", schema)
    _commit(
        repo,
        _write_both(repo, schema, _partial(_eager("double", 6, ["a", "zz"]), schema))[
            True
        ],
    )
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
    part = _partial(_eager("double", 7, ["a", "zz"]), schema)
    _write_both(repo, schema, part, concurrency=2)
    assert state["most"] == 2


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("how", ["overwritten", "flipped", "truncated", "missing"])
def test_damaged_chunk_raises_corrupt_chunk_error(
    tmp_path: Path, how: str, raw: bool
) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Weight())
    repo = _repo(tmp_path / "repo", schema)
    rng = np.random.default_rng(8)
    h = hist.Hist(*AXES, storage=bh.storage.Weight())
    # only chunk (0, 1): bins 64-127 of x, categories a-c, every bin filled
    # with non-integer sums: too big to be inlined into the manifest
    h.fill(
        c=rng.choice(["a", "b", "c"], 3000),
        x=rng.uniform(0.321, 0.635, 3000),
        weight=rng.uniform(0.5, 2, 3000),
    )
    _commit(repo, _write_one(repo, schema, _partial(h, schema), raw=True))
    objects = sorted((tmp_path / "repo" / "chunks").iterdir())
    assert len(objects) == 2  # value and variance of chunk (0, 1)
    for obj in objects:
        damage(obj, how)
    with pytest.raises(dh.CorruptChunkError) as caught:
        _write_one(repo, schema, _partial(h, schema), raw=raw)
    err = caught.value
    assert (err.path, err.chunk) == ("h", (0, 1))
    assert err.array in schema.spec.fields


SELECTIONS = {
    "all": ...,
    "row": (1, slice(None)),
    "block": (slice(1, 4), slice(60, 130)),
    "negative int": (-1, slice(150, None)),
    "one bin": (0, 70),
    "edge corner": (3, slice(190, 202)),
    "empty": (slice(2, 2), slice(None)),
    "stepped (zarr)": (slice(None), slice(None, None, 3)),
    "list (zarr)": (np.array([0, 2]), slice(5, 90)),
}


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_region_reads_equal_zarr_reads(tmp_path: Path, name: str) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Double())
    repo = _repo(tmp_path / "repo", schema)
    # chunk row 1 (category overflow) stays absent
    part = _partial(_eager("double", 9, ["a", "b", "c"]), schema)
    _commit(repo, _write_one(repo, schema, part, raw=True))
    store = repo.readonly_session(branch="main").store
    field = _Field.open(store, "h", "value")
    selection = SELECTIONS[name]
    want = zarr.open_array(store, path="h/value", mode="r").oindex[selection]
    got = field.read(selection, orthogonal=True)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (basic_region(selection, LAYOUT.shape) is None) == name.endswith("(zarr)")


def test_basic_region() -> None:
    shape = (4, 202)
    assert basic_region(..., shape) == ((slice(0, 4), slice(0, 202)), ())
    assert basic_region((2,), shape) == ((slice(2, 3), slice(0, 202)), (0,))
    assert basic_region((..., -2), shape) == ((slice(0, 4), slice(200, 201)), (1,))
    assert basic_region((slice(3, 1), 0), shape) == ((slice(3, 3), slice(0, 1)), (1,))
    assert basic_region((4, 0), shape) is None  # out of bounds: zarr's error
    assert basic_region((0, 0, 0), shape) is None
    assert basic_region((..., ...), shape) is None
    assert basic_region(([0, 1], 0), shape) is None


def test_bins_a_sparse_partial_has_no_entry_for_keep_their_bits(tmp_path: Path) -> None:
    schema = Schema.from_axes(AXES, bh.storage.Mean())
    repo = _repo(tmp_path / "repo", schema)
    session = repo.writable_session("main")
    # a chunk holding a -0.0 count and an infinite mean in bins nobody fills
    zarr.open_array(session.store, path="h/count")[0, 3:5] = [-0.0, 1.0]
    zarr.open_array(session.store, path="h/value")[0, 4] = np.inf
    session.commit("odd bins")
    h = hist.Hist(*AXES, storage=bh.storage.Mean())
    h.fill(c="a", x=[0.1], sample=[2.0])  # x bin 21 of chunk (0, 0)
    part = _partial(h, schema)
    assert not part.dense
    fork = _write_one(repo, schema, part, raw=True)
    count, value, _ = _read(fork.store, schema)
    assert np.signbit(count[0, 3])
    assert value[0, 4] == np.inf
    assert (count[0, 21], value[0, 21]) == (1.0, 2.0)
