"""The commit of a compute: what it merges and records, and its message.

One :class:`Commit` per repository of a compute: its owners' key spaces, the
histograms it records inputs for, and the creation it lands. The graph's
commit task (:class:`CommitTask`, or :class:`dask_hizt._checkpoint.BatchCommit`
per batch) collects what the fill tasks added and calls
:func:`dask_hizt.transaction.commit_forks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._partial import Partial
from .schema import ATTR_KEY
from .transaction import Creation, RepoRef, Written, commit_forks

__all__ = ["Commit", "CommitTask", "fill_message"]


@dataclass(frozen=True)
class Commit:
    """The commit of one repository: which key spaces' owners it merges.

    ``paths`` maps the index of each of the compute's targets that lives in
    this repository to its histogram path: fill tasks report what they
    added per target index (see :class:`dask_hizt._fill.FillTask`), and the
    commit records it per path. ``metadata`` is the rest of the commit's
    metadata; ``retries`` the ``dask_hizt.commit-retries`` setting.
    """

    ref: RepoRef
    branch: str
    base: str
    spaces: tuple[int, ...]
    paths: Mapping[int, str]
    metadata: dict[str, Any]
    retries: int
    creation: Creation | None = None

    @property
    def what(self) -> str:
        """The histograms, for commit messages."""
        paths = sorted(set(self.paths.values()))
        return paths[0] if len(paths) == 1 else f"{len(paths)} histograms"

    def inputs_of(self, merged: Iterable[Written | Partial]) -> dict[str, list[str]]:
        """Per path, the identities recorded by what the owners merged (each
        owner holds those of every partition: taken once)."""
        pairs = frozenset().union(*(m.inputs for m in merged))
        out: dict[str, list[str]] = {}
        for t, identity in sorted(pairs):
            path = self.paths.get(t)
            if path is not None:
                out.setdefault(path, []).append(identity)
        return out


@dataclass(frozen=True)
class CommitTask:
    """The task that makes a compute's one commit to a repository."""

    commit: Commit
    compute_id: str

    def __call__(self, written: Sequence[Written]) -> str:
        c = self.commit
        inputs = c.inputs_of(written)
        metadata = dict(c.metadata)
        metadata[ATTR_KEY] = {
            **metadata[ATTR_KEY],
            "histograms": {p: {"inputs": ids} for p, ids in inputs.items()},
        }
        created = () if c.creation is None else c.creation.created
        return commit_forks(
            c.ref,
            c.branch,
            c.base,
            written,
            fill_message(c.what, inputs, created=created),
            metadata,
            self.compute_id,
            retries=c.retries,
            creation=c.creation,
        )


def fill_message(
    what: str,
    inputs: Mapping[str, Sequence[str]],
    note: str = "",
    created: Sequence[str] = (),
) -> str:
    """The message of a fill commit: what it filled, from how many input
    partitions (counted as recorded: per histogram); a commit that only
    creates histograms says so."""
    n = sum(len(ids) for ids in inputs.values())
    if not n and created:
        few = ", ".join(created) if len(created) <= 3 else f"{len(created)} histograms"
        return f"dask_hizt: create {few}{note}"
    plural = "" if n == 1 else "s"
    return f"dask_hizt: fill {what} from {n} input partition{plural}{note}"
