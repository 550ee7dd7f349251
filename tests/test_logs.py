"""icechunk's log lines: dask_hizt silences two warnings that do not apply to
it, once it opens a repository, unless the user chose a filter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LOCAL_FS = "The LocalFileSystem storage is not safe for concurrent commits"
READBACK = "conditional PUT is enabled but `unsafe_use_metadata` is disabled"

COMPUTE = """
import numpy as np
import dask_hizt as dh

x = np.random.default_rng(1).uniform(0, 1, 1_000)
stored = dh.histogram(x, bins=10, range=(0, 1), store={repo!r}, path="x").compute()
assert stored.to_hist().sum(flow=True) == 1_000
print("computed")
"""

CLUSTER = """
import numpy as np
import dask.array as da
from distributed import Client, LocalCluster
import dask_hizt as dh

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={{"dashboard": False,
                                         "dashboard_address": "127.0.0.1:0"}}) as lc, Client(lc):
        x = da.random.default_rng(1).uniform(0, 1, 4_000, chunks=1_000)
        h = dh.histogram(x, bins=10, range=(0, 1), store={repo!r}, path="x")
        assert h.compute().to_hist().sum(flow=True) == 4_000
    print("computed")
"""

# dask_hizt imported, but the repository opened by icechunk alone
ICECHUNK_ONLY = """
import icechunk
import dask_hizt

icechunk.Repository.create(icechunk.local_filesystem_storage({repo!r}))
print("created")
"""


def _run(code: str, repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh Python, without the suite's ICECHUNK_LOG (conftest
    sets one), plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k != "ICECHUNK_LOG"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code.format(repo=str(repo)))],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_computing_into_a_local_repository_prints_no_icechunk_warning(
    tmp_path: Path,
) -> None:
    done = _run(COMPUTE, tmp_path / "repo.icechunk")
    assert done.stdout.strip() == "computed"
    assert LOCAL_FS not in done.stderr
    assert READBACK not in done.stderr
    assert "WARN" not in done.stderr


def test_workers_of_a_cluster_print_no_icechunk_warning(tmp_path: Path) -> None:
    """The workers get the repository in the graph: unpickling it quiets the
    log before its storage is made (their output is the script's stderr)."""
    script = tmp_path / "cluster.py"
    script.write_text(
        textwrap.dedent(CLUSTER.format(repo=str(tmp_path / "r.icechunk")))
    )
    base = {k: v for k, v in os.environ.items() if k != "ICECHUNK_LOG"}
    done = subprocess.run(
        [sys.executable, str(script)],
        env=base,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "computed"
    assert LOCAL_FS not in done.stderr
    assert READBACK not in done.stderr


@pytest.mark.parametrize("setting", ["warn", "icechunk_arrow_object_store=warn"])
def test_the_users_icechunk_log_wins(tmp_path: Path, setting: str) -> None:
    done = _run(COMPUTE, tmp_path / "repo.icechunk", ICECHUNK_LOG=setting)
    assert done.stdout.strip() == "computed"
    assert LOCAL_FS in done.stderr
    assert (READBACK in done.stderr) == (setting == "warn")


def test_importing_dask_hizt_changes_no_log_filter(tmp_path: Path) -> None:
    done = _run(ICECHUNK_ONLY, tmp_path / "repo.icechunk")
    assert done.stdout.strip() == "created"
    assert LOCAL_FS in done.stderr
    assert READBACK in done.stderr
