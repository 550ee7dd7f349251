"""Growing category axes: new values are appended, indices stay, racing growers both land."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import dask.dataframe as dd
import hist
import numpy as np
import pandas as pd
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal


def _frame(seed: int, datasets: list[str], n: int = 5_000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ds": rng.choice(datasets, n),
            "nj": rng.integers(0, 4, n),
            "x": rng.uniform(0, 1, n),
        }
    )


def test_growing_axes_from_scalars_and_data(repo_path: Path) -> None:
    axes = (
        hist.axis.StrCategory([], growth=True, name="dataset"),
        hist.axis.IntCategory([], growth=True, name="nj"),
        hist.axis.Regular(5, 0, 1, name="x"),
    )
    df = _frame(1, ["b", "a", "c"])
    ddf = dd.from_pandas(df, npartitions=4)
    h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="g")
    h.fill(dataset=ddf.ds, nj=ddf.nj, x=ddf.x)
    h.fill(dataset="zz", nj=7, x=ddf.x)
    first = h.compute()
    expected = hist.Hist(*axes, storage=hist.storage.Int64())
    expected.fill(dataset=df.ds, nj=df.nj, x=df.x)
    expected.fill(dataset="zz", nj=7, x=df.x)
    assert_hist_equal(first, expected, categories="any order")
    stored_cats = list(first.axes[0])
    assert sorted(stored_cats) == ["a", "b", "c", "zz"]

    # a second compute with a new value keeps the old indices and appends
    df2 = _frame(2, ["d", "a"])
    ddf2 = dd.from_pandas(df2, npartitions=2)
    h2 = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="g")
    again = h2.fill(dataset=ddf2.ds, nj=ddf2.nj, x=ddf2.x).compute()
    assert list(again.axes[0])[: len(stored_cats)] == stored_cats
    expected.fill(dataset=df2.ds, nj=df2.nj, x=df2.x)
    assert_hist_equal(again, expected, categories="any order")
    messages = [c.message for c in again.history()]
    assert sum("fill" in m for m in messages) == 2


def test_growing_axis_refuses_values_of_the_wrong_type_before_writing(
    repo_path: Path,
) -> None:
    h = dh.Hist(
        hist.axis.StrCategory([], growth=True, name="d"), store=repo_path, path="g"
    )
    tip = h.repository.lookup_branch("main")
    with pytest.raises(dh.FillError, match="takes str categories"):
        h.fill(d=da.from_array(np.array([1, 2]), chunks=1)).compute()
    assert h.repository.lookup_branch("main") == tip


def test_growth_on_a_regular_axis_is_refused(repo_path: Path) -> None:
    with pytest.raises(dh.UnsupportedAxisError, match="only category axes can grow"):
        dh.Hist(hist.axis.Regular(3, 0, 1, growth=True), store=repo_path, path="g")


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import dask, dask.array as da, hist, numpy as np
    import dask_hizt as dh
    repo, start, label, seed = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    x = np.random.default_rng(seed).uniform(0, 1, 3000)
    h = dh.Hist(hist.axis.StrCategory([], growth=True, name="d"), hist.axis.Regular(4, 0, 1, name="x"),
                storage=hist.storage.Int64(), store=repo, path="g")
    h.fill(d=label, x=da.from_array(x, chunks=1000))
    while not start.exists():
        time.sleep(0.01)
    h.compute(scheduler="threads")
    """
)


def test_four_racing_computes_adding_different_values_all_land(tmp_path: Path) -> None:
    repo = tmp_path / "repo.icechunk"
    axes = (
        hist.axis.StrCategory([], growth=True, name="d"),
        hist.axis.Regular(4, 0, 1, name="x"),
    )
    # the racers also race to create the histogram
    dh.Hist(*axes, storage=hist.storage.Int64(), store=repo, path="g")
    start = tmp_path / "start"
    labels = ["p", "q", "r", "p"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(repo), str(start), label, str(seed)]
        )
        for seed, label in enumerate(labels)
    ]
    start.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    expected = hist.Hist(*axes, storage=hist.storage.Int64())
    for seed, label in enumerate(labels):
        expected.fill(d=label, x=np.random.default_rng(seed).uniform(0, 1, 3000))
    stored = dh.open(repo, "g")
    assert_hist_equal(stored, expected, categories="any order")
    fills = [c for c in stored.history() if c.inputs]
    assert len(fills) == len(labels)
