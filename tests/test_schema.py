"""Schemas, layouts, paths and the errors for things that cannot be stored or opened."""

from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path
from typing import Any

import boost_histogram as bh
import dask
import dask.array as da
import hist
import icechunk
import numpy as np
import pytest
import zarr
from dask.utils import key_split

import dask_hizt as dh
from dask_hizt.layout import Layout
from dask_hizt.schema import FORMAT_VERSION, Schema
from dask_hizt.testing import assert_hist_equal

# A user function transform (named like the built-in one, to show the name is not trusted)
_CFUNC = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)

AXES = [
    hist.axis.Regular(10, -1, 1, name="a", label="A [GeV]"),
    hist.axis.Regular(
        4, 0, 1, underflow=False, overflow=False, circular=False, name="b"
    ),
    hist.axis.Regular(6, 0, 3, circular=True, name="c"),
    hist.axis.Variable([0, 0.5, 2, 10], name="d", overflow=False),
    hist.axis.Integer(-2, 5, name="e"),
    hist.axis.Boolean(name="f"),
    hist.axis.IntCategory([3, 1, 7], name="g"),
    hist.axis.StrCategory(["x", "y"], name="h", overflow=False),
    hist.axis.Regular(5, 1, 100, transform=hist.axis.transform.log, name="i"),
    hist.axis.Regular(5, 0, 9, transform=hist.axis.transform.sqrt, name="j"),
    hist.axis.Regular(5, 0.5, 4, transform=hist.axis.transform.Pow(2.5), name="k"),
]


@pytest.mark.parametrize("axis", AXES, ids=lambda a: type(a).__name__ + "-" + a.name)
def test_axis_round_trips_through_json(axis: bh.axis.Axis) -> None:
    schema = Schema.from_axes([axis], hist.storage.Weight())
    again = Schema.from_json(json.loads(json.dumps(schema.to_json())))
    (back,) = again.hist_axes()
    assert back == axis
    assert type(back) is type(axis)
    assert again.storage is hist.storage.Weight
    assert schema.shape == (axis.extent,)


# Plain boost-histogram axes, each with the hist axis it comes back as.
BH_AXES: list[tuple[bh.axis.Axis, bh.axis.Axis]] = [
    (
        bh.axis.StrCategory(["DY", "QCD"], metadata="dataset"),
        hist.axis.StrCategory(["DY", "QCD"], metadata="dataset"),
    ),
    (
        bh.axis.Regular(10, 0, 1, metadata="pt"),
        hist.axis.Regular(10, 0, 1, metadata="pt"),
    ),
    (bh.axis.Regular(4, -1, 1), hist.axis.Regular(4, -1, 1)),
    (bh.axis.Integer(0, 3, metadata=7), hist.axis.Integer(0, 3, metadata=7)),
    (bh.axis.Variable([0, 0.5, 2]), hist.axis.Variable([0, 0.5, 2])),
    (
        bh.axis.IntCategory([3, 1], metadata=True),
        hist.axis.IntCategory([3, 1], metadata=True),
    ),
    (bh.axis.Boolean(), hist.axis.Boolean()),
    (
        bh.axis.Regular(5, 1, 100, transform=bh.axis.transform.log),
        hist.axis.Regular(5, 1, 100, transform=hist.axis.transform.log),
    ),
]


@pytest.mark.parametrize(("axis", "twin"), BH_AXES, ids=[repr(a) for a, _ in BH_AXES])
def test_boost_histogram_axis_round_trips_as_hist_axis(
    axis: bh.axis.Axis, twin: bh.axis.Axis
) -> None:
    schema = Schema.from_axes([axis], None)
    again = Schema.from_json(json.loads(json.dumps(schema.to_json())))
    (back,) = again.hist_axes()
    assert isinstance(back, hist.axis.AxesMixin)
    assert back == twin
    assert back.__dict__["name"] == ""  # unnamed, as the boost-histogram axis was
    assert back.metadata == axis.metadata
    assert schema == Schema.from_axes([twin], None)


def _bh_data(n: int = 3_000) -> list[np.ndarray]:
    rng = np.random.default_rng(8)
    return [
        rng.choice(["DY", "QCD", "TT"], n),  # TT: the overflow bin
        rng.uniform(-0.1, 1.1, n),
        rng.uniform(-1.2, 1.2, n),
        rng.integers(-1, 5, n),
        rng.uniform(-0.5, 2.5, n),
        rng.choice([1, 3, 5], n),
        rng.integers(0, 2, n).astype(bool),
        rng.uniform(0.5, 150, n),
    ]


def test_hist_of_boost_histogram_axes_fills_like_boost_histogram(
    repo_path: Path,
) -> None:
    axes = [a for a, _ in BH_AXES]
    data = _bh_data()
    h = dh.Hist(*axes, storage=bh.storage.Int64(), store=repo_path, path="bh")
    h.fill(*(da.from_array(d, chunks=1_000) for d in data))
    stored = h.compute(scheduler="sync")
    eager = bh.Histogram(*axes, storage=bh.storage.Int64())
    eager.fill(*data)
    got = stored.to_hist()
    np.testing.assert_array_equal(got.view(flow=True), eager.view(flow=True))
    # they come back as hist axes, unnamed, with their metadata
    twins = hist.Hist(*(t for _, t in BH_AXES), storage=hist.storage.Int64())
    twins.fill(*data)
    assert_hist_equal(dh.open(repo_path, "bh"), twins)
    assert [ax.metadata for ax in got.axes] == [ax.metadata for ax in axes]
    # the same boost-histogram axes open it again for more fills
    again = dh.Hist(*axes, storage=bh.storage.Int64(), store=repo_path, path="bh")
    again.fill(*(da.from_array(d[::-1], chunks=1_000) for d in data))
    eager.fill(*(d[::-1] for d in data))
    np.testing.assert_array_equal(
        again.compute(scheduler="sync").to_hist().view(flow=True),
        eager.view(flow=True),
    )


def test_staging_takes_boost_histogram_axes(repo_path: Path) -> None:
    axes = [a for a, _ in BH_AXES[:3]]
    data = _bh_data()[:3]
    staging = dh.Staging(repo_path, "chunk-0")
    staging.hist(*axes, storage=bh.storage.Weight(), path="bh").fill(*data, weight=0.5)
    stored = staging.commit(scheduler="sync")["bh"]
    eager = bh.Histogram(*axes, storage=bh.storage.Weight())
    eager.fill(*data, weight=0.5)
    got = stored.to_hist().view(flow=True)
    want = eager.view(flow=True)
    assert isinstance(got, bh.view.WeightedSumView)
    assert isinstance(want, bh.view.WeightedSumView)
    np.testing.assert_array_equal(got.value, want.value)
    np.testing.assert_array_equal(got.variance, want.variance)
    assert [ax.metadata for ax in stored.axes] == ["dataset", "pt", None]


def test_axis_metadata_that_uhi_cannot_hold_is_refused(repo_path: Path) -> None:
    for metadata in ({"a": 1}, [1, 2], float("nan")):
        with pytest.raises(
            dh.UnsupportedAxisError, match=r"metadata=.* cannot be stored"
        ):
            dh.Hist(
                bh.axis.Regular(3, 0, 1, metadata=metadata), store=repo_path, path="h"
            )
    assert not repo_path.exists()


@pytest.mark.parametrize(
    ("axis", "match"),
    [
        (hist.axis.Integer(0, 3, growth=True, name="x"), "only category axes can grow"),
        (
            hist.axis.Regular(
                10,
                1,
                10,
                transform=bh.axis.transform.Function(
                    _CFUNC(math.log), _CFUNC(math.exp), name="log"
                ),
                name="x",
            ),
            "cannot be stored faithfully",
        ),
    ],
)
def test_unsupported_axes_are_refused_at_construction(
    repo_path: Path, axis: object, match: str
) -> None:
    with pytest.raises(dh.UnsupportedAxisError, match=match):
        dh.Hist(axis, store=repo_path, path="h")
    assert not repo_path.exists()


def test_unsupported_storage_is_refused(repo_path: Path) -> None:
    with pytest.raises(
        dh.UnsupportedStorageError, match="AtomicInt64 is not supported"
    ):
        dh.Hist(
            hist.axis.Regular(3, 0, 1),
            storage=bh.storage.AtomicInt64(),
            store=repo_path,
            path="h",
        )


def test_layout_chunks_categories_by_one_and_dense_axes_by_budget() -> None:
    schema = Schema.from_axes(
        [
            hist.axis.StrCategory(["a", "b", "c"]),
            hist.axis.Regular(1000, 0, 1),
            hist.axis.Regular(98, 0, 1),
        ],
        hist.storage.Double(),
    )
    layout = Layout.for_schema(schema, "80KiB")
    assert layout.shape == (4, 1002, 100)
    assert layout.chunks == (
        1,
        102,
        100,
    )  # 80 KiB / 8 B = 10240 bins: all of the last axis, then 102 rows
    assert layout.grid == (4, 10, 1)
    # keys are chunk-major: every chunk is one contiguous key range
    idx = np.indices(layout.shape).reshape(3, -1)
    keys = layout.keys(list(idx))
    assert len(np.unique(keys)) == keys.size
    chunk_of = keys // layout.chunk_size
    grid_coords = np.stack([idx[i] // layout.chunks[i] for i in range(3)])
    np.testing.assert_array_equal(
        chunk_of, np.ravel_multi_index(grid_coords, layout.grid)
    )


def test_auto_chunks_are_1_mib_until_an_array_would_have_too_many() -> None:
    cube = Schema.from_axes(
        [hist.axis.Regular(1000, 0, 1, name=n) for n in "xyz"], hist.storage.Double()
    )
    assert dask.config.get("dask_hizt.chunk-bytes") == "auto"
    layout = Layout.for_schema(cube)
    # 1 MiB = 131072 doubles: the last axis (1002 with flow), then 130 rows
    assert layout.chunks == (1, 130, 1002)
    assert layout.n_chunks == 1002 * 8 <= 10_000
    with dask.config.set({"dask_hizt.max-chunks": 1000}):
        big = Layout.for_schema(cube)
    # 8 GB in about 1000 chunks: a budget of 8 MiB = 1,048,576 doubles, cut
    # along whole axes: two full axes (1002 x 1002) per chunk
    assert big.chunks == (1, 1002, 1002)
    small = Layout.for_schema(
        Schema.from_axes([hist.axis.Regular(100, 0, 1, name="x")], None)
    )
    assert small.chunks == (102,)


def test_auto_owners_follow_size_chunks_and_cluster(repo_path: Path) -> None:
    axes = (
        hist.axis.Regular(200, 0, 1, name="x"),
        hist.axis.Regular(100, 0, 1, name="y"),
    )
    with dask.config.set({"dask_hizt.chunk-bytes": "2KiB"}):
        h = dh.Hist(*axes, store=repo_path, path="h")
    stored = h.fill(x=np.array([0.5]), y=np.array([0.5])).compute()
    assert stored.layout.n_chunks == 101  # 2 KiB: 2 of the 202 rows of 102 bins

    def owners() -> int:
        """Write tasks (one per owner) in the graph of a compute planned now."""
        again = dh.Hist(*axes, store=repo_path, path="h")
        graph = again.fill(x=np.array([0.5]), y=np.array([0.5])).__dask_graph__()
        return sum(1 for k in graph if key_split(k) == "hizt-write")

    # the local scheduler's threads, while each owner gets 8 chunks
    for threads, n in [(1, 1), (4, 4), (64, 101 // 8)]:
        with dask.config.set({"num_workers": threads}):
            assert owners() == n
    with dask.config.set({"dask_hizt.owners": 5}):
        assert owners() == 5


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a//b", "./a", "a\\b"])
def test_paths_that_escape_are_refused(repo_path: Path, bad: str) -> None:
    with pytest.raises(dh.StoreError, match="path"):
        dh.Hist(hist.axis.Regular(3, 0, 1), store=repo_path, path=bad)


def test_existing_path_with_other_axes_or_storage_is_refused_and_nothing_written(
    repo_path: Path,
) -> None:
    dh.Hist(hist.axis.Regular(3, 0, 1, name="x"), store=repo_path, path="h").fill(
        x=0.5
    ).compute()
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    tip = repo.lookup_branch("main")
    with pytest.raises(dh.SchemaMismatchError, match="different axes"):
        dh.Hist(hist.axis.Regular(4, 0, 1, name="x"), store=repo_path, path="h")
    with pytest.raises(dh.SchemaMismatchError, match="Double histogram, not Int64"):
        dh.Hist(
            hist.axis.Regular(3, 0, 1, name="x"),
            storage=hist.storage.Int64(),
            store=repo_path,
            path="h",
        )
    assert repo.lookup_branch("main") == tip


def _repo_with_group(repo_path: Path, attrs: dict[str, Any]) -> icechunk.Repository:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(repo_path)))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="a")
    root.create_group("plain").attrs.update(attrs)
    root.create_array("arr", shape=(3,), dtype="f8")
    session.commit("setup")
    return repo


def test_opening_what_is_not_a_histogram(repo_path: Path) -> None:
    repo = _repo_with_group(repo_path, {"foo": 1})
    for path in ("plain", "arr"):
        with pytest.raises(
            dh.NotAHistogramError, match=r"not a dask_hizt histogram|no histogram"
        ):
            dh.open(repo, path)
        with pytest.raises(dh.NotAHistogramError):
            dh.Hist(hist.axis.Regular(3, 0, 1), store=repo, path=path)
    with pytest.raises(dh.NotAHistogramError, match="no histogram at path 'missing'"):
        dh.open(repo, "missing")
    with pytest.raises(dh.StoreError, match="no repository"):
        dh.open(repo_path.parent / "nowhere", "x")


def test_newer_format_version_is_refused(repo_path: Path) -> None:
    schema = Schema.from_axes([hist.axis.Regular(3, 0, 1)], hist.storage.Double())
    attrs = schema.to_json() | {
        "dask_hizt": {
            "format_version": FORMAT_VERSION + 1,
            "fields": ["value"],
            "chunks": [5],
        }
    }
    repo = _repo_with_group(repo_path, attrs)
    with pytest.raises(dh.SchemaMismatchError, match="newer than this"):
        dh.open(repo, "plain")


def test_unknown_snapshot_tag_branch(repo_path: Path) -> None:
    dh.Hist(hist.axis.Regular(3, 0, 1), store=repo_path, path="h").fill(0.5).compute()
    with pytest.raises(dh.StoreError, match="snapshot 'NOPE'"):
        dh.open(repo_path, "h", snapshot_id="NOPE")
    with pytest.raises(dh.StoreError, match="tag 'v9'"):
        dh.open(repo_path, "h", tag="v9")
    with pytest.raises(dh.StoreError, match="branch 'dev'"):
        dh.open(repo_path, "h", branch="dev")
    with pytest.raises(dh.StoreError, match="at most one"):
        dh.open(repo_path, "h", branch="main", tag="v1")
    with pytest.raises(dh.StoreError, match="branch 'dev'"):
        dh.Hist(hist.axis.Regular(3, 0, 1), store=repo_path, path="h", branch="dev")
