"""End to end on a distributed LocalCluster (worker processes): every lazy result
equals the eager ``hist.Hist``, each compute makes exactly one commit, killed
workers and failing partitions leave the histogram exact, bad input is refused
before anything is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import hist
import icechunk
import numpy as np
import pandas as pd
import psutil
import pytest
import zarr
from conftest import assert_landed, local_cluster
from dask.typing import Key
from dask.utils import key_split
from distributed import WorkerPlugin

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

N = 12_000


def _data(n: int = N, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pt": rng.exponential(40, n),
            "eta": rng.normal(0, 2, n),
            "njet": rng.integers(-1, 8, n),
            # integer-valued weights: sums (and sums of squares) are exact in float64
            "w": rng.integers(1, 4, n).astype(np.float64),
            "wr": rng.normal(1, 0.3, n),
            "ds": rng.choice(["DY", "QCD", "TT"], n),
        }
    )


def _snapshots(repo: icechunk.Repository, branch: str = "main") -> list[str]:
    return [s.id for s in repo.ancestry(branch=branch)]


def _open_repo(path: Path) -> icechunk.Repository:
    return icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))


STORAGES: dict[str, type[hist.storage.Storage]] = {
    "Double": hist.storage.Double,
    "Int64": hist.storage.Int64,
    "Weight": hist.storage.Weight,
}


def _weighted(storage: str) -> bool:
    return storage != "Int64"


# ------------------------------------------------------- equality, 1-D to 3-D ---


@pytest.mark.parametrize("storage", list(STORAGES))
def test_1d_regular_from_dask_array(client: Any, repo_path: Path, storage: str) -> None:
    del client
    df = _data(seed=11)
    x = da.from_array(df.eta.to_numpy(), chunks=1_700)
    w = da.from_array(df.w.to_numpy(), chunks=1_700)
    axis = hist.axis.Regular(40, -5, 5, name="eta")
    h = dh.Hist(axis, storage=STORAGES[storage](), store=repo_path, path="eta")
    h.fill(eta=x, weight=w if _weighted(storage) else None)
    before = _snapshots(h.repository)
    stored = h.compute()
    expected = hist.Hist(axis, storage=STORAGES[storage]())
    expected.fill(eta=df.eta, weight=df.w if _weighted(storage) else None)
    assert_hist_equal(stored, expected)
    assert_landed(h.repository, before, stored, created="eta")


@pytest.mark.parametrize("storage", list(STORAGES))
def test_2d_integer_regular_from_dataframe(
    client: Any, repo_path: Path, storage: str
) -> None:
    del client
    df = _data(seed=12)
    ddf = dd.from_pandas(df, npartitions=6)
    axes = (
        hist.axis.Integer(0, 5, name="njet"),
        hist.axis.Regular(25, 0, 250, name="pt"),
    )
    h = dh.Hist(*axes, storage=STORAGES[storage](), store=repo_path, path="njet_pt")
    h.fill(njet=ddf.njet, pt=ddf.pt, weight=ddf.w if _weighted(storage) else None)
    (stored,) = dask.compute(h)
    expected = hist.Hist(*axes, storage=STORAGES[storage]())
    expected.fill(njet=df.njet, pt=df.pt, weight=df.w if _weighted(storage) else None)
    assert_hist_equal(stored, expected)
    if storage == "Int64":
        assert stored.values(flow=True).dtype == np.int64


AXES_3D = (
    hist.axis.StrCategory(["DY", "QCD", "TT"], name="dataset"),
    hist.axis.Regular(20, 0, 200, name="pt"),
    hist.axis.Variable([-4, -2.5, -1, 0, 1, 2.5, 4], name="eta"),
)


@pytest.mark.parametrize("source", ["array", "dataframe"])
@pytest.mark.parametrize("storage", list(STORAGES))
def test_3d_category_regular_variable(
    client: Any, repo_path: Path, storage: str, source: str
) -> None:
    del client
    df = _data(seed=13)
    if source == "dataframe":
        ddf = dd.from_pandas(df, npartitions=5)
        cols = {c: ddf[c] for c in df.columns}
    else:
        cols = {c: da.from_array(df[c].to_numpy(), chunks=2_500) for c in df.columns}
    h = dh.Hist(*AXES_3D, storage=STORAGES[storage](), store=repo_path, path="h3")
    h.fill(
        dataset=cols["ds"],
        pt=cols["pt"],
        eta=cols["eta"],
        weight=cols["w"] if _weighted(storage) else None,
    )
    before = _snapshots(h.repository)
    stored = h.compute()
    expected = hist.Hist(*AXES_3D, storage=STORAGES[storage]())
    expected.fill(
        dataset=df.ds, pt=df.pt, eta=df.eta, weight=df.w if _weighted(storage) else None
    )
    assert_hist_equal(stored, expected)
    assert_landed(h.repository, before, stored, created="h3")


def test_real_valued_weights(client: Any, repo_path: Path) -> None:
    del client
    df = _data(seed=14)
    ddf = dd.from_pandas(df, npartitions=4)
    h = dh.Hist(*AXES_3D, storage=hist.storage.Weight(), store=repo_path, path="w")
    stored = h.fill(dataset=ddf.ds, pt=ddf.pt, eta=ddf.eta, weight=ddf.wr).compute()
    expected = hist.Hist(*AXES_3D, storage=hist.storage.Weight())
    expected.fill(dataset=df.ds, pt=df.pt, eta=df.eta, weight=df.wr)
    assert_hist_equal(stored, expected, rtol=1e-12)


def test_many_chunks_several_owners_one_commit_per_compute(
    client: Any, repo_path: Path
) -> None:
    del client
    df, df2 = _data(seed=15), _data(seed=16)
    ddf, ddf2 = dd.from_pandas(df, npartitions=6), dd.from_pandas(df2, npartitions=6)
    axes = (
        hist.axis.StrCategory(["DY", "QCD", "TT"], name="dataset"),
        hist.axis.Regular(60, 0, 300, name="pt"),
        hist.axis.Regular(30, -5, 5, name="eta"),
    )
    with dask.config.set({"dask_hizt.chunk-bytes": "1KiB", "dask_hizt.owners": 4}):
        h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="big")
        h.fill(dataset=ddf.ds, pt=ddf.pt, eta=ddf.eta)
        writers = [
            k
            for k in dict(h.__dask_graph__())
            if isinstance(k, tuple) and str(k[0]).startswith("hizt-write")
        ]
        assert len(writers) == 4
        start = _snapshots(h.repository)
        first = h.compute()
        after_first = _snapshots(h.repository)
        h2 = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="big")
        second = h2.fill(dataset=ddf2.ds, pt=ddf2.pt, eta=ddf2.eta).compute()
        after_second = _snapshots(h.repository)
    assert first.layout.n_chunks >= 50
    once = hist.Hist(*axes, storage=hist.storage.Int64()).fill(
        dataset=df.ds, pt=df.pt, eta=df.eta
    )
    both = once.copy().fill(dataset=df2.ds, pt=df2.pt, eta=df2.eta)
    assert_hist_equal(first, once)
    assert_hist_equal(second, both)
    # exactly one new commit per compute, each on top of the previous one
    assert after_first == [first.snapshot_id, *start]
    assert after_second == [second.snapshot_id, *after_first]
    fills = [c for c in second.history() if c.inputs]
    assert [c.snapshot_id for c in fills] == [second.snapshot_id, first.snapshot_id]
    assert all(len(c.inputs) == 6 for c in fills)
    # a fresh handle on the branch tip reads the same
    assert_hist_equal(dh.open(repo_path, "big"), both)


@pytest.mark.parametrize("checkpoint", [3, "0s"], ids=["every-3", "time"])
def test_checkpointed_compute_on_the_cluster(
    client: Any, repo_path: Path, checkpoint: Any
) -> None:
    del client
    df = _data(seed=17)
    ddf = dd.from_pandas(df, npartitions=8)
    axes = (
        hist.axis.StrCategory(["DY", "QCD", "TT"], name="dataset"),
        hist.axis.Regular(40, 0, 200, name="pt"),
    )
    with dask.config.set({"dask_hizt.chunk-bytes": "256B", "dask_hizt.owners": 3}):
        h = dh.Hist(*axes, storage=hist.storage.Weight(), store=repo_path, path="c")
        h.fill(dataset=ddf.ds, pt=ddf.pt, weight=ddf.w)
        with dask.config.set({"dask_hizt.checkpoint-step": 3}):
            stored = h.compute(checkpoint=checkpoint)
    expected = hist.Hist(*axes, storage=hist.storage.Weight())
    expected.fill(dataset=df.ds, pt=df.pt, weight=df.w)
    assert_hist_equal(stored, expected, rtol=1e-12)
    fills = [c for c in stored.history() if c.inputs]
    # 8 partitions in batches of 3: three commits, the partitions in each once
    assert sorted(len(c.inputs) for c in fills) == [2, 3, 3]
    assert len({x for c in fills for x in c.inputs}) == 8
    assert h.pending() == []


def test_two_histograms_in_one_dask_compute(client: Any, repo_path: Path) -> None:
    del client
    df = _data(seed=16)
    ddf = dd.from_pandas(df, npartitions=4)
    a_axes = (hist.axis.Regular(30, 0, 300, name="pt"),)
    b_axes = (
        hist.axis.StrCategory(["DY", "QCD", "TT"], name="dataset"),
        hist.axis.Integer(0, 5, name="njet"),
    )
    ha = dh.Hist(*a_axes, storage=hist.storage.Int64(), store=repo_path, path="a").fill(
        pt=ddf.pt
    )
    hb = dh.Hist(*b_axes, storage=hist.storage.Int64(), store=repo_path, path="b").fill(
        dataset=ddf.ds, njet=ddf.njet
    )
    sa, sb = dask.compute(ha, hb)
    assert_hist_equal(
        dh.open(repo_path, "a"),
        hist.Hist(*a_axes, storage=hist.storage.Int64()).fill(pt=df.pt),
    )
    expected_b = hist.Hist(*b_axes, storage=hist.storage.Int64()).fill(
        dataset=df.ds, njet=df.njet
    )
    assert_hist_equal(dh.open(repo_path, "b"), expected_b)
    assert len([c for c in sa.history() if c.inputs]) == 1
    assert len([c for c in sb.history() if c.inputs]) == 1


# -------------------------------------------------------- failing partitions ---


def _raise_on_block(
    x: np.ndarray, bad: int, block_id: tuple[int, ...] | None = None
) -> np.ndarray:
    if block_id is not None and block_id[0] == bad:
        msg = f"broken partition {bad}"
        raise ValueError(msg)
    return x


def test_partition_raising_leaves_branch_unchanged(
    client: Any, repo_path: Path
) -> None:
    del client
    rng = np.random.default_rng(21)
    x = rng.normal(0, 1, 10_000)
    axis = hist.axis.Regular(20, -3, 3, name="x")
    good = dh.Hist(axis, storage=hist.storage.Int64(), store=repo_path, path="x")
    first = good.fill(x=da.from_array(x, chunks=1_000)).compute()
    repo = _open_repo(repo_path)
    tip = repo.lookup_branch("main")
    history = _snapshots(repo)

    broken = da.from_array(x, chunks=1_000).map_blocks(
        _raise_on_block, 3, dtype=x.dtype
    )
    bad = dh.Hist(axis, storage=hist.storage.Int64(), store=repo_path, path="x").fill(
        x=broken
    )
    with pytest.raises(ValueError, match="broken partition 3"):
        bad.compute()
    assert repo.lookup_branch("main") == tip
    assert _snapshots(repo) == history

    # the next correct compute adds exactly its own data
    again = dh.Hist(axis, storage=hist.storage.Int64(), store=repo_path, path="x")
    second = again.fill(x=da.from_array(x, chunks=2_000)).compute()
    once = hist.Hist(axis, storage=hist.storage.Int64()).fill(x)
    assert_hist_equal(first, once)
    assert_hist_equal(second, once + once)
    assert _snapshots(repo) == [second.snapshot_id, *history]


# ---------------------------------------------------- bad input, no commits ---


def test_reopen_with_other_axes_or_storage(client: Any, repo_path: Path) -> None:
    del client
    axes = (
        hist.axis.StrCategory(["a", "b"], name="cat"),
        hist.axis.Regular(10, 0, 1, name="x"),
    )
    x = da.random.default_rng(3).uniform(0, 1, size=2_000, chunks=500)
    dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="h").fill(
        cat="a", x=x
    ).compute()
    repo = _open_repo(repo_path)
    history = _snapshots(repo)
    others = {
        "bins": (axes[0], hist.axis.Regular(11, 0, 1, name="x")),
        "edges": (axes[0], hist.axis.Regular(10, 0, 2, name="x")),
        "name": (axes[0], hist.axis.Regular(10, 0, 1, name="y")),
        "categories": (hist.axis.StrCategory(["a", "c"], name="cat"), axes[1]),
        "growth": (hist.axis.StrCategory(["a", "b"], name="cat", growth=True), axes[1]),
        "kind": (
            hist.axis.StrCategory(["a", "b"], name="cat"),
            hist.axis.Variable(np.linspace(0, 1, 11), name="x"),
        ),
        "flow": (axes[0], hist.axis.Regular(10, 0, 1, name="x", overflow=False)),
        "rank": (axes[1],),
    }
    for what, other in others.items():
        if what == "growth":
            # growing category axes may be refused outright; either way nothing is written
            with pytest.raises(dh.HiztError):
                dh.Hist(*other, storage=hist.storage.Int64(), store=repo_path, path="h")
            continue
        with pytest.raises(dh.SchemaMismatchError, match="different axes"):
            dh.Hist(*other, storage=hist.storage.Int64(), store=repo_path, path="h")
    for storage in (hist.storage.Double(), hist.storage.Weight()):
        with pytest.raises(dh.SchemaMismatchError, match="Int64"):
            dh.Hist(*axes, storage=storage, store=repo_path, path="h")
    assert _snapshots(repo) == history
    assert_hist_equal(
        dh.open(repo_path, "h"),
        hist.Hist(*axes, storage=hist.storage.Int64()).fill(cat="a", x=x.compute()),
    )


def test_histogram_replaced_under_a_lazy_hist(client: Any, repo_path: Path) -> None:
    """The schema is checked again when the graph is built: a histogram replaced
    by another one with other axes is not written to with the old layout."""
    del client
    axis = hist.axis.Regular(10, 0, 1, name="x")
    h = dh.Hist(axis, store=repo_path, path="h")
    repo = _open_repo(repo_path)
    session = repo.writable_session("main")
    zarr.open_group(session.store, mode="a").__delitem__("h")
    session.commit("replace h")
    other = hist.axis.Regular(5, 0, 1, name="x")
    dh.Hist(other, store=repo_path, path="h").fill(x=0.5).compute()
    history = _snapshots(repo)
    h.fill(x=da.random.default_rng(4).uniform(0, 1, size=1_000, chunks=250))
    with pytest.raises(dh.SchemaMismatchError, match="different axes"):
        h.compute()
    assert _snapshots(repo) == history


def test_bad_fill_arguments(client: Any, repo_path: Path) -> None:
    del client
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 1, 4_000), rng.normal(0, 1, 4_000)
    axes = (
        hist.axis.Regular(10, -3, 3, name="x"),
        hist.axis.Regular(10, -3, 3, name="y"),
    )
    h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="xy")
    repo = _open_repo(repo_path)
    history = _snapshots(repo)
    dx = da.from_array(x, chunks=1_000)

    with pytest.raises(dh.FillError, match="unknown axis name 'z'"):
        h.fill(x=dx, z=dx)
    with pytest.raises(dh.FillError, match="chunked differently"):
        h.fill(x=dx, y=da.from_array(y, chunks=(500, 1_500, 1_000, 1_000)))
    with pytest.raises(dh.FillError, match="partitioned differently"):
        h.fill(x=dx, y=da.from_array(y, chunks=500))
    with pytest.raises(dh.FillError, match="weight= cannot be used with Int64"):
        h.fill(x=dx, y=da.from_array(y, chunks=1_000), weight=dx)
    with pytest.raises(dh.FillError, match="missing values for axes"):
        h.fill(x=dx)
    with pytest.raises(dh.FillError, match="twice"):
        h.fill(dx, x=dx)
    left = dd.from_pandas(pd.DataFrame({"x": x}), npartitions=4)
    right = dd.from_pandas(
        pd.DataFrame({"y": y}, index=np.arange(4_000) * 2), npartitions=4
    )
    with pytest.raises(dh.FillError, match="different divisions"):
        h.fill(x=left.x, y=right.y)
    assert _snapshots(repo) == history

    # none of the refused fills was queued: the next compute holds just the good one
    stored = h.fill(x=dx, y=da.from_array(y, chunks=1_000)).compute()
    assert_hist_equal(stored, hist.Hist(*axes, storage=hist.storage.Int64()).fill(x, y))
    assert_landed(repo, history, stored, created="xy")


# ------------------------------------------------------------ killed workers ---


@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A LocalCluster of its own (two worker processes, 127.0.0.1) for tests that kill workers."""
    from distributed import Client

    with local_cluster("2GiB") as lc, Client(lc) as c:
        yield c


def _first_time(marker: str) -> bool:
    """True for exactly one caller over all processes and retries."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _die_in_block(
    x: np.ndarray, marker: str, at: int, block_id: tuple[int, ...] | None = None
) -> np.ndarray:
    if block_id is not None and block_id[0] == at and _first_time(marker):
        os._exit(1)
    return x


def _hang_in_block(
    x: np.ndarray, marker: str, at: int, block_id: tuple[int, ...] | None = None
) -> np.ndarray:
    if block_id is not None and block_id[0] == at and _first_time(marker):
        time.sleep(120)  # killed by the test long before
    return x


class _KillAfter(WorkerPlugin):
    """Kills its worker process right after the first task named ``prefix``
    (over all workers) finished: its work is done (an owner's chunks are in
    storage, its fork orphaned; a commit landed) but the result never
    reaches the scheduler."""

    def __init__(self, prefix: str, marker: str) -> None:
        self.prefix = prefix
        self.marker = marker

    def transition(self, key: Key, start: str, finish: str, **kwargs: Any) -> None:
        del kwargs
        if (
            (start, finish) == ("executing", "memory")
            and key_split(key) == self.prefix
            and _first_time(self.marker)
        ):
            os._exit(1)


def _worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


@pytest.mark.parametrize("where", ["fill", "fill-external-kill", "owner"])
def test_worker_killed_mid_compute(
    own_cluster: Any, tmp_path: Path, where: str
) -> None:
    client = own_cluster
    repo_path = tmp_path / "repo.icechunk"
    marker = str(tmp_path / "killed")
    df = _data(seed=31)
    x = da.from_array(df.pt.to_numpy(), chunks=1_000)
    eta = da.from_array(df.eta.to_numpy(), chunks=1_000)
    if where == "fill":
        x = x.map_blocks(_die_in_block, marker, 5, dtype=x.dtype)
    elif where == "fill-external-kill":
        x = x.map_blocks(_hang_in_block, marker, 5, dtype=x.dtype)
    else:
        client.register_plugin(_KillAfter("hizt-write", marker))
    axes = (
        hist.axis.Regular(30, 0, 300, name="pt"),
        hist.axis.Regular(20, -5, 5, name="eta"),
    )
    with dask.config.set({"dask_hizt.chunk-bytes": "1KiB", "dask_hizt.owners": 3}):
        h = dh.Hist(
            *axes, storage=hist.storage.Int64(), store=repo_path, path="h"
        ).fill(pt=x, eta=eta)
        before = _snapshots(h.repository)
        pids = _worker_pids(client)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(h.compute)
            if where == "fill-external-kill":
                deadline = time.monotonic() + 60
                while not (Path(marker).exists() and Path(marker).read_text()):
                    assert time.monotonic() < deadline, "block 5 never started"
                    assert not running.done(), running.result()
                    time.sleep(0.02)
                pid = int(Path(marker).read_text())
                assert pid in pids  # one of our own workers, nothing else
                psutil.Process(pid).kill()
            stored = running.result(timeout=120)
    assert Path(marker).exists(), "the worker was never killed"
    assert pids - _worker_pids(client), "no worker process was replaced"
    expected = hist.Hist(*axes, storage=hist.storage.Int64()).fill(pt=df.pt, eta=df.eta)
    assert_hist_equal(stored, expected)
    assert_landed(h.repository, before, stored, created="h")


def test_worker_killed_after_commit_is_exactly_once(
    own_cluster: Any, tmp_path: Path
) -> None:
    """The commit task's worker dies after its commit landed but before the
    scheduler heard of it: the retried commit task must not add the data again."""
    client = own_cluster
    repo_path = tmp_path / "repo.icechunk"
    marker = str(tmp_path / "killed")
    client.register_plugin(_KillAfter("hizt-commit", marker))
    df = _data(seed=32)
    x = da.from_array(df.pt.to_numpy(), chunks=2_000)
    axis = hist.axis.Regular(30, 0, 300, name="pt")
    h = dh.Hist(axis, storage=hist.storage.Int64(), store=repo_path, path="h").fill(
        pt=x
    )
    before = _snapshots(h.repository)
    stored = h.compute()
    assert Path(marker).exists(), "the worker was never killed"
    assert_hist_equal(
        dh.open(repo_path, "h"),
        hist.Hist(axis, storage=hist.storage.Int64()).fill(pt=df.pt),
    )
    assert_landed(h.repository, before, stored, created="h")


def test_settings_are_taken_where_the_graph_is_built(
    client: Any, repo_path: Path
) -> None:
    """dask.config set on the client reaches the tasks on the workers (each
    a process of its own, with the default settings)."""
    del client
    x = da.random.default_rng(8).uniform(0, 1, size=4_000, chunks=1_000)
    axis = hist.axis.Regular(10, 0, 1, name="x")
    with dask.config.set({"dask_hizt.commit-retries": 0}):
        h = dh.Hist(axis, store=repo_path, path="x").fill(x)
        with pytest.raises(dh.CommitError, match="after 0 conflicting attempts"):
            h.compute()
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo_path, "x")
    with dask.config.set(
        {"dask_hizt.dense-fraction": 0.0, "dask_hizt.write-concurrency": 1}
    ):
        h = dh.Hist(axis, store=repo_path, path="x").fill(x)
        graph = dict(h.__dask_graph__())
        stored = h.compute()
    owners = [v[0].fn for k, v in graph.items() if str(k[0]).startswith("hizt-write")]
    assert owners
    assert all(o.concurrency == 1 and o.dense == 0.0 for o in owners)
    assert_hist_equal(stored, hist.Hist(axis).fill(x.compute()))
