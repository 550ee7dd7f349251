"""What a compute routes and writes, as a user's script meets it: files on
disk read with dask's readers, each run a fresh process
(``routing_job.py``).

- A small histogram goes from its fill tasks straight to one writer: no
  routing tasks.
- Histograms of different repositories, filled from different inputs and
  computed together, each take partials from their own fill tasks only.
- A histogram with nothing pending (every partition recorded, known by
  ``partition_ids``) gets no owner, no write and no routing, next to one that
  has; a run with nothing pending anywhere has no fill or write task and
  commits nothing.

Every result equals the eager ``hist.Hist`` of the same files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import icechunk
import inputs_job
import jobs
import pytest
import routing_job

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

JOB = Path(routing_job.__file__)
ENV = {**os.environ, "ICECHUNK_LOG": "error"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("routing") / "data"
    inputs_job.write_data(root)
    return root


def _run(case: str, repos: Path, data: Path, *options: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(JOB), case, str(repos), str(data), *options],
        cwd=repos.parent,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = jobs.reports(proc.stdout).get(case)
    if report is None or "error" in report:
        pytest.fail(
            f"the job failed (exit {proc.returncode}):\n{jobs.tail(proc.stderr)}"
        )
    return report


def _messages(repo: Path) -> list[str]:
    """Commit messages on ``main``, newest first."""
    storage = icechunk.local_filesystem_storage(str(repo))
    return [
        s.message for s in icechunk.Repository.open(storage).ancestry(branch="main")
    ]


def _commits(repo: Path) -> int:
    return len(_messages(repo)) - 1


def _check(key: str, repos: Path, data: Path) -> dh.StoredHist:
    name, path = key.split("/")
    stored = dh.open(repos / f"{name}.icechunk", path)
    assert_hist_equal(stored, routing_job.eager(key, data))
    return stored


def test_small_histogram_goes_from_its_fills_to_one_writer(
    data: Path, tmp_path: Path
) -> None:
    repos = tmp_path / "repos"
    first = _run("small", repos, data)
    assert first["routes"] == 0
    (write,) = first["writes"]
    assert write["direct_fills"] == first["fills"] >= 10  # a file per partition
    _check("small/x", repos, data)
    # a re-run in a fresh process: the same graph, nothing committed
    again = _run("small", repos, data)
    assert (again["routes"], len(again["writes"])) == (0, 1)
    assert _commits(repos / "small.icechunk") == 1
    _check("small/x", repos, data)


def test_each_repository_takes_only_its_own_fills(data: Path, tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    report = _run("two_repos", repos, data)
    assert report["routes"] == 0
    a, b = report["writes"]
    assert (a["store"], a["paths"], b["store"], b["paths"]) == (
        "a.icechunk",
        ["x"],
        "b.icechunk",
        ["y"],
    )
    # one fill layer each (parquet, CSV), and each writer takes its own only
    assert len(a["fill_layers"]) == len(b["fill_layers"]) == 1
    assert a["fill_layers"] != b["fill_layers"]
    assert a["direct_fills"] + b["direct_fills"] == report["fills"]
    for key in ("a/x", "b/y"):
        _check(key, repos, data)
    assert _commits(repos / "a.icechunk") == _commits(repos / "b.icechunk") == 1


def test_no_owner_for_a_histogram_with_nothing_pending(
    data: Path, tmp_path: Path
) -> None:
    repos = tmp_path / "repos"
    repo = repos / "ids.icechunk"
    first = _run("ids", repos, data)
    assert [w["paths"] for w in first["writes"]] == [["x"]]
    x = _check("ids/x", repos, data)
    # x is all in: only y's chunks are owned and written, in one more commit
    added = _run("ids", repos, data, "--add")
    assert added["writes"]
    assert all(w["paths"] == ["y"] for w in added["writes"])
    assert _commits(repo) == 2
    assert _messages(repo)[0] == "dask_hizt: fill y from 8 input partitions"
    assert _check("ids/x", repos, data).history() == x.history()
    y = _check("ids/y", repos, data)
    assert len(y.history()) == 1
    # nothing pending anywhere: no fill, no write, no commit
    again = _run("ids", repos, data, "--add")
    assert (again["fills"], again["routes"], again["writes"]) == (0, 0, [])
    assert _commits(repo) == 2
