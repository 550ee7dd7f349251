"""A local repository that the workers see as another disk is refused before
anything is written.

The workers of a real LocalCluster (processes) get a private mount
namespace with an empty tmpfs over the repository's parent directory (a
worker plugin; needs root), so each genuinely sees another disk at the
client's path, as the nodes of a cluster without a shared filesystem do.
The same computes on a normal LocalCluster are exact.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import hist
import icechunk
import numpy as np
import pandas as pd
import pytest
from conftest import local_cluster
from distributed import Client, WorkerPlugin

import dask_hizt as dh
from dask_hizt import _visible
from dask_hizt.testing import assert_hist_equal

AXIS = hist.axis.Regular(20, 0, 100, name="pt")


def _can_mount() -> bool:
    if os.geteuid() != 0 or not hasattr(os, "unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_mount(), reason="needs root and mount namespaces"
)


class PrivateDisk(WorkerPlugin):
    """Give the worker process its own empty disk at ``where``."""

    def __init__(self, where: str) -> None:
        self.where = where

    def setup(self, worker: Any) -> None:
        del worker
        # on the worker's event-loop thread: the task threads it starts
        # later inherit the namespace
        os.unshare(os.CLONE_NEWNS)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", self.where], check=True)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Four parquet files, on a disk that client and workers share."""
    rng = np.random.default_rng(5)
    where = tmp_path / "inputs"
    where.mkdir()
    for k in range(4):
        frame = pd.DataFrame(
            {"pt": rng.exponential(30, 2_000), "w": rng.integers(1, 4, 2_000) * 1.0}
        )
        frame.to_parquet(where / f"part.{k}.parquet")
    return where


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """The directory that the private workers see as another (empty) disk."""
    where = tmp_path / "shared"
    where.mkdir()
    return where


@contextlib.contextmanager
def private(shared: Path) -> Iterator[Client]:
    """A client of a LocalCluster whose workers each see their own disk at
    ``shared``."""
    with local_cluster("2GiB") as cluster, Client(cluster) as client:
        client.register_plugin(PrivateDisk(str(shared)))
        assert all(not x for x in client.run(os.listdir, str(shared)).values())
        yield client


def _expected(inputs: Path) -> hist.Hist[Any]:
    frame = pd.read_parquet(inputs)
    h = hist.Hist(AXIS, storage=hist.storage.Weight())
    h.fill(pt=frame.pt, weight=frame.w)
    return h


def _hist(repo: Path, inputs: Path) -> dh.Hist:
    ddf = dd.read_parquet(inputs)
    h = dh.Hist(AXIS, storage=hist.storage.Weight(), store=repo, path="pt")
    return h.fill(pt=ddf.pt, weight=ddf.w)


def _files(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file()
    }


def _tip(repo: Path) -> str:
    storage = icechunk.local_filesystem_storage(str(repo))
    return icechunk.Repository.open(storage).lookup_branch("main")


def test_a_compute_on_workers_with_another_disk_is_refused_untouched(
    shared: Path, inputs: Path
) -> None:
    repo = shared / "repo.icechunk"
    # made and filled on the client alone, before: its marker is there
    first = _hist(repo, inputs).compute(scheduler="sync")
    assert (repo / _visible.MARKER_NAME).is_file()
    before, tip = _files(repo), _tip(repo)
    with private(shared) as client:
        _refused(repo, inputs, client, before, tip)
    assert_hist_equal(dh.open(repo, "pt"), _expected(inputs))
    assert dh.open(repo, "pt").snapshot_id == first.snapshot_id


def _refused(
    repo: Path, inputs: Path, client: Client, before: dict[str, bytes], tip: str
) -> None:
    runs: dict[str, Callable[[dh.Hist], Any]] = {
        "Hist.compute": lambda h: h.compute(),
        "dask.compute": dask.compute,
        "dh.compute": lambda h: dh.compute({"out": h}),
        "checkpointed": lambda h: h.compute(checkpoint=2),
    }
    for how, run in runs.items():
        with pytest.raises(dh.UnsharedStoreError) as caught:
            run(_hist(repo, inputs))
        err = caught.value
        assert err.path == str(repo), how
        assert err.worker in client.scheduler_info()["workers"], how
        assert "s3://" in str(err), how
        assert "shared" in str(err), how
        assert isinstance(err, dh.StoreError)
        # nothing written: no commit, no chunk object, no staged file
        assert _tip(repo) == tip, how
        assert _files(repo) == before, how


def _no_check(markers: Any) -> None:
    del markers


def test_owner_tasks_check_the_marker_themselves(
    shared: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that joins after the plan's check: the owners and the commit
    read the marker before they write."""
    repo = shared / "repo.icechunk"
    _hist(repo, inputs).compute(scheduler="sync")
    before, tip = _files(repo), _tip(repo)
    monkeypatch.setattr("dask_hizt._plan.check_workers", _no_check)
    with private(shared):
        for checkpoint in (None, 2):  # owners and commit; gates and batches
            with pytest.raises(dh.UnsharedStoreError, match="finds no repository"):
                _hist(repo, inputs).compute(checkpoint=checkpoint)
            assert _tip(repo) == tip
            assert _files(repo) == before


def test_a_new_repository_is_not_created(shared: Path, inputs: Path) -> None:
    repo = shared / "new" / "repo.icechunk"
    with private(shared):
        with pytest.raises(dh.UnsharedStoreError, match="does not see the client's"):
            _hist(repo, inputs)
        with pytest.raises(dh.UnsharedStoreError):
            dh.Staging(repo)
    assert not repo.exists()
    assert list(shared.iterdir()) == []  # the probe is gone too


def _stage_on_worker(repo: str, k: int = 0) -> dh.Staging:
    out = dh.Staging(repo, f"file.root#Events[{3 * k}:{3 * k + 3}]")
    out.hist(AXIS, path="pt").fill(pt=np.array([1.0, 2.0, 3.0]) * (k + 1))
    return out


def test_staging_on_workers_with_another_disk_is_refused(shared: Path) -> None:
    repo = shared / "repo.icechunk"
    dh.Staging(repo)  # made on the client before the cluster: its marker
    assert (repo / _visible.MARKER_NAME).is_file()
    before = _files(repo)
    with private(shared) as client:
        future = client.submit(_stage_on_worker, str(repo), pure=False)
        with pytest.raises(dh.UnsharedStoreError, match="not the same directory"):
            future.result()
        assert _files(repo) == before  # no staged file
        # and on the client too, now that a Client is active
        with pytest.raises(dh.UnsharedStoreError, match="finds no repository"):
            dh.Staging(repo)


def test_the_same_work_on_a_shared_disk_is_exact(
    shared: Path, inputs: Path, client: Client
) -> None:
    repo = shared / "repo.icechunk"
    stored = _hist(repo, inputs).compute()
    assert_hist_equal(stored, _expected(inputs))
    (again,) = dask.compute(_hist(repo, inputs))
    assert again.snapshot_id == stored.snapshot_id  # every partition was in
    # staged on the workers, folded on the cluster
    other = shared / "staged.icechunk"
    dh.Staging(other)
    futures = [client.submit(_stage_on_worker, str(other), k) for k in range(4)]
    total = sum(client.gather(futures), start=dh.Staging(other))
    assert len(total) == 4
    expected: hist.Hist[Any] = hist.Hist(AXIS)
    for k in range(4):
        expected.fill(pt=np.array([1.0, 2.0, 3.0]) * (k + 1))
    assert_hist_equal(total.commit()["pt"], expected)


def _own_repository(path: str) -> None:
    """A repository of the worker's own at ``path``, as a node may have one
    from an earlier job: icechunk's, with a marker of its own."""
    storage = icechunk.local_filesystem_storage(path)
    icechunk.Repository.create(storage)
    (Path(path) / _visible.MARKER_NAME).write_text("a-token-of-its-own")


def test_fills_staged_into_a_workers_own_repository_are_not_committed(
    shared: Path,
) -> None:
    repo = shared / "repo.icechunk"
    dh.Staging(repo)
    before, tip = _files(repo), _tip(repo)
    with private(shared) as client:
        client.run(_own_repository, str(repo))
        futures = [client.submit(_stage_on_worker, str(repo), k) for k in range(2)]
        staged = client.gather(futures)
        total = staged[0] + staged[1]
        assert len(total) == 2  # staged on the workers' own disks
        with pytest.raises(dh.UnsharedStoreError, match="finds another repository"):
            total.commit()
    assert _tip(repo) == tip
    assert _files(repo) == before
