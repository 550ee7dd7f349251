"""What went in: the identities of the input partitions in each histogram.

Every fill commit records, per histogram, the identities of the partitions it
added (commit metadata ``dask_hizt.histograms[path].inputs``). A compute
skips the partitions already recorded on its branch, so running a job again,
or again after it died halfway, adds nothing twice; and a commit refuses
partitions that a racing compute recorded while it ran.

An identity names one partition of one fill (see :mod:`dask_hizt._identity`).
A histogram's identities are those recorded since the commit that created
it; a commit that deletes it forgets them.
"""

from __future__ import annotations

from collections.abc import Iterable

import icechunk

from ._history import ancestry

__all__ = ["committed", "committed_between"]

# Per snapshot id (unique across repositories): per path, the identities in
# the histogram up to that snapshot, and whether its creation was reached
# (``False``: the walk reached the first snapshot).
_SEEN: dict[str, dict[str, tuple[frozenset[str], bool]]] = {}
_SEEN_MAX = 64


def committed(
    repo: icechunk.Repository, snapshot_id: str, paths: Iterable[str]
) -> dict[str, frozenset[str]]:
    """Per path, the partition identities in the histogram at ``snapshot_id``.

    Walks the ancestry back to each histogram's creation; the walk stops early
    at a snapshot seen before in this process, so repeated computes on a
    growing branch read only the new commits.
    """
    wanted = set(paths)
    seen = _SEEN.get(snapshot_id)
    if seen is not None and wanted <= seen.keys():
        return {path: seen[path][0] for path in wanted}
    found: dict[str, set[str]] = {p: set() for p in wanted}
    closed: set[str] = set()
    base: dict[str, tuple[frozenset[str], bool]] | None = None
    for snap, record in ancestry(repo, snapshot_id=snapshot_id):
        known = _SEEN.get(snap.id)
        if known is not None and wanted <= known.keys():
            base = known
            break
        if record is not None:
            for path in wanted - closed:
                if path in record.deleted:
                    closed.add(path)  # what was in went with it
                    continue
                found[path].update(record.inputs.get(path, ()))
                if path in record.created:
                    closed.add(path)
        if closed == wanted:
            break
    result: dict[str, tuple[frozenset[str], bool]] = {}
    for path in wanted:
        ids = frozenset(found[path])
        if base is not None and path not in closed:
            earlier, done = base[path]
            result[path] = (ids | earlier, done)
        else:
            result[path] = (ids, path in closed)
    # Each answer covers its path back to the path's creation or to the first
    # snapshot, so it stands for this snapshot from now on.
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[snapshot_id] = {**_SEEN.get(snapshot_id, {}), **result}
    return {path: ids for path, (ids, _) in result.items()}


def committed_between(
    repo: icechunk.Repository, base: str, tip: str, paths: Iterable[str]
) -> dict[str, set[str]]:
    """Per path, the identities recorded by the commits after ``base`` up to ``tip``."""
    wanted = set(paths)
    out: dict[str, set[str]] = {}
    for _, record in ancestry(repo, snapshot_id=tip, until=base):
        if record is None:
            continue
        for path in wanted & record.inputs.keys():
            out.setdefault(path, set()).update(record.inputs[path])
    return out
