"""The fix-up when the branch moved while a compute ran.

Facts this is built on (see docs/format.md and the design notes):

* A fork merged into a session based on a newer snapshot silently overwrites
  the newer chunks; so when the branch moved while we computed, every chunk
  that both we and the newer commits wrote is rewritten as
  ``theirs + (ours - base)`` before committing (:func:`add_theirs`).
* If the newer commits created, grew or deleted a histogram we write, our
  forks (with the arrays and category indices of ``base``) cannot be merged
  at all: our additions are replayed on top of theirs (:func:`replay`).
* A partition recorded by a newer commit must not go in twice
  (:func:`refuse_duplicates`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import icechunk
import numpy as np
import zarr

from ._arrays import (
    Creation,
    create_arrays,
    find_histogram,
    grow_arrays,
    read_histogram_meta,
)
from ._ledger import committed_between
from ._write import Written
from .errors import DuplicateInputError

__all__ = [
    "add_theirs",
    "changed_by_others",
    "histogram_paths",
    "refuse_duplicates",
    "replay",
]


def histogram_paths(chunks: Mapping[str, object]) -> set[str]:
    """Histogram paths of ``"<histogram>/<field>"`` array paths."""
    return {posixpath.dirname(p) for p in chunks}


def changed_by_others(
    repo: icechunk.Repository,
    base: str,
    tip: str,
    written: set[str],
    changed: set[str],
) -> set[str]:
    """The histograms among ``written`` (whose chunks we write) and
    ``changed`` (that we create or grow) that the commits after ``base``
    touched so that our forks cannot simply be merged: whose groups or
    arrays (or a parent group) they created, changed or deleted, and, of
    ``changed``, also those whose chunks they wrote."""
    diff = repo.diff(from_snapshot_id=base, to_snapshot_id=tip)
    nodes: set[str] = set()
    for kind in (
        "new_groups",
        "new_arrays",
        "deleted_groups",
        "deleted_arrays",
        "updated_groups",
        "updated_arrays",
    ):
        nodes.update(str(p).strip("/") for p in getattr(diff, kind))
    chunks = {posixpath.dirname(str(p).strip("/")) for p in diff.updated_chunks}
    hit = {
        p
        for p in written | changed
        if any(
            n == p or posixpath.dirname(n) == p or p.startswith(f"{n}/") for n in nodes
        )
    }
    return hit | (changed & chunks)


def refuse_duplicates(
    repo: icechunk.Repository, base: str, tip: str, ours: Mapping[str, set[str]]
) -> None:
    """Raise if a commit after ``base`` recorded partitions that we record too."""
    theirs = committed_between(repo, base, tip, ours)
    for path, ids in theirs.items():
        both = sorted(ids & ours[path])
        if both:
            msg = (
                f"{len(both)} input partitions of histogram {path!r} (e.g. {both[0]!r}) "
                "were committed by another compute while this one ran; nothing was "
                "committed. Compute again to add the partitions not yet in."
            )
            raise DuplicateInputError(msg)


def replay(
    repo: icechunk.Repository,
    session: icechunk.Session,
    base: str,
    written: Sequence[Written],
    creation: Creation | None,
) -> tuple[tuple[str, ...], dict[str, dict[str, tuple[str | int, ...]]]]:
    """Add what our forks wrote, as ``ours - base``, to the histograms at the
    tip in ``session``: creating those that are not there (any more), and
    appending our new categories to theirs.

    For when the commits after ``base`` created, grew or deleted histograms
    that we write: then our forks (whose arrays and category indices are
    those of ``base`` plus our creation) cannot be merged. Growing category
    axes have chunk size 1, so each of our chunks lands in one place of theirs.

    Returns
    -------
    tuple
        The paths created, and per path the categories appended, per axis.
    """
    base_store = repo.readonly_session(snapshot_id=base).store
    per_path: dict[str, list[tuple[icechunk.ForkSession, set[tuple[int, ...]]]]] = {}
    for w in written:
        coords_of: dict[str, set[tuple[int, ...]]] = {}
        for array_path, written_coords in w.chunks.items():
            coords_of.setdefault(posixpath.dirname(array_path), set()).update(
                written_coords
            )
        for path, coords in coords_of.items():
            per_path.setdefault(path, []).append((w.fork, coords))
    extra = [] if creation is None else [p for p in creation.paths if p not in per_path]
    created: list[str] = []
    grown: dict[str, dict[str, tuple[str | int, ...]]] = {}
    for path in [*per_path, *extra]:
        entries = per_path.get(path, [])
        source = entries[0][0] if entries else creation.fork  # type: ignore[union-attr]
        ours, layout = read_histogram_meta(source.store, path)
        at_tip = find_histogram(session.store, path)
        if at_tip is None:
            create_arrays(session.store, {path: (ours, layout)})
            created.append(path)
            final = ours
        else:
            theirs = at_tip[0]
            theirs.check_same(ours, f"histogram {path!r}")
            additions: dict[int, list[Any]] = {}
            for i, axis in enumerate(ours.axes):
                if axis.growth:
                    have = set(theirs.axes[i].categories)
                    new = [c for c in axis.categories if c not in have]
                    if new:
                        additions[i] = new
            final = theirs.grown(additions) if additions else theirs
            if additions:
                grow_arrays(session.store, path, theirs, final)
                grown[path] = {
                    ours.names[i] or f"#{i}": tuple(v) for i, v in additions.items()
                }
        moved = {
            i: [final.axes[i].categories.index(c) for c in axis.categories]
            for i, axis in enumerate(ours.axes)
            if axis.growth
        }
        before = find_histogram(base_store, path)
        fields = ours.spec.fields
        algebra = ours.spec.algebra
        target = [zarr.open_array(session.store, path=f"{path}/{f}") for f in fields]
        old = (
            None
            if before is None
            else [
                zarr.open_array(base_store, path=f"{path}/{f}", mode="r")
                for f in fields
            ]
        )
        for fork, chunk_coords in entries:
            mine = [
                zarr.open_array(fork.store, path=f"{path}/{f}", mode="r")
                for f in fields
            ]
            for c in sorted(chunk_coords):
                sel = tuple(
                    slice(i * s, min((i + 1) * s, n))
                    for i, s, n in zip(c, layout.chunks, layout.shape, strict=True)
                )
                values = tuple(np.asarray(a[sel]) for a in mine)
                if old is not None and all(
                    s.stop <= n for s, n in zip(sel, old[0].shape, strict=True)
                ):
                    start = tuple(np.asarray(a[sel]) for a in old)
                else:
                    start = tuple(np.zeros_like(v) for v in values)
                delta = algebra.unmerge(values, start)
                where = tuple(
                    slice(moved[i][s.start], moved[i][s.start] + 1) if i in moved else s
                    for i, s in enumerate(sel)
                )
                now = tuple(np.asarray(a[where]) for a in target)
                for a, v in zip(target, algebra.merge(now, delta), strict=True):
                    a[where] = v
    return tuple(created), grown


def add_theirs(
    repo: icechunk.Repository,
    session: icechunk.Session,
    base: str,
    ours: Mapping[str, set[tuple[int, ...]]],
) -> None:
    """Rewrite chunks changed on both sides as ``theirs + (ours - base)``.

    For mean storages "+" and "-" are the merge and its inverse, applied to
    all fields of a chunk together.
    """
    tip = session.snapshot_id
    changed = repo.diff(from_snapshot_id=base, to_snapshot_id=tip).updated_chunks
    both: dict[str, set[tuple[int, ...]]] = {}
    for raw, coords in changed.items():
        path = raw.lstrip("/")
        hit = ours.get(path, set()) & {tuple(c) for c in coords}
        if hit:
            both.setdefault(posixpath.dirname(path), set()).update(hit)
    if not both:
        return
    base_store = repo.readonly_session(snapshot_id=base).store
    tip_store = repo.readonly_session(snapshot_id=tip).store
    for hist_path, hits in both.items():
        schema, layout = read_histogram_meta(session.store, hist_path)
        algebra = schema.spec.algebra
        names = [f"{hist_path}/{f}" for f in schema.spec.fields]
        mine: list[Any] = [zarr.open_array(session.store, path=p) for p in names]
        before = [zarr.open_array(base_store, path=p) for p in names]
        theirs = [zarr.open_array(tip_store, path=p) for p in names]
        for c in sorted(hits):
            sel = tuple(
                slice(i * s, min((i + 1) * s, n))
                for i, s, n in zip(c, layout.chunks, layout.shape, strict=True)
            )
            delta = algebra.unmerge(
                tuple(np.asarray(a[sel]) for a in mine),
                tuple(np.asarray(a[sel]) for a in before),
            )
            new = algebra.merge(tuple(np.asarray(a[sel]) for a in theirs), delta)
            for a, v in zip(mine, new, strict=True):
                a[sel] = v
