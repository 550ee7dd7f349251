"""Partials, the fill kernel and the routing tree, through a real compute:
sparse and dense partials (``dask_hizt.dense-fraction``), owners' key ranges
(``dask_hizt.owners``), the routing tree's fan-in (``dask_hizt.split-every``),
and the chunks written, read back from the zarr arrays as docs/format.md
describes them."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import icechunk
import numpy as np
import numpy.typing as npt
import pytest
from conftest import as_hist
from dask.core import get_dependencies
from dask.utils import key_split
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

FRACTIONS = st.sampled_from([0.0, 0.25, 2.0])


@contextmanager
def _repo() -> Iterator[Path]:
    """A fresh repository directory per hypothesis example."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d) / "repo.icechunk"


def _keys_axis(n: int) -> hist.axis.Integer:
    """An axis whose bin i is key i: no flow bins."""
    return hist.axis.Integer(0, n, underflow=False, overflow=False, name="k")


def _chunked(parts: Sequence[npt.NDArray[Any]]) -> da.Array:
    """One dask partition per part (empty parts included)."""
    whole = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    out: da.Array = da.from_array(whole, chunks=((*[len(p) for p in parts],),))
    return out


@given(keys=st.lists(st.integers(0, 99), max_size=300), fraction=FRACTIONS)
@settings(max_examples=30, deadline=None)
def test_sums_per_bin_sparse_and_dense(keys: list[int], fraction: float) -> None:
    k = np.asarray(keys, dtype=np.int64)
    w = np.arange(len(k), dtype=np.float64)
    axis = _keys_axis(100)
    with _repo() as repo, dask.config.set({"dask_hizt.dense-fraction": fraction}):
        counts = dh.Hist(axis, storage=hist.storage.Int64(), store=repo, path="n")
        sums = dh.Hist(axis, store=repo, path="w")
        counts.fill(da.from_array(k, chunks=50))
        sums.fill(da.from_array(k, chunks=50), weight=da.from_array(w, chunks=50))
        got_counts, got_sums = dh.compute(counts, sums, scheduler="sync")
        assert_hist_equal(
            got_counts, hist.Hist(axis, storage=hist.storage.Int64()).fill(k)
        )
        assert_hist_equal(got_sums, hist.Hist(axis).fill(k, weight=w))
        assert got_counts.values().sum() == len(k)


@given(
    parts=st.lists(st.lists(st.integers(0, 63), max_size=50), min_size=1, max_size=6),
    lo=st.integers(0, 63),
    width=st.integers(1, 64),
    owners=st.sampled_from([1, 3, 8]),
    fraction=FRACTIONS,
)
@settings(max_examples=40, deadline=None)
def test_owners_sum_their_key_ranges(
    parts: list[list[int]], lo: int, width: int, owners: int, fraction: float
) -> None:
    """Partials of several partitions, routed to owners that each keep a
    range of the keys (8 chunks of 8 bins), sum to the eager histogram, and
    any range of it reads back as the eager one's."""
    hi = min(64, lo + width)
    arrays = [np.asarray(p, dtype=np.int64) for p in parts]
    axis = _keys_axis(64)
    config = {
        "dask_hizt.dense-fraction": fraction,
        "dask_hizt.owners": owners,
        "dask_hizt.chunk-bytes": "64B",
        "dask_hizt.owner-bytes": 1,  # routed, small as it is
    }
    with _repo() as repo, dask.config.set(config):
        h = dh.Hist(axis, storage=hist.storage.Int64(), store=repo, path="h")
        writers = _writers(h.fill(_chunked(arrays)).__dask_graph__())
        assert len(writers) == owners
        stored = h.compute(scheduler="sync")
        eager = hist.Hist(axis, storage=hist.storage.Int64())
        for a in arrays:
            eager.fill(a)
        assert_hist_equal(stored, eager)
        np.testing.assert_array_equal(
            as_hist(stored[lo:hi]).values(), as_hist(eager[lo:hi]).values()
        )


@given(
    counts=st.lists(
        st.lists(st.integers(0, 70_000), min_size=4, max_size=4), min_size=1, max_size=5
    ),
    fraction=FRACTIONS,
    weighted=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_narrow_counts_add_up_without_overflow(
    counts: list[list[int]], fraction: float, weighted: bool
) -> None:
    """Keys 0, 10, 20, 30 of [0, 64) filled that many times by each partition:
    counts past 255 and 65535 in one partial (which holds unweighted counts
    in the narrowest unsigned type), and sums past them in the routing
    tree's merges (fan-in 2: several levels), with a weighted fill merged in."""
    parts = [np.repeat(np.arange(0, 40, 10, dtype=np.int64), c) for c in counts]
    axis = _keys_axis(64)
    config = {
        "dask_hizt.dense-fraction": fraction,
        "dask_hizt.split-every": 2,
        "dask_hizt.owners": 2,
        "dask_hizt.chunk-bytes": "64B",
        "dask_hizt.owner-bytes": 1,  # routed, small as it is
    }
    with _repo() as repo, dask.config.set(config):
        h = dh.Hist(axis, store=repo, path="h").fill(_chunked(parts))
        if weighted:  # float sums merged with the counts
            h.fill(np.array([10, 10]), weight=np.array([0.5, 0.25]))
        levels = _route_levels(h.__dask_graph__())
        stored = h.compute(scheduler="sync")
    want = np.zeros(64)
    want[[0, 10, 20, 30]] = np.sum(counts, axis=0)
    if weighted:
        want[10] += 0.75
    np.testing.assert_array_equal(stored.values(), want)
    assert levels >= (len(parts) > 2)  # merged in more than one step when many


async def _chunk_keys(store: Any, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


@given(
    keys=st.lists(st.integers(0, 63), max_size=80),
    chunk=st.sampled_from([1, 4, 16, 64]),
    fraction=st.sampled_from([0.0, 2.0]),
)
@settings(max_examples=30, deadline=None)
def test_only_the_chunks_with_entries_are_written(
    keys: list[int], chunk: int, fraction: float
) -> None:
    """Sparse and dense partials alike: the stored chunks of the value array
    (``<path>/value/c/<i>``, docs/format.md) are those with entries."""
    k = np.asarray(keys, dtype=np.int64)
    axis = _keys_axis(64)
    config = {
        "dask_hizt.dense-fraction": fraction,
        "dask_hizt.chunk-bytes": f"{8 * chunk}B",
    }
    with _repo() as repo, dask.config.set(config):
        h = dh.Hist(axis, storage=hist.storage.Int64(), store=repo, path="h")
        stored = h.fill(da.from_array(k, chunks=20)).compute(scheduler="sync")
        assert stored.layout.chunks == (chunk,)
        session = icechunk.Repository.open(
            icechunk.local_filesystem_storage(str(repo))
        ).readonly_session(branch="main")
        written = asyncio.run(_chunk_keys(session.store, "h/value"))
    got = sorted(int(key.rsplit("/", 1)[1]) for key in written if "/c/" in key)
    assert got == sorted(set((k // chunk).tolist()))


def _writers(graph: Mapping[Any, Any]) -> list[Any]:
    return [k for k in graph if key_split(k) == "hizt-write"]


def _route_levels(graph: Mapping[Any, Any]) -> int:
    """The longest chain of routing tasks in a graph."""
    depth: dict[Any, int] = {}

    def level(key: Any) -> int:
        if key not in depth:
            below = [level(d) for d in get_dependencies(graph, key)]
            depth[key] = (key_split(key) == "hizt-route") + max(below, default=0)
        return depth[key]

    return max((level(w) for w in _writers(graph)), default=0)


@pytest.mark.parametrize(
    ("n_partitions", "n_owners", "split_every"),
    [(1, 1, 8), (100, 1, 8), (1, 16, 8), (100, 16, 8), (37, 5, 3), (3, 40, 2)],
)
def test_routing_tree_is_bounded(
    n_partitions: int, n_owners: int, split_every: int, tmp_path: Path
) -> None:
    """The graph of a compute: every owner (write task) receives every fill
    partition exactly once, through one path of routing tasks, each merging
    at most ``split-every`` others, and there are O(P log O + O log P) of them."""
    axis = _keys_axis(n_owners * 10)  # chunks of 10 keys: one per owner
    config = {
        "dask_hizt.owners": n_owners,
        "dask_hizt.split-every": split_every,
        "dask_hizt.chunk-bytes": "80B",
        "dask_hizt.owner-bytes": 1,  # routed, small as it is
    }
    with dask.config.set(config):
        h = dh.Hist(axis, storage=hist.storage.Int64(), store=tmp_path, path="h")
        h.fill(da.arange(n_partitions, chunks=1) % (n_owners * 10))
        graph = dict(h.__dask_graph__())
    writers = _writers(graph)
    assert len(writers) == n_owners
    fills = sorted(k for k in graph if key_split(k) == "hizt-fill")
    assert len(fills) == n_partitions
    routing = [k for k in graph if key_split(k) == "hizt-route"]
    for key in routing:
        assert 1 <= len(get_dependencies(graph, key)) <= split_every, key
    for key in writers:
        assert 1 <= len(get_dependencies(graph, key)) <= split_every, key

    # each writer reaches every fill exactly once: one path each
    def paths(key: Any) -> dict[Any, int]:
        if key_split(key) == "hizt-fill":
            return {key: 1}
        out: dict[Any, int] = {}
        for dep in get_dependencies(graph, key):
            for leaf, n in paths(dep).items():
                out[leaf] = out.get(leaf, 0) + n
        return out

    for w in writers:
        assert paths(w) == dict.fromkeys(fills, 1)
    levels = int(np.ceil(np.log(max(n_partitions, n_owners)) / np.log(split_every))) + 1
    assert len(routing) <= (n_partitions + n_owners) * levels
    # and the histogram is the eager one
    stored = h.compute(scheduler="sync")
    eager = hist.Hist(axis, storage=hist.storage.Int64())
    assert_hist_equal(stored, eager.fill(np.arange(n_partitions) % (n_owners * 10)))


AXES: list[list[hist.axis.AxisProtocol]] = [
    [hist.axis.Regular(7, -2, 2, name="x")],
    [
        hist.axis.Regular(7, -2, 2, name="x", underflow=False, overflow=False),
        hist.axis.Variable([0, 0.5, 1, 3], name="y"),
    ],
    [
        hist.axis.Regular(6, -3, 3, circular=True, name="x"),
        hist.axis.Integer(-1, 4, name="y"),
    ],
    [
        hist.axis.StrCategory(["a", "b"], name="x"),
        hist.axis.Integer(0, 3, name="y", underflow=False),
    ],
    [hist.axis.IntCategory([1, 5, 9], name="x"), hist.axis.Boolean(name="y")],
    [
        hist.axis.StrCategory(["a", "b"], name="x", overflow=False),
        hist.axis.Variable([-1, 0, 1], name="y", overflow=False),
    ],
]


def _values(axis: object, n: int, rng: np.random.Generator) -> npt.NDArray[Any]:
    if isinstance(axis, hist.axis.StrCategory):
        return rng.choice(["a", "b", "c"], n)
    if isinstance(axis, hist.axis.IntCategory):
        return rng.choice([1, 5, 7, 9], n)
    if isinstance(axis, hist.axis.Boolean):
        return rng.integers(0, 2, n).astype(bool)
    if isinstance(axis, hist.axis.Integer):
        return rng.integers(-3, 6, n)
    x = rng.normal(0, 2, n)
    x[rng.random(n) < 0.02] = np.nan
    x[: min(n, 3)] = [-2, 0, 2][: min(n, 3)]  # exact edges
    return x


@given(
    case=st.sampled_from(range(len(AXES))),
    n=st.integers(0, 400),
    seed=st.integers(0, 2**16),
    storage=st.sampled_from(["Double", "Int64", "Weight", "Mean", "WeightedMean"]),
    fraction=st.sampled_from([0.0, 0.25, 5.0]),
)
@settings(max_examples=40, deadline=None)
def test_fill_kernel_equals_eager_fill(
    case: int, n: int, seed: int, storage: str, fraction: float
) -> None:
    """One partition, NaNs and exact edges included: the fill task's bins are
    boost-histogram's, for every storage, sparse or dense."""
    axes = AXES[case]
    rng = np.random.default_rng(seed)
    data = [_values(ax, n, rng) for ax in axes]
    weight = rng.uniform(0.5, 2, n) if storage not in ("Int64", "Mean") else None
    sample = rng.normal(3, 1, n) if "Mean" in storage else None
    config = {"dask_hizt.dense-fraction": fraction, "dask_hizt.chunk-bytes": "64B"}
    with _repo() as repo, dask.config.set(config):
        h = dh.Hist(
            *axes, storage=getattr(hist.storage, storage)(), store=repo, path="h"
        )
        h.fill(*data, weight=weight, sample=sample)
        stored = h.compute(scheduler="sync")
        (commit,) = stored.history()[:1]
        assert len(commit.inputs) == 1  # one partition
        expected = hist.Hist(*axes, storage=getattr(hist.storage, storage)())
        expected.fill(*data, weight=weight, sample=sample)
        assert_hist_equal(stored, expected, rtol=1e-12, atol=1e-12)


def test_fill_kernel_rejects_bad_values(tmp_path: Path) -> None:
    axes = [
        hist.axis.StrCategory(["a"], name="c"),
        hist.axis.Regular(3, 0, 1, name="x"),
    ]

    def fill(c: Any, x: Any) -> None:
        dh.Hist(*axes, store=tmp_path, path="h").fill(c, x).compute(scheduler="sync")

    with pytest.raises(dh.FillError, match="different lengths"):
        fill(np.array(["a", "a"]), np.array([0.5]))
    with pytest.raises(dh.FillError, match="numeric"):
        fill(np.array(["a"]), np.array(["0.5"]))
    with pytest.raises(dh.FillError, match="needs strings"):
        fill(np.array([1]), np.array([0.5]))
