"""Routing: which owner writes which chunks, and the tree of tasks that
brings each owner the partials of its key range.

A key space's chunks are cut into :class:`~dask_hizt._write.Owner` runs of
about ``dask_hizt.owner-bytes`` (:func:`owners`), so each zarr chunk has
exactly one writer. :func:`route` adds the routing tree between the fill
tasks and the owners::

    fill(partition 0..P-1)          one sparse partial per key space
      -> route (levels of combine)  each level merges up to `split-every`
                                    groups and splits the key range into up
                                    to `split-every` owner ranges
      -> write(owner 0..O-1)        read-merge-write of the owner's chunks

Each level has about P nodes while ranges split, and O x groups nodes after;
no node holds more than its key range, so no task holds a whole histogram,
and the tree grows like P x levels + O x log(P).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Hashable, Sequence
from itertools import pairwise
from typing import Any

import dask.config
import icechunk
import numpy as np

from ._fill import Target
from ._partial import combine
from ._write import Owner, Segment
from .config import Settings

__all__ = ["cluster_threads", "owners", "route"]

Key = Hashable


def cluster_threads() -> int:
    """Threads that run tasks: the distributed Client's cluster, else the
    local scheduler's."""
    try:
        from distributed import default_client  # noqa: PLC0415 - optional

        return max(1, int(sum(default_client().nthreads().values())))
    except (ImportError, ValueError):
        return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def owners(
    targets: Sequence[Target],
    writer: icechunk.Session | icechunk.ForkSession,
    settings: Settings,
    threads: int,
) -> list[Owner]:
    """Cut the chunks of a key space's ``targets`` into owners.

    Owners take consecutive chunks at even shares of the bytes, so an owner
    of small histograms may span several of them. ``settings.owners`` fixes
    their count; otherwise there are enough for ``owner-bytes`` each, for
    ``owner-chunks`` chunks each (per-chunk I/O costs milliseconds), and for
    each of the ``threads`` that run tasks to write. Each owner gets a fork
    of ``writer`` (the session, or the creation fork).
    """
    bin_bytes = [t.schema.dtype.itemsize * len(t.schema.spec.fields) for t in targets]
    chunk_bytes = np.array(
        [t.layout.chunk_size * b for t, b in zip(targets, bin_bytes, strict=True)]
    )
    n_chunks = np.array([t.layout.n_chunks for t in targets])
    total_chunks = int(n_chunks.sum())
    byte_start = np.r_[0, np.cumsum(n_chunks * chunk_bytes)]
    chunk_start = np.r_[0, np.cumsum(n_chunks)]
    wanted = settings.owners or max(
        math.ceil(byte_start[-1] / settings.owner_bytes),
        math.ceil(total_chunks / settings.owner_chunks),
        min(threads, total_chunks // settings.owner_min_chunks),
    )
    wanted = max(1, min(wanted, total_chunks))
    # Global chunk positions where owners start, at even shares of the bytes.
    cuts = {0, total_chunks}
    for k in range(1, wanted):
        b = byte_start[-1] * k / wanted
        j = int(np.searchsorted(byte_start, b, side="right")) - 1
        c = math.ceil((b - byte_start[j]) / chunk_bytes[j])
        cuts.add(int(chunk_start[j] + min(c, n_chunks[j])))
    out = []
    for g0, g1 in pairwise(sorted(cuts)):
        segments = []
        for i, t in enumerate(targets):
            a = max(g0, int(chunk_start[i]))
            b = min(g1, int(chunk_start[i + 1]))
            if a < b:
                first = int(chunk_start[i])
                segments.append(
                    Segment(
                        t.path,
                        t.schema.spec.fields,
                        t.layout,
                        t.offset,
                        a - first,
                        b - first,
                    )
                )
        out.append(
            Owner(
                tuple(segments),
                writer.fork(),
                settings.dense,
                settings.write_concurrency,
            )
        )
    return out


def route(
    dsk: dict[Key, Any],
    name: str,
    fill_keys: Sequence[Key],
    owners: Sequence[Owner],
    settings: Settings,
    space: int | None,
    nbytes: int,
) -> list[list[Any]]:
    """Add the routing tasks of one key space to ``dsk``; return, per owner,
    the nodes to hand it (each holding partials of its key range only).

    A small key space has no routing tasks: when the fills' partials, dense,
    would hold at most ``owner-bytes`` together, every owner takes them as
    the fill tasks made them (and keeps its own key range of each).

    Parameters
    ----------
    dsk
        Graph to extend; must already hold ``fill_keys``.
    name
        Suffix that makes this key space's key names unique.
    fill_keys
        Keys of the fill tasks.
    owners
        The key space's owners, in key order (their key ranges tile it).
    settings
        Fan-in (and fan-out) of the tree, and the dense fraction.
    space
        Which element of the fill tasks' output tuples is this key space's
        partial (``None``: the fill output is the partial itself).
    nbytes
        Bytes of the key space's partial when dense.
    """
    if not fill_keys or not owners:
        return []  # nothing filled, or nothing to write
    nodes: dict[tuple[int, int], Any] = {
        (0, g): k if space is None else (operator.getitem, k, space)
        for g, k in enumerate(fill_keys)
    }
    n_groups = len(fill_keys)
    if n_groups * nbytes <= settings.owner_bytes:
        return [list(nodes.values()) for _ in owners]
    f = settings.split_every
    ranges: list[tuple[int, int]] = [(0, len(owners))]
    level = 0
    while True:
        level += 1
        new_ranges: list[tuple[int, int]] = []
        parent: list[int] = []
        for ri, (o0, o1) in enumerate(ranges):
            pieces = min(f, o1 - o0)
            bounds = [o0 + (o1 - o0) * j // pieces for j in range(pieces + 1)]
            for a, b in pairwise(bounds):
                new_ranges.append((a, b))
                parent.append(ri)
        new_groups = math.ceil(n_groups / f)
        final = new_groups == 1 and all(b - a == 1 for a, b in new_ranges)
        if final:
            # one range per owner, one group: the owner's children
            return [
                [nodes[(parent[nri], g)] for g in range(n_groups)]
                for nri in range(len(new_ranges))
            ]
        new_nodes: dict[tuple[int, int], Key] = {}
        for nri, (o0, o1) in enumerate(new_ranges):
            for ng in range(new_groups):
                children = [
                    nodes[(parent[nri], g)]
                    for g in range(ng * f, min((ng + 1) * f, n_groups))
                ]
                key = (f"hizt-route-{name}", level, nri, ng)
                lo = owners[o0].key_range[0]
                hi = owners[o1 - 1].key_range[1]
                dsk[key] = (combine, children, lo, hi, settings.dense)
                new_nodes[(nri, ng)] = key
        ranges, nodes, n_groups = new_ranges, new_nodes, new_groups
