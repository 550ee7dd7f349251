"""What a compute is asked to do: the queued fills of each histogram.

``Hist.fill`` binds its arguments to the histogram's axes (one binder for
:class:`~dask_hizt.Hist` and the runner's ``StagingHist``), checks them, and
queues a :class:`Fill`. A compute hands the planner one :class:`Request` per
histogram, a plain value: the planner never looks inside a ``Hist``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import is_dask_collection, tokenize

from ._inputs import is_awkward, is_frame, npartitions
from ._repo import RepoRef
from ._stage import StagedFile
from ._staging_area import StagingArea
from .errors import FillError
from .schema import Schema

__all__ = ["Bound", "Fill", "Request", "Source", "bind", "queue"]


@dataclass(frozen=True)
class Source:
    """One fill argument: a partitioned dask collection, or a broadcast scalar."""

    collection: Any = None
    value: Any = None

    @property
    def partitioned(self) -> bool:
        """Whether the argument is a collection (else a scalar)."""
        return self.collection is not None


@dataclass(frozen=True)
class Fill:
    """One queued ``fill``: a :class:`Source` per axis, the weight and sample,
    and the user's partition identities, if given."""

    axes: tuple[Source, ...]
    weight: Source | None
    sample: Source | None = None
    given: tuple[str, ...] | None = None

    def args(self) -> tuple[Source | None, ...]:
        """Every argument, in the order identities digest them."""
        return (*self.axes, self.weight, self.sample)

    def sources(self) -> list[Source]:
        """The partitioned arguments."""
        return [s for s in self.args() if s is not None and s.partitioned]

    @functools.cached_property
    def _token(self) -> str:
        # a fill's collections are immutable: its token is too
        parts = [
            s.collection if s.partitioned else ("scalar", s.value)
            for s in self.args()
            if s is not None
        ]
        return tokenize(*parts, self.given)

    def token(self) -> str:
        """Tells fills apart within a process (dask names, scalars): the same
        collection filled twice into one histogram counts twice."""
        return self._token


@dataclass(frozen=True)
class Request:
    """One histogram of a compute and what to put into it: fills, and
    ``dh.Staging``'s staged fills, in the staging area ``area``."""

    ref: RepoRef
    branch: str
    path: str
    schema: Schema
    chunk_bytes: int | str
    fills: tuple[Fill, ...]
    staged: tuple[StagedFile, ...] = ()
    area: StagingArea | None = None

    @property
    def repository(self) -> tuple[Any, str]:
        """Identifies the repository and branch (one commit each)."""
        return (self.ref.local_path or self.ref.url or id(self.ref.repo), self.branch)


@dataclass(frozen=True)
class Bound:
    """A fill call's arguments bound to the axes: one value per axis, in order."""

    values: tuple[Any, ...]
    weight: Any
    sample: Any


def bind(
    schema: Schema,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    weight: Any,
    sample: Any,
) -> Bound:
    """Bind ``fill(*args, weight=..., sample=..., **kwargs)`` to the axes of
    ``schema``, refusing what the storage cannot take."""
    storage = schema.storage.__name__
    mean = schema.spec.takes_sample
    if sample is not None and not mean:
        msg = f"sample= is only for Mean and WeightedMean storages; this histogram has {storage}"
        raise FillError(msg)
    if sample is None and mean:
        msg = f"a {storage} histogram needs sample= (the values to average)"
        raise FillError(msg)
    if weight is not None and not schema.spec.takes_weight:
        msg = (
            f"weight= cannot be used with {storage} storage (it counts entries); "
            "use Double, Weight or WeightedMean"
        )
        raise FillError(msg)
    names = schema.names
    if len(args) > len(names):
        msg = f"fill got {len(args)} positional arguments for a {len(names)}-axis histogram"
        raise FillError(msg)
    given: dict[int, Any] = dict(enumerate(args))
    for key, value in kwargs.items():
        if key not in names or not key:
            msg = f"fill got an unknown axis name {key!r}; the axes are {list(names)}"
            raise FillError(msg)
        i = names.index(key)
        if i in given:
            msg = f"fill got axis {key!r} twice (positionally and by name)"
            raise FillError(msg)
        given[i] = value
    missing = [names[i] or f"#{i}" for i in range(len(names)) if i not in given]
    if missing:
        msg = f"fill is missing values for axes {missing}"
        raise FillError(msg)
    return Bound(tuple(given[i] for i in range(len(names))), weight, sample)


def queue(
    schema: Schema, bound: Bound, partition_ids: Sequence[str] | None = None
) -> Fill:
    """The :class:`Fill` of bound arguments, checked to line up."""
    label = [n or f"#{i}" for i, n in enumerate(schema.names)]
    sources = tuple(
        _source(v, f"axis {label[i]!r}") for i, v in enumerate(bound.values)
    )
    weight = None if bound.weight is None else _source(bound.weight, "weight")
    sample = None if bound.sample is None else _source(bound.sample, "sample")
    fill = _align(Fill(sources, weight, sample))
    if partition_ids is not None:
        fill = _with_ids(fill, partition_ids)
    return fill


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | bool | np.generic) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _source(value: Any, what: str) -> Source:
    """Normalise one fill argument."""
    if is_dask_collection(value):
        if isinstance(value, da.Array):
            if value.ndim != 1:
                msg = f"{what}: dask arrays must be one-dimensional, got ndim={value.ndim}"
                raise FillError(msg)
            return Source(collection=value)
        if is_awkward(value):
            return Source(collection=value)
        if is_frame(value):
            if getattr(value, "ndim", 1) != 1:
                msg = f"{what}: pass one column (a Series), not a DataFrame"
                raise FillError(msg)
            return Source(collection=value)
        msg = f"{what}: unsupported dask collection {type(value).__name__}"
        raise FillError(msg)
    if _is_scalar(value):
        return Source(
            value=value.item() if isinstance(value, np.generic | np.ndarray) else value
        )
    arr = np.asarray(value)
    if arr.ndim != 1:
        msg = f"{what}: arrays must be one-dimensional, got shape {arr.shape}"
        raise FillError(msg)
    return Source(collection=arr)  # a dask array once partitioning is known


def _align(fill: Fill) -> Fill:
    """Check that a fill's partitioned arguments line up; wrap NumPy arrays as dask arrays."""
    colls = [s.collection for s in fill.sources()]
    lazy = [c for c in colls if is_dask_collection(c)]
    ref = lazy[0] if lazy else None
    if ref is not None:
        n = npartitions(ref)
        for c in lazy[1:]:
            if npartitions(c) != n:
                msg = f"fill arguments are partitioned differently: {n} and {npartitions(c)} partitions"
                raise FillError(msg)
            if (
                isinstance(c, da.Array)
                and isinstance(ref, da.Array)
                and c.chunks != ref.chunks
            ):
                msg = f"fill arguments are chunked differently: {ref.chunks[0]} and {c.chunks[0]}"
                raise FillError(msg)
            known = getattr(c, "known_divisions", False) and getattr(
                ref, "known_divisions", False
            )
            if known and tuple(c.divisions) != tuple(ref.divisions):
                msg = "fill arguments have different divisions; align them (e.g. take both columns from one DataFrame)"
                raise FillError(msg)
        if isinstance(ref, da.Array) and any(np.isnan(ref.chunks[0])):
            msg = "fill arguments: dask arrays with unknown chunk sizes cannot be checked; call compute_chunk_sizes() first"
            raise FillError(msg)

    def wrap(s: Source | None) -> Source | None:
        if s is None or not isinstance(s.collection, np.ndarray):
            return s
        if ref is None:
            return Source(collection=da.from_array(s.collection, chunks="auto"))
        if not isinstance(ref, da.Array):
            msg = "NumPy arrays can only be filled together with dask arrays, not with dask.dataframe columns"
            raise FillError(msg)
        if len(s.collection) != ref.shape[0]:
            msg = f"fill arguments have different lengths: {len(s.collection)} and {ref.shape[0]}"
            raise FillError(msg)
        return Source(collection=da.from_array(s.collection, chunks=ref.chunks))

    axes = tuple(wrap(s) for s in fill.axes)
    out = Fill(
        tuple(a for a in axes if a is not None), wrap(fill.weight), wrap(fill.sample)
    )
    arrays = [s.collection for s in out.sources() if isinstance(s.collection, da.Array)]
    for a in arrays[1:]:
        if a.shape[0] != arrays[0].shape[0]:
            msg = f"fill arguments have different lengths: {arrays[0].shape[0]} and {a.shape[0]}"
            raise FillError(msg)
    return out


def _with_ids(fill: Fill, given: Sequence[str]) -> Fill:
    """Check the user's partition identities of a fill and attach them."""
    if isinstance(given, str) or not all(isinstance(x, str) for x in given):
        msg = "partition_ids must be a sequence of strings, one per partition"
        raise FillError(msg)
    sources = fill.sources()
    n = npartitions(sources[0].collection) if sources else 1
    if len(given) != n:
        msg = f"partition_ids has {len(given)} identities for {n} partitions"
        raise FillError(msg)
    if len(set(given)) != n:
        twice = sorted(x for x in set(given) if list(given).count(x) > 1)
        msg = f"partition_ids must be unique; repeated: {twice[:3]}"
        raise FillError(msg)
    return Fill(fill.axes, fill.weight, fill.sample, tuple(given))
