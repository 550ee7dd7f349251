"""The input collections of a compute: which fills read the same partitions,
how a group of them becomes the inputs of one fill task, and where each
partition comes from.

Fills share a fill task only where they read the same partitions: their
collections come from the same roots (the layers, or for dask.dataframe the
expressions, that have no inputs). Collections are never aligned to each
other: a dask.dataframe group is packed partition by partition into one
collection of tuples (``map_partitions`` with ``align_dataframes=False``), so
a filtered Series and its parent each keep their own rows, and the file is
read once for both.

dask-expr's optimizer fuses the partitions of a parquet read when few of its
columns are read (10 files, one column: 4-5 partitions), so the partitions of
a column would depend on what else is computed with it. Packed groups are
optimized without that step (dask-expr's "tune" stage): a partition is always
one part of the read, which also gives it a provenance (file and row groups;
see :mod:`dask_hizt._identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import pandas as pd
from dask.core import flatten

from ._identity import positions, relative_paths

__all__ = [
    "Packed",
    "group_sources",
    "is_awkward",
    "is_frame",
    "npartitions",
    "roots",
    "take",
    "where_of",
]


def is_awkward(coll: Any) -> bool:
    """Whether ``coll`` is a dask-awkward array (without importing dask-awkward)."""
    return type(coll).__module__.startswith("dask_awkward") and hasattr(
        coll, "npartitions"
    )


def is_frame(coll: Any) -> bool:
    """Whether ``coll`` is a dask.dataframe (dask-expr) collection."""
    return (
        hasattr(coll, "expr") and hasattr(coll, "npartitions") and not is_awkward(coll)
    )


def npartitions(coll: Any) -> int:
    """Number of partitions (blocks along the only axis for dask arrays)."""
    if isinstance(coll, da.Array):
        return len(coll.chunks[0])
    return int(coll.npartitions)


def roots(coll: Any) -> frozenset[str]:
    """Names of the inputs a collection is computed from (layers, or
    dask-expr expressions, with no dependencies)."""
    if is_frame(coll):
        return frozenset(e._name for e in coll.expr.walk() if not e.dependencies())
    deps = coll.__dask_graph__().dependencies
    return frozenset(name for name, d in deps.items() if not d)


def group_sources(
    fills: Sequence[Sequence[Any]],
) -> list[list[tuple[int, int]]]:
    """Group the partitioned arguments of ``fills`` by the partitions they read.

    ``fills[f]`` lists the collections of fill ``f``. Returns groups of
    ``(fill, argument)`` positions: the arguments of one fill are in one
    group, and so are collections with a common root and as many
    partitions. Groups come in order of first appearance.
    """
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(x: tuple[int, int]) -> tuple[int, int]:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: tuple[int, int], b: tuple[int, int]) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for f, colls in enumerate(fills):
        for a, c in enumerate(colls):
            parent[(f, a)] = (f, a)
            if a:
                union((f, 0), (f, a))
            n = npartitions(c)
            for r in roots(c):
                first = seen.setdefault((r, n), (f, a))
                union(first, (f, a))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return [sorted(g) for _, g in sorted(groups.items())]


class Packed:
    """dask.dataframe collections packed into one collection whose partition
    ``i`` is the tuple of their partitions ``i``, optimized without fusing
    parts of reads (see the module docstring)."""

    def __init__(self, frames: Sequence[Any]) -> None:
        import dask.dataframe as dd  # noqa: PLC0415 - optional collection type

        self.frames = list(frames)
        self.logical = dd.map_partitions(
            _pack,
            *self.frames,
            meta=pd.Series([], dtype=object),
            align_dataframes=False,
            enforce_metadata=False,
        )

    def optimized(self, taken: Sequence[int] | None = None) -> tuple[Any, Any]:
        """The lowered expression (before blockwise fusion) and the collection
        to compute, of all partitions or of those ``taken``."""
        from dask.dataframe.dask_expr import (  # type: ignore[attr-defined]  # noqa: PLC0415
            new_collection,
        )

        coll = self.logical if taken is None else self.logical.partitions[list(taken)]
        lowered = coll.expr.simplify().lower_completely().simplify()
        return lowered, new_collection(lowered.fuse())


def _pack(*parts: Any) -> tuple[Any, ...]:
    return parts


def take(coll: Any, taken: Sequence[int]) -> Any:
    """The partitions ``taken`` of a dask array or dask-awkward array."""
    if isinstance(coll, da.Array):
        return coll.blocks[list(taken)]
    return coll.partitions[list(taken)]


def keys_of(coll: Any) -> list[Any]:
    """The keys of a collection's partitions, in order."""
    return list(flatten(coll.__dask_keys__()))


def where_of(coll: Any, lowered: Any = None) -> list[str]:
    """The ``where`` of each partition (see :mod:`dask_hizt._identity`):
    provenance for dask.dataframe groups read partition-wise from parquet
    files (``lowered`` is their lowered expression) and for dask-awkward
    arrays read from files, else positions."""
    n = npartitions(coll)
    found: list[str] | None = None
    if lowered is not None:
        found = _parquet_where(lowered)
    elif is_awkward(coll):
        found = _awkward_where(coll)
    if found is None or len(found) != n:
        return positions(n)
    return found


def _awkward_where(coll: Any) -> list[str] | None:
    from ._awkward_where import awkward_where  # noqa: PLC0415 - dask-awkward only

    return awkward_where(coll)


def _parquet_where(expr: Any) -> list[str] | None:
    """Per partition, the parquet files and row groups it is read from, when
    every step from the reads to ``expr`` is partition-wise; else ``None``."""
    from dask.dataframe.dask_expr._expr import Blockwise  # noqa: PLC0415
    from dask.dataframe.dask_expr.io.parquet import ReadParquet  # noqa: PLC0415

    n = expr.npartitions
    leaves = []
    for node in expr.walk():
        if not isinstance(node, Blockwise) or node.npartitions != n:
            return None
        if any(d.npartitions != n for d in node.dependencies()):
            return None
        if not node.dependencies():
            if not isinstance(node, ReadParquet):
                return None
            leaves.append(node)
    per_leaf = [_parquet_parts(leaf) for leaf in leaves]
    if not per_leaf or any(p is None or len(p) != n for p in per_leaf):
        return None
    return ["|".join(p[i] for p in per_leaf if p is not None) for i in range(n)]


def _parquet_parts(leaf: Any) -> list[str] | None:
    """``"pq:<path relative to the dataset>:<row groups>"`` per partition of a read."""
    try:
        if hasattr(leaf, "fragments"):  # pyarrow-filesystem reader
            pieces = [
                [(f.path, [rg.id for rg in f.row_groups] if f.row_groups else None)]
                for f in leaf.fragments
            ]
        else:
            pieces = []
            for part in leaf._plan["parts"]:
                items = part if isinstance(part, list) else [part]
                pieces.append([(p["piece"][0], p["piece"][1]) for p in items])
    except (AttributeError, KeyError, TypeError, IndexError):
        return None
    chosen = leaf.operand("_partitions")
    if chosen is not None:
        pieces = [pieces[i] for i in chosen]
    paths = sorted({str(path) for ps in pieces for path, _ in ps})
    rel = dict(zip(paths, relative_paths(paths), strict=True))
    out = []
    for ps in pieces:
        described = [
            f"{rel[str(path)]}:{'all' if rgs is None else ','.join(map(str, rgs))}"
            for path, rgs in ps
        ]
        out.append("pq:" + "+".join(described))
    return out
