"""Plain ``dask.compute`` of a processor's output next to its report: one
fill task per input partition for every histogram, and one commit per
repository, as with ``dh.compute``.

Inputs are files read with dask's own readers (``inputs_job.write_data``);
the job (``compute_job.py``) is also what the fresh processes run: a re-run
commits nothing, and a job killed after a checkpoint and run again ends at
the eager result.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import compute_job
import dask
import dask.dataframe as dd
import hist
import icechunk
import inputs_job
import jobs
import pytest
from compute_job import KINDS

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

JOB = Path(compute_job.__file__)
ENV = {**os.environ, "ICECHUNK_LOG": "error"}
#: dask warns when HighLevelGraph collections (ours) are computed with
#: dask-expr ones (a dataframe's sum in the report); users see it too.
MIXED = pytest.mark.filterwarnings("ignore:Computing mixed collections:UserWarning")
#: Seconds that each kind of the killed job sleeps, spread over its partitions.
SLOW = 8.0
KILL_DEADLINE = 120.0


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compute") / "data"
    inputs_job.write_data(root)
    return root


@functools.cache
def _eager(kind: str, data: Path) -> dict[str, hist.Hist[Any]]:
    return compute_job.eager(kind, data)


def _repo(path: Path) -> icechunk.Repository:
    return icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))


def _messages(path: Path) -> list[str]:
    """Commit messages on ``main``, newest first (none without a repository)."""
    try:
        return [s.message for s in _repo(path).ancestry(branch="main")]
    except icechunk.IcechunkError:
        return []


def _fills(path: Path) -> int:
    return len([m for m in _messages(path) if m.startswith("dask_hizt: fill")])


def _check(kind: str, data: Path, out: dict[str, Any]) -> None:
    for name, want in _eager(kind, data).items():
        got = compute_job.stored(out)[name]
        assert isinstance(got, dh.StoredHist)
        assert_hist_equal(got, want)


def _optimized_keys(*objs: Any) -> list[Any]:
    """The keys of the graph that ``dask.compute(*objs)`` runs."""
    colls, _ = dask.base.unpack_collections(*objs)
    if hasattr(dask.base, "collections_to_dsk"):  # stack B's dask (2025.3)
        return list(dask.base.collections_to_dsk(colls, optimize_graph=True))
    expr = dask.base.collections_to_expr(list(colls)).optimize()
    return list(expr.__dask_graph__())


def _named(keys: list[Any], prefix: str) -> list[Any]:
    return [k for k in keys if isinstance(k, tuple) and str(k[0]).startswith(prefix)]


# ------------------------------------------------------- in this process ---


@MIXED
@pytest.mark.parametrize("kind", KINDS)
def test_processor_output_and_report(kind: str, data: Path, tmp_path: Path) -> None:
    out, report = compute_job.processor(kind, data, tmp_path)
    # as the fills pack them (dask-expr's fusion of one column's partitions,
    # which inputs_job.npartitions counts, does not apply to several columns)
    partitions = inputs_job.build(kind, data).x.npartitions
    fills = _named(_optimized_keys(out, report), "hizt-fill")
    # one fill task per partition for the three histograms of two repositories
    assert len({k[0] for k in fills}) == 1
    assert len(fills) == partitions
    out, report = dask.compute(out, report, scheduler="threads")
    _check(kind, data, out)
    x, _ = inputs_job.read_eager(kind, data)
    assert report["sum"] == pytest.approx(x.sum(), rel=1e-12)
    # one commit per repository: creation and fills of both histograms in it
    inputs = (1 + len(compute_job.SYSTS)) * partitions
    assert _messages(tmp_path / f"{kind}-a.icechunk") == [
        f"dask_hizt: fill 2 histograms from {inputs} input partitions",
        "Repository initialized",
    ]
    assert _fills(tmp_path / f"{kind}-b.icechunk") == 1
    assert len(_messages(tmp_path / f"{kind}-b.icechunk")) == 2


@MIXED
def test_on_the_cluster(data: Path, tmp_path: Path, client: Any) -> None:
    del client
    kind = "parquet_dir"
    out, report = compute_job.processor(kind, data, tmp_path)
    out, _ = dask.compute(out, report)
    _check(kind, data, out)
    assert _fills(tmp_path / f"{kind}-a.icechunk") == 1
    assert _fills(tmp_path / f"{kind}-b.icechunk") == 1


def test_two_objects_of_one_histogram(data: Path, repo_path: Path) -> None:
    """Two ``Hist`` objects naming one histogram: both fills go in, in one commit."""
    ddf = dd.read_parquet(data / "dir", columns=["pt", "w"])
    counts = hist.storage.Int64()
    h1 = dh.Hist(inputs_job.AXIS, storage=counts, store=repo_path, path="h")
    h2 = dh.Hist(inputs_job.AXIS, storage=counts, store=repo_path, path="h")
    s1, s2 = dask.compute(h1.fill(x=ddf.pt), h2.fill(x=ddf.pt * 2))
    assert s1.snapshot_id == s2.snapshot_id
    df = inputs_job.read_eager("parquet_dir", data)[0]
    eager = hist.Hist(inputs_job.AXIS, storage=counts).fill(df).fill(df * 2)
    assert_hist_equal(s1, eager)
    assert _fills(repo_path) == 1


def test_different_checkpoints_commit_apart(data: Path, tmp_path: Path) -> None:
    """A set checkpointed every 2 partitions next to a histogram of one
    commit: each is planned on its own, and both are exact."""
    ddf = dd.read_parquet(data / "dir", columns=["pt", "w"])
    counts = hist.storage.Int64()
    a, b = tmp_path / "a.icechunk", tmp_path / "b.icechunk"
    batched = dh.HistSet(
        [dh.Hist(inputs_job.AXIS, storage=counts, store=a, path="h").fill(x=ddf.pt)],
        checkpoint=2,
    )
    single = dh.Hist(inputs_job.AXIS, storage=counts, store=b, path="h")
    (stored,), one = dask.compute(batched, single.fill(x=ddf.pt))
    df = inputs_job.read_eager("parquet_dir", data)[0]
    eager = hist.Hist(inputs_job.AXIS, storage=counts).fill(df)
    assert_hist_equal(stored, eager)
    assert_hist_equal(one, eager)
    assert _fills(a) == inputs_job.DIR_FILES // 2
    assert _fills(b) == 1


def test_nothing_pending_adds_no_tasks_and_no_commit(
    data: Path, tmp_path: Path
) -> None:
    """A second compute of the same output in this process adds nothing."""
    kind = "parquet_dir"
    dask.compute(compute_job.processor(kind, data, tmp_path)[0])
    before = _messages(tmp_path / f"{kind}-a.icechunk")
    (out,) = dask.compute(compute_job.processor(kind, data, tmp_path)[0])
    _check(kind, data, out)
    assert _messages(tmp_path / f"{kind}-a.icechunk") == before


# ----------------------------------------------------- fresh processes ---


@dataclass
class Run:
    """One run of the job script in a fresh process."""

    returncode: int
    reports: dict[str, dict[str, Any]]
    stderr: str
    tips: dict[str, tuple[str | None, str | None]]

    def report(self, kind: str) -> dict[str, Any]:
        report = self.reports.get(kind)
        if report is None:
            pytest.fail(
                f"the job (exit {self.returncode}) reported nothing for {kind}:\n"
                f"{jobs.tail(self.stderr)}"
            )
        if "error" in report:
            pytest.fail(f"the job of {kind} failed: {report['error']}")
        return report


def _argv(repos: Path, data: Path, *options: str) -> list[str]:
    return [sys.executable, str(JOB), ",".join(KINDS), str(repos), str(data), *options]


def _tip(path: Path) -> str | None:
    try:
        return _repo(path).lookup_branch("main")
    except icechunk.IcechunkError:
        return None


def _tips(repos: Path) -> dict[str, tuple[str | None, str | None]]:
    return {
        k: (_tip(repos / f"{k}-a.icechunk"), _tip(repos / f"{k}-b.icechunk"))
        for k in KINDS
    }


def _run(argv: list[str], cwd: Path, repos: Path) -> Run:
    proc = subprocess.run(
        argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240, check=False
    )
    return Run(proc.returncode, jobs.reports(proc.stdout), proc.stderr, _tips(repos))


def _sums(kind: str, data: Path) -> dict[str, float]:
    return {name: inputs_job.total(h) for name, h in _eager(kind, data).items()}


@pytest.fixture(scope="session")
def reruns(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Run, Run]:
    cwd = tmp_path_factory.mktemp("compute-rerun")
    repos = cwd / "repos"
    first = _run(_argv(repos, data), cwd, repos)
    second = _run(_argv(repos, data), cwd, repos)
    return repos, first, second


@pytest.mark.parametrize("kind", KINDS)
def test_rerun_in_fresh_process_commits_nothing(
    kind: str, data: Path, reruns: tuple[Path, Run, Run]
) -> None:
    repos, first, second = reruns
    report = first.report(kind)
    assert (report["snapshots"]["a"], report["snapshots"]["b"]) == first.tips[kind]
    assert report["sums"] == _sums(kind, data)
    again = second.report(kind)
    assert second.tips[kind] == first.tips[kind], f"the re-run committed: {again}"
    assert again["sums"] == _sums(kind, data)
    for name, want in _eager(kind, data).items():
        repo = repos / f"{kind}-{'b' if name in compute_job.IN_B else 'a'}.icechunk"
        assert_hist_equal(dh.open(repo, name), want)
        assert _fills(repo) == 1


@dataclass
class Killed:
    repos: Path
    killed: dict[str, bool]
    commits: dict[str, int]
    rerun: Run
    stderr: str


@pytest.fixture(scope="session")
def killed(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The job of each kind (its output, without the report) checkpointed
    every partition and slowed down, in a process of its own, killed with
    SIGKILL once it has committed a batch in repository a; then the job of
    every kind run again in one fresh process."""
    cwd = tmp_path_factory.mktemp("compute-killed")
    repos = cwd / "repos"
    options = ("--slow", str(SLOW), "--checkpoint", "1", "--no-report")
    err = cwd / "killed.err"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    was_killed = dict.fromkeys(KINDS, False)
    with err.open("w") as stderr:
        for kind in KINDS:
            argv = [sys.executable, str(JOB), kind, str(repos), str(data), *options]
            procs[kind] = subprocess.Popen(
                argv, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr
            )
    try:
        deadline = time.monotonic() + KILL_DEADLINE
        while time.monotonic() < deadline and any(
            p.poll() is None for p in procs.values()
        ):
            for kind, proc in procs.items():
                if proc.poll() is None and _fills(repos / f"{kind}-a.icechunk"):
                    proc.send_signal(signal.SIGKILL)
                    was_killed[kind] = True
            time.sleep(0.05)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    commits = {k: _fills(repos / f"{k}-a.icechunk") for k in KINDS}
    rerun = _run(_argv(repos, data, *options, "--concurrent"), cwd, repos)
    return Killed(repos, was_killed, commits, rerun, err.read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_killed_job_resumed_in_fresh_process(
    kind: str, data: Path, killed: Killed
) -> None:
    if not killed.killed[kind]:
        pytest.fail(f"the job ended before it was killed:\n{jobs.tail(killed.stderr)}")
    partitions = inputs_job.build(kind, data).x.npartitions
    assert 1 <= killed.commits[kind] < partitions, (
        f"not killed halfway: {killed.commits}"
    )
    report = killed.rerun.report(kind)
    assert report["sums"] == _sums(kind, data)
    repo = killed.repos / f"{kind}-a.icechunk"
    for name in compute_job.IN_A:
        stored = dh.open(repo, name)
        assert_hist_equal(stored, _eager(kind, data)[name])
        ids = [x for c in stored.history() for x in c.inputs]
        assert len(ids) == len(set(ids)), "an identity recorded twice"
    assert _fills(repo) > killed.commits[kind]
