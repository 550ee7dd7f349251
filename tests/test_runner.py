"""dh.Staging without coffea: eager fills staged per chunk of events, folded in one commit."""

from __future__ import annotations

import dataclasses
import functools
import operator
import pickle
import uuid
from pathlib import Path
from typing import Any

import hist
import icechunk
import numpy as np
import pytest

import dask_hizt as dh

AXES = (
    hist.axis.StrCategory([], growth=True, name="d"),
    hist.axis.Regular(50, 0, 1, name="x"),
)


#: One staged chunk: its item, dataset label, x values and weights.
type Chunk = tuple[str, str, np.ndarray[Any, Any], np.ndarray[Any, Any]]


def _chunks(n: int = 8) -> list[Chunk]:
    rng = np.random.default_rng(3)
    return [
        (
            f"file.root#Events[{k * 1000}:{(k + 1) * 1000}]",
            "abc"[k % 3],
            rng.uniform(0, 1, 1000),
            rng.choice([0.5, 1.0, 2.0], 1000),
        )
        for k in range(n)
    ]


def _staged(repo: Path, chunks: list[Chunk]) -> dh.Staging:
    parts = []
    for item, label, x, w in chunks:
        s = dh.Staging(repo, item)
        s.hist(*AXES, storage=hist.storage.Weight(), path="h").fill(
            d=label, x=x, weight=w
        )
        parts.append(s)
    return functools.reduce(operator.add, parts)


def _expected(chunks: list[Chunk]) -> np.ndarray[Any, Any]:
    h = hist.Hist(
        hist.axis.StrCategory(["a", "b", "c"], name="d"),
        AXES[1],
        storage=hist.storage.Weight(),
    )
    for _, label, x, w in chunks:
        h.fill(d=label, x=x, weight=w)
    return h.view(flow=True)[:3]  # the growing axis has no overflow bin


def test_staged_fills_fold_into_one_exact_commit(repo_path: Path) -> None:
    chunks = _chunks()
    total = _staged(repo_path, chunks)
    assert len(total) == len(chunks)
    assert len(pickle.dumps(total)) < 5_000  # names of staged files only
    stored = total.commit(scheduler="sync")["h"]
    got = stored.to_hist()
    assert list(got.axes[0]) == ["a", "b", "c"]
    assert np.array_equal(got.view(flow=True), _expected(chunks))
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    messages = [s.message for s in repo.ancestry(branch="main")]
    assert messages[0] == f"dask_hizt: fill h from {len(chunks)} input partitions"
    assert messages[1:] == ["Repository initialized"]


def test_a_chunk_stages_one_object_per_histogram(repo_path: Path) -> None:
    """Many fills of a chunk (weight variations, as a processor makes them)
    add up in memory: one staged object per histogram and chunk, written
    when the Staging leaves the processor (pickled or added up), and
    re-written, not added to, when the chunk runs again."""
    chunks = _chunks(4)
    variations = 10
    parts = []
    for item, label, x, w in chunks:
        s = dh.Staging(repo_path, item)
        h = s.hist(*AXES, storage=hist.storage.Weight(), path="h")
        n = s.hist(AXES[1], storage=hist.storage.Int64(), path="n")
        for k in range(variations):
            h.fill(d=label, x=x, weight=w * (1 + k / 8))
            n.fill(x)
        parts.append(s)
    area = repo_path / ".dask_hizt-staging"
    assert not area.exists()  # nothing staged while the chunk is processed
    first = pickle.loads(pickle.dumps(parts[0]))  # leaves for coffea's futures
    assert len(first) == 2
    total = functools.reduce(operator.add, [first, *parts[1:]])
    assert len(total) == 2 * len(chunks)
    assert len(list(area.iterdir())) == 2 * len(chunks)
    # the chunk again (a re-run of the job): the same objects, overwritten
    again = dh.Staging(repo_path, chunks[0][0])
    again.hist(AXES[1], storage=hist.storage.Int64(), path="n").fill(chunks[0][2])
    assert len(again) == 1
    assert len(list(area.iterdir())) == 2 * len(chunks)
    stored = total.commit(scheduler="sync")
    want_h = hist.Hist(
        hist.axis.StrCategory(["a", "b", "c"], name="d"),
        AXES[1],
        storage=hist.storage.Weight(),
    )
    for _, label, x, w in chunks:
        for k in range(variations):
            want_h.fill(d=label, x=x, weight=w * (1 + k / 8))
    got = stored["h"].to_hist()
    assert list(got.axes[0]) == ["a", "b", "c"]
    for field in ("value", "variance"):
        np.testing.assert_allclose(
            got.view(flow=True)[field], want_h.view(flow=True)[field][:3], rtol=1e-12
        )
    # n of chunk 0 is what its re-run staged last (one fill), not the sum
    want_n = hist.Hist(AXES[1], storage=hist.storage.Int64()).fill(chunks[0][2])
    for _, _, x, _ in chunks[1:]:
        for _ in range(variations):
            want_n.fill(x)
    assert np.array_equal(stored["n"].to_hist().view(flow=True), want_n.view(flow=True))
    assert not area.exists() or not list(area.iterdir())  # removed once in


def test_chunks_already_committed_are_skipped(repo_path: Path) -> None:
    chunks = _chunks()
    _staged(repo_path, chunks[:5]).commit(scheduler="sync")
    # the whole job again: only the three chunks not yet in are added
    out = _staged(repo_path, chunks).commit(scheduler="sync")
    assert np.array_equal(out["h"].to_hist().view(flow=True), _expected(chunks))
    assert [len(c.inputs) for c in out["h"].history()] == [3, 5]
    again = _staged(repo_path, chunks).commit(scheduler="sync")
    assert again["h"].snapshot_id == out["h"].snapshot_id  # nothing committed
    assert np.array_equal(
        dh.open(repo_path, "h").to_hist().view(flow=True), _expected(chunks)
    )


def test_staging_needs_an_item(repo_path: Path) -> None:
    with pytest.raises(dh.FillError, match="identity of its chunk of events"):
        dh.Staging(repo_path, {"dataset": "x"})
    with pytest.raises(dh.FillError, match="can only be added to"):
        dh.Staging(repo_path).hist(*AXES, path="h")


def test_staging_fill_binds_arguments_like_hist(repo_path: Path) -> None:
    h = dh.Staging(repo_path, "file.root#Events[0:10]").hist(
        *AXES, storage=hist.storage.Weight(), path="h"
    )
    with pytest.raises(dh.FillError, match="twice"):
        h.fill("a", x=np.array([0.5]), d="b")
    with pytest.raises(dh.FillError, match="unknown axis name"):
        h.fill(d="a", y=np.array([0.5]))
    with pytest.raises(dh.FillError, match="missing values"):
        h.fill(d="a")
    with pytest.raises(dh.FillError, match="sample="):
        h.fill(d="a", x=np.array([0.5]), sample=np.array([1.0]))


@dataclasses.dataclass(frozen=True)
class _WorkItem:
    """The fields of coffea's ``processor.WorkItem`` that name a chunk."""

    dataset: str
    filename: str
    treename: str
    entrystart: int
    entrystop: int
    fileuuid: bytes


def _metadata(item: _WorkItem) -> dict[str, Any]:
    """The ``events.metadata`` coffea's Runner gives the processor for ``item``."""
    return {
        "dataset": item.dataset,
        "filename": item.filename,
        "treename": item.treename,
        "entrystart": item.entrystart,
        "entrystop": item.entrystop,
        "fileuuid": str(uuid.UUID(bytes=item.fileuuid)),
    }


def test_pending_is_the_work_items_not_committed(repo_path: Path) -> None:
    file_id = uuid.uuid4().bytes
    items = [
        _WorkItem("a", "f.root", "Events", k * 10, (k + 1) * 10, file_id)
        for k in range(5)
    ]
    rng = np.random.default_rng(1)
    x = [rng.uniform(0, 1, 10) for _ in items]
    assert dh.Staging(repo_path).pending(items) == items  # nothing in yet

    def stage(which: list[int]) -> dh.Staging:
        total = dh.Staging(repo_path)
        for k in which:
            s = dh.Staging(repo_path, _metadata(items[k]))
            s.hist(*AXES, path="h").fill(d="a", x=x[k])
            total += s
        return total

    first = stage([0, 2, 3])
    first.commit(scheduler="sync")
    assert first.pending(items) == [items[1], items[4]]
    # a fresh Staging, as a resumed job has it: every histogram of the branch
    assert dh.Staging(repo_path).pending(items) == [items[1], items[4]]
    assert dh.Staging(repo_path).pending(items, paths=["other"]) == items
    stage([1, 4]).commit(scheduler="sync")
    assert dh.Staging(repo_path).pending(iter(items)) == []
    expected: hist.Hist[Any] = hist.Hist(
        hist.axis.StrCategory(["a"], name="d"), AXES[1]
    )
    for xs in x:
        expected.fill(d="a", x=xs)
    got = dh.open(repo_path, "h").to_hist()
    assert np.array_equal(got.view(flow=True), expected.view(flow=True)[:1])
    with pytest.raises(dh.FillError, match="runner="):
        dh.Staging(repo_path).pending({"a": ["f.root"]})


def test_a_staging_names_its_histograms_as_a_processor_dict_does(
    repo_path: Path,
) -> None:
    """``out["pt"] = out.hist(...)`` and ``out["pt"].fill(...)``, the lines of
    a processor written for ``hist.Hist`` objects in a dict; the names survive
    coffea's pickling and ``+``, and the sum commits exactly."""
    chunks = _chunks(4)
    parts = []
    for item, label, x, w in chunks:
        out = dh.Staging(repo_path, item)
        out["h"] = out.hist(*AXES, storage=hist.storage.Weight(), path="h")
        out["h"].fill(d=label, x=x, weight=w)
        parts.append(pickle.loads(pickle.dumps(out)))
    total = functools.reduce(operator.add, parts)
    assert total["h"].path == "h"
    with pytest.raises(dh.FillError, match="sum of Stagings"):
        total["h"].fill(d="a", x=np.array([0.5]))
    with pytest.raises(KeyError):
        total["other"]
    stored = total.commit(scheduler="sync")["h"]
    assert np.array_equal(stored.to_hist().view(flow=True), _expected(chunks))

    out = dh.Staging(repo_path, "file.root#Events[0:1]")
    with pytest.raises(dh.FillError, match=r"out\['h'\] takes a histogram"):
        out["h"] = hist.Hist(*AXES)  # type: ignore[assignment]
    other = dh.Staging(repo_path, "file.root#Events[1:2]")
    out["h"] = out.hist(*AXES, storage=hist.storage.Weight(), path="h")
    other["h"] = other.hist(AXES[1], path="n")
    with pytest.raises(dh.FillError, match="names histogram 'h'"):
        out + other


def test_a_chunk_that_fills_nothing_is_recorded(repo_path: Path) -> None:
    """A processor that makes its histograms and fills none of them (every
    event cut away) records its chunk: it is not pending after the commit,
    and a re-run of it commits nothing."""
    file_id = uuid.uuid4().bytes
    items = [
        _WorkItem("a", "f.root", "Events", k * 10, (k + 1) * 10, file_id)
        for k in range(3)
    ]
    x = np.random.default_rng(2).uniform(0, 1, 10)

    def run(which: list[int]) -> dh.Staging:
        total = dh.Staging(repo_path)
        for k in which:
            out = dh.Staging(repo_path, _metadata(items[k]))
            h = out.hist(*AXES, path="h")
            if k != 1:  # chunk 1: nothing passes the cuts
                h.fill(d="a", x=x)
            total += out
        return total

    first = run([0, 1, 2])
    assert len(first) == 3  # one staged object per chunk, the empty one too
    first.commit(scheduler="sync")
    assert dh.Staging(repo_path).pending(items) == []
    tip = dh.open(repo_path, "h").snapshot_id
    run([1]).commit(scheduler="sync")
    assert dh.open(repo_path, "h").snapshot_id == tip
    expected: hist.Hist[Any] = hist.Hist(
        hist.axis.StrCategory(["a"], name="d"), AXES[1]
    )
    expected.fill(d="a", x=x)
    expected.fill(d="a", x=x)
    got = dh.open(repo_path, "h").to_hist()
    assert np.array_equal(got.view(flow=True), expected.view(flow=True)[:1])
