"""The commit of a compute: what it merges and records, and its message.

One :class:`CommitPlan` per repository of a compute: its owners' key spaces, the
histograms it records inputs for, and the creation it lands. The graph's
commit task (:class:`CommitTask`, or :class:`dask_hizt._checkpoint.BatchCommit`
per batch) collects what the owners wrote and calls :func:`commit_forks`.

Facts this is built on (see docs/format.md and the design notes):

* Forks of one session that wrote the same chunk merge silently, last one
  wins; so each chunk has exactly one writer per compute.
* A commit task may run twice (its worker died after the commit landed):
  the commit records the compute's id, and a second run finds it.
* If the branch moved while we computed, merging is not enough
  (:mod:`dask_hizt._conflict`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import icechunk

from ._arrays import Creation
from ._conflict import (
    add_theirs,
    changed_by_others,
    histogram_paths,
    refuse_duplicates,
    replay,
)
from ._history import CommitRecord, ancestry
from ._partial import Partial
from ._repo import RepoRef, writable
from ._write import Written
from .errors import CommitError

__all__ = ["CommitPlan", "CommitTask", "commit_forks", "fill_message"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitPlan:
    """The commit of one repository: which key spaces' owners it merges.

    ``paths`` maps the index of each of the compute's targets that lives in
    this repository to its histogram path: fill tasks report what they
    added per target index (see :class:`dask_hizt._fill.FillTask`), and the
    commit records it per path. ``version`` is the dask_hizt version the
    commit records; ``retries`` the ``dask_hizt.commit-retries`` setting.
    """

    ref: RepoRef
    branch: str
    base: str
    spaces: tuple[int, ...]
    paths: Mapping[int, str]
    version: str
    retries: int
    creation: Creation | None = None

    @property
    def what(self) -> str:
        """The histograms, for commit messages."""
        paths = sorted(set(self.paths.values()))
        return paths[0] if len(paths) == 1 else f"{len(paths)} histograms"

    def record(
        self, compute_id: str, merged: Iterable[Written | Partial]
    ) -> CommitRecord:
        """What the commit records, before it knows what it creates and grows:
        per path, the identities recorded by what the owners merged (each
        owner holds those of every partition: taken once)."""
        pairs = frozenset().union(*(m.inputs for m in merged))
        inputs: dict[str, list[str]] = {}
        for t, identity in sorted(pairs):
            path = self.paths.get(t)
            if path is not None:
                inputs.setdefault(path, []).append(identity)
        return CommitRecord(
            version=self.version,
            compute=compute_id,
            inputs={path: tuple(ids) for path, ids in inputs.items()},
        )


@dataclass(frozen=True)
class CommitTask:
    """The task that makes a compute's one commit to a repository."""

    commit: CommitPlan
    compute_id: str

    def __call__(self, written: Sequence[Written]) -> str:
        c = self.commit
        record = c.record(self.compute_id, written)
        created = () if c.creation is None else c.creation.created
        return commit_forks(
            c.ref,
            c.branch,
            c.base,
            written,
            fill_message(c.what, record.inputs, created=created),
            record,
            retries=c.retries,
            creation=c.creation,
        )


def fill_message(
    what: str,
    inputs: Mapping[str, Sequence[str]],
    note: str = "",
    created: Sequence[str] = (),
) -> str:
    """The message of a fill commit: what it filled (the histograms with
    inputs, else ``what``), from how many input partitions (counted as
    recorded: per histogram); a commit that only creates histograms says so."""
    n = sum(len(ids) for ids in inputs.values())
    if not n and created:
        few = ", ".join(created) if len(created) <= 3 else f"{len(created)} histograms"
        return f"dask_hizt: create {few}{note}"
    filled = sorted(p for p, ids in inputs.items() if ids)
    if filled:
        what = filled[0] if len(filled) == 1 else f"{len(filled)} histograms"
    plural = "" if n == 1 else "s"
    return f"dask_hizt: fill {what} from {n} input partition{plural}{note}"


def commit_forks(
    ref: RepoRef,
    branch: str,
    base: str,
    written: Sequence[Written],
    message: str,
    record: CommitRecord,
    *,
    retries: int,
    since: str | None = None,
    creation: Creation | None = None,
) -> str:
    """Merge the owners' forks (after ``creation``'s) and make one commit on ``branch``.

    The commit records ``record`` (with what ``creation`` created and grew).
    If a commit with its compute id is already on the branch after ``since``
    (default ``base``: this task ran before, and its worker died before
    reporting), that commit is returned and nothing is added twice. If a
    commit after ``base`` recorded any of the partition identities in
    ``record.inputs``, nothing is committed and
    :class:`DuplicateInputError` is raised.

    If the branch moved past ``base`` while we computed, the chunks that both
    sides changed are rewritten additively before the commit; if the other
    commits created, grew or deleted a histogram we write, our additions are
    replayed on top of theirs instead (:func:`dask_hizt._conflict.replay`). A
    commit racing ours on object storage is absorbed by rebasing with a
    :class:`icechunk.ConflictDetector`, and retried from the new tip when
    chunks overlap (at most ``retries`` times). Never picks a side: that
    would lose counts.

    Returns
    -------
    str
        The new snapshot id.
    """
    compute_id = record.compute
    assert compute_id is not None, "a compute's commit records its id"
    forks = [w.fork for w in written]
    ours: dict[str, set[tuple[int, ...]]] = {}
    for w in written:
        for path, coords in w.chunks.items():
            ours.setdefault(path, set()).update(coords)
    inputs = {path: set(ids) for path, ids in record.inputs.items()}
    if not ours and not any(inputs.values()) and creation is None:
        return base  # nothing went in (e.g. every partition was in already)
    with ref.lock():
        for attempt in range(retries):
            done = _committed(ref.repo, branch, since or base, compute_id)
            if done is not None:
                return done
            session = writable(ref, branch)
            tip = str(session.snapshot_id)
            created = () if creation is None else creation.created
            grown = {} if creation is None else creation.grown
            if tip != base:
                refuse_duplicates(ref.repo, base, tip, inputs)
                theirs = changed_by_others(
                    ref.repo,
                    base,
                    tip,
                    histogram_paths(ours),
                    set() if creation is None else creation.paths,
                )
            if tip == base or not theirs:
                if creation is not None:
                    session.merge(creation.fork)
                session.merge(*forks)
                if tip != base:
                    add_theirs(ref.repo, session, base, ours)
            else:
                created, grown = replay(ref.repo, session, base, written, creation)
            final = dataclasses.replace(record, created=created, grown=grown)
            try:
                return str(
                    session.commit(
                        message,
                        metadata=final.to_metadata(),
                        rebase_with=icechunk.ConflictDetector(),
                        allow_empty=True,
                    )
                )
            except (icechunk.ConflictError, icechunk.RebaseFailedError) as err:
                log.info(
                    "commit attempt %d conflicted (%s); retrying from the new tip",
                    attempt,
                    err,
                )
    msg = (
        f"gave up committing to branch {branch!r} after {retries} conflicting attempts"
    )
    raise CommitError(msg)


def _committed(
    repo: icechunk.Repository, branch: str, base: str, compute_id: str
) -> str | None:
    """The snapshot after ``base`` on ``branch`` made by ``compute_id``, if any."""
    for snap, record in ancestry(repo, branch=branch, until=base):
        if record is not None and record.compute == compute_id:
            return snap.id
    return None
