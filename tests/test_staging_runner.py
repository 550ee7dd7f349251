"""coffea's ``processor.Runner`` with ``dh.Staging`` on an ``s3://`` store (moto's
server on 127.0.0.1): executors whose workers stage to the repository's own
prefix, one exact commit, and a full re-run in a fresh process that commits
nothing. Needs coffea (stack B); skipped on stack A.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import hist
import numpy as np
import numpy.typing as npt
import pytest
from conftest import S3_SECRET, new_bucket
from nanoaod import eager_reference, nanoaod_files  # noqa: F401 - fixture
from test_staging_s3 import staged_objects

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

pytest.importorskip("coffea.processor")
pytest.importorskip("uproot")

import staging_runner_job as job  # after the skips: needs coffea

JOB = Path(job.__file__)


def _growing(expected: hist.Hist[Any]) -> hist.Hist[Any]:
    """``expected`` with its dataset axis a growing one (no overflow bin, which
    must be empty), as the staged histogram has it."""
    view: npt.NDArray[Any] = np.asarray(expected.view(flow=True))
    for field in view.dtype.names or ():
        assert not view[field][-1].any(), field
    out = hist.Hist(
        hist.axis.StrCategory(list(expected.axes[0]), growth=True, name="dataset"),
        *expected.axes[1:],
        storage=expected.storage_type(),
    )
    out.view(flow=True)[...] = view[:-1]
    return out


def _commits(url: str) -> list[str]:
    repo = dh.open(url, job.PATH).repository
    return [s.id for s in repo.ancestry(branch="main")]


@pytest.mark.parametrize("kind", ["iterative", "futures"])
def test_runner_stages_to_s3_commits_once_and_a_fresh_rerun_commits_nothing(
    kind: str,
    s3_env: str,
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    url = f"s3://{new_bucket(s3_env)}/analysis"
    files = {name: str(p) for name, p in nanoaod_files.items()}
    staging, events = job.run(url, files, kind)
    assert events == 30_000 + 24_000
    assert len(staging) == 3 + 2  # coffea cuts 30k + 24k events into 3 + 2 chunks
    assert len(staged_objects(url)) == len(staging)
    blob = pickle.dumps(staging)
    assert S3_SECRET.encode() not in blob
    assert len(blob) < 20_000  # names of staged objects, not histograms

    stored = staging.commit()[job.PATH]
    expected = _growing(eager_reference(nanoaod_files, job.PT))
    # flow bins included; executors finish chunks in any order
    assert_hist_equal(stored, expected, categories="any order")
    assert staged_objects(url) == []
    before = _commits(url)
    assert before[0] == stored.snapshot_id
    assert len(before) == 2  # the fill commit (creating muon/pt) on the first

    # the whole job again, in a fresh process: stages, then commits nothing
    cfg = {"store": url, "files": files, "executor": kind}
    done = subprocess.run(
        [sys.executable, str(JOB), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(done.stdout.strip().splitlines()[-1])
    assert again == {"snapshots": {job.PATH: stored.snapshot_id}, "staged": 5}
    assert _commits(url) == before
    assert staged_objects(url) == []
    assert_hist_equal(dh.open(url, job.PATH), expected, categories="any order")
