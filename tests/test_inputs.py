"""Every kind of input, read from files with dask's own readers: the stored
result equals the eager fill of the same files, a re-run of the job in a
fresh process adds nothing, and a job killed halfway and run again ends
exactly at the eager result.

The jobs are in ``inputs_job.py``, which is also the script that the fresh
processes run (one process runs the job of every kind, one kind after
another; the killed job runs them all at once, so that one SIGKILL stops each
of them halfway).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import hist
import icechunk
import inputs_job
import jobs
import pandas as pd
import pytest
from inputs_job import AXIS, KINDS

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

JOB = Path(inputs_job.__file__)
ENV = {**os.environ, "ICECHUNK_LOG": "error"}

#: Kinds of the killed job: all those of more than one partition (the
#: default read of one small parquet file is one partition, and a job of one
#: partition has nothing left to add after its first checkpoint).
KILLED_KINDS = tuple(k for k in KINDS if k != "parquet")
#: Seconds that each kind of the killed job sleeps, spread over its partitions.
SLOW = 8.0
#: How long the killed job may take to commit a batch of every kind.
KILL_DEADLINE = 120.0


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input files, written once per session."""
    root = tmp_path_factory.mktemp("inputs") / "data"
    inputs_job.write_data(root)
    return root


@functools.cache
def _eager(kind: str, data: Path) -> hist.Hist[Any]:
    return inputs_job.eager(kind, data)


def _tip(repo: Path) -> str | None:
    """The snapshot at the tip of ``main``, or ``None`` without a repository."""
    try:
        storage = icechunk.local_filesystem_storage(str(repo))
        return icechunk.Repository.open(storage).lookup_branch("main")
    except Exception:  # noqa: BLE001  # no repository (yet)
        return None


def _fill_commits(repo: Path, kind: str) -> int:
    try:
        return len([c for c in dh.open(repo, kind).history() if c.inputs])
    except (dh.StoreError, dh.NotAHistogramError):
        return 0  # the job has not created its repository or histogram yet


def _argv(kinds: Sequence[str], repos: Path, data: Path, *options: str) -> list[str]:
    return [sys.executable, str(JOB), ",".join(kinds), str(repos), str(data), *options]


@dataclass
class Run:
    """One run of the job script in a fresh process."""

    returncode: int
    reports: dict[str, dict[str, Any]]
    stderr: str
    tips: dict[str, str | None] = field(default_factory=dict)

    def report(self, kind: str) -> dict[str, Any]:
        """The kind's report; fails the test if the kind raised or never ended."""
        report = self.reports.get(kind)
        if report is None:
            pytest.fail(
                f"the job (exit {self.returncode}) reported nothing for {kind}:\n"
                f"{jobs.tail(self.stderr)}"
            )
        if "error" in report:
            pytest.fail(f"the job of {kind} failed: {report['error']}")
        return report


def _run(argv: list[str], cwd: Path, repos: Path, kinds: Sequence[str]) -> Run:
    proc = subprocess.run(
        argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240, check=False
    )
    run = Run(proc.returncode, jobs.reports(proc.stdout), proc.stderr)
    run.tips = {k: _tip(repos / f"{k}.icechunk") for k in kinds}
    return run


# ---------------------------------------------------- the input matrix ---


def test_inputs_are_what_they_claim(data: Path) -> None:
    """The matrix covers what it says: several row groups and partitions,
    dask-expr's fused partitions, row-group filtering, several partitions
    per CSV file."""
    one = data / "events.parquet"
    groups = inputs_job.FILE_ROWS // inputs_job.ROW_GROUP
    assert dd.read_parquet(one).npartitions == 1
    assert dd.read_parquet(one, split_row_groups=True).npartitions == groups
    filtered = dd.read_parquet(
        one, split_row_groups=True, filters=[("run", ">=", inputs_job.FILTER_RUN)]
    )
    assert filtered.npartitions == groups - inputs_job.FILTER_RUN
    column = inputs_job.build("parquet_dir_column", data).x
    assert column.npartitions == inputs_job.DIR_FILES
    assert 1 < inputs_job.npartitions(column) < inputs_job.DIR_FILES  # fused
    blocks = inputs_job.build("csv_blocks", data).x
    assert inputs_job.npartitions(blocks) >= 2 * inputs_job.CSV_FILES
    for kind in KINDS:
        eager = _eager(kind, data)
        # entries in both flow bins, so that they are compared too
        assert eager.values(flow=True)[0] != 0, kind
        assert eager.values(flow=True)[-1] != 0, kind


@pytest.mark.parametrize("kind", KINDS)
def test_matches_eager(kind: str, data: Path, repo_path: Path) -> None:
    stored = inputs_job.make_hist(kind, data, repo_path).compute(scheduler="threads")
    assert_hist_equal(stored, _eager(kind, data))


@pytest.fixture(scope="session")
def reruns(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Run, Run]:
    """The job of every kind run twice, each time in a fresh process."""
    cwd = tmp_path_factory.mktemp("rerun")
    repos = cwd / "repos"
    argv = _argv(KINDS, repos, data)
    first = _run(argv, cwd, repos, KINDS)
    second = _run(argv, cwd, repos, KINDS)
    return repos, first, second


@pytest.mark.parametrize("kind", KINDS)
def test_rerun_in_fresh_process_adds_nothing(
    kind: str, data: Path, reruns: tuple[Path, Run, Run]
) -> None:
    repos, first, second = reruns
    repo = repos / f"{kind}.icechunk"
    eager = _eager(kind, data)
    want = inputs_job.total(eager)
    report = first.report(kind)
    assert report["snapshot"] == first.tips[kind]
    assert report["sum"] == want
    assert_hist_equal(dh.open(repo, kind, snapshot_id=report["snapshot"]), eager)
    again = second.report(kind)
    assert second.tips[kind] == first.tips[kind], (
        f"the re-run committed: its sum is {again['sum']}, "
        f"{again['sum'] / want:.3g} times the eager {want}"
    )
    assert again["snapshot"] == first.tips[kind]
    assert again["sum"] == want
    assert_hist_equal(dh.open(repo, kind), eager)


@dataclass
class Killed:
    """The killed job and its re-run."""

    repos: Path
    killed: bool  # False: the job ended before it could be killed
    returncode: int | None
    before: dict[str, dict[str, Any]]  # kinds that reported before the kill
    commits: dict[str, int]  # fill commits of each kind when it was killed
    sums: dict[str, float]  # each kind's stored sum when it was killed
    stderr: str
    rerun: Run


@pytest.fixture(scope="session")
def killed(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The job of every kind of :data:`KILLED_KINDS`, slowed down and
    checkpointed every partition, killed with SIGKILL once every kind has
    committed a batch; then run again in a fresh process, with the same
    command line."""
    cwd = tmp_path_factory.mktemp("killed")
    repos = cwd / "repos"
    argv = _argv(
        KILLED_KINDS, repos, data, "--slow", str(SLOW), "--checkpoint", "1",
        "--concurrent",
    )  # fmt: skip
    out, err = cwd / "killed.out", cwd / "killed.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=stdout, stderr=stderr)
    ready: set[str] = set()
    was_killed = False
    try:
        deadline = time.monotonic() + KILL_DEADLINE
        while time.monotonic() < deadline and proc.poll() is None:
            reported = jobs.reports(out.read_text())
            for kind in set(KILLED_KINDS) - ready:
                if kind in reported or _fill_commits(repos / f"{kind}.icechunk", kind):
                    ready.add(kind)
            if ready == set(KILLED_KINDS):
                proc.send_signal(signal.SIGKILL)
                was_killed = True
                break
            time.sleep(0.05)
        else:
            if proc.poll() is None:  # the deadline: kill it all the same
                proc.send_signal(signal.SIGKILL)
                was_killed = True
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    commits, sums = {}, {}
    for kind in KILLED_KINDS:
        repo = repos / f"{kind}.icechunk"
        commits[kind] = _fill_commits(repo, kind)
        with contextlib.suppress(dh.StoreError, dh.NotAHistogramError):
            sums[kind] = inputs_job.total(dh.open(repo, kind).to_hist())
    rerun = _run(argv, cwd, repos, KILLED_KINDS)
    return Killed(
        repos,
        was_killed,
        proc.returncode,
        jobs.reports(out.read_text()),
        commits,
        sums,
        err.read_text(),
        rerun,
    )


@pytest.mark.parametrize("kind", KILLED_KINDS)
def test_killed_job_rerun_in_fresh_process(
    kind: str, data: Path, killed: Killed
) -> None:
    eager = _eager(kind, data)
    want = inputs_job.total(eager)
    if not killed.killed:
        pytest.fail(
            f"the job ended (exit {killed.returncode}) before it could be killed:\n"
            f"{jobs.tail(killed.stderr)}"
        )
    if kind in killed.before:
        report = killed.before[kind]
        if "error" in report:
            pytest.fail(f"the killed job of {kind} failed: {report['error']}")
        pytest.fail(f"the job of {kind} finished before it was killed")
    assert killed.commits[kind] >= 1, (
        f"{kind} had no checkpoint commit within {KILL_DEADLINE} s"
    )
    assert 0 < killed.sums[kind] < want, "the killed job had added everything"
    report = killed.rerun.report(kind)
    repo = killed.repos / f"{kind}.icechunk"
    stored = dh.open(repo, kind)
    assert report["snapshot"] == killed.rerun.tips[kind] == stored.snapshot_id
    assert report["sum"] == want, (
        f"the re-run ends at {report['sum']}, {report['sum'] / want:.3g} times "
        f"the eager {want}"
    )
    assert_hist_equal(stored, eager)
    ids = [x for c in stored.history() for x in c.inputs]
    twice = sorted({x for x in ids if ids.count(x) > 1})
    assert not twice, f"identities recorded twice: {twice[:3]}"
    assert len([c for c in stored.history() if c.inputs]) > killed.commits[kind]


# ------------------------------------- several collections in one compute ---


def _on(scheduler: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``compute`` keywords: the threaded scheduler, or the session's
    LocalCluster (its Client is the default while the test runs)."""
    if scheduler == "threads":
        return {"scheduler": "threads"}
    request.getfixturevalue("client")
    return {}


def _read(path: Path, **kwargs: Any) -> tuple[dd.DataFrame, pd.DataFrame]:
    """A parquet file or directory, read by dask and by pandas."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return dd.read_parquet(path, **kwargs), pd.concat(map(pd.read_parquet, files))


@pytest.mark.parametrize("together", ["two_hists", "two_fills"])
@pytest.mark.parametrize(
    ("scheduler", "split_row_groups"),
    [
        pytest.param("threads", "infer", id="threads-file"),
        pytest.param("threads", True, id="threads-row_groups"),
        pytest.param("distributed", "infer", id="distributed-file"),
        pytest.param(
            "distributed", True, id="distributed-row_groups", marks=pytest.mark.slow
        ),
    ],
)
def test_unrelated_files_in_one_compute(
    data: Path,
    repo_path: Path,
    request: pytest.FixtureRequest,
    scheduler: str,
    split_row_groups: Any,
    together: str,
) -> None:
    """Two files of as many partitions (one each, or one per row group) but
    different numbers of rows, in two histograms or two fills of one."""
    on = _on(scheduler, request)
    (a, pa), (b, pb) = (
        _read(data / f"{name}.parquet", split_row_groups=split_row_groups)
        for name in "ab"
    )
    assert len(pa) != len(pb)
    assert a.npartitions == b.npartitions
    assert a.pt.optimize().npartitions == b.pt.optimize().npartitions
    counts = hist.storage.Int64()
    if together == "two_hists":
        ha = dh.Hist(AXIS, storage=counts, store=repo_path, path="a").fill(x=a.pt)
        hb = dh.Hist(AXIS, storage=counts, store=repo_path, path="b").fill(x=b.pt)
        got = [s.to_hist() for s in dh.compute(ha, hb, **on)]
    else:
        files = hist.axis.StrCategory(["a", "b"], name="file")
        h = dh.Hist(files, AXIS, storage=counts, store=repo_path, path="ab")
        both = h.fill(file="a", x=a.pt).fill(file="b", x=b.pt).compute(**on)
        got = [both.to_hist()[hist.loc(name), :] for name in "ab"]
    for name, stored, df in zip("ab", got, (pa, pb), strict=True):
        entries = stored.sum(flow=True)
        assert entries == len(df), f"{name}: {entries} entries from {len(df)} rows"
        assert_hist_equal(stored, hist.Hist(AXIS, storage=counts).fill(df.pt))


@pytest.mark.parametrize("together", ["one_hist", "two_hists"])
@pytest.mark.parametrize(
    ("scheduler", "source"),
    [
        pytest.param("threads", "events.parquet", id="threads-file"),
        pytest.param("threads", "dir", id="threads-dir"),
        pytest.param(
            "distributed",
            "events.parquet",
            id="distributed-file",
            marks=pytest.mark.slow,
        ),
        pytest.param("distributed", "dir", id="distributed-dir"),
    ],
)
def test_filtered_series_next_to_its_parent(
    data: Path,
    repo_path: Path,
    request: pytest.FixtureRequest,
    scheduler: str,
    source: str,
    together: str,
) -> None:
    """A filtered Series filled next to its parent's columns, as two fills of
    one histogram or into two histograms; from one parquet file read with
    the defaults (one partition) or from a directory of files."""
    on = _on(scheduler, request)
    ddf, df = _read(data / source)
    b, pb = ddf[ddf.ds == "B"], df[df.ds == "B"]
    weight = hist.storage.Weight()
    if together == "one_hist":
        axes = (hist.axis.StrCategory(["A", "B"], name="ds"), AXIS)
        h = dh.Hist(*axes, storage=weight, store=repo_path, path="h")
        h.fill(ds="A", x=ddf.pt, weight=ddf.w).fill(ds="B", x=b.pt, weight=0.5)
        eager = hist.Hist(*axes, storage=weight)
        eager.fill(ds="A", x=df.pt, weight=df.w).fill(ds="B", x=pb.pt, weight=0.5)
        assert_hist_equal(h.compute(**on), eager)
    else:
        h1 = dh.Hist(AXIS, storage=weight, store=repo_path, path="all")
        h2 = dh.Hist(AXIS, storage=weight, store=repo_path, path="b")
        got = dh.compute(
            h1.fill(x=ddf.pt, weight=ddf.w), h2.fill(x=b.pt, weight=0.5), **on
        )
        eager1 = hist.Hist(AXIS, storage=weight).fill(df.pt, weight=df.w)
        eager2 = hist.Hist(AXIS, storage=weight).fill(pb.pt, weight=0.5)
        assert_hist_equal(got[0], eager1)
        assert_hist_equal(got[1], eager2)


def test_one_column_of_a_directory_on_the_cluster(
    data: Path, repo_path: Path, client: Any
) -> None:
    """dask-expr fuses the partitions of one column of a directory (fewer
    partitions than files): the compute must not trip over it."""
    del client
    ddf = dd.read_parquet(data / "dir", columns=["pt"])
    assert ddf.pt.optimize().npartitions < ddf.npartitions
    stored = inputs_job.make_hist("parquet_dir_column", data, repo_path).compute()
    assert_hist_equal(stored, _eager("parquet_dir_column", data))
