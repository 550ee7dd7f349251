"""Many histograms, one pass, one commit per repository."""

from __future__ import annotations

from collections.abc import Mapping
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


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 30_000
    return pd.DataFrame(
        {
            "pt": rng.exponential(40, n),
            "eta": rng.normal(0, 2, n),
            "w": rng.normal(1, 0.2, n),
            "m": rng.normal(90, 5, n),
        }
    )


def _fill_tasks(graph: Mapping[Any, Any]) -> int:
    return sum(
        1 for k in graph if isinstance(k, tuple) and str(k[0]).startswith("hizt-fill")
    )


def _commits(repo_path: Path) -> list[str]:
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    return [s.message for s in repo.ancestry(branch="main")]


def test_many_histograms_share_fill_tasks_and_one_commit(
    repo_path: Path, frame: pd.DataFrame
) -> None:
    ddf = dd.from_pandas(frame, npartitions=6)
    datasets = ["DY", "QCD", "TT"]
    axes = (
        hist.axis.StrCategory(datasets, name="dataset"),
        hist.axis.Regular(20, 0, 200, name="pt"),
    )
    hists, expected = [], []
    for i in range(12):
        h = dh.Hist(
            *axes, storage=hist.storage.Weight(), store=repo_path, path=f"syst/h{i}"
        )
        h.fill(dataset=datasets[i % 3], pt=ddf.pt * (1 + 0.01 * i), weight=ddf.w)
        e = hist.Hist(*axes, storage=hist.storage.Weight())
        e.fill(dataset=datasets[i % 3], pt=frame.pt * (1 + 0.01 * i), weight=frame.w)
        hists.append(h)
        expected.append(e)
    # a Mean profile and an Int64 count in the same repository: other key spaces, same commit
    prof = dh.Hist(
        hist.axis.Regular(10, -5, 5, name="eta"),
        storage=hist.storage.Mean(),
        store=repo_path,
        path="prof",
    )
    prof.fill(eta=ddf.eta, sample=ddf.m)
    count = dh.Hist(
        hist.axis.Regular(10, -5, 5, name="eta"),
        storage=hist.storage.Int64(),
        store=repo_path,
        path="count",
    )
    count.fill(eta=ddf.eta)
    before = _commits(repo_path)

    hs = dh.HistSet([*hists, prof, count])
    graph = dict(hs.__dask_graph__())
    assert _fill_tasks(graph) == 6  # one per partition for all 14 histograms
    (stored,) = dask.compute(hs)

    # the counts land in one commit, which also created the 14 histograms
    assert _commits(repo_path)[1:] == before
    assert _commits(repo_path)[0].startswith("dask_hizt: fill 14 histograms")
    assert len({s.snapshot_id for s in stored}) == 1
    for s, e in zip(stored, expected, strict=False):
        assert_hist_equal(s, e, rtol=1e-12)
    assert_hist_equal(
        stored[-2],
        hist.Hist(
            hist.axis.Regular(10, -5, 5, name="eta"), storage=hist.storage.Mean()
        ).fill(frame.eta, sample=frame.m),
        rtol=1e-12,
    )
    assert_hist_equal(
        stored[-1],
        hist.Hist(
            hist.axis.Regular(10, -5, 5, name="eta"), storage=hist.storage.Int64()
        ).fill(frame.eta),
    )
    commit = stored[0].history()[0]
    assert commit.snapshot_id == stored[0].snapshot_id
    assert len(commit.inputs) == 6


def test_two_repositories_two_commits_and_the_same_path_twice(tmp_path: Path) -> None:
    x = da.random.default_rng(4).normal(0, 1, size=8_000, chunks=2_000)
    y = da.random.default_rng(5).normal(
        0, 1, size=6_000, chunks=1_000
    )  # another partitioning
    xs, ys = x.compute(), y.compute()
    ax = hist.axis.Regular(16, -4, 4, name="x")
    a1 = dh.Hist(ax, store=tmp_path / "a", path="x").fill(x)
    a2 = dh.Hist(ax, store=tmp_path / "a", path="x").fill(
        y
    )  # same histogram through another object
    b = (
        dh.Hist(ax, storage=hist.storage.Int64(), store=tmp_path / "b", path="x")
        .fill(x)
        .fill(y)
    )
    sa1, sa2, sb = dh.compute(a1, a2, b)
    assert sa1.snapshot_id == sa2.snapshot_id != sb.snapshot_id
    assert_hist_equal(sa1, hist.Hist(ax).fill(xs).fill(ys))
    assert_hist_equal(sb, hist.Hist(ax, storage=hist.storage.Int64()).fill(xs).fill(ys))
    assert len(_commits(tmp_path / "a")) == 2  # initial, one fill (creating x)
    assert len(_commits(tmp_path / "b")) == 2


def test_small_histograms_share_owners(repo_path: Path) -> None:
    x = da.random.default_rng(6).uniform(0, 1, size=4_000, chunks=1_000)
    xs = x.compute()
    ax = hist.axis.Regular(8, 0, 1, name="x")
    hists = [dh.Hist(ax, store=repo_path, path=f"h{i}").fill(x + i) for i in range(30)]
    with dask.config.set({"dask_hizt.owners": 4}):
        hs = dh.HistSet(hists)
        graph = dict(hs.__dask_graph__())
        stored = hs.compute()
    writers = [
        k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("hizt-write")
    ]
    assert len(writers) == 4
    for i, s in enumerate(stored):
        assert_hist_equal(s, hist.Hist(ax).fill(xs + i))


_CALLS: list[int] = []


def _make_partition(i: int) -> pd.DataFrame:
    _CALLS.append(i)
    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {"pt": rng.exponential(30, 2_000), "w": rng.uniform(0.5, 1.5, 2_000)}
    )


def test_each_partition_is_made_once_for_all_fills(repo_path: Path) -> None:
    ddf = dd.from_map(_make_partition, range(4))
    frame = pd.concat([_make_partition(i) for i in range(4)])
    _CALLS.clear()
    ax = hist.axis.Regular(10, 0, 100, name="pt")
    hists = [
        dh.Hist(ax, storage=hist.storage.Weight(), store=repo_path, path=f"v{k}").fill(
            ddf.pt, weight=ddf.w * (1 + k / 10)
        )
        for k in range(5)
    ]
    stored = dh.compute(*hists, scheduler="threads")
    assert sorted(_CALLS) == [0, 1, 2, 3]
    for k, s in enumerate(stored):
        e = hist.Hist(ax, storage=hist.storage.Weight()).fill(
            frame.pt, weight=frame.w * (1 + k / 10)
        )
        assert_hist_equal(s, e, rtol=1e-12)
