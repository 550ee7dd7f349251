"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import dask_hizt as dh
from dask_hizt.cli import DATASETS, _demo_partition


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ICECHUNK_LOG": "error"}
    return subprocess.run(
        [sys.executable, "-m", "dask_hizt.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_demo_fills_on_a_local_cluster_and_prints_history(tmp_path: Path) -> None:
    result = _run(
        "demo",
        "--events",
        "40000",
        "--partitions",
        "4",
        "--store",
        "demo.icechunk",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "pt of DY, summed over eta" in result.stdout
    assert "dask_hizt: fill demo/pt_eta from 4 partitions" in result.stdout
    assert "created" in result.stdout

    stored = dh.open(tmp_path / "demo.icechunk", "demo/pt_eta")
    expected = stored.schema.empty_hist()
    for i in range(4):
        df = _demo_partition(i, 10_000)
        expected.fill(dataset=df.dataset, pt=df.pt, eta=df.eta, weight=df.weight)  # type: ignore[attr-defined]
    got = stored.to_hist()
    np.testing.assert_allclose(
        got.values(flow=True), expected.values(flow=True), rtol=1e-12
    )
    np.testing.assert_allclose(
        got.variances(flow=True), expected.variances(flow=True), rtol=1e-12
    )
    assert list(got.axes[0]) == list(DATASETS)

    # run again: every partition is in already; nothing is added or committed
    again = _run(
        "demo",
        "--events",
        "40000",
        "--partitions",
        "4",
        "--store",
        "demo.icechunk",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "4 of them are in the histogram already" in again.stdout
    assert dh.open(tmp_path / "demo.icechunk", "demo/pt_eta").snapshot_id == (
        stored.snapshot_id
    )


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a repository")
    result = _run("demo", "--store", "afile", "--events", "100", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("dask-hizt: error:")
    assert "Traceback" not in result.stderr
