"""The values that growing category axes meet, found before the fill graph
is built, so that each histogram's chunk grid is final when partials are
keyed.

Scalars are known; values from partitioned inputs are found by a pass over
those inputs alone; ``dh.Staging`` staged fills carry theirs with them. The
values are kept in order of first appearance, as ``hist`` adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import dask.base
import numpy as np
import pandas as pd
from dask.delayed import Delayed, delayed

from ._request import Request
from .errors import FillError
from .schema import AxisKind, AxisSpec, Schema

__all__ = ["Growth", "growth"]

#: Per target, per growing axis, the values met, in order of first appearance.
Growth = dict[int, dict[int, list[Any]]]


def growth(requests: Sequence[Request], target_of: Sequence[int]) -> Growth:
    """The values met by the growing axes of each target (``target_of[i]``
    is the target of ``requests[i]``), checked to be of the axis's type."""
    pieces: dict[int, dict[int, list[list[Any] | int]]] = {}
    lazy: list[Delayed] = []
    schema_of: dict[int, Schema] = {}
    for req, t in zip(requests, target_of, strict=True):
        axes = [i for i, a in enumerate(req.schema.axes) if a.growth]
        if not axes:
            continue
        schema_of.setdefault(t, req.schema)
        per_axis = pieces.setdefault(t, {i: [] for i in axes})
        for f in req.staged:
            for i, met in f.categories:
                per_axis[i].append(list(met))
        for fill in req.fills:
            for i in axes:
                src = fill.axes[i]
                if src.partitioned:
                    per_axis[i].append(len(lazy))
                    lazy.append(_first_seen(src.collection))
                else:
                    per_axis[i].append([src.value])
    found = dask.base.compute(*lazy) if lazy else ()
    out: Growth = {}
    for t, per_axis in pieces.items():
        out[t] = {}
        for i, parts in per_axis.items():
            values: list[Any] = []
            for p in parts:
                values.extend(p if isinstance(p, list) else found[p])
            ordered = list(dict.fromkeys(values))
            _check_category_values(schema_of[t].axes[i], ordered)
            out[t][i] = ordered
    return out


def _first_seen(coll: Any) -> Delayed:
    """The distinct values of a collection, in order of first appearance."""
    parts = coll.to_delayed()
    if isinstance(coll, da.Array):
        parts = parts.ravel().tolist()
    each = [delayed(_unique_in_order)(p) for p in parts]
    out: Delayed = delayed(_merge_in_order)(each)
    return out


def _unique_in_order(part: Any) -> list[Any]:
    if type(part).__module__.startswith("awkward"):
        import awkward as ak  # noqa: PLC0415 - optional dependency

        part = ak.to_numpy(ak.flatten(part, axis=None))
    return pd.unique(np.asarray(part)).tolist()  # type: ignore[no-any-return]


def _merge_in_order(parts: Sequence[list[Any]]) -> list[Any]:
    return list(dict.fromkeys(v for p in parts for v in p))


def _check_category_values(axis: AxisSpec, values: Sequence[Any]) -> None:
    """Refuse values of the wrong type before they become categories."""
    want = str if axis.kind is AxisKind.STR_CATEGORY else int
    bad = [
        v
        for v in values
        if not isinstance(v, want) or (isinstance(v, bool) and want is int)
    ]
    if bad:
        name = axis.name or "<unnamed>"
        msg = f"axis {name!r} takes {want.__name__} categories, got {bad[:3]!r}"
        raise FillError(msg)
