"""Exactly-once: every input partition goes into a histogram once, however
often, however concurrently and however interrupted its job is run.

Every result is compared with an eager hist.Hist of exactly the partitions
that should be in.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
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
from dask_hizt._checkpoint import parse_checkpoint as _parse_checkpoint
from dask_hizt.testing import assert_hist_equal

AXIS = hist.axis.Regular(20, -3, 3, name="x")
PARTS = 10
PER = 2_000


def _part(i: int) -> pd.DataFrame:
    rng = np.random.default_rng(1000 + i)
    return pd.DataFrame({"x": rng.normal(0, 1, PER), "w": rng.uniform(0, 2, PER)})


class Reads:
    """Counts, per partition, how often a job's input was made (sync scheduler)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.seen: list[int] = []
        self.fail: set[int] = set()

    def __call__(self, i: int) -> pd.DataFrame:
        self.seen.append(i)
        if i in self.fail:
            msg = f"partition {i} is broken"
            raise OSError(msg)
        return _part(i)

    def __dask_tokenize__(self) -> str:
        # the same job each time it is built, as a rerun of a script would be
        # (dask-expr also reuses expressions by token: one job name per test)
        return self.job


def _job(reads: Any, parts: int = PARTS) -> dd.DataFrame:
    meta = _part(0).iloc[:0]  # given, so that no partition is read to guess it
    ddf: dd.DataFrame = dd.from_map(
        reads, range(parts), meta=meta, enforce_metadata=False
    )
    return ddf


def _eager(parts: list[int]) -> hist.Hist[Any]:
    h = hist.Hist(AXIS, storage=hist.storage.Weight())
    for i in parts:
        df = _part(i)
        h.fill(df.x, weight=df.w)
    return h


def _hist(repo_path: Path, df: dd.DataFrame, **fill: Any) -> dh.Hist:
    h = dh.Hist(AXIS, storage=hist.storage.Weight(), store=repo_path, path="x")
    return h.fill(x=df.x, weight=df.w, **fill)


def _fills(stored: dh.StoredHist) -> list[dh.Commit]:
    return [c for c in stored.history() if c.inputs]


def test_a_job_run_again_adds_nothing(repo_path: Path) -> None:
    reads = Reads("test_a_job_run_again_adds_nothing")
    h = _hist(repo_path, _job(reads))
    ids = h.pending()
    assert len(set(ids)) == PARTS
    reads.seen.clear()
    first = h.compute(scheduler="sync")
    assert_hist_equal(first, _eager(list(range(PARTS))), rtol=1e-12)
    assert sorted(reads.seen) == list(range(PARTS))
    assert sorted(_fills(first)[0].inputs) == sorted(ids)
    # the job built again from scratch: nothing pending, no commit (its
    # partitions are identified by their content: they are read again)
    again = _hist(repo_path, _job(reads))
    assert again.pending() == []
    second = again.compute(scheduler="sync")
    assert second.snapshot_id == first.snapshot_id
    assert_hist_equal(second, _eager(list(range(PARTS))), rtol=1e-12)
    # with partition_ids, nothing is read at all
    ids = [f"part-{i}" for i in range(PARTS)]
    with_ids = _hist(
        repo_path.with_name("ids.icechunk"), _job(reads), partition_ids=ids
    )
    with_ids.compute(scheduler="sync")
    reads.seen.clear()
    rerun = _hist(repo_path.with_name("ids.icechunk"), _job(reads), partition_ids=ids)
    assert rerun.pending() == []
    rerun.compute(scheduler="sync")
    assert reads.seen == []


def test_only_missing_partitions_are_read_and_added(repo_path: Path) -> None:
    reads = Reads("test_only_missing_partitions_are_read_and_added")
    ids = [f"file-{i}.root:0-{PER}" for i in range(PARTS)]
    _hist(repo_path, _job(reads, 4), partition_ids=ids[:4]).compute(scheduler="sync")
    reads.seen.clear()
    h = _hist(repo_path, _job(reads), partition_ids=ids)
    assert h.pending() == ids[4:]
    stored = h.compute(scheduler="sync")
    assert sorted(reads.seen) == list(range(4, PARTS))
    assert_hist_equal(stored, _eager(list(range(PARTS))), rtol=1e-12)
    assert [sorted(c.inputs) for c in _fills(stored)] == [sorted(ids[4:]), ids[:4]]


def _partitions(commits: list[dh.Commit], ids: list[str]) -> list[int]:
    """The partitions (indices into a job's identities) that ``commits`` hold."""
    return sorted(ids.index(x) for c in commits for x in c.inputs)


def test_checkpoint_every_k_partitions(repo_path: Path) -> None:
    h = _hist(repo_path, _job(Reads("test_checkpoint_every_k_partitions")))
    ids = h.pending()
    stored = h.compute(checkpoint=3, scheduler="threads")
    assert_hist_equal(stored, _eager(list(range(PARTS))), rtol=1e-12)
    fills = _fills(stored)
    # 10 partitions in batches of 3: four commits, one after the other
    assert sorted(len(c.inputs) for c in fills) == [1, 3, 3, 3]
    assert len({x for c in fills for x in c.inputs}) == PARTS
    assert all("checkpoint" in c.message for c in fills)
    assert stored.snapshot_id == fills[0].snapshot_id
    # each commit holds exactly its batch: a snapshot in the middle is exact too
    assert_hist_equal(
        dh.open(repo_path, "x", snapshot_id=fills[2].snapshot_id),
        _eager(_partitions(fills[2:], ids)),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("every", "commits"),
    [("0s", 5), ("1 hour", 1), ("10 min", 1)],
    ids=["due", "not-due", "readme-spelling"],
)
def test_checkpoint_by_time(repo_path: Path, every: str, commits: int) -> None:
    h = _hist(repo_path, _job(Reads("test_checkpoint_by_time")))
    ids = h.pending()
    with dask.config.set({"dask_hizt.checkpoint-step": 2}):
        stored = dh.compute(h, checkpoint=every)[0]
    assert_hist_equal(stored, _eager(list(range(PARTS))), rtol=1e-12)
    fills = _fills(stored)
    # due every step of 2 partitions, or only at the end (the batches before
    # hand their partials on)
    assert len(fills) == commits
    assert _partitions(fills, ids) == list(range(PARTS))


@pytest.mark.parametrize(
    ("every", "seconds"),
    [
        ("10 min", 600.0),  # README, Hist.compute, docs/userguide.md
        ("10min", 600.0),
        ("10 minutes", 600.0),
        ("1 minute", 60.0),
        ("1 hour", 3600.0),
        ("1.5 hours", 5400.0),
        ("2h", 7200.0),
        ("30s", 30.0),
        ("30 sec", 30.0),
        ("0s", 0.0),
        ("45", 45.0),
        (" 1 Day ", 86400.0),
        ("250ms", 0.25),
        (dt.timedelta(minutes=10), 600.0),
        (12.5, 12.5),
        (0.0, 0.0),
    ],
)
def test_checkpoint_durations(every: Any, seconds: float) -> None:
    with dask.config.set({"dask_hizt.checkpoint-step": 4}):
        checkpoint = _parse_checkpoint(every)
    assert checkpoint is not None
    assert checkpoint.seconds == pytest.approx(seconds)
    assert checkpoint.batch == 4


def _compute_every(repo_path: Path, every: Any) -> None:
    dh.Hist(AXIS, store=repo_path, path="x").fill(np.array([0.5])).compute(
        checkpoint=every, scheduler="sync"
    )


@pytest.mark.parametrize(
    "every", ["often", "", "-5s", "10 lightyears", "5 m s", "nan s", "1e999"]
)
def test_checkpoint_nonsense_is_refused(every: str, repo_path: Path) -> None:
    with pytest.raises(
        ValueError, match="neither a number of partitions nor a duration"
    ):
        _compute_every(repo_path, every)
    with pytest.raises(dh.NotAHistogramError):  # refused before anything ran
        dh.open(repo_path, "x")


@pytest.mark.parametrize("every", [-1.0, float("nan"), float("inf")])
def test_checkpoint_bad_seconds_are_refused(every: float, repo_path: Path) -> None:
    with pytest.raises(ValueError, match="finite and not negative"):
        _compute_every(repo_path, every)
    with pytest.raises(ValueError, match="finite and not negative"):
        _compute_every(repo_path, dt.timedelta(seconds=-1))
    with pytest.raises(TypeError, match="number of partitions or a duration"):
        _compute_every(repo_path, [10])


def test_failed_checkpointed_compute_keeps_its_batches(repo_path: Path) -> None:
    reads = Reads("test_failed_checkpointed_compute_keeps_its_batches")
    ids = _hist(repo_path, _job(reads)).pending()
    reads.fail = {7}
    h = _hist(repo_path, _job(reads))
    with pytest.raises(OSError, match="partition 7 is broken"):
        h.compute(checkpoint=2, scheduler="sync")
    stored = dh.open(repo_path, "x")
    kept = _partitions(_fills(stored), ids)
    # the batches committed before the failure stay, exactly
    assert kept
    assert 7 not in kept
    assert len(kept) % 2 == 0
    assert_hist_equal(stored, _eager(kept), rtol=1e-12)
    # the rerun adds only the rest (it reads every partition to know which)
    reads.fail.clear()
    h = _hist(repo_path, _job(reads))
    assert len(h.pending()) == PARTS - len(kept)
    final = h.compute(checkpoint=2, scheduler="sync")
    added = [x for c in _fills(final)[: -len(_fills(stored))] for x in c.inputs]
    assert sorted(ids.index(x) for x in added) == sorted(set(range(PARTS)) - set(kept))
    assert_hist_equal(final, _eager(list(range(PARTS))), rtol=1e-12)


def test_a_racing_compute_of_the_same_partitions_is_refused(repo_path: Path) -> None:
    reads = Reads("test_a_racing_compute_of_the_same_partitions_is_refused")
    a = _hist(repo_path, _job(reads))
    b = _hist(repo_path, _job(reads))
    assert a.pending() == b.pending()
    # both plan on the same tip, before either commits (reading a graph's
    # tasks plans it; the compute then runs that plan)
    dict(a.__dask_graph__())
    dict(b.__dask_graph__())
    first = a.compute(scheduler="sync")
    with pytest.raises(dh.DuplicateInputError, match="committed by another compute"):
        b.compute(scheduler="sync")
    assert dh.open(repo_path, "x").snapshot_id == first.snapshot_id
    assert len(first.history()) == 1
    assert_hist_equal(first, _eager(list(range(PARTS))), rtol=1e-12)
    # computing it again now adds nothing
    assert b.compute(scheduler="sync").snapshot_id == first.snapshot_id


def test_two_fills_of_one_partition_are_told_apart(repo_path: Path) -> None:
    x = da.random.default_rng(3).normal(0, 1, size=4_000, chunks=1_000)
    axes = (hist.axis.StrCategory(["a", "b"], name="c"), AXIS)

    def make() -> dh.Hist:
        h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="c")
        return h.fill(c="a", x=x).fill(c="b", x=x)

    stored = make().compute()
    assert len(set(_fills(stored)[0].inputs)) == 8
    assert make().pending() == []
    expected = hist.Hist(*axes, storage=hist.storage.Int64())
    expected.fill(c="a", x=x.compute()).fill(c="b", x=x.compute())
    assert_hist_equal(make().compute(), expected)


def test_bad_partition_ids(repo_path: Path) -> None:
    df = _job(Reads("test_bad_partition_ids"), 3)
    with pytest.raises(dh.FillError, match="3 partitions"):
        _hist(repo_path, df, partition_ids=["a", "b"])
    with pytest.raises(dh.FillError, match="unique"):
        _hist(repo_path, df, partition_ids=["a", "b", "a"])
    with pytest.raises(dh.FillError, match="sequence of strings"):
        _hist(repo_path, df, partition_ids="abc")
    with pytest.raises(ValueError, match="at least 1 partition"):
        _hist(repo_path, df).compute(checkpoint=0)
    with pytest.raises(
        ValueError, match="neither a number of partitions nor a duration"
    ):
        _hist(repo_path, df).compute(checkpoint="often")


# A job killed with SIGKILL: the script computes 12 slow partitions with a
# checkpoint every 2 and is killed once some of its commits have landed.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import dask.dataframe as dd
    import hist
    import dask_hizt as dh
    sys.path.insert(0, sys.argv[2])
    from test_exactly_once import AXIS, _part

    def slow(i):
        time.sleep(0.3)
        return _part(i)

    df = dd.from_map(slow, range(12), divisions=None, enforce_metadata=False)
    h = dh.Hist(AXIS, storage=hist.storage.Weight(), store=sys.argv[1], path="x")
    h.fill(x=df.x, weight=df.w, partition_ids=[f"part-{i}" for i in range(12)])
    h.compute(checkpoint=2, scheduler="threads", num_workers=2)
    """
)


def _fill_commits(repo_path: Path) -> int:
    try:
        return len(_fills(dh.open(repo_path, "x")))
    except (dh.StoreError, dh.NotAHistogramError):
        return 0  # the job has not created its repository or histogram yet


def test_client_killed_mid_compute_then_rerun(repo_path: Path) -> None:
    env = {**os.environ, "ICECHUNK_LOG": "error"}
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(repo_path), tests], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"the job ended (exit {proc.returncode}) before it was killed"
                )
            if _fill_commits(repo_path) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = dh.open(repo_path, "x")
    ids = [f"part-{i}" for i in range(12)]
    kept = _partitions(_fills(stored), ids)
    assert 4 <= len(kept) < 12
    assert_hist_equal(stored, _eager(kept), rtol=1e-12)
    # the rerun (here in-process, same job) adds exactly the rest
    df = dd.from_map(_part, range(12), divisions=None, enforce_metadata=False)
    h = _hist(repo_path, df, partition_ids=ids)
    assert len(h.pending()) == 12 - len(kept)
    assert_hist_equal(h.compute(), _eager(list(range(12))), rtol=1e-12)
