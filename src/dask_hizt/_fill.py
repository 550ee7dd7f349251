"""One input partition -> sparse partial histograms. No dask imports here.

A fill task fills every histogram of a compute that reads this partition.
Histograms that share a repository and a kind of storage share one *key
space*: their keys are laid end to end (a histogram's keys start at its
``offset``), so the task returns one partial per key space, and the rest of
the graph routes all of them together.

The bin of each entry along each axis is found with boost-histogram's own
``axis.index`` for numeric axes, so edges, flow bins, NaN and circular axes
behave exactly as in ``hist.Hist.fill``; category axes are looked up with a
pandas index. Entries are then summed per chunk-major key
(:func:`dask_hizt._partial.from_entries`). Fills that bin the same inputs
alike (weight variations, one column in several histograms) share that work
(:mod:`dask_hizt._shared_fill`).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import _shared_fill
from ._identity import PartitionInfo, array_digest, content_digest, content_id
from ._partial import Partial, combine, empty, finish, from_entries
from .errors import FillError
from .layout import Layout
from .schema import AxisKind, AxisSpec, Schema

__all__ = [
    "Added",
    "Arg",
    "FillSpec",
    "FillTask",
    "Inputs",
    "Target",
    "flatten_arguments",
]


class Inputs(Protocol):
    """A partition's inputs by slot: a sequence, or lazily made ones that
    also have ``release(i)`` (see :mod:`dask_hizt._lazy`)."""

    def __getitem__(self, i: int, /) -> Any: ...


@dataclass(frozen=True)
class Arg:
    """Where a fill argument comes from: a partition input (``index`` into the
    task's inputs, and the ``part`` to take when that input is a tuple of
    packed dataframe partitions) or a Python scalar broadcast to every entry
    (``value``)."""

    index: int | None = None
    value: Any = None
    part: int | None = None

    def take(self, inputs: Inputs) -> Any:
        """This argument's data among a partition's inputs."""
        assert self.index is not None
        data = inputs[self.index]
        return data if self.part is None else data[self.part]


@dataclass(frozen=True)
class FillSpec:
    """One queued ``fill`` call: an :class:`Arg` per axis, the weight and the sample."""

    axes: tuple[Arg, ...]
    weight: Arg | None
    sample: Arg | None = None

    def args(self) -> tuple[Arg | None, ...]:
        """Every argument, in the order identities digest them."""
        return (*self.axes, self.weight, self.sample)


@dataclass(frozen=True)
class Target:
    """One histogram of a compute, and where its keys lie in its key space."""

    path: str
    schema: Schema
    layout: Layout
    space: int
    offset: int

    @property
    def key_range(self) -> tuple[int, int]:
        """The histogram's keys in its key space."""
        return self.offset, self.offset + self.layout.n_keys


#: What a dry fill task (``Hist.pending``) finds: ``(fill index, identity)``.
Added = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class FillTask:
    """Everything a fill task needs apart from the partition data.

    Attributes
    ----------
    targets
        The histograms of the compute.
    fills
        ``(target index, fill)`` for every queued fill that reads this
        partition.
    space_sizes
        Number of keys of each key space.
    dense
        The ``dask_hizt.dense-fraction`` setting, captured with the graph.
    dry
        Only tell what would go in (``Hist.pending``): fill nothing, and
        report ``(fill index, identity)`` pairs instead of targets.
    """

    targets: tuple[Target, ...]
    fills: tuple[tuple[int, FillSpec], ...]
    space_sizes: tuple[int, ...]
    dense: float
    dry: bool = False

    def __call__(
        self, inputs: Inputs, info: PartitionInfo
    ) -> tuple[Partial, ...] | tuple[Added]:
        """Fill the queued fills from one partition's inputs.

        Returns one partial per key space, each recording (``inputs``) the
        ``(target, identity)`` of every fill that went in. A fill whose
        identity is in ``info.committed`` (or listed in ``info.skip``) is
        left out.
        """
        per_space: list[list[Partial]] = [[] for _ in self.space_sizes]
        # Inputs that can be dropped (see _lazy) are released after their last reader.
        release = getattr(inputs, "release", None)
        readers = [_slots(spec) for _, spec in self.fills]
        left = Counter(i for slots in readers for i in slots)
        if _on_typetracers(inputs, left):
            return self._mock(inputs, left)
        where = info.where
        shared = None
        if not self.dry:
            shared = _shared_fill.SharedFill(self.targets, self._sharing, self.dense)
        flat: dict[frozenset[int], Inputs] = {}
        digests: dict[tuple[Hashable, int, int | None], str] = {}
        seen: Counter[tuple[int, str]] = Counter()
        added: list[tuple[int, str]] = []
        for j, ((t, spec), slots) in enumerate(zip(self.fills, readers, strict=True)):
            if j not in info.skip:
                target = self.targets[t]
                key = frozenset(slots)
                if key not in flat:
                    flat[key] = _flatten_awkward(inputs, slots, where)
                args = _arguments(target.schema, spec, flat[key], where)
                # Fills whose flat inputs do not depend on each other share digests and keys.
                scope = _shared_fill.context(inputs, slots)
                given = info.given[j]
                if given is None:
                    parts = [
                        _digest(a, spec_arg, scope, digests)
                        for a, spec_arg in zip(
                            args.digested(), spec.args(), strict=True
                        )
                    ]
                    base = content_id(where, parts)
                    identity = content_id(where, parts, seen[(t, base)])
                    seen[(t, base)] += 1
                else:
                    identity = given
                if self.dry:
                    if (t, identity) not in info.committed:
                        added.append((j, identity))
                elif (t, identity) not in info.committed:
                    if shared is not None and shared.takes(j):
                        shared.add(j, t, args, scope)
                    else:
                        part = _fill(target.schema, target.layout, args, self.dense)
                        per_space[target.space].append(part.shifted(target.offset))
                    added.append((t, identity))
            if shared is not None:
                shared.done(j)
            for i in slots:
                left[i] -= 1
                if release is not None and left[i] == 0:
                    release(i)
        if self.dry:
            return (tuple(added),)
        if shared is not None:
            for t, part in shared.partials():
                target = self.targets[t]
                per_space[target.space].append(part.shifted(target.offset))
        went_in = frozenset(added)
        return tuple(
            (
                combine(parts, 0, n_keys, self.dense)
                if parts
                else self._empty(space, n_keys)
            ).with_inputs(went_in)
            for space, (parts, n_keys) in enumerate(
                zip(per_space, self.space_sizes, strict=True)
            )
        )

    @functools.cached_property
    def _sharing(self) -> _shared_fill.Sharing:
        """Which fills share their bin work (the same in every partition)."""
        return _shared_fill.Sharing.plan(self.targets, self.fills)

    def _mock(self, inputs: Inputs, used: Mapping[int, int]) -> tuple[Partial, ...]:
        """dask-awkward's optimizer runs partition 0 on typetracers to learn
        which columns are needed: touch what the fills read, fill nothing."""
        from awkward.typetracer import touch_data  # noqa: PLC0415 - optional

        for i in used:
            touch_data(inputs[i])
        return tuple(self._empty(space, n) for space, n in enumerate(self.space_sizes))

    def _empty(self, space: int, n_keys: int) -> Partial:
        schema = next(t.schema for t in self.targets if t.space == space)
        dtypes = [schema.dtype] * len(schema.spec.fields)
        return empty(0, n_keys, dtypes, schema.spec.algebra)


def _digest(
    value: Any,
    arg: Arg | None,
    scope: Hashable,
    cache: dict[tuple[Hashable, int, int | None], str],
) -> str:
    """The digest of one argument; an input read by several fills is digested
    once (per ``scope``, see :func:`dask_hizt._shared_fill.context`)."""
    if arg is None or arg.index is None or not isinstance(value, np.ndarray):
        return content_digest([value])
    key = (scope, arg.index, arg.part)
    found = cache.get(key)
    if found is None:
        found = cache[key] = array_digest(value)
    return found


def _is_awkward(x: Any) -> bool:
    return type(x).__module__.startswith("awkward")


def _on_typetracers(inputs: Inputs, used: Mapping[int, int]) -> bool:
    first = next(iter(used), None)
    if first is None or not _is_awkward(inputs[first]):
        return False
    import awkward as ak  # noqa: PLC0415 - optional dependency

    return bool(ak.backend(inputs[first]) == "typetracer")


class _Flat:
    """A fill's awkward inputs broadcast against each other and flattened."""

    def __init__(self, inputs: Inputs, flat: Mapping[int, Any]) -> None:
        self.inputs = inputs
        self.flat = flat

    def __getitem__(self, i: int, /) -> Any:
        return self.flat[i] if i in self.flat else self.inputs[i]


def _flatten_awkward(inputs: Inputs, slots: set[int], partition: str) -> Inputs:
    """A fill's awkward inputs, flattened (see :func:`flatten_arguments`)."""
    order = sorted(slots)
    if not any(_is_awkward(inputs[i]) for i in order):
        return inputs
    flat = flatten_arguments([inputs[i] for i in order], f"partition {partition}")
    return _Flat(inputs, dict(zip(order, flat, strict=True)))


def flatten_arguments(values: Sequence[Any], where: str) -> list[Any]:
    """Awkward arguments of one fill as NumPy arrays; others as they are.

    Jagged arguments are flattened, and per-event ones (a weight) repeated for
    each of their entries, as ``ak.flatten(ak.broadcast_arrays(...))``.
    """
    found = [i for i, v in enumerate(values) if _is_awkward(v)]
    if not found:
        return list(values)
    import awkward as ak  # noqa: PLC0415 - optional dependency

    arrays = [values[i] for i in found]
    if any(a.ndim > 1 for a in arrays):
        try:
            arrays = ak.broadcast_arrays(*arrays)
        except ValueError as err:
            msg = f"jagged fill arguments do not broadcast against each other in {where}: {err}"
            raise FillError(msg) from err
        arrays = [ak.flatten(a, axis=None) for a in arrays]
    out = list(values)
    for i, a in zip(found, arrays, strict=True):
        out[i] = ak.to_numpy(a)
    return out


def _slots(spec: FillSpec) -> set[int]:
    args = (*spec.axes, spec.weight, spec.sample)
    return {a.index for a in args if a is not None and a.index is not None}


def _as_1d(obj: Any, what: str, partition: str) -> npt.NDArray[Any]:
    arr = np.asarray(obj)
    if arr.ndim != 1:
        msg = f"{what} must be one-dimensional, got shape {arr.shape} in partition {partition}"
        raise FillError(msg)
    return arr


def _check_dtype(spec: AxisSpec, values: npt.NDArray[Any], name: str) -> None:
    """Refuse values an axis cannot take, with an error that names the axis."""
    kind = spec.kind
    if kind is AxisKind.INT_CATEGORY and values.dtype.kind not in "iub":
        msg = f"axis {name!r} is an IntCategory axis and needs integers, got dtype {values.dtype}"
        raise FillError(msg)
    if kind is AxisKind.STR_CATEGORY and values.dtype.kind not in "OUST":
        msg = f"axis {name!r} is a StrCategory axis and needs strings, got dtype {values.dtype}"
        raise FillError(msg)
    if not spec.is_category and values.dtype.kind not in "iufb":
        msg = f"axis {name!r} is numeric and cannot be filled with values of dtype {values.dtype}"
        raise FillError(msg)
    if kind is AxisKind.INTEGER and values.dtype.kind == "f":
        msg = f"axis {name!r} is an Integer axis and needs integer values, got dtype {values.dtype}"
        raise FillError(msg)


def _axis_indices(
    axis: Any, spec: AxisSpec, values: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_] | None]:
    """Per-entry bin index (flow bins counted) and the mask of entries that land in a bin."""
    if spec.is_category:
        idx = pd.Index(list(spec.categories)).get_indexer(values)
        missing = idx < 0
        if not missing.any():
            return idx, None
        if spec.growth:
            # The compute added every value to the axis before filling: a
            # missing one would be dropped silently, so refuse instead.
            msg = f"value {values[missing][0]!r} is not a category of the growing axis"
            raise FillError(msg)
        if spec.overflow:
            idx[missing] = len(spec.categories)
            return idx, None
        return idx, ~missing
    if spec.kind is AxisKind.BOOLEAN:
        return values.astype(bool).astype(np.intp), None
    idx = np.asarray(axis.index(values), dtype=np.intp)
    if axis.traits.underflow:
        idx += 1
    ok = (idx >= 0) & (idx < axis.extent)
    return idx, (None if ok.all() else ok)


@dataclass(frozen=True)
class _Arguments:
    """One fill's arguments for one partition, checked: per axis a 1-D array
    or a broadcast scalar, then the weight and the sample (``None``, a float
    or a float64 array), and the number of entries."""

    values: list[Any]
    weight: Any
    sample: Any
    n: int

    def digested(self) -> list[Any]:
        """The arguments in :meth:`FillSpec.args` order."""
        return [*self.values, self.weight, self.sample]


def _arguments(
    schema: Schema, spec: FillSpec, inputs: Inputs, partition: str
) -> _Arguments:
    names = [n or f"#{i}" for i, n in enumerate(schema.names)]
    values: list[Any] = []
    lengths: dict[str, int] = {}
    for name, arg, ax_spec in zip(names, spec.axes, schema.axes, strict=True):
        if arg.index is None:
            _check_dtype(ax_spec, np.asarray([arg.value]), name)
            values.append(arg.value)
        else:
            arr = _as_1d(arg.take(inputs), f"axis {name!r}", partition)
            _check_dtype(ax_spec, arr, name)
            values.append(arr)
            lengths[name] = len(arr)
    weight = _numbers(spec.weight, inputs, "weight", partition, lengths)
    sample = _numbers(spec.sample, inputs, "sample", partition, lengths)
    if len(set(lengths.values())) > 1:
        msg = (
            f"fill arguments have different lengths in partition {partition}: {lengths}"
        )
        raise FillError(msg)
    n = next(iter(lengths.values())) if lengths else 1
    return _Arguments(values, weight, sample, n)


def _fill(schema: Schema, layout: Layout, args: _Arguments, dense: float) -> Partial:
    if args.n >= dense * layout.n_keys:
        return _fill_dense(schema, layout, args.values, args.weight, args.sample, dense)
    return _fill_sparse(
        schema, layout, args.values, args.weight, args.sample, args.n, dense
    )


def _numbers(
    arg: Arg | None,
    inputs: Inputs,
    what: str,
    partition: str,
    lengths: dict[str, int],
) -> Any:
    """A weight or sample: ``None``, a broadcast float, or a float64 array."""
    if arg is None:
        return None
    if arg.index is None:
        return float(arg.value)
    arr = _as_1d(arg.take(inputs), what, partition)
    if arr.dtype.kind not in "iufb":
        msg = f"{what} must be numeric, got dtype {arr.dtype}"
        raise FillError(msg)
    lengths[what] = len(arr)
    return arr.astype(np.float64, copy=False)


def _fill_dense(
    schema: Schema,
    layout: Layout,
    values: list[Any],
    weight: Any,
    sample: Any,
    dense: float,
) -> Partial:
    """Many entries per bin: boost-histogram's own fill, reordered into keys."""
    h = schema.empty_boost()
    h.fill(*values, weight=weight, sample=sample)
    view: Any = h.view(flow=True)
    chunk_major = tuple(layout.chunk_major(d) for d in schema.spec.unpack(view))
    return finish(0, layout.n_keys, chunk_major, schema.spec.algebra, dense)


def _fill_sparse(
    schema: Schema,
    layout: Layout,
    values: list[Any],
    weight: Any,
    sample: Any,
    n: int,
    dense: float,
) -> Partial:
    """Few entries per bin: per-entry keys, merged by sorting."""
    dtypes = [schema.dtype] * len(schema.spec.fields)
    algebra = schema.spec.algebra
    indices: list[npt.NDArray[np.intp]] = []
    mask: npt.NDArray[np.bool_] | None = None
    for axis, ax_spec, v in zip(schema.shared_axes, schema.axes, values, strict=True):
        if isinstance(v, np.ndarray):
            idx, ok = _axis_indices(axis, ax_spec, v)
        else:
            one, ok1 = _axis_indices(axis, ax_spec, np.asarray([v]))
            if ok1 is not None and not ok1[0]:
                # The scalar lands in no bin (no flow bin to take it): nothing is counted.
                return empty(0, layout.n_keys, dtypes, algebra)
            idx, ok = np.full(n, one[0], dtype=np.intp), None
        indices.append(idx)
        if ok is not None:
            mask = ok if mask is None else mask & ok
    w = np.full(n, weight) if isinstance(weight, float) else weight
    s = np.full(n, sample) if isinstance(sample, float) else sample
    if mask is not None:
        indices = [i[mask] for i in indices]
        w = None if w is None else w[mask]
        s = None if s is None else s[mask]
    keys = layout.keys(indices)
    fields = algebra.entries(w, s)
    return from_entries(0, layout.n_keys, keys, fields, dtypes, algebra, dense)
