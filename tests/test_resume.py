"""Resume without redoing work: coffea's ``processor.Runner`` with a
``dh.Staging``, a run in which one chunk of events fails, a resumed run that
processes only the chunks ``Staging.pending`` gives, and a full re-run that
commits nothing, each in a fresh process (``tests/runner_job.py``).

The matrix: the Iterative, Futures (two worker processes) and Dask (a
LocalCluster of two worker processes) executors; the Runner's virtual
events and ``mode="eager"`` ones; a repository on local disk and on S3
(moto's server on 127.0.0.1). Needs coffea (stack B, see the README);
skipped on stack A.
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
from test_staging_s3 import staged_objects

import dask_hizt as dh
from dask_hizt.storage import open_repository, parse_url
from dask_hizt.testing import assert_hist_equal

pytest.importorskip("coffea.processor")
ak = pytest.importorskip("awkward")
uproot = pytest.importorskip("uproot")

JOB = Path(__file__).with_name("runner_job.py")
PT = hist.axis.Regular(40, 5, 105, name="pt")
ETA = hist.axis.Regular(24, -2.4, 2.4, name="eta")
#: coffea cuts 30,000 + 24,000 events into 3 + 2 chunks (chunksize 10,000)
CHUNKS = 3 + 2
#: the type of a muon pt buffer the processor sees, by kind of events
BUFFERS = {"virtual": ["VirtualNDArray"], "eager": ["ndarray"]}


def _env(tmp_path: Path) -> dict[str, str]:
    """The job's environment: this process's (with the S3 user's settings,
    if the test has them), byte-compiled imports kept apart."""
    out = {
        **os.environ,
        "ICECHUNK_LOG": "error",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache"),
    }
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The repository: a local directory, or an ``s3://`` URL in a new bucket."""
    if request.param == "local":
        return str(tmp_path / "repo.icechunk")
    from conftest import new_bucket

    return f"s3://{new_bucket(request.getfixturevalue('s3_env'))}/analysis"


def _job(
    mode: str,
    store: str,
    files: dict[str, Path],
    executor: str,
    events: str,
    log: Path,
    *options: str,
    fails: bool = False,
) -> dict[str, Any]:
    argv = [sys.executable, str(JOB), mode, store]
    argv += [json.dumps({k: str(v) for k, v in files.items()}), executor, events]
    proc = subprocess.run(
        [*argv, str(log), *options],
        env=_env(log.parent),
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


def _commits(store: str) -> list[str]:
    if store.startswith("s3://"):
        repo = open_repository(parse_url(store), create=False)
    else:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(store))
    return [s.id for s in repo.ancestry(branch="main")]


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
@pytest.mark.parametrize("events", ["virtual", "eager"])
@pytest.mark.parametrize("executor", ["iterative", "futures", "dask"])
def test_a_failed_chunk_resumed_then_a_rerun_exact_and_exactly_once(
    executor: str,
    events: str,
    store: str,
    tmp_path: Path,
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    log = tmp_path / "processed.log"
    run = _job("run", store, nanoaod_files, executor, events, log, "--fail", "TTbar:1")
    assert run["buffers"] == BUFFERS[events]
    # the Runner skipped the failing chunk; the others were staged and committed
    assert run["chunks"] == CHUNKS
    done = _processed(log)
    assert len(done) == len(set(done)) == CHUNKS - 1
    assert run["staged"] == 2 * (CHUNKS - 1)  # two histograms per chunk
    # what came back to the client: names of staged objects, no secret
    assert run["blob_bytes"] < 20_000
    assert run["secret_in_blob"] is False
    assert staged_objects(store) == []  # removed by the commit
    ((ds, start, stop),) = run["pending"]  # exactly the chunk that failed
    assert ds == "TTbar"
    assert (ds, start, stop) not in done

    resumed = _job("resume", store, nanoaod_files, executor, events, log)
    assert resumed["todo"] == 1
    assert _processed(log) == [(ds, start, stop)]  # nothing done twice
    assert resumed["pending"] == []
    expected = _expected(nanoaod_files)
    for path in ("muon/pt", "muon/eta"):  # flow bins included
        assert_hist_equal(dh.open(store, path), expected[path], categories="any order")
    history = _commits(store)
    assert len(history) == 3  # creation, the first run's fill, the resumed one

    # the whole job again: every chunk runs and is staged, nothing is committed
    again = _job("run", store, nanoaod_files, executor, events, log)
    assert len(_processed(log)) == CHUNKS
    assert again["staged"] == 2 * CHUNKS
    assert again["snapshots"] == resumed["snapshots"]
    assert _commits(store) == history
    assert staged_objects(store) == []
    assert_hist_equal(
        dh.open(store, "muon/pt"), expected["muon/pt"], categories="any order"
    )


def test_coffea_checkpoints_keep_what_a_failed_run_staged(
    tmp_path: Path,
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    """Without ``skipbadfiles`` the run raises and commits nothing; coffea's
    ``SimpleCheckpointer`` kept each finished chunk's output (a Staging: the
    names of its staged files), so the resumed run processes only the rest."""
    repo, log = str(tmp_path / "repo.icechunk"), tmp_path / "processed.log"
    checkpoints = tmp_path / "checkpoints"
    options = ("--checkpoint", str(checkpoints))
    failed = _job(
        "run",
        repo,
        nanoaod_files,
        "iterative",
        "virtual",
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

    resumed = _job("resume", repo, nanoaod_files, "iterative", "virtual", log, *options)
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
