"""Commit records: the metadata dask_hizt writes reads back as the same record.

Old repositories must keep reading: the records are committed into a real
icechunk repository exactly as earlier versions wrote them (the literal
documents of docs/format.md), read back with ``CommitRecord.from_snapshot``
and written again with ``to_metadata``; and the records of computes,
growths and deletions made by the library round-trip the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import hist
import icechunk
import numpy as np

import dask_hizt as dh
from dask_hizt._history import CommitRecord, ancestry
from dask_hizt.testing import assert_hist_equal

FILL = {
    "dask_hizt": {
        "version": "0.1.0",
        "histograms": {
            "h": {"inputs": ["part-0#0123456789abcdef", "part-1#fedcba9876543210"]},
            "g": {"inputs": ["part-0#00000000000000aa"]},
        },
        "compute": "hizt-commit-0f1e2d-0",
        "created": ["h", "g"],
        "grown": {"g": {"dataset": ["DY", "QCD"], "nj": [3, 1]}},
    }
}
GROWTH = {
    "dask_hizt": {
        "version": "0.1.0",
        "histograms": {"g": {"inputs": ["part-2#00000000000000bb"]}},
        "compute": "hizt-commit-0f1e2d-0-1",
        "grown": {"g": {"#0": ["TT"]}},
    }
}
CREATE_ONLY = {
    "dask_hizt": {
        "version": "0.1.0",
        "histograms": {},
        "compute": "hizt-commit-aa55-0",
        "created": ["empty"],
    }
}
DELETE = {"dask_hizt": {"deleted": ["h"]}}


def _commit_each(path: Path, documents: list[dict[str, Any]]) -> icechunk.Repository:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    for i, doc in enumerate(documents):
        session = repo.writable_session("main")
        session.commit(f"commit {i}", metadata=doc, allow_empty=True)
    return repo


def test_documents_of_earlier_versions_round_trip(tmp_path: Path) -> None:
    documents: list[dict[str, Any]] = [FILL, GROWTH, CREATE_ONLY, DELETE]
    repo = _commit_each(tmp_path / "r.icechunk", documents)
    walked = list(ancestry(repo, branch="main"))
    assert [s.message for s, _ in walked][:4] == [f"commit {i}" for i in (3, 2, 1, 0)]
    records = [r for _, r in walked]
    assert records[4] is None  # the repository's first commit is not ours
    for record, doc in zip(records[:4], documents[::-1], strict=True):
        assert record is not None
        assert record.to_metadata() == doc
    fill = records[3]
    assert fill == CommitRecord(
        version="0.1.0",
        compute="hizt-commit-0f1e2d-0",
        inputs={
            "h": ("part-0#0123456789abcdef", "part-1#fedcba9876543210"),
            "g": ("part-0#00000000000000aa",),
        },
        created=("h", "g"),
        grown={"g": {"dataset": ("DY", "QCD"), "nj": (3, 1)}},
    )
    assert records[0] == CommitRecord(deleted=("h",))


def test_a_single_created_path_as_a_string_still_reads(tmp_path: Path) -> None:
    old = {"dask_hizt": {"version": "0.0.1", "compute": "c", "created": "h"}}
    repo = _commit_each(tmp_path / "r.icechunk", [old, {"other": {"tool": 1}}])
    (_, foreign), (_, record), _ = list(ancestry(repo, branch="main"))
    assert foreign is None  # metadata of another tool's commit
    assert record is not None
    assert record.created == ("h",)
    assert record.inputs == {}


def test_ancestry_stops_before_until(tmp_path: Path) -> None:
    repo = _commit_each(tmp_path / "r.icechunk", [FILL, GROWTH, DELETE])
    snaps = [s.id for s in repo.ancestry(branch="main")]
    walked = [s.id for s, _ in ancestry(repo, snapshot_id=snaps[0], until=snaps[2])]
    assert walked == snaps[:2]


def test_records_written_by_computes_and_deletes_round_trip(tmp_path: Path) -> None:
    repo_path = tmp_path / "r.icechunk"
    axes = (
        hist.axis.StrCategory([], growth=True, name="dataset"),
        hist.axis.Regular(20, 0, 1, name="x"),
    )
    rng = np.random.default_rng(4)
    x1, x2 = rng.uniform(0, 1, 3_000), rng.uniform(0, 1, 2_000)

    def fill(label: str, x: np.ndarray) -> dh.StoredHist:
        h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="g")
        dx = da.from_array(x, chunks=1_000)
        stored: dh.StoredHist = h.fill(dataset=label, x=dx).compute()
        return stored

    first = fill("DY", x1)
    second = fill("QCD", x2)
    expected = hist.Hist(*axes, storage=hist.storage.Int64())
    expected.fill(dataset="DY", x=x1).fill(dataset="QCD", x=x2)
    assert_hist_equal(second, expected)
    dh.delete(repo_path, "g")

    repo = second.repository
    walked = list(ancestry(repo, branch="main"))
    for snap, record in walked:
        if record is not None:  # icechunk adds keys of its own
            assert record.to_metadata() == {"dask_hizt": snap.metadata["dask_hizt"]}
    (_, deleted), (s2, grew), (s1, made), (_, initial) = walked
    assert initial is None
    assert deleted == CommitRecord(deleted=("g",))
    assert (s1.id, s2.id) == (first.snapshot_id, second.snapshot_id)
    assert made is not None
    assert grew is not None
    assert made.version == grew.version == dh.__version__
    assert made.compute is not None
    assert grew.compute is not None
    assert made.compute != grew.compute
    assert made.created == ("g",)
    assert grew.created == ()
    assert made.grown == {}  # created with its first category
    assert grew.grown == {"g": {"dataset": ("QCD",)}}
    assert [len(made.inputs["g"]), len(grew.inputs["g"])] == [3, 2]
    assert [c.inputs for c in second.history()] == [
        grew.inputs["g"],
        made.inputs["g"],
    ]
