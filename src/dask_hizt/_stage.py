"""Staged partials: eager fills written next to the repository, folded in later.

coffea's futures executors run a processor eagerly on each chunk of events
and add the outputs up in a tree of futures. A histogram carried through
that tree would end up whole on one worker; instead the eager fills of a
chunk are summed in one histogram per path, which is written as a small
*staged* object (its non-zero bins, with the categories it met on growing
axes) when the chunk's ``Staging`` leaves the processor (is pickled or
added up), to the repository's staging area (a directory on its
filesystem, or a prefix in its S3 bucket: see
:mod:`dask_hizt._staging_area`), and only the objects' names travel. The
fold (:mod:`dask_hizt.runner`) then routes the staged bins to the chunk
owners like any other fill.

A staged object's name is derived from the chunk of events it came from, so
a re-run of a failed job overwrites, rather than adds to, what the failed
run staged.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fill import Target, flatten_arguments
from ._partial import Partial, combine, empty, from_entries
from ._staging_area import StagingArea
from .errors import FillError
from .schema import Schema

__all__ = ["StagedFile", "StagedLoad", "fill_eagerly", "stage", "staged_id"]


@dataclass(frozen=True)
class StagedFile:
    """One staged fill: its object's name in the staging area, its histogram,
    its chunk of events, and the categories it met on growing axes (by axis
    index, so that the plan knows them without reading the object)."""

    name: str
    path: str
    item: str
    categories: tuple[tuple[int, tuple[Any, ...]], ...] = ()


def fill_eagerly(
    h: Any, path: str, item: str, args: Sequence[Any], weight: Any, sample: Any
) -> None:
    """Fill the boost histogram ``h`` (of histogram ``path``, for chunk
    ``item``) with NumPy or awkward arguments."""
    flat = flatten_arguments([*args, weight, sample], f"item {item}")
    values, weight, sample = flat[: len(args)], flat[len(args)], flat[len(args) + 1]
    try:
        h.fill(*values, weight=weight, sample=sample)
    except (ValueError, TypeError, KeyError) as err:
        msg = f"fill of {path!r} for {item}: {err}"
        raise FillError(msg) from err


def stage(
    area: StagingArea,
    branch: str,
    path: str,
    schema: Schema,
    item: str,
    number: int,
    h: Any,
) -> StagedFile:
    """Stage the non-zero bins of ``h`` (the fills of histogram ``path`` for
    chunk ``item``, the ``number``-th staged of them); return the handle."""
    view: Any = h.view(flow=True)
    dense = schema.spec.unpack(view)
    nonzero = np.zeros(dense[0].shape, dtype=bool)
    for d in dense:
        nonzero |= d != 0
    index = np.array(np.nonzero(nonzero), dtype=np.int64)
    # categories as met here, on growing axes: mapped at fold time
    met = tuple((i, tuple(h.axes[i])) for i, a in enumerate(schema.axes) if a.growth)
    header = {
        "path": path,
        "item": item,
        "categories": {str(i): list(c) for i, c in met},
    }
    key = f"{branch}\0{item}\0{path}\0{number}"
    name = hashlib.sha1(key.encode()).hexdigest()[:24] + ".npz"
    arrays: dict[str, Any] = {f"f{k}": d[nonzero] for k, d in enumerate(dense)}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    arrays["index"] = index
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    area.put(name, buffer.getvalue())
    return StagedFile(name, path, item, met)


def staged_id(item: str) -> str:
    """The identity recorded for a staged chunk of events."""
    return f"staged:{item}"


@dataclass(frozen=True)
class StagedLoad:
    """A fill task that reads staged objects of ``area`` instead of input
    partitions.

    Returns one partial per key space, recording what went in, like
    :class:`dask_hizt._fill.FillTask`. ``dense`` is the captured
    ``dask_hizt.dense-fraction``.
    """

    area: StagingArea
    targets: tuple[Target, ...]
    target_of: Mapping[str, int]
    space_sizes: tuple[int, ...]
    dense: float

    def __call__(self, names: Sequence[str]) -> tuple[Partial, ...]:
        per_space: list[list[Partial]] = [[] for _ in self.space_sizes]
        added: list[tuple[int, str]] = []
        for name in names:
            with np.load(io.BytesIO(self.area.get(name))) as z:
                header = json.loads(z["header"].tobytes())
                index = z["index"]
                fields = [z[f"f{k}"] for k in range(len(z.files) - 2)]
            t = self.target_of[header["path"]]
            added.append((t, staged_id(header["item"])))
            target = self.targets[t]
            schema = target.schema
            indices = []
            for i, a in enumerate(schema.axes):
                idx = index[i]
                if a.growth:
                    local = header["categories"][str(i)]
                    where = {c: g for g, c in enumerate(a.categories)}
                    idx = np.array([where[local[j]] for j in idx], dtype=np.int64)
                indices.append(idx)
            keys = target.layout.keys(indices)
            dtypes = [schema.dtype] * len(fields)
            part = from_entries(
                0,
                target.layout.n_keys,
                keys,
                fields,
                dtypes,
                schema.spec.algebra,
                self.dense,
            )
            per_space[target.space].append(part.shifted(target.offset))
        out: list[Partial] = []
        for space, (parts, n_keys) in enumerate(
            zip(per_space, self.space_sizes, strict=True)
        ):
            if parts:
                out.append(combine(parts, 0, n_keys, self.dense))
                continue
            schema = next(t.schema for t in self.targets if t.space == space)
            dtypes = [schema.dtype] * len(schema.spec.fields)
            out.append(empty(0, n_keys, dtypes, schema.spec.algebra))
        went_in = frozenset(added)
        return tuple(p.with_inputs(went_in) for p in out)
