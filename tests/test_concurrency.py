"""Concurrent computes into one histogram of one local repository: separate OS
processes started together, and threads of one process. Every commit must land
and the stored sum must be exactly the sum of all inputs; where the writers
touch the same chunks, that is the additive fix-up of ``commit_forks`` at work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import icechunk
import numpy as np
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

N = 20_000
CATEGORIES = ["p0", "p1", "p2", "p3"]


def _axes() -> tuple[Any, ...]:
    return (
        hist.axis.StrCategory(CATEGORIES, name="proc"),
        hist.axis.Regular(40, -4, 4, name="x"),
        hist.axis.Integer(0, 6, name="n"),
    )


def _data(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, n), rng.integers(-1, 8, n)


# The script each process runs: build the lazy histogram, say it is ready, wait
# for the start signal, compute once, report what it saw. Data depend only on
# the seed, so the test computes the same eager histogram. Fills are slowed a
# little so that every process builds its graph on the same tip of the branch.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import dask
    import dask.array as da
    import hist
    import numpy as np

    import dask_hizt as dh

    cfg = json.loads(sys.argv[1])
    rng = np.random.default_rng(cfg["seed"])
    x, n = rng.normal(0, 1.5, cfg["n"]), rng.integers(-1, 8, cfg["n"])

    def slow(block):
        time.sleep(cfg["delay"])
        return block

    axes = (
        hist.axis.StrCategory(cfg["categories"], name="proc"),
        hist.axis.Regular(40, -4, 4, name="x"),
        hist.axis.Integer(0, 6, name="n"),
    )
    dask.config.set({"dask_hizt.chunk-bytes": "1KiB", "dask_hizt.owners": 3})
    h = dh.Hist(*axes, storage=hist.storage.Int64(), store=cfg["repo"], path="h")
    dx = da.from_array(x, chunks=cfg["n"] // 4).map_blocks(slow, dtype=x.dtype)
    h.fill(proc=cfg["category"], x=dx, n=da.from_array(n, chunks=cfg["n"] // 4))
    Path(cfg["ready"]).write_text("ready")
    deadline = time.monotonic() + 120
    while not Path(cfg["go"]).exists():
        if time.monotonic() > deadline:
            sys.exit("no start signal")
        time.sleep(0.005)
    base = h.repository.lookup_branch("main")
    stored = h.compute(scheduler="threads", num_workers=2)
    Path(cfg["out"]).write_text(json.dumps({"base": base, "snapshot": stored.snapshot_id}))
    # The report is written: exit without the interpreter's teardown, where
    # icechunk's native (tokio) threads can race Python's finalization and
    # segfault a finished process (seen once on stack B; the CLI exits the
    # same way, see dask_hizt.cli.run).
    sys.stdout.flush()
    os._exit(0)
    """
)


def _run_processes(
    tmp_path: Path, repo: Path, categories: list[str], seeds: list[int]
) -> list[dict[str, str]]:
    """Start one process per seed, release them together, return their reports."""
    script = tmp_path / "compute.py"
    script.write_text(SCRIPT)
    go = tmp_path / "go"
    procs: list[tuple[subprocess.Popen[bytes], dict[str, Any]]] = []
    # faulthandler: should a process still crash, its threads' stacks are in stderr
    env = {
        **os.environ,
        "ICECHUNK_LOG": "error",
        "PYTHONWARNINGS": "error",
        "PYTHONFAULTHANDLER": "1",
    }
    # The repository exists; the processes race to create the histogram in it.
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(repo)))
    try:
        for i, (cat, seed) in enumerate(zip(categories, seeds, strict=True)):
            cfg: dict[str, Any] = {
                "repo": str(repo),
                "seed": seed,
                "n": N,
                "category": cat,
                "categories": CATEGORIES,
                "delay": 0.25,
                "ready": str(tmp_path / f"ready{i}"),
                "go": str(go),
                "out": str(tmp_path / f"out{i}.json"),
            }
            proc = subprocess.Popen(
                [sys.executable, str(script), json.dumps(cfg)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            procs.append((proc, cfg))
        deadline = time.monotonic() + 120
        while not all(Path(cfg["ready"]).exists() for _, cfg in procs):
            for proc, _ in procs:
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    pytest.fail(
                        f"process exited early ({proc.returncode}):\n{err.decode()}"
                    )
            assert time.monotonic() < deadline, "processes never got ready"
            time.sleep(0.01)
        go.touch()
        reports = []
        for proc, cfg in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (
                f"process failed ({proc.returncode}):\n{err.decode()}"
            )
            reports.append(json.loads(Path(cfg["out"]).read_text()))
        return reports
    finally:
        for proc, _ in procs:  # only the processes this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _expected(categories: list[str], seeds: list[int]) -> hist.Hist[Any]:
    expected = hist.Hist(*_axes(), storage=hist.storage.Int64())
    for cat, seed in zip(categories, seeds, strict=True):
        x, n = _data(seed)
        expected.fill(proc=cat, x=x, n=n)
    return expected


def _check_history(repo_path: Path, reports: list[dict[str, str]]) -> dh.StoredHist:
    stored = dh.open(repo_path, "h")
    fills = stored.history()
    # one fill commit per process; the processes raced to create the
    # histogram, and exactly one commit (the first) created it
    assert len(fills) == len(reports)
    assert all(c.inputs for c in fills)
    assert {c.snapshot_id for c in fills} == {r["snapshot"] for r in reports}
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    snaps = list(repo.ancestry(branch="main"))
    assert len(snaps) == 1 + len(reports)  # initial commit, fills
    created = [
        s.id for s in snaps if "created" in (s.metadata or {}).get("dask_hizt", {})
    ]
    assert created == [snaps[-2].id]
    # the processes really raced: they all built their graphs on the same snapshot
    assert len({r["base"] for r in reports}) == 1, reports
    return stored


def test_processes_overlapping_chunks(tmp_path: Path) -> None:
    """Four processes fill the same category and range: every chunk is written by all of them."""
    repo_path = tmp_path / "repo.icechunk"
    categories, seeds = ["p1"] * 4, [101, 102, 103, 104]
    reports = _run_processes(tmp_path, repo_path, categories, seeds)
    stored = _check_history(repo_path, reports)
    assert_hist_equal(stored, _expected(categories, seeds))
    # every process wrote every touched chunk: the commits overlap completely
    repo = stored.repository
    snaps = [s.id for s in repo.ancestry(branch="main")]
    diffs = [
        repo.diff(from_snapshot_id=snaps[i + 1], to_snapshot_id=snaps[i]).updated_chunks
        for i in range(4)
    ]
    assert diffs[0] == diffs[1] == diffs[2] == diffs[3]
    assert len(diffs[0]["/h/value"]) > 1


def test_processes_disjoint_chunks(tmp_path: Path) -> None:
    """Each process fills its own category: the commits touch disjoint chunks."""
    repo_path = tmp_path / "repo.icechunk"
    categories, seeds = ["p0", "p1", "p2", "p3"], [201, 202, 203, 204]
    reports = _run_processes(tmp_path, repo_path, categories, seeds)
    stored = _check_history(repo_path, reports)
    assert_hist_equal(stored, _expected(categories, seeds))
    repo = stored.repository
    snaps = [s.id for s in repo.ancestry(branch="main")]
    chunk_sets = [
        {
            tuple(c)
            for c in repo.diff(
                from_snapshot_id=snaps[i + 1], to_snapshot_id=snaps[i]
            ).updated_chunks["/h/value"]
        }
        for i in range(4)
    ]
    assert all(chunk_sets)
    for i in range(4):
        for j in range(i):
            assert not chunk_sets[i] & chunk_sets[j]


def _slow(block: np.ndarray, delay: float) -> np.ndarray:
    time.sleep(delay)
    return block


def test_threads_compute_into_one_histogram(repo_path: Path) -> None:
    """Two threads of one process compute into the same histogram at once,
    each with its own ``Hist`` object and the threaded scheduler."""
    # dask.config is global: set it for all threads, before the histogram is made
    with dask.config.set({"dask_hizt.chunk-bytes": "1KiB", "dask_hizt.owners": 2}):
        _compute_from_threads(repo_path)


def _compute_from_threads(repo_path: Path) -> None:
    # created before the threads start (racing creators: tests/test_identities.py)
    created = dh.Hist(
        *_axes(), storage=hist.storage.Int64(), store=repo_path, path="h"
    ).compute()
    seeds = [301, 302]
    planned = threading.Barrier(len(seeds))
    tips: list[str] = []

    def run(seed: int) -> dh.StoredHist:
        x, n = _data(seed)
        h = dh.Hist(*_axes(), storage=hist.storage.Int64(), store=repo_path, path="h")
        dx = da.from_array(x, chunks=N // 4).map_blocks(_slow, 0.2, dtype=x.dtype)
        h.fill(proc="p0", x=dx, n=da.from_array(n, chunks=N // 4))
        dict(
            h.__dask_graph__()
        )  # planned now (its tasks read), on the tip of now; compute keeps this plan
        tips.append(h.repository.lookup_branch("main"))
        planned.wait(timeout=60)
        stored: dh.StoredHist = h.compute(scheduler="threads", num_workers=2)
        return stored

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(run, seeds, timeout=120))
    # both planned on the creation commit: the second to commit found the
    # branch moved under it, and added the first one's counts
    assert tips == [created.snapshot_id] * 2
    expected = _expected(["p0", "p0"], seeds)
    stored = dh.open(repo_path, "h")
    assert_hist_equal(stored, expected)
    fills = [c for c in stored.history() if c.inputs]
    assert {c.snapshot_id for c in fills} == {r.snapshot_id for r in results}
    assert len(fills) == 2
    assert stored.layout.n_chunks > 3


def test_first_use_of_a_repository_from_two_threads(tmp_path: Path) -> None:
    """Two lazy histograms made at once on a local path where no repository exists
    yet: both must end up using the one repository that gets created."""
    repo_path = tmp_path / "repo.icechunk"
    barrier = threading.Barrier(2)

    def make(_: int) -> dh.Hist:
        barrier.wait(timeout=60)
        return dh.Hist(
            *_axes(), storage=hist.storage.Int64(), store=repo_path, path="h"
        )

    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(make, range(2), timeout=60))
    for seed, h in enumerate(made, start=401):
        x, n = _data(seed)
        h.fill(
            proc="p2",
            x=da.from_array(x, chunks=N // 2),
            n=da.from_array(n, chunks=N // 2),
        )
        h.compute(scheduler="sync")
    assert_hist_equal(dh.open(repo_path, "h"), _expected(["p2", "p2"], [401, 402]))
