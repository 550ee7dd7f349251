"""ROOT inputs, read through uproot and coffea (issue 13's acceptance tests on
stack B): the stored result equals the eager uproot + hist fill of the same
files, a re-run of the job in a fresh process adds and commits nothing, a job
killed with SIGKILL after a checkpoint and run again ends exactly at the
eager result, the recorded identities name the ROOT files and entries, and a
file added to the fileset adds only its partitions. Also: the coffea tutorial
(docs/coffea.md) run twice, and coffea's ``processor.Runner`` with
``dh.Staging`` (kind ``runner``) run again.

The jobs are in ``inputs_root_job.py``, which is also the script that the
fresh processes run (one process runs the job of every kind, one kind after
another; the killed job runs them all at once, so that one SIGKILL stops each
of them halfway). Needs dask-awkward >= 2025.9 and coffea (stack B, see the
README); skipped on stack A.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import icechunk
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

pytest.importorskip("dask_awkward", minversion="2025.9")
pytest.importorskip("coffea")
uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")

import inputs_root_job  # needs coffea
import jobs
from inputs_root_job import KINDS, PATH, TREE

JOB = Path(inputs_root_job.__file__)
DOCS = Path(__file__).resolve().parents[1] / "docs"

#: dask 2025.3 trips this NumPy deprecation when dask.dataframe is imported
#: (see the README's "Testing on stack B"); the job processes ignore it too.
NUMPY_TIMEDELTA = (
    "ignore:The 'generic' unit for NumPy timedelta is deprecated:DeprecationWarning"
)

#: The kinds that run through dask (all but coffea's Runner): the killed job's.
DASK_KINDS = tuple(k for k in KINDS if k != "runner")
#: The kinds whose partitions are uproot's steps of ``STEP`` entries (coffea's
#: preprocess and Runner cut the files into equal steps of their own).
STEP_KINDS = ("uproot", "uproot_closed", "from_root")
#: Seconds that each kind of the killed job sleeps, spread over its partitions.
SLOW = 9.0
#: How long the killed job may take to commit a batch of every kind.
KILL_DEADLINE = 120.0

#: One identity of a partition read from a ROOT file (docs/format.md):
#: ``root:file="<file name>",tree="Events",entries=<a>-<b>#<digest>``.
ROOT_ID = re.compile(
    r'root:file="(?P<src>[^"]+)",tree="Events",'
    r"entries=(?P<start>\d+)-(?P<stop>\d+)#[0-9a-f]{16}"
)
#: One identity of a chunk of events staged by dh.Staging from coffea's
#: ``events.metadata``: ``staged:<file uuid>#Events[<a>:<b>]``.
STAGED_ID = re.compile(
    rf"staged:(?P<src>[0-9a-f-]{{36}})#{TREE}\[(?P<start>\d+):(?P<stop>\d+)\]"
)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ROOT files (those of :data:`inputs_root_job.EXTRA` too), written once."""
    root = tmp_path_factory.mktemp("root_inputs") / "data"
    inputs_root_job.write_data(root)
    return root


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the fresh processes.

    Bytecode is cached under a directory of the session (not next to the
    sources): with ``PYTHONDONTWRITEBYTECODE`` set, each process would
    compile coffea, dask and friends anew, some 10 s of every run.
    """
    out = {
        **os.environ,
        "ICECHUNK_LOG": "error",
        "PYTHONWARNINGS": NUMPY_TIMEDELTA,
        "PYTHONPYCACHEPREFIX": str(tmp_path_factory.mktemp("pycache")),
    }
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


@functools.cache
def _eager(data: Path, *, extra: bool = False) -> hist.Hist[Any]:
    return inputs_root_job.eager(data, extra=extra)


@functools.cache
def _sources(data: Path, kind: str) -> dict[str, str]:
    """``{what an identity names a file by: path}`` of every file: its name,
    or for the Runner's staged chunks its ROOT UUID (coffea's)."""
    out = {}
    for ps in inputs_root_job.files(data, extra=True).values():
        for p in ps:
            if kind == "runner":
                with uproot.open(p) as f:
                    out[str(f.file.uuid)] = p
            else:
                out[Path(p).name] = p
    return out


def _repo(repos: Path, kind: str) -> Path:
    return repos / f"{kind}.icechunk"


def _tip(repo: Path) -> str | None:
    """The snapshot at the tip of ``main``, or ``None`` without a repository."""
    try:
        storage = icechunk.local_filesystem_storage(str(repo))
        return icechunk.Repository.open(storage).lookup_branch("main")
    except Exception:  # noqa: BLE001  # no repository (yet)
        return None


def _commits(repo: Path) -> int:
    """Commits on ``main`` after the repository's first (0 without one). Every
    commit of these jobs is a fill commit: a new histogram is created by its
    first fill commit."""
    try:
        storage = icechunk.local_filesystem_storage(str(repo))
        return len(list(icechunk.Repository.open(storage).ancestry(branch="main"))) - 1
    except Exception:  # noqa: BLE001  # no repository (yet)
        return 0


def _fills(repo: Path) -> list[dh.Commit]:
    """The fill commits of the histogram, newest first."""
    return [c for c in dh.open(repo, PATH).history() if c.inputs]


def _argv(kinds: Sequence[str], repos: Path, data: Path, *options: str) -> list[str]:
    return [sys.executable, str(JOB), ",".join(kinds), str(repos), str(data), *options]


@dataclass
class Run:
    """One run of the job script in a fresh process."""

    returncode: int
    reports: dict[str, dict[str, Any]]
    stderr: str
    tips: dict[str, str | None] = field(default_factory=dict)
    commits: dict[str, int] = field(default_factory=dict)

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


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], repos: Path, kinds: Sequence[str]
) -> Run:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    run = Run(proc.returncode, jobs.reports(proc.stdout), proc.stderr)
    run.tips = {k: _tip(_repo(repos, k)) for k in kinds}
    run.commits = {k: _commits(_repo(repos, k)) for k in kinds}
    return run


def _parts(ids: Sequence[str], kind: str) -> list[tuple[str, int, int]]:
    """``(file, start, stop)`` of each identity; fails on any other form."""
    pattern = STAGED_ID if kind == "runner" else ROOT_ID
    out = []
    for x in ids:
        m = pattern.fullmatch(x)
        assert m is not None, f"{kind}: identity {x!r} is not {pattern.pattern!r}"
        out.append((m["src"], int(m["start"]), int(m["stop"])))
    return out


def _assert_cover(
    parts: Sequence[tuple[str, int, int]], paths: Sequence[str], data: Path, kind: str
) -> None:
    """The partitions are those of exactly ``paths``: for each file, entry ranges
    cutting all its entries into at least two steps (:data:`STEP_KINDS`: the
    steps of ``STEP`` entries), each once."""
    uuids = _sources(data, kind)
    assert sorted({uuids[u] for u, _, _ in parts if u in uuids}) == sorted(paths)
    assert {u for u, _, _ in parts} <= set(uuids), "an identity of an unknown file"
    for p in paths:
        (u,) = (u for u, q in uuids.items() if q == p)
        ranges = sorted((a, b) for v, a, b in parts if v == u)
        n = inputs_root_job.entries(p)
        starts = [a for a, _ in ranges]
        assert len(ranges) >= 2, f"{kind}: {p} is one partition"
        assert [0, *[b for _, b in ranges[:-1]]] == starts, f"{kind}: {ranges}"
        assert ranges[-1][1] == n, f"{kind}: {p} has {n} entries: {ranges}"
        if kind in STEP_KINDS:
            assert [list(r) for r in ranges] == inputs_root_job.steps(p)


# ------------------------------------------------ run, run again, add a file ---


@dataclass
class Reruns:
    """The job of every kind run three times, each in a fresh process: twice
    as it is, then with one more file in the DYJets dataset."""

    repos: Path
    first: Run
    second: Run
    extra: Run


@pytest.fixture(scope="session")
def reruns(
    data: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Reruns:
    cwd = tmp_path_factory.mktemp("root_rerun")
    repos = cwd / "repos"
    argv = _argv(KINDS, repos, data)
    first = _run(argv, cwd, env, repos, KINDS)
    second = _run(argv, cwd, env, repos, KINDS)
    extra = _run([*argv, "--extra"], cwd, env, repos, KINDS)
    return Reruns(repos, first, second, extra)


def test_the_inputs_are_what_they_claim(data: Path) -> None:
    """Several files in a dataset, several partitions in each file, and
    entries in both flow bins of the eager reference (so that they are
    compared too)."""
    paths = inputs_root_job.files(data)
    assert len(paths["DYJets"]) >= 2
    for ps in paths.values():
        for p in ps:
            assert len(inputs_root_job.steps(p)) >= 2
            assert (
                uproot.dask({p: TREE}, step_size=inputs_root_job.STEP).npartitions >= 2
            )
    for extra in (False, True):
        eager = _eager(data, extra=extra)
        flow = eager.values(flow=True)
        for i, _ in enumerate(paths):
            assert flow[i, 0] != 0
            assert flow[i, -1] != 0
        assert not flow[-1].any()  # the dataset axis' overflow bin
    assert inputs_root_job.total(_eager(data, extra=True)) > inputs_root_job.total(
        _eager(data)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_matches_eager(kind: str, data: Path, reruns: Reruns) -> None:
    """The first run: the stored result equals the eager uproot + hist fill, in
    one fill commit per compute, which creates the histogram (plain
    ``dask.compute`` of the two datasets' ``dh.Hist`` objects too: one commit
    per repository)."""
    repo = _repo(reruns.repos, kind)
    eager = _eager(data)
    report = reruns.first.report(kind)
    assert report["sum"] == inputs_root_job.total(eager)
    tip = reruns.first.tips[kind]
    assert_hist_equal(dh.open(repo, PATH, snapshot_id=tip), eager)
    fills = dh.open(repo, PATH, snapshot_id=tip).history()
    assert all(c.inputs for c in fills)
    assert reruns.first.commits[kind] == len(fills) == 1
    assert report["snapshots"] == [tip]
    assert fills[0].created


@pytest.mark.parametrize("kind", KINDS)
def test_rerun_in_fresh_process_adds_nothing(
    kind: str, data: Path, reruns: Reruns
) -> None:
    repo = _repo(reruns.repos, kind)
    eager = _eager(data)
    want = inputs_root_job.total(eager)
    first = reruns.first.report(kind)
    again = reruns.second.report(kind)
    assert reruns.second.tips[kind] == reruns.first.tips[kind], (
        f"the re-run committed: its sum is {again['sum']}, "
        f"{again['sum'] / want:.3g} times the eager {want}"
    )
    assert reruns.second.commits[kind] == reruns.first.commits[kind]
    assert again["sum"] == first["sum"] == want
    # the histograms as they are (Staging.commit too, as tests/test_runner.py)
    assert again["snapshots"] == [reruns.first.tips[kind]]
    assert_hist_equal(dh.open(repo, PATH, snapshot_id=reruns.second.tips[kind]), eager)


@pytest.mark.parametrize("kind", KINDS)
def test_identities_name_the_root_files_and_entries(
    kind: str, data: Path, reruns: Reruns
) -> None:
    """Every identity recorded by the first run is the ROOT provenance of its
    partition (``staged:`` and coffea's chunk for the Runner), and the
    partitions cut every file into steps, each once."""
    repo = _repo(reruns.repos, kind)
    stored = dh.open(repo, PATH, snapshot_id=reruns.first.tips[kind])
    ids = [x for c in stored.history() for x in c.inputs]
    prefix = "staged:" if kind == "runner" else "root:file="
    assert ids[0].startswith(prefix)
    assert len(set(ids)) == len(ids)
    parts = _parts(ids, kind)
    assert len(set(parts)) == len(parts)
    paths = inputs_root_job.files(data)
    _assert_cover(parts, [p for ps in paths.values() for p in ps], data, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_added_file_adds_only_its_partitions(
    kind: str, data: Path, reruns: Reruns
) -> None:
    """The job run again with one more file in DYJets: one more fill commit,
    which holds the partitions of that file and no other; the result equals
    the eager fill of all the files."""
    repo = _repo(reruns.repos, kind)
    eager = _eager(data, extra=True)
    report = reruns.extra.report(kind)
    assert report["sum"] == inputs_root_job.total(eager)
    tip = reruns.extra.tips[kind]
    assert tip != reruns.second.tips[kind]
    assert report["snapshots"] == [tip]
    assert reruns.extra.commits[kind] == reruns.second.commits[kind] + 1
    assert_hist_equal(dh.open(repo, PATH, snapshot_id=tip), eager)
    history = dh.open(repo, PATH, snapshot_id=tip).history()
    assert history[0].snapshot_id == tip
    assert [c.snapshot_id for c in history[1:]] == [
        c.snapshot_id
        for c in dh.open(repo, PATH, snapshot_id=reruns.second.tips[kind]).history()
    ]
    added = _parts(history[0].inputs, kind)
    extra = str(data / inputs_root_job.EXTRA[1][0])
    _assert_cover(added, [extra], data, kind)


# ------------------------------------------------------- the killed job ---


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
def killed(
    data: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Killed:
    """The job of every kind of :data:`DASK_KINDS`, slowed down and
    checkpointed every partition, killed with SIGKILL once every kind has
    committed a batch; then run again in a fresh process, with the same
    command line."""
    cwd = tmp_path_factory.mktemp("root_killed")
    repos = cwd / "repos"
    argv = _argv(
        DASK_KINDS, repos, data, "--slow", str(SLOW), "--checkpoint", "1",
        "--concurrent",
    )  # fmt: skip
    out, err = cwd / "killed.out", cwd / "killed.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    ready: set[str] = set()
    was_killed = False
    try:
        deadline = time.monotonic() + KILL_DEADLINE
        while time.monotonic() < deadline and proc.poll() is None:
            reported = jobs.reports(out.read_text())
            for kind in set(DASK_KINDS) - ready:
                if kind in reported or _commits(_repo(repos, kind)):
                    ready.add(kind)
            if ready == set(DASK_KINDS):
                proc.send_signal(signal.SIGKILL)
                was_killed = True
                break
            time.sleep(0.1)
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
    for kind in DASK_KINDS:
        repo = _repo(repos, kind)
        commits[kind] = _commits(repo)
        if commits[kind]:
            sums[kind] = inputs_root_job.total(dh.open(repo, PATH).to_hist())
    rerun = _run(argv, cwd, env, repos, DASK_KINDS)
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


@pytest.mark.parametrize("kind", DASK_KINDS)
def test_killed_job_rerun_in_fresh_process(
    kind: str, data: Path, killed: Killed
) -> None:
    eager = _eager(data)
    want = inputs_root_job.total(eager)
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
    repo = _repo(killed.repos, kind)
    stored = dh.open(repo, PATH)
    assert stored.snapshot_id == killed.rerun.tips[kind]
    assert killed.rerun.tips[kind] in report["snapshots"]
    assert report["sum"] == want, (
        f"the re-run ends at {report['sum']}, {report['sum'] / want:.3g} times "
        f"the eager {want}"
    )
    assert_hist_equal(stored, eager)
    fills = stored.history()
    assert all(c.inputs for c in fills)
    ids = [x for c in fills for x in c.inputs]
    twice = sorted({x for x in ids if ids.count(x) > 1})
    assert not twice, f"identities recorded twice: {twice[:3]}"
    assert len(fills) == killed.rerun.commits[kind] > killed.commits[kind]
    paths = inputs_root_job.files(data)
    _assert_cover(
        _parts(ids, kind), [p for ps in paths.values() for p in ps], data, kind
    )


# -------------------------------------------------- the coffea tutorial ---


def _python_blocks(page: Path) -> str:
    """The page's ```python blocks, in order (as tests/test_docs.py runs them)."""
    return "\n".join(
        re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    )


#: What the tutorial prints: the sum of weights of TTbar's muons.
WEIGHTED_SUM = re.compile(
    r"WeightedSum\(value=(?P<value>[^,]+), variance=(?P<variance>[^)]+)\)"
)


@dataclass
class Tutorial:
    """One run of the tutorial's code in a fresh process, in its directory."""

    returncode: int
    stdout: str
    stderr: str
    tip: str | None
    file_uuid: str  # ttbar.root's UUID after the run

    def ttbar(self) -> tuple[float, float]:
        """The printed sum of weights of TTbar's muons: (value, variance)."""
        assert self.returncode == 0, self.stderr[-3000:]
        (m,) = WEIGHTED_SUM.finditer(self.stdout)
        return float(m["value"]), float(m["variance"])


@pytest.fixture(scope="session")
def tutorial(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Tutorial, Tutorial]:
    """docs/coffea.md's code run twice, each time in a fresh process, in one
    directory (as a user runs it twice)."""
    code = _python_blocks(DOCS / "coffea.md")
    assert "dh.compute(out, report)" in code
    cwd = tmp_path_factory.mktemp("tutorial")
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        with uproot.open(cwd / "ttbar.root") as f:
            file_uuid = str(f.file.uuid)
        runs.append(
            Tutorial(
                done.returncode,
                done.stdout,
                done.stderr,
                _tip(cwd / "analysis.icechunk"),
                file_uuid,
            )
        )
    return cwd, runs[0], runs[1]


def test_coffea_tutorial_twice_gives_the_same_totals(
    tutorial: tuple[Path, Tutorial, Tutorial],
) -> None:
    cwd, first, second = tutorial
    # the first run is right: the eager sum from the file (both runs write
    # the same events, from the same seed)
    with uproot.open(cwd / "ttbar.root") as f:
        arr = f[TREE].arrays(["Muon_pt", "genWeight"])
    pt, w = ak.broadcast_arrays(arr.Muon_pt, arr.genWeight)
    eager = hist.Hist(
        hist.axis.Regular(40, 5, 105, name="pt"), storage=hist.storage.Weight()
    ).fill(pt=ak.flatten(pt), weight=ak.flatten(w))
    value, variance = first.ttbar()
    assert (value, variance) == (eager.sum().value, eager.sum().variance)
    again = second.ttbar()
    assert again == (value, variance), (
        f"the second run of the tutorial printed {again[0]}, {again[0] / value:.3g} "
        f"times the first's {value} (the tutorial writes its input files anew "
        f"each time: ttbar.root's UUID was {first.file_uuid}, then {second.file_uuid})"
    )
    assert first.file_uuid != second.file_uuid  # the same events in a new file
    assert second.tip == first.tip
