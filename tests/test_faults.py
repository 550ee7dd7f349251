"""Faults: failing chunk writes, orphaned chunk objects and their garbage
collection (``dh.gc``), damaged chunk objects (``dh.CorruptChunkError``).

Every test works on a real icechunk repository on disk and compares what is
read back with an eager ``hist.Hist`` of the same data.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import icechunk
import numpy as np
import pytest
from conftest import damage

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

# Chunks of 1024 float64 bins; the sums of integer weights in them compress
# to a few KiB, well above icechunk's 512-byte limit for chunks inlined into
# manifests, so every written chunk is a file in <repo>/chunks.
CONFIG = {"dask_hizt.chunk-bytes": "8KiB", "scheduler": "sync"}
AXES = (
    hist.axis.StrCategory(["a", "b"], name="c"),
    hist.axis.Regular(4000, 0, 1, name="x"),
)
X_AXIS = hist.axis.Regular(4000, 0, 1, name="x")
N = 40_000


@pytest.fixture(autouse=True)
def _config() -> Iterator[None]:
    with dask.config.set(CONFIG):
        yield


def _data(seed: int, n: int = N, hi: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "c": rng.choice(["a", "b"], n),
        "x": rng.uniform(0, hi, n),
        # integer-valued weights: sums are exact in float64, in any order
        "w": rng.integers(1, 4, n).astype(np.float64),
    }


def _lazy(repo: Path, d: dict[str, np.ndarray], *, cat: str | None = None) -> Any:
    """Two histograms, 2-D ``h`` (8 chunks) and 1-D ``g`` (4 chunks), filled
    from ``d`` in 4 partitions (every entry in category ``cat`` if given)."""
    x = da.from_array(d["x"], chunks=len(d["x"]) // 4)
    w = da.from_array(d["w"], chunks=len(d["w"]) // 4)
    c = cat if cat is not None else da.from_array(d["c"], chunks=len(d["c"]) // 4)
    h = dh.Hist(*AXES, storage=hist.storage.Double(), store=repo, path="h")
    g = dh.Hist(X_AXIS, storage=hist.storage.Double(), store=repo, path="g")
    return dh.HistSet([h.fill(c=c, x=x, weight=w), g.fill(x=x, weight=w)])


def _eager(*ds: dict[str, np.ndarray], cat: str | None = None) -> dict[str, Any]:
    h = hist.Hist(*AXES, storage=hist.storage.Double())
    g = hist.Hist(X_AXIS, storage=hist.storage.Double())
    for d in ds:
        h.fill(c=d["c"] if cat is None else cat, x=d["x"], weight=d["w"])
        g.fill(x=d["x"], weight=d["w"])
    return {"h": h, "g": g}


def _assert_reads(repo: Path, expected: dict[str, Any], **where: Any) -> None:
    for path, eager in expected.items():
        assert_hist_equal(dh.open(repo, path, **where), eager)


def _chunk_files(repo: Path) -> dict[str, int]:
    """The chunk objects on disk, with their sizes."""
    folder = repo / "chunks"
    if not folder.exists():
        return {}
    return {f.name: f.stat().st_size for f in folder.iterdir()}


def _history(repo: Path) -> list[str]:
    storage = icechunk.local_filesystem_storage(str(repo))
    return [s.id for s in icechunk.Repository.open(storage).ancestry(branch="main")]


def _fail_setitem_at(monkeypatch: pytest.MonkeyPatch, at: int) -> list[int]:
    """Make the ``at``-th chunk write into any icechunk store raise OSError.

    Chunk writes are ``set`` calls of chunk keys (``<array>/c/...``), whether
    they come from zarr or from the owners' raw chunk path.
    """
    calls = [0]
    lock = threading.Lock()
    original = icechunk.IcechunkStore.set

    async def set_(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/c/" in key:
            with lock:
                calls[0] += 1
                fail = calls[0] == at
            if fail:
                msg = "injected write failure"
                raise OSError(msg)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(icechunk.IcechunkStore, "set", set_)
    return calls


def _drop_scratch(repo: Path) -> None:
    """Collect the one snapshot a compute that creates histograms leaves
    outside the history (the base its owners fork from), and nothing else."""
    report = dh.gc(repo, older_than=dt.timedelta(0), idle=True)
    assert (report.snapshots_deleted, report.chunks_deleted) == (1, 0)


def _orphans_of_a_failed_write(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """Commit data, then fail a second compute at its 5th of 12 chunk writes.

    Returns the eager histograms of the committed data, the chunk files
    after the commit and the orphaned ones the failed compute left.
    """
    first = _data(seed=1)
    _lazy(repo, first).compute()
    _drop_scratch(repo)
    committed = _chunk_files(repo)
    assert len(committed) == 12  # every chunk of h and g is an object of its own
    history = _history(repo)

    calls = _fail_setitem_at(monkeypatch, 5)
    # one chunk at a time: exactly the 4 writes before the failing one land
    with (
        dask.config.set({"dask_hizt.write-concurrency": 1}),
        pytest.raises(OSError, match="injected write failure"),
    ):
        _lazy(repo, _data(seed=2)).compute()
    monkeypatch.undo()
    # the failure cancelled its owner's other writes (none goes on in the background)
    assert calls[0] == 5
    # nothing of it was committed: same history, same histograms
    assert _history(repo) == history
    expected = _eager(first)
    _assert_reads(repo, expected)
    files = _chunk_files(repo)
    assert files.keys() >= committed.keys()
    orphans = {k: v for k, v in files.items() if k not in committed}
    assert len(orphans) == 4
    return expected, committed, orphans


# ---------------------------------------------------------------- failures ---


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_failing_write_commits_nothing_gc_removes_orphans_rerun_lands(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler: str
) -> None:
    pool = ThreadPoolExecutor(2)
    with dask.config.set({"dask_hizt.owners": 3}, scheduler=scheduler, pool=pool):
        first = _data(seed=1)
        _lazy(repo_path, first).compute()
        _drop_scratch(repo_path)
        committed = _chunk_files(repo_path)
        history = _history(repo_path)
        calls = _fail_setitem_at(monkeypatch, 5)
        with pytest.raises(OSError, match="injected write failure"):
            _lazy(repo_path, _data(seed=2)).compute()
        # the threaded scheduler raises while other owners may still be writing
        pool.shutdown(wait=True)
        monkeypatch.undo()
        assert calls[0] >= 5
        assert _history(repo_path) == history
        _assert_reads(repo_path, _eager(first))
        orphans = _chunk_files(repo_path).keys() - committed.keys()
        assert orphans

        report = dh.gc(repo_path, older_than=dt.timedelta(0), idle=True)
        assert report.chunks_deleted == len(orphans)
        assert report.snapshots_deleted == report.manifests_deleted == 0
        assert _chunk_files(repo_path) == committed
        assert _history(repo_path) == history
        _assert_reads(repo_path, _eager(first))

        # fresh data lands exactly on top of the first compute
        third = _data(seed=3)
        with ThreadPoolExecutor(2) as fresh, dask.config.set(pool=fresh):
            stored = _lazy(repo_path, third).compute()
    assert _history(repo_path) == [stored[0].snapshot_id, *history]
    _assert_reads(repo_path, _eager(first, third))


def test_orphans_are_young_so_default_gc_keeps_them(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default cutoff (one day) protects chunks of computes that may
    still be running, and orphans just written look exactly like them."""
    expected, committed, orphans = _orphans_of_a_failed_write(repo_path, monkeypatch)
    report = dh.gc(repo_path)
    assert report.chunks_deleted == 0
    assert report.cutoff < dt.datetime.now(dt.UTC) - dt.timedelta(hours=23)
    assert _chunk_files(repo_path) == {**committed, **orphans}

    report = dh.gc(repo_path, older_than=dt.timedelta(0), idle=True)
    assert report.chunks_deleted == len(orphans)
    assert report.bytes_freed == sum(orphans.values())
    assert _chunk_files(repo_path) == committed
    _assert_reads(repo_path, expected)


def test_gc_dry_run_deletes_nothing(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, committed, orphans = _orphans_of_a_failed_write(repo_path, monkeypatch)
    repo_files = sorted(p.relative_to(repo_path) for p in repo_path.rglob("*"))
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    report = dh.gc(repo, older_than=dt.timedelta(0), idle=True, dry_run=True)
    assert report.dry_run
    assert report.chunks_deleted == len(orphans)
    assert report.bytes_freed == sum(orphans.values())
    assert sorted(p.relative_to(repo_path) for p in repo_path.rglob("*")) == repo_files
    assert _chunk_files(repo_path) == {**committed, **orphans}
    _assert_reads(repo_path, expected)


def test_gc_refuses_cutoffs_that_reach_running_computes(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, committed, orphans = _orphans_of_a_failed_write(repo_path, monkeypatch)
    for age in (dt.timedelta(0), dt.timedelta(seconds=-1)):
        with pytest.raises(ValueError, match="computes still running"):
            dh.gc(repo_path, older_than=age)
        with pytest.raises(ValueError, match="computes still running"):
            dh.gc(repo_path, expire_older_than=age)
    with pytest.raises(ValueError, match="dry-run"):
        dh.gc(repo_path, expire_older_than=dt.timedelta(days=1), dry_run=True)
    with pytest.raises(dh.StoreError, match="no repository"):
        dh.gc(repo_path.parent / "nothing-here")
    assert _chunk_files(repo_path) == {**committed, **orphans}
    # a cutoff in the future is a cutoff "now" plus a margin for clock skew
    report = dh.gc(repo_path, older_than=dt.timedelta(minutes=-5), idle=True)
    assert report.cutoff > dt.datetime.now(dt.UTC)
    assert report.chunks_deleted == len(orphans)


def test_gc_keeps_all_reachable_history(repo_path: Path) -> None:
    """Chunks rewritten by later computes are still referenced by the older
    snapshots: gc keeps every one of them, and every snapshot reads exactly."""
    datasets = [_data(seed=10 + i) for i in range(3)]
    snapshots = []
    for i, d in enumerate(datasets):
        stored = _lazy(repo_path, d).compute()
        snapshots.append((stored[0].snapshot_id, _eager(*datasets[: i + 1])))
    files = _chunk_files(repo_path)
    assert len(files) == 3 * 12
    history = _history(repo_path)

    report = dh.gc(repo_path, older_than=dt.timedelta(0), idle=True)
    assert report.chunks_deleted == 0
    assert report.snapshots_deleted == 1  # the creating compute's scratch snapshot
    assert report.snapshots_expired == 0
    assert _chunk_files(repo_path) == files
    assert _history(repo_path) == history
    for snapshot_id, expected in snapshots:
        _assert_reads(repo_path, expected, snapshot_id=snapshot_id)


def test_gc_expires_history_only_when_asked(repo_path: Path) -> None:
    datasets = [_data(seed=20 + i) for i in range(3)]
    for d in datasets:
        _lazy(repo_path, d).compute()
    before = _history(repo_path)
    report = dh.gc(
        repo_path,
        older_than=dt.timedelta(0),
        expire_older_than=dt.timedelta(0),
        idle=True,
    )
    # the tip and the repository's first snapshot stay; in between, the
    # creating commit and the first two fills go with their chunks
    assert report.snapshots_expired == len(before) - 2
    assert report.chunks_deleted == 2 * 12
    assert len(_chunk_files(repo_path)) == 12
    assert _history(repo_path) == [before[0], before[-1]]
    _assert_reads(repo_path, _eager(*datasets))


# --------------------------------------------------------- damaged chunks ---


def _one_chunk_histogram(repo: Path) -> tuple[dict[str, Any], str]:
    """``h`` and ``g`` where only chunk (1, 0) of ``h/value`` is a chunk object:
    ``g`` and every other chunk are empty or small enough to be inlined."""
    d = _data(seed=5, hi=0.25)  # bins 0-999: the first chunk along x
    _lazy(repo, d, cat="b").compute()
    files = _chunk_files(repo)
    # g's one filled chunk and h's chunk (1, 0) ("b", first 1024 flow bins)
    assert len(files) == 2
    expected = _eager(d, cat="b")
    # find h's own object: the one whose loss breaks reading h
    for name in files:
        data = (repo / "chunks" / name).read_bytes()
        (repo / "chunks" / name).unlink()
        try:
            dh.open(repo, "h").to_hist()
        except dh.CorruptChunkError:
            return expected, name
        finally:
            (repo / "chunks" / name).write_bytes(data)
    raise AssertionError("no chunk object of h found")


READERS: dict[str, Callable[[dh.StoredHist], object]] = {
    "to_hist": lambda s: s.to_hist(),
    "getitem": lambda s: s["b", :],
    "project": lambda s: s.project("x"),
    "to_dask_array": lambda s: s.to_dask_array(flow=True).compute(),
}


@pytest.mark.parametrize("how", ["overwritten", "flipped", "truncated", "missing"])
@pytest.mark.parametrize("reader", list(READERS))
def test_damaged_chunk_on_read_names_histogram_array_and_chunk(
    repo_path: Path, how: str, reader: str
) -> None:
    expected, name = _one_chunk_histogram(repo_path)
    damage(repo_path / "chunks" / name, how)
    stored = dh.open(repo_path, "h")
    with pytest.raises(dh.CorruptChunkError) as caught:
        READERS[reader](stored)
    err = caught.value
    assert isinstance(err, dh.StoreError)
    assert (err.path, err.array, err.chunk) == ("h", "value", (1, 0))
    message = str(err)
    assert "histogram 'h', array 'value', chunk (1, 0)" in message
    assert "'h/value/c/1/0'" in message
    # a truncated object fails the range read, or zstd, depending on the cut
    words = {
        "overwritten": ["corrupt"],
        "flipped": ["corrupt"],
        "truncated": ["truncated", "corrupt"],
    }
    assert any(w in message for w in words.get(how, ["missing"]))
    # the error crosses process boundaries (a distributed worker's error) intact
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.chunk) == (type(err), message, err.chunk)
    # what does not need the damaged chunk still reads
    assert_hist_equal(stored["a", :], expected["h"]["a", :])
    assert_hist_equal(dh.open(repo_path, "g"), expected["g"])


def test_other_read_errors_are_not_taken_for_damage(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_chunk_histogram(repo_path)
    stored = dh.open(repo_path, "h")
    original = icechunk.IcechunkStore.get

    async def get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/c/" in key:
            msg = "an unrelated failure"
            raise RuntimeError(msg)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(icechunk.IcechunkStore, "get", get)
    for read in READERS.values():
        with pytest.raises(RuntimeError, match="an unrelated failure") as caught:
            read(stored)
        assert not isinstance(caught.value, dh.HiztError)


@pytest.mark.parametrize("how", ["overwritten", "missing"])
def test_damaged_chunk_hit_by_owner_leaves_branch_unchanged(
    repo_path: Path, how: str
) -> None:
    expected, name = _one_chunk_histogram(repo_path)
    damage(repo_path / "chunks" / name, how)
    history = _history(repo_path)
    more = _data(seed=6, hi=0.25)
    with pytest.raises(dh.CorruptChunkError) as caught:
        _lazy(repo_path, more, cat="b").compute()
    assert (caught.value.path, caught.value.array) == ("h", "value")
    assert caught.value.chunk == (1, 0)
    assert _history(repo_path) == history
    assert_hist_equal(dh.open(repo_path, "g"), expected["g"])

    # computes that do not touch the damaged chunk still land
    stored = _lazy(repo_path, more, cat="a").compute()
    assert _history(repo_path) == [stored[0].snapshot_id, *history]
    both = _eager(more, cat="a")
    assert_hist_equal(dh.open(repo_path, "h")["a", :], both["h"]["a", :])
    assert_hist_equal(dh.open(repo_path, "g"), expected["g"] + both["g"])
