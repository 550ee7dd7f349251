"""Resume without redoing work: coffea's ``processor.Runner`` with a
``dh.Staging``, a run in which one chunk of events fails, and a resumed run
in a fresh process that processes only the chunks ``Staging.pending`` gives.

Each run is a job script (``tests/resume_job.py``) in a fresh process, with
``IterativeExecutor`` or ``DaskExecutor`` on a LocalCluster of worker
processes. Needs coffea (stack B, see the README); skipped on stack A.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hist
import icechunk
import pytest
from nanoaod import nanoaod_files  # noqa: F401 - the fixture

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

pytest.importorskip("coffea.processor")
ak = pytest.importorskip("awkward")
uproot = pytest.importorskip("uproot")

JOB = Path(__file__).with_name("resume_job.py")
PT = hist.axis.Regular(40, 5, 105, name="pt")
ETA = hist.axis.Regular(24, -2.4, 2.4, name="eta")
#: coffea cuts 30,000 + 24,000 events into 3 + 2 chunks (chunksize 10,000)
CHUNKS = 3 + 2


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {
        **os.environ,
        "ICECHUNK_LOG": "error",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        "PYTHONPYCACHEPREFIX": str(tmp_path_factory.mktemp("pycache")),
    }
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def _job(
    env: dict[str, str],
    mode: str,
    repo: Path,
    files: dict[str, Path],
    executor: str,
    log: Path,
    *options: str,
    fails: bool = False,
) -> dict[str, Any]:
    argv = [sys.executable, str(JOB), mode, str(repo)]
    argv += [json.dumps({k: str(v) for k, v in files.items()}), executor, str(log)]
    proc = subprocess.run(
        [*argv, *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert ("error" in report) == fails, proc.stderr[-3000:]
    return report


def _processed(log: Path) -> list[tuple[str, int, int]]:
    """The chunks the processor finished, per line of the log, and forget them."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        ds, start, stop = line.split()
        out.append((ds, int(start), int(stop)))
    log.unlink()
    return out


def _expected(files: dict[str, Path]) -> dict[str, hist.Hist[Any]]:
    """Eager references of the job's two histograms, flow bins included."""
    out = {}
    for path, axis in {"muon/pt": PT, "muon/eta": ETA}.items():
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        out[path] = hist.Hist(grows, axis, storage=hist.storage.Weight())
    for name, p in files.items():
        with uproot.open(p) as f:
            arr = f["Events"].arrays(["Muon_pt", "Muon_eta", "genWeight"])
        pt, eta, w = ak.broadcast_arrays(arr.Muon_pt, arr.Muon_eta, arr.genWeight)
        flat_w = ak.to_numpy(ak.flatten(w))
        out["muon/pt"].fill(dataset=name, pt=ak.to_numpy(ak.flatten(pt)), weight=flat_w)
        out["muon/eta"].fill(
            dataset=name, eta=ak.to_numpy(ak.flatten(eta)), weight=flat_w
        )
    return out


def _commits(repo: Path) -> list[str]:
    storage = icechunk.local_filesystem_storage(str(repo))
    return [
        s.message for s in icechunk.Repository.open(storage).ancestry(branch="main")
    ]


@pytest.mark.parametrize("executor", ["iterative", "dask"])
def test_a_resumed_run_processes_only_the_chunks_not_committed(
    executor: str,
    tmp_path: Path,
    env: dict[str, str],
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    repo, log = tmp_path / "repo.icechunk", tmp_path / "processed.log"
    run = _job(env, "run", repo, nanoaod_files, executor, log, "--fail", "TTbar:1")
    # the Runner skipped the failing chunk; the others were staged and committed
    assert run["chunks"] == CHUNKS
    done = _processed(log)
    assert len(done) == len(set(done)) == CHUNKS - 1
    assert run["staged"] == 2 * (CHUNKS - 1)
    ((ds, start, stop),) = run["pending"]  # exactly the chunk that failed
    assert ds == "TTbar"
    assert (ds, start, stop) not in done

    resumed = _job(env, "resume", repo, nanoaod_files, executor, log)
    assert resumed["todo"] == 1
    assert _processed(log) == [(ds, start, stop)]  # nothing done twice
    assert resumed["pending"] == []
    assert_hist_equal(
        dh.open(repo, "muon/pt"),
        _expected(nanoaod_files)["muon/pt"],
        categories="any order",
    )
    assert_hist_equal(
        dh.open(repo, "muon/eta"),
        _expected(nanoaod_files)["muon/eta"],
        categories="any order",
    )
    history = _commits(repo)
    assert len(history) == 3  # creation, the first run's fill, the resumed one

    # the whole job again: every chunk runs, nothing is committed
    again = _job(env, "run", repo, nanoaod_files, executor, log)
    assert len(_processed(log)) == CHUNKS
    assert again["snapshots"] == resumed["snapshots"]
    assert _commits(repo) == history


def test_coffea_checkpoints_keep_what_a_failed_run_staged(
    tmp_path: Path,
    env: dict[str, str],
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    """Without ``skipbadfiles`` the run raises and commits nothing; coffea's
    ``SimpleCheckpointer`` kept each finished chunk's output (a Staging: the
    names of its staged files), so the resumed run processes only the rest."""
    repo, log = tmp_path / "repo.icechunk", tmp_path / "processed.log"
    checkpoints = tmp_path / "checkpoints"
    options = ("--checkpoint", str(checkpoints))
    failed = _job(
        env,
        "run",
        repo,
        nanoaod_files,
        "iterative",
        log,
        *options,
        "--fail",
        "TTbar:1",
        fails=True,
    )
    assert "this chunk of events fails" in failed["error"]
    kept = _processed(log)
    assert len(list(checkpoints.rglob("*.coffea"))) == len(kept) >= 1
    assert len(_commits(repo)) == 1  # nothing committed

    resumed = _job(env, "resume", repo, nanoaod_files, "iterative", log, *options)
    assert resumed["todo"] == CHUNKS
    again = _processed(log)
    assert len(again) == CHUNKS - len(kept)
    assert not set(again) & set(kept)
    assert resumed["staged"] == 2 * CHUNKS
    assert resumed["pending"] == []
    assert_hist_equal(
        dh.open(repo, "muon/pt"),
        _expected(nanoaod_files)["muon/pt"],
        categories="any order",
    )
    assert len(_commits(repo)) == 2
