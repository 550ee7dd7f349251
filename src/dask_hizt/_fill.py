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
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _shared_fill
from ._arguments import (
    Arg,
    Arguments,
    FillSpec,
    Inputs,
    Target,
    arguments,
    axis_indices,
    is_awkward_part,
)
from ._identity import PartitionInfo, array_digest, content_digest, content_id
from ._partial import Partial, combine, empty, finish, from_entries
from .errors import FillError
from .layout import Layout
from .schema import Schema

__all__ = [
    "Added",
    "Arg",
    "FillSpec",
    "FillTask",
    "Inputs",
    "Target",
    "flatten_arguments",
]


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
                args = arguments(target.schema, spec, flat[key], where)
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


def _on_typetracers(inputs: Inputs, used: Mapping[int, int]) -> bool:
    first = next(iter(used), None)
    if first is None or not is_awkward_part(inputs[first]):
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
    if not any(is_awkward_part(inputs[i]) for i in order):
        return inputs
    flat = flatten_arguments([inputs[i] for i in order], f"partition {partition}")
    return _Flat(inputs, dict(zip(order, flat, strict=True)))


def flatten_arguments(values: Sequence[Any], where: str) -> list[Any]:
    """Awkward arguments of one fill as NumPy arrays; others as they are.

    Jagged arguments are flattened, and per-event ones (a weight) repeated for
    each of their entries, as ``ak.flatten(ak.broadcast_arrays(...))``.
    """
    found = [i for i, v in enumerate(values) if is_awkward_part(v)]
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


def _fill(schema: Schema, layout: Layout, args: Arguments, dense: float) -> Partial:
    if args.n >= dense * layout.n_keys:
        return _fill_dense(schema, layout, args.values, args.weight, args.sample, dense)
    return _fill_sparse(
        schema, layout, args.values, args.weight, args.sample, args.n, dense
    )


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
            idx, ok = axis_indices(axis, ax_spec, v)
        else:
            one, ok1 = axis_indices(axis, ax_spec, np.asarray([v]))
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
