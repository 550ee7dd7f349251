"""End to end on local schedulers, on local disk and on S3: every lazy result
equals the eager hist.Hist."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import hist
import numpy as np
import pandas as pd
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

SCHEDULERS = ["sync", "threads"]


def _data(n: int = 20_000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pt": rng.exponential(40, n),
            "eta": rng.normal(0, 2, n),
            "njet": rng.integers(-1, 8, n),
            "w": rng.normal(1, 0.3, n),
            "ds": rng.choice(["DY", "QCD", "TT"], n),
        }
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_histogram_1d_from_dataframe(store: Any, scheduler: str) -> None:
    df = _data()
    ddf = dd.from_pandas(df, npartitions=7)
    with dask.config.set(scheduler=scheduler):
        stored = dh.histogram(
            ddf.pt, bins=50, range=(0, 200), store=store, path="pt"
        ).compute()
    expected: hist.Hist[Any] = hist.Hist(hist.axis.Regular(50, 0, 200)).fill(df.pt)
    assert_hist_equal(stored, expected)
    assert stored.storage_type is hist.storage.Double
    assert dh.open(store, "pt").snapshot_id == stored.snapshot_id


def test_histogram_variable_bins_weights(store: Any) -> None:
    df = _data()
    ddf = dd.from_pandas(df, npartitions=4)
    edges = [0, 10, 20, 50, 100, 400]
    stored = dh.histogram(
        ddf.pt,
        bins=edges,
        weights=ddf.w,
        storage=hist.storage.Weight(),
        store=store,
        path="a/b/pt",
    ).compute()
    expected = hist.Hist(hist.axis.Variable(edges), storage=hist.storage.Weight()).fill(
        df.pt, weight=df.w
    )
    assert_hist_equal(stored, expected, rtol=1e-12)
    np.testing.assert_allclose(stored.variances(), expected.variances(), rtol=1e-12)


BAD_BINNING = [
    (-5, (0, 1), "bins must be a positive number of bins, got -5"),
    (0, (0, 1), "bins must be a positive number of bins, got 0"),
    (
        2.5,
        (0, 1),
        "bins must be an integer number of bins or a sequence of bin edges, got 2.5",
    ),
    (True, (0, 1), "bins must be an integer number of bins or a sequence"),
    ("auto", None, "bins must be an integer number of bins or a sequence"),
    (10, (200, 0), r"range is reversed: lower 200 > upper 0"),
    (10, (1, 1), "range is empty: lower and upper are both 1"),
    (10, (0, float("nan")), r"range must be finite, got \(0, nan\)"),
    (10, (float("-inf"), 1), r"range must be finite"),
    (10, (0, 1, 2), r"range must be \(lower, upper\), two numbers, got \(0, 1, 2\)"),
    (10, (0,), r"range must be \(lower, upper\)"),
    (10, 5, r"range must be \(lower, upper\)"),
    (10, None, r"range=\(lower, upper\) is required when bins is a number"),
    ([0, 1, 1, 2], None, r"strictly increasing; edge 2 \(1\) does not exceed edge 1"),
    ([3, 2], None, r"strictly increasing; edge 1 \(2\) does not exceed edge 0 \(3\)"),
    ([0, float("nan"), 1], None, "bin edges must be finite; edge 1 is nan"),
    ([0, float("inf")], None, "bin edges must be finite; edge 1 is inf"),
    ([0.5], None, "at least 2 edges"),
    ([], None, "at least 2 edges"),
    ([[0, 1], [2, 3]], None, "at least 2 edges in a flat sequence"),
    (["a", "b"], None, "bin edges must be numbers"),
]


@pytest.mark.parametrize(
    ("bins", "span", "match"), BAD_BINNING, ids=[repr(b[:2]) for b in BAD_BINNING]
)
def test_histogram_refuses_bad_binning_before_writing(
    repo_path: Path, bins: Any, span: Any, match: str
) -> None:
    x = da.arange(10.0, chunks=5)
    with pytest.raises(dh.FillError, match=match):
        dh.histogram(x, bins=bins, range=span, store=repo_path, path="x")
    assert not repo_path.exists()  # no repository was created


def test_histogram_bad_binning_commits_nothing(repo_path: Path) -> None:
    x = da.arange(10.0, chunks=5)
    dh.histogram(x, bins=2, range=(0, 10), store=repo_path, path="x").compute()
    repo = dh.open(repo_path, "x").repository
    tip = repo.lookup_branch("main")
    for bins, span, _ in BAD_BINNING:
        with pytest.raises(dh.FillError):
            dh.histogram(
                x,
                bins=bins,  # type: ignore[arg-type]  # wrong on purpose
                range=span,  # type: ignore[arg-type]
                store=repo_path,
                path="y",
            ).compute()
    assert repo.lookup_branch("main") == tip
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo_path, "y")


def test_histogram_takes_numpy_bins_and_edges(repo_path: Path) -> None:
    x = np.random.default_rng(2).uniform(-1, 3, 1_000)
    lazy = da.from_array(x, chunks=250)
    edges = np.array([-1.0, 0.0, 0.5, 2.0])
    # numpy scalars and arrays, which the annotations (int, sequences) leave out
    regular = dh.histogram(
        lazy,
        bins=np.int64(8),  # type: ignore[arg-type]
        range=np.array([0.0, 2.0]),  # type: ignore[arg-type]
        store=repo_path,
        path="r",
    ).compute()
    variable = dh.histogram(
        lazy,
        bins=edges,  # type: ignore[arg-type]
        store=repo_path,
        path="v",
    ).compute()
    assert_hist_equal(regular, hist.Hist(hist.axis.Regular(8, 0, 2)).fill(x))
    assert_hist_equal(variable, hist.Hist(hist.axis.Variable(edges)).fill(x))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    "storage", [hist.storage.Double(), hist.storage.Int64(), hist.storage.Weight()]
)
def test_3d_category_regular_integer(
    store: Any, scheduler: str, storage: hist.storage.Storage
) -> None:
    df = _data()
    ddf = dd.from_pandas(df, npartitions=5)
    axes = (
        hist.axis.StrCategory(["DY", "QCD"], name="dataset"),
        hist.axis.Regular(20, 0, 200, name="pt"),
        hist.axis.Integer(0, 5, name="njet"),
    )
    h = dh.Hist(*axes, storage=storage, store=store, path="h3")
    weighted = not isinstance(storage, hist.storage.Int64)
    h.fill(dataset=ddf.ds, pt=ddf.pt, njet=ddf.njet, weight=ddf.w if weighted else None)
    with dask.config.set(scheduler=scheduler):
        stored = h.compute()
    expected = hist.Hist(*axes, storage=storage)
    expected.fill(
        dataset=df.ds, pt=df.pt, njet=df.njet, weight=df.w if weighted else None
    )
    assert_hist_equal(stored, expected, rtol=0 if not weighted else 1e-12)
    # integer counts are exact, whatever the storage
    if not weighted:
        assert stored.values(flow=True).dtype == np.int64


def test_scalar_category_and_queued_fills_share_one_commit(store: Any) -> None:
    a, b = _data(seed=2), _data(seed=3)
    dda, ddb = dd.from_pandas(a, npartitions=3), dd.from_pandas(b, npartitions=3)
    axes = (
        hist.axis.StrCategory(["DY", "QCD"], name="dataset"),
        hist.axis.Regular(30, 0, 150, name="pt"),
    )
    h = dh.Hist(*axes, storage=hist.storage.Weight(), store=store, path="pt_by_ds")
    assert h.fill(dataset="DY", pt=dda.pt, weight=dda.w) is h
    h.fill(dataset="QCD", pt=ddb.pt, weight=0.5)
    stored = h.compute()
    expected = hist.Hist(*axes, storage=hist.storage.Weight())
    expected.fill(dataset="DY", pt=a.pt, weight=a.w)
    expected.fill(dataset="QCD", pt=b.pt, weight=0.5)
    assert_hist_equal(stored, expected, rtol=1e-12)
    fills = [c for c in stored.history() if c.inputs]
    assert len(fills) == 1
    # the commit records every partition of both fills: 2 fills x 3 partitions
    assert len(set(fills[0].inputs)) == 6
    assert h.pending() == []


def test_dask_array_and_numpy_inputs(store: Any) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 10_000)
    y = rng.uniform(-1, 1, 10_000)
    dx = da.from_array(x, chunks=1_500)
    axes = (
        hist.axis.Regular(10, -3, 3, name="x"),
        hist.axis.Regular(4, -1, 1, name="y", overflow=False),
    )
    h = dh.Hist(*axes, store=store, path="xy").fill(
        dx, y
    )  # numpy y follows dx's chunks
    (stored,) = dask.compute(h)
    assert_hist_equal(stored, hist.Hist(*axes).fill(x, y))
    # numpy only: one partition
    stored2 = dh.Hist(*axes, store=store, path="xy").fill(x=x, y=y).compute()
    assert_hist_equal(stored2, hist.Hist(*axes).fill(x, y).fill(x, y))


def test_computes_accumulate_new_data_once_and_open_any_snapshot(
    store: Any,
) -> None:
    x = da.random.default_rng(0).normal(5, 2, size=5_000, chunks=1_000)
    y = da.random.default_rng(1).normal(5, 2, size=3_000, chunks=1_000)
    axis = hist.axis.Regular(10, 0, 10)

    def stored_hist(data: da.Array) -> dh.Hist:
        return dh.histogram(
            data,
            bins=10,
            range=(0, 10),
            storage=hist.storage.Int64(),
            store=store,
            path="x",
        )

    h = stored_hist(x)
    first = h.compute()
    once = hist.Hist(axis, storage=hist.storage.Int64()).fill(x.compute())
    assert_hist_equal(first, once)
    # the same partitions again: already in, nothing is added or committed
    again = h.compute()
    assert again.snapshot_id == first.snapshot_id
    assert_hist_equal(again, once)
    # new data, from a new Hist object on the same path, adds to what is stored
    second = stored_hist(y).compute()
    both = once.copy().fill(y.compute())
    assert_hist_equal(second, both)
    assert_hist_equal(dh.open(store, "x", snapshot_id=first.snapshot_id), once)
    repo = first.repository  # the same repository, on local disk or S3
    repo.create_tag("v1", first.snapshot_id)
    assert_hist_equal(dh.open(repo, "x", tag="v1"), once)
    assert_hist_equal(dh.open(repo, "x", branch="main"), both)
    assert [c.snapshot_id for c in second.history()][:2] == [
        second.snapshot_id,
        first.snapshot_id,
    ]


def test_untouched_chunks_are_not_written(store: Any) -> None:
    axes = (
        hist.axis.StrCategory(["a", "b", "c", "d"], name="cat"),
        hist.axis.Regular(10, 0, 1, name="x"),
    )
    # a budget of one dense block (12 bins) per chunk: one category per chunk
    with dask.config.set({"dask_hizt.chunk-bytes": 96}):
        h = dh.Hist(*axes, store=store, path="h")
    assert h.repository is not None
    x = da.random.default_rng(1).uniform(0, 1, size=1000, chunks=250)
    before = h.repository.lookup_branch("main")
    stored = h.fill(cat="b", x=x).compute()
    assert stored.layout.chunks == (1, 12)
    diff = h.repository.diff(from_snapshot_id=before, to_snapshot_id=stored.snapshot_id)
    # filling only "b" touches exactly its chunk
    assert diff.updated_chunks == {"/h/value": [[1, 0]]}


def test_small_histograms_group_categories_into_one_chunk(store: Any) -> None:
    axes = (
        hist.axis.StrCategory(["a", "b", "c"], name="c"),
        hist.axis.Regular(50, 0, 1, name="x"),
    )
    stored = (
        dh.Hist(*axes, store=store, path="h")
        .fill(c="a", x=np.linspace(0, 1, 100))
        .compute()
    )
    assert stored.layout.chunks == (4, 52)  # all of it: 1.6 KiB, far below a chunk


def test_many_chunks_and_owners(store: Any) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(0, 1, 30_000), rng.normal(0, 1, 30_000)
    axes = (
        hist.axis.Regular(200, -4, 4, name="x"),
        hist.axis.Regular(100, -4, 4, name="y"),
    )
    with dask.config.set(
        {
            "dask_hizt.chunk-bytes": "2KiB",
            "dask_hizt.owners": 5,
            "dask_hizt.split-every": 3,
        }
    ):
        h = dh.Hist(*axes, store=store, path="xy")
        h.fill(da.from_array(x, chunks=3_000), da.from_array(y, chunks=3_000))
        graph = dict(h.__dask_graph__())
        stored = h.compute()
    assert stored.layout.n_chunks > 50
    writers = [
        k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("hizt-write")
    ]
    assert len(writers) == 5
    assert_hist_equal(stored, hist.Hist(*axes).fill(x, y))


def test_compute_without_fills_commits_nothing_new(store: Any) -> None:
    h = dh.Hist(hist.axis.Regular(4, 0, 1, name="x"), store=store, path="x")
    stored = h.compute()
    assert stored.values().sum() == 0
    # only the creation commit: a compute that adds nothing commits nothing
    assert [c.message for c in stored.history()] == ["dask_hizt: create x"]


class _Live:
    """Counts the derived weight arrays alive at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def make(self, block: np.ndarray, factor: float) -> np.ndarray:
        out = block * factor
        self.now += 1
        self.peak = max(self.peak, self.now)
        weakref.finalize(out, self._gone)
        return out

    def _gone(self) -> None:
        self.now -= 1


def test_fused_fill_makes_derived_inputs_one_at_a_time(store: Any) -> None:
    """20 weight variations fused into the fill task are not all held at once."""
    rng = np.random.default_rng(7)
    # integer weights times factors exact in binary: sums are exact in any order
    xs, ws = rng.uniform(0, 1, 4_000), rng.integers(1, 4, 4_000).astype(float)
    x, w = da.from_array(xs, chunks=1_000), da.from_array(ws, chunks=1_000)
    axis = hist.axis.Regular(10, 0, 1, name="x")
    live = _Live()
    hists: list[dh.Hist] = []
    expected: list[hist.Hist[Any]] = []
    for i in range(20):
        factor = 1 + i / 8
        h = dh.Hist(axis, store=store, path=f"h{i}")
        h.fill(x=x, weight=w.map_blocks(live.make, factor, meta=np.array([])))
        hists.append(h)
        expected.append(hist.Hist(axis).fill(xs, weight=ws * factor))
    stored = dh.compute(*hists, scheduler="sync")
    for s, e in zip(stored, expected, strict=True):
        assert_hist_equal(s, e)
    assert live.now == 0
    assert live.peak <= 2  # all 20 when the fused task made every input first
