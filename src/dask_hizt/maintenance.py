"""Repository maintenance: deleting histograms, and garbage collection of
objects no commit refers to.

:func:`delete` removes a histogram in one commit of its own; the identities of
the partitions that were in it go with it, so a histogram made again at its
path starts empty and takes every partition again.

A compute's owner tasks write their chunks into storage before the one commit
that makes them part of the histogram. When a compute fails or is killed
before that commit (a raising partition, a failed write, a killed client),
the chunks it wrote stay in storage, referenced by nothing: orphaned chunk
objects. They never change what is read back, they only take space, and
:func:`gc` removes them with icechunk's ``Repository.garbage_collect``.

``dh.Staging`` stages each eager fill in the repository's staging area (a
directory inside a local repository, or objects under its S3 prefix) until
its commit removes them. A run that dies before its commit leaves them
there; :func:`gc` removes them too, with the same cutoff.

The cutoff rule: only objects written more than ``older_than`` ago are
deleted. A compute that is still running has written its chunks but not
committed them yet (a run still staging has written its staged fills), so
they look exactly like orphans; they are protected only by being younger
than the cutoff. Choose ``older_than`` longer than
your longest compute (default: one day).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.config

from ._arrays import delete_histogram
from ._repo import RepoRef
from ._staging_area import staging_area

__all__ = ["DEFAULT_OLDER_THAN", "GcReport", "delete", "gc"]

log = logging.getLogger(__name__)

#: Objects younger than this are never deleted by default: longer than any
#: compute is expected to run.
DEFAULT_OLDER_THAN = dt.timedelta(days=1)


def delete(
    store: Any,
    path: str,
    *,
    branch: str = "main",
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Delete the histogram at ``path``, in one commit.

    Parameters
    ----------
    store
        An ``icechunk.Repository``, an ``s3://`` URL or the path of a local
        repository.
    path
        The histogram's path.
    branch
        The branch to commit to.
    storage_options
        Settings of an ``s3://`` store, as for :class:`~dask_hizt.Hist`.

    Returns
    -------
    str
        The snapshot id of the commit. Earlier snapshots still hold the
        histogram (``dh.open(store, path, snapshot_id=...)``) until
        :func:`gc` expires them.

    Raises
    ------
    NotAHistogramError
        If no histogram is at ``path``.
    StoreError
        If ``store`` is not an existing repository.
    """
    ref = RepoRef.from_store(store, create=False, storage_options=storage_options)
    retries = int(dask.config.get("dask_hizt.commit-retries"))
    return delete_histogram(ref, branch, path, retries)


@dataclass(frozen=True)
class GcReport:
    """What one :func:`gc` deleted (or, with ``dry_run``, would delete).

    Attributes
    ----------
    cutoff
        Objects written before this time (UTC) were candidates.
    dry_run
        Whether nothing was deleted.
    chunks_deleted, manifests_deleted, snapshots_deleted
        Objects of each kind deleted: orphaned chunks, manifests and
        snapshots that no branch or tag reaches.
    transaction_logs_deleted, attributes_deleted
        The other kinds of icechunk objects deleted.
    bytes_freed
        Bytes of the deleted objects, as icechunk reports them.
    snapshots_expired
        Snapshots dropped from history by ``expire_older_than`` (0 without it).
    staged_deleted
        Staged fills of ``dh.Staging`` runs that died before their commit
        (files in a local repository's staging directory, objects under an
        S3 repository's staging prefix).
    failed_deletes
        Objects icechunk failed to delete; a later ``gc`` retries them.
    skipped_phases
        Phases icechunk skipped after failures, in its own words.
    seconds
        Wall time of the collection.
    """

    cutoff: dt.datetime
    dry_run: bool
    chunks_deleted: int
    manifests_deleted: int
    snapshots_deleted: int
    transaction_logs_deleted: int
    attributes_deleted: int
    bytes_freed: int
    snapshots_expired: int
    staged_deleted: int
    failed_deletes: int
    skipped_phases: tuple[str, ...]
    seconds: float


def gc(
    store: Any,
    *,
    older_than: dt.timedelta = DEFAULT_OLDER_THAN,
    idle: bool = False,
    dry_run: bool = False,
    expire_older_than: dt.timedelta | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> GcReport:
    """Delete the objects of a repository that no branch or tag refers to.

    These are mainly the orphaned chunk objects of computes that failed or
    were killed before their commit, and the staged fills of ``dh.Staging``
    runs that died before theirs. Committed data, and all history
    reachable from a branch or tag, is kept: history is only shortened when
    ``expire_older_than`` is given.

    Parameters
    ----------
    store
        An ``icechunk.Repository``, an ``s3://`` URL or the path of a local
        repository.
    older_than
        Only objects written longer ago than this are deleted. Uncommitted
        chunks of computes still running, and staged fills of runs not yet
        committed, look like orphans; this age is what protects them, so it must exceed the longest running compute. Zero or
        negative ages (a cutoff now or in the future) are refused unless
        ``idle``.
    idle
        Promise that nothing writes to the repository while ``gc`` runs
        (no compute, no other writer), which allows ``older_than`` of zero
        or less: everything unreferenced goes, however young.
    dry_run
        Count what would be deleted, delete nothing.
    expire_older_than
        Also drop the snapshots written longer ago than this from the
        history of every branch and tag (each tip, the first snapshot and
        everything newer are kept), so that the chunks only they refer to
        are deleted too. Reading those snapshots, and ``history()`` past the
        cutoff, is then impossible. Default: history is never touched.
        Cannot be combined with ``dry_run``; zero or less needs ``idle``.
    storage_options
        Settings of an ``s3://`` store, as for :class:`~dask_hizt.Hist`.

    Returns
    -------
    GcReport
        Counts of what was (or would be) deleted.

    Raises
    ------
    StoreError
        If ``store`` is not an existing repository.
    ValueError
        For a cutoff that could delete the chunks of running computes, or
        ``expire_older_than`` with ``dry_run``.

    Notes
    -----
    On local storage the repository's commit lock is held throughout, so no
    commit of dask_hizt lands halfway through the collection.
    """
    risks = {
        "older_than": "delete the uncommitted chunks of computes still running",
        "expire_older_than": "expire the snapshots computes still running started from",
    }
    for name, age in (
        ("older_than", older_than),
        ("expire_older_than", expire_older_than),
    ):
        if age is not None and age <= dt.timedelta(0) and not idle:
            msg = (
                f"{name}={age!r} could {risks[name]}; pass idle=True if "
                "nothing writes to the repository meanwhile"
            )
            raise ValueError(msg)
    if expire_older_than is not None and dry_run:
        msg = "expire_older_than cannot be dry-run: icechunk expires history at once"
        raise ValueError(msg)
    ref = RepoRef.from_store(store, create=False, storage_options=storage_options)
    area = staging_area(ref, storage_options)
    start = time.perf_counter()
    expired: set[str] = set()
    with ref.lock():
        now = dt.datetime.now(dt.UTC)
        if expire_older_than is not None:
            expired = ref.repo.expire_snapshots(now - expire_older_than)
        cutoff = now - older_than
        summary = ref.repo.garbage_collect(cutoff, dry_run=dry_run)
        staged = [] if area is None else area.older_than(cutoff)
        if area is not None and staged and not dry_run:
            area.delete(staged)
    report = GcReport(
        cutoff=cutoff,
        dry_run=dry_run,
        chunks_deleted=int(summary.chunks_deleted),
        manifests_deleted=int(summary.manifests_deleted),
        snapshots_deleted=int(summary.snapshots_deleted),
        transaction_logs_deleted=int(summary.transaction_logs_deleted),
        attributes_deleted=int(summary.attributes_deleted),
        bytes_freed=int(summary.bytes_deleted),
        snapshots_expired=len(expired),
        staged_deleted=len(staged),
        failed_deletes=int(summary.objects_failed_to_delete),
        skipped_phases=tuple(str(p) for p in summary.skipped_phases),
        seconds=time.perf_counter() - start,
    )
    log.info("gc of %s: %s", ref.local_path or ref.url or "a repository", report)
    return report
