"""Partition identities, creation inside the fill commit, deletion.

Inputs are files written to disk and read with dask's own readers; every
result is compared with an eager ``hist.Hist`` of the same data. Re-runs in
fresh processes are in tests/test_inputs.py; these are the in-process cases
that need a close look at what was recorded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import hist
import icechunk
import numpy as np
import pandas as pd
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

AXIS = hist.axis.Regular(40, 0, 200, name="x")


def _repo(path: Path) -> icechunk.Repository:
    return icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))


def _snapshots(path: Path) -> list[str]:
    return [s.id for s in _repo(path).ancestry(branch="main")]


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.exponential(50, n),
            "b": rng.exponential(30, n),
            "w": rng.choice([0.5, 1.0, 2.0], n),
            "ds": rng.choice(["A", "B", "C"], n),
        }
    )


def _write_dir(path: Path, frames: dict[str, pd.DataFrame]) -> None:
    path.mkdir(exist_ok=True)
    for name, df in frames.items():
        df.to_parquet(path / f"{name}.parquet", row_group_size=2_000)


def _hist(repo: Path, path: str = "h", storage: Any = None) -> dh.Hist:
    return dh.Hist(
        AXIS, storage=storage or hist.storage.Weight(), store=repo, path=path
    )


def _eager(*fills: tuple[Any, Any]) -> hist.Hist[Any]:
    h = hist.Hist(AXIS, storage=hist.storage.Weight())
    for x, w in fills:
        h.fill(x, weight=w)
    return h


def test_same_collection_twice_counts_twice_and_once_on_rerun(tmp_path: Path) -> None:
    df = _frame(10_000, 1)
    _write_dir(tmp_path / "d", {"p0": df[:5_000], "p1": df[5_000:]})
    repo = tmp_path / "r.icechunk"

    def job() -> dh.Hist:
        ddf = dd.read_parquet(tmp_path / "d")
        return _hist(repo).fill(ddf.a, weight=ddf.w).fill(ddf.a, weight=ddf.w)

    first = job().compute()
    assert_hist_equal(first, _eager((df.a, df.w), (df.a, df.w)))
    (commit,) = first.history()
    # two files, each filled twice: the second time is told apart by "~1"
    assert len(commit.inputs) == len(set(commit.inputs)) == 4
    assert sum(x.endswith("~1") for x in commit.inputs) == 2
    assert job().compute().snapshot_id == first.snapshot_id


def test_different_columns_of_the_same_files(tmp_path: Path) -> None:
    df = _frame(9_000, 2)
    _write_dir(tmp_path / "d", {"p0": df[:4_000], "p1": df[4_000:]})
    repo = tmp_path / "r.icechunk"

    def job(*columns: str) -> dh.Hist:
        ddf = dd.read_parquet(tmp_path / "d")
        h = _hist(repo)
        for c in columns:
            h.fill(ddf[c], weight=ddf.w)
        return h

    first = job("a").compute()
    # run again with one more fill in front: only the new one goes in
    second = job("b", "a").compute()
    assert second.snapshot_id != first.snapshot_id
    assert_hist_equal(second, _eager((df.a, df.w), (df.b, df.w)))
    assert [len(c.inputs) for c in second.history()] == [2, 2]
    assert job("a", "b").compute().snapshot_id == second.snapshot_id


def test_a_file_added_to_the_directory_adds_only_it(tmp_path: Path) -> None:
    df = _frame(12_000, 3)
    parts = {f"part{i}": df[i * 3_000 : (i + 1) * 3_000] for i in range(4)}
    # written in an order that puts the late file in the middle of the listing
    _write_dir(tmp_path / "d", {k: parts[k] for k in ("part0", "part2", "part3")})
    repo = tmp_path / "r.icechunk"

    def job() -> dh.StoredHist:
        ddf = dd.read_parquet(tmp_path / "d")
        stored: dh.StoredHist = _hist(repo).fill(ddf.a, weight=ddf.w).compute()
        return stored

    job()
    _write_dir(tmp_path / "d", {"part1": parts["part1"]})
    stored = job()
    assert_hist_equal(stored, _eager((df.a, df.w)))
    assert [len(c.inputs) for c in stored.history()] == [1, 3]


def test_partitions_of_a_dataframe_do_not_depend_on_what_is_computed_with_them(
    tmp_path: Path,
) -> None:
    """dask-expr fuses parquet parts when few columns are read: a column
    filled alone, then with its weight, is the same partitions both times."""
    df = _frame(12_000, 4)
    _write_dir(
        tmp_path / "d", {f"p{i}": df[i * 2_000 : (i + 1) * 2_000] for i in range(6)}
    )
    repo = tmp_path / "r.icechunk"
    ddf = dd.read_parquet(tmp_path / "d")
    assert ddf.a.optimize().npartitions < ddf.npartitions  # fused when alone
    alone = dh.Hist(AXIS, storage=hist.storage.Int64(), store=repo, path="n")
    first = alone.fill(ddf.a).compute()
    assert len(first.history()[0].inputs) == 6
    ddf = dd.read_parquet(tmp_path / "d")
    again = dh.Hist(AXIS, storage=hist.storage.Int64(), store=repo, path="n")
    weighted = _hist(repo, "w").fill(ddf.a, weight=ddf.w)
    out = dh.compute(again.fill(ddf.a), weighted)
    assert out[0].history()[0].snapshot_id == first.snapshot_id
    expected = hist.Hist(AXIS, storage=hist.storage.Int64()).fill(df.a)
    assert_hist_equal(out[0], expected)
    assert_hist_equal(out[1], _eager((df.a, df.w)))


def test_a_failed_compute_leaves_the_repository_as_it_was(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    _hist(repo, "other").fill(np.arange(5.0)).compute()
    before = _snapshots(repo)
    strings = dd.from_pandas(pd.DataFrame({"s": ["a", "b"] * 50}), npartitions=2)
    bad = _hist(repo).fill(strings.s)
    with pytest.raises(dh.FillError, match="numeric"):
        bad.compute()
    assert _snapshots(repo) == before
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo, "h")
    # the path is free: a histogram with other axes can be made there
    other = dh.Hist(hist.axis.Regular(5, 0, 5, name="y"), store=repo, path="h")
    stored = other.fill(y=np.arange(5.0)).compute()
    assert_hist_equal(
        stored, hist.Hist(hist.axis.Regular(5, 0, 5, name="y")).fill(np.arange(5.0))
    )
    (commit,) = stored.history()
    assert commit.snapshot_id == _snapshots(repo)[0]


def test_creation_lands_with_the_counts(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    x = da.from_array(np.linspace(0, 199, 1_000), chunks=250)
    stored = _hist(repo).fill(x).compute()
    snaps = list(_repo(repo).ancestry(branch="main"))
    assert len(snaps) == 2  # the repository's first snapshot, then ONE commit
    meta = snaps[0].metadata["dask_hizt"]
    assert meta["created"] == ["h"]
    assert len(meta["histograms"]["h"]["inputs"]) == 4
    assert snaps[0].message == "dask_hizt: fill h from 4 input partitions"
    assert_hist_equal(stored, _eager((x.compute(), None)))


def test_commit_message_counts_recorded_inputs(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    x = da.from_array(np.linspace(0, 199, 600), chunks=100)
    a, b = _hist(repo, "a").fill(x), _hist(repo, "b").fill(x)
    stored = dh.compute(a, b)
    # 6 partitions into each of 2 histograms: 12 inputs recorded
    assert (
        stored[0].history()[0].message
        == "dask_hizt: fill 2 histograms from 12 input partitions"
    )


def test_delete_forgets_what_was_in(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    x = da.from_array(np.linspace(0, 199, 1_000), chunks=250)
    first = _hist(repo).fill(x).compute()
    gone = dh.delete(repo, "h")
    assert _snapshots(repo)[0] == gone
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo, "h")
    # the snapshot before still holds it
    assert_hist_equal(
        dh.open(repo, "h", snapshot_id=first.snapshot_id), first.to_hist()
    )
    with pytest.raises(dh.NotAHistogramError):
        dh.delete(repo, "h")
    # made again: starts empty, and the same partitions go in again
    again = _hist(repo).fill(x).compute()
    assert_hist_equal(again, first.to_hist())
    assert [len(c.inputs) for c in again.history()] == [4]


def test_dask_hizt_rm(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    _hist(repo).fill(np.arange(10.0)).compute()
    run = [sys.executable, "-m", "dask_hizt.cli"]
    done = subprocess.run(
        [*run, "rm", str(repo), "h"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "deleted h" in done.stdout
    assert (
        _repo(repo).ancestry(branch="main").__next__().message == "dask_hizt: delete h"
    )
    again = subprocess.run(
        [*run, "rm", str(repo), "h"], capture_output=True, text=True, check=False
    )
    assert again.returncode == 1
    assert "no histogram at path 'h'" in again.stderr


def test_growing_categories_in_order_of_first_appearance(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    cats = hist.axis.StrCategory([], name="c", growth=True)
    rng = np.random.default_rng(5)
    labels = np.array(["zeta", "alpha", "mu", "beta"])[rng.integers(0, 4, 4_000)]
    x = rng.uniform(0, 200, 4_000)
    frame = dd.from_pandas(pd.DataFrame({"c": labels, "x": x}), npartitions=4)
    h = dh.Hist(cats, AXIS, storage=hist.storage.Int64(), store=repo, path="g")
    h.fill(c="omega", x=frame.x).fill(c=frame.c, x=frame.x)
    stored = h.compute()
    expected = hist.Hist(cats, AXIS, storage=hist.storage.Int64())
    expected.fill(c="omega", x=x).fill(c=labels, x=x)
    assert list(expected.axes[0]) == ["omega", *dict.fromkeys(labels)]
    assert_hist_equal(stored, expected)
    assert stored.to_hist() == expected


def test_planning_commits_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    cats = hist.axis.StrCategory([], name="c", growth=True)
    h = dh.Hist(cats, AXIS, store=repo, path="g").fill(c="new", x=np.arange(10.0))
    before = _snapshots(repo)
    dask.base.tokenize(h)
    dict(h.__dask_graph__())  # its tasks read: planned
    dask.optimize(h)
    h.pending()
    assert _snapshots(repo) == before
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo, "g")


def test_racing_creators_of_one_histogram_both_land(tmp_path: Path) -> None:
    """Two computes planned on the same snapshot both create one histogram
    with different new categories: the second commit replays its counts on
    top of the first's."""
    repo = tmp_path / "r.icechunk"
    cats = hist.axis.StrCategory([], name="c", growth=True)
    rng = np.random.default_rng(6)
    xa, xb = rng.uniform(0, 200, 3_000), rng.uniform(0, 200, 2_000)

    def make(label: str, x: np.ndarray) -> dh.Hist:
        h = dh.Hist(cats, AXIS, storage=hist.storage.Weight(), store=repo, path="g")
        return h.fill(c=label, x=da.from_array(x, chunks=1_000), weight=0.5).fill(
            c="both", x=da.from_array(x, chunks=1_000)
        )

    first, second = make("a", xa), make("b", xb)
    dict(first.__dask_graph__())  # planned (its tasks read)
    dict(second.__dask_graph__())  # planned before the first commits: same base
    one = first.compute()
    two = second.compute()
    expected = hist.Hist(cats, AXIS, storage=hist.storage.Weight())
    expected.fill(c="a", x=xa, weight=0.5).fill(c="both", x=xa)
    expected.fill(c="b", x=xb, weight=0.5).fill(c="both", x=xb)
    assert_hist_equal(two, expected)
    assert list(two.axes[0]) == ["a", "both", "b"]
    meta = _repo(repo).lookup_snapshot(two.snapshot_id).metadata["dask_hizt"]
    assert "created" not in meta  # the first created it
    assert meta["grown"] == {"g": {"c": ["b"]}}
    assert [len(c.inputs) for c in two.history()] == [4, 6]
    assert one.snapshot_id in [c.snapshot_id for c in two.history()]


def test_a_compute_racing_a_delete_lands_in_a_new_histogram(tmp_path: Path) -> None:
    repo = tmp_path / "r.icechunk"
    x = np.linspace(0, 199, 1_000)
    _hist(repo).fill(x).compute()
    late = _hist(repo).fill(da.from_array(x[:500], chunks=100))
    dict(late.__dask_graph__())  # planned (its tasks read) before the delete
    dh.delete(repo, "h")
    stored = late.compute()
    assert_hist_equal(stored, _eager((x[:500], None)))
    assert [len(c.inputs) for c in stored.history()] == [5]
