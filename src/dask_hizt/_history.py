"""What dask_hizt records in a commit's metadata, and the walk back through them.

Every commit dask_hizt makes carries a :class:`CommitRecord` under the
``"dask_hizt"`` key of its snapshot metadata (see docs/format.md, "Commits"):
a compute's commit the partitions it added and the histograms it created or
grew, a deletion the histograms it deleted. Everything that reads history
(what went in, ``StoredHist.history``, ``dask-hizt log``, a commit checking
whether it landed already) walks it with :func:`ancestry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import icechunk

from .schema import ATTR_KEY

__all__ = ["CommitRecord", "ancestry"]


@dataclass(frozen=True)
class CommitRecord:
    """What one dask_hizt commit recorded.

    Attributes
    ----------
    version
        The dask_hizt version of a compute's commit.
    compute
        The id of the compute that made the commit (one per compute and
        repository, shared by a checkpointed compute's batches).
    inputs
        Per histogram path, the identities of the input partitions the
        commit added (see :mod:`dask_hizt._ledger`).
    created
        The histograms the commit created.
    grown
        Per histogram path, per axis label, the categories the commit
        appended.
    deleted
        The histograms the commit deleted.
    """

    version: str | None = None
    compute: str | None = None
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    created: tuple[str, ...] = ()
    grown: Mapping[str, Mapping[str, tuple[str | int, ...]]] = field(
        default_factory=dict
    )
    deleted: tuple[str, ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        """The snapshot metadata that records this (the format of docs/format.md)."""
        doc: dict[str, Any] = {}
        if self.version is not None:
            doc["version"] = self.version
        if self.compute is not None or self.inputs:
            # a compute's commit always has the key, empty if it only creates
            doc["histograms"] = {
                path: {"inputs": list(ids)} for path, ids in self.inputs.items()
            }
        if self.compute is not None:
            doc["compute"] = self.compute
        if self.created:
            doc["created"] = list(self.created)
        if self.grown:
            doc["grown"] = {
                path: {axis: list(new) for axis, new in axes.items()}
                for path, axes in self.grown.items()
            }
        if self.deleted:
            doc["deleted"] = list(self.deleted)
        return {ATTR_KEY: doc}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> CommitRecord | None:
        """Read snapshot metadata; ``None`` if dask_hizt recorded nothing in it."""
        doc = metadata.get(ATTR_KEY)
        if not isinstance(doc, Mapping):
            return None
        created = doc.get("created", ())
        version, compute = doc.get("version"), doc.get("compute")
        return cls(
            version=None if version is None else str(version),
            compute=None if compute is None else str(compute),
            inputs={
                str(path): tuple(str(i) for i in h.get("inputs", ()))
                for path, h in doc.get("histograms", {}).items()
            },
            # early commits recorded a single created path as a string
            created=(created,) if isinstance(created, str) else tuple(created),
            grown={
                str(path): {str(axis): tuple(new) for axis, new in axes.items()}
                for path, axes in doc.get("grown", {}).items()
            },
            deleted=tuple(doc.get("deleted", ())),
        )

    @classmethod
    def from_snapshot(cls, snapshot: icechunk.SnapshotInfo) -> CommitRecord | None:
        """The record of a snapshot; ``None`` for commits not made by dask_hizt."""
        return cls.from_metadata(snapshot.metadata or {})


def ancestry(
    repo: icechunk.Repository,
    *,
    snapshot_id: str | None = None,
    branch: str | None = None,
    until: str | None = None,
) -> Iterator[tuple[icechunk.SnapshotInfo, CommitRecord | None]]:
    """The snapshots from ``snapshot_id`` (or the tip of ``branch``) back,
    newest first, with their records (``None``: not a dask_hizt commit);
    stops before snapshot ``until``, if given."""
    for snap in repo.ancestry(snapshot_id=snapshot_id, branch=branch):
        if snap.id == until:
            return
        record = _RECORDS.get(snap.id)
        if record is None:
            if len(_RECORDS) >= _RECORDS_MAX:
                _RECORDS.clear()
            record = _RECORDS[snap.id] = (CommitRecord.from_snapshot(snap),)
        yield snap, record[0]


# Parsed records per snapshot id (a snapshot never changes; a fill commit of
# many histograms records thousands of identities, and every plan of a
# compute walks back through it).
_RECORDS: dict[str, tuple[CommitRecord | None]] = {}
_RECORDS_MAX = 256
