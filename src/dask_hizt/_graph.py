"""The only module that builds dask graphs.

A compute of one histogram is this graph::

    fill(partition 0..P-1)          one sparse partial each, over all keys
      -> route (levels of combine)  each level merges up to `split-every`
                                    groups and splits the key range into up
                                    to `split-every` owner ranges
      -> write(owner 0..O-1)        read-add-write of the owner's chunks in
                                    its fork
      -> commit                     merge the forks, ONE commit

Each routing level has about P nodes while ranges split, and O x groups
nodes after; no node holds more than its key range, so no task ever holds
the whole histogram, and the graph grows like P x levels + O x log(P).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from itertools import pairwise
from typing import Any

import dask.config

from ._fill import FillTask
from ._partial import combine
from ._writer import Owner
from .transaction import RepoRef, commit_forks

__all__ = ["compute_graph", "route_and_write"]

Key = Hashable


def route_and_write(
    dsk: dict[Key, Any],
    token: str,
    fill_keys: Sequence[Key],
    owners: Sequence[Owner],
    split_every: int,
) -> list[Key]:
    """Add routing and owner tasks to ``dsk``; return the owner tasks' keys.

    Parameters
    ----------
    dsk
        Graph to extend; must already hold ``fill_keys``.
    token
        Suffix that makes this graph's key names unique.
    fill_keys
        Keys of the partials over the full key range, one per fill task.
    owners
        Owner tasks, in chunk order (their key ranges tile the key space).
    split_every
        Fan-in (and fan-out) of the routing tree.
    """
    f = max(2, int(split_every))
    n_owners = len(owners)
    ranges: list[tuple[int, int]] = [(0, n_owners)]
    nodes: dict[tuple[int, int], Key] = {(0, g): k for g, k in enumerate(fill_keys)}
    n_groups = len(fill_keys)
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
        new_nodes: dict[tuple[int, int], Key] = {}
        for nri, (o0, o1) in enumerate(new_ranges):
            for ng in range(new_groups):
                children = [
                    nodes[(parent[nri], g)]
                    for g in range(ng * f, min((ng + 1) * f, n_groups))
                ]
                if final:
                    key: Key = (f"hizt-write-{token}", o0)
                    dsk[key] = (owners[o0], children)
                else:
                    key = (f"hizt-route-{token}", level, nri, ng)
                    lo = owners[o0].key_range[0]
                    hi = owners[o1 - 1].key_range[1]
                    dsk[key] = (combine, children, lo, hi)
                new_nodes[(nri, ng)] = key
        if final:
            return [new_nodes[(i, 0)] for i in range(len(new_ranges))]
        ranges, nodes, n_groups = new_ranges, new_nodes, new_groups


def compute_graph(
    name: str,
    token: str,
    partitions: Sequence[tuple[FillTask, Sequence[Key]]],
    owners: Sequence[Owner],
    commit: tuple[RepoRef, str, str, str, dict[str, Any]],
) -> dict[Key, Any]:
    """The tasks of one compute: fills, routing, owners and the commit.

    Parameters
    ----------
    name
        Key name of the commit task, ``(name, 0)``: the collection's output.
    token
        Suffix that makes the other key names unique.
    partitions
        Per fill task, the callable it runs and the keys of its inputs.
    owners
        Owner tasks in chunk order.
    commit
        ``(repo, branch, base snapshot, message, metadata)`` of the commit.
    """
    dsk: dict[Key, Any] = {}
    fill_keys = []
    for i, (fill_task, inputs) in enumerate(partitions):
        key = (f"hizt-fill-{token}", i)
        dsk[key] = (fill_task, list(inputs), str(list(inputs)))
        fill_keys.append(key)
    split_every = int(dask.config.get("dask_hizt.split-every"))
    writer_keys = route_and_write(dsk, token, fill_keys, owners, split_every)
    ref, branch, base, message, metadata = commit
    dsk[(name, 0)] = (
        commit_forks,
        ref,
        branch,
        base,
        writer_keys,
        message,
        metadata,
        name,
    )
    return dsk
