"""Fill work shared between the fills of one fill task.

An analysis fills the same observable once per systematic weight variation
(tens to hundreds of times), and bins the same column the same way in many
histograms. Filled one by one, every such fill finds the bin of every entry
again. Here, fills that bin the same input arrays along equal axes of
equal layouts share one array of per-entry keys (and the mask of entries
that land in a bin); each fill then only adds its weights at those keys:

- a scalar argument (``syst="up"``) only moves every key by a constant, so
  fills that differ in their scalar category values share keys too;
- a histogram filled densely (many entries per bin) sums into one dense
  accumulator per histogram: counts are one ``bincount`` per set of keys,
  weights one in-order pass per fill (compiled with numba where it is
  installed, ``np.add.at`` otherwise), so bins sum in the order
  boost-histogram sums them;
- a histogram filled sparsely sorts the shared keys once; each fill then
  gathers its weights in that order and sums the runs (``reduceat``).

Equal axes are recognised by their binning (type, edges or categories, flow
and growth traits, transform), not by name, so ``pt`` binned alike in ten
histograms is binned once. Fills of Mean and WeightedMean storages, fills of
Int64 storage with weights, fills with no array along any axis, and fills
that share nothing with another fill of the task take the per-fill path of
:mod:`dask_hizt._fill`.

The caches are per fill task call, and an entry is dropped after the last
fill that can use it, so a task keeps no more key arrays alive than the
fills still to come need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boost_histogram as bh
import numpy as np
import numpy.typing as npt

from ._algebra import SUM
from ._arguments import (
    Arguments,
    FillSpec,
    Inputs,
    Target,
    axis_indices,
    is_awkward_part,
)
from ._partial import Partial, _narrow, finish
from .layout import Layout

__all__ = ["SharedFill", "Sharing", "bin_key", "context", "numba_kernel"]

Array = npt.NDArray[Any]

#: Storages whose fills can share keys: every field is a plain sum.
_SUMS = (bh.storage.Double, bh.storage.Int64, bh.storage.Weight)

#: Whether to use the compiled loops where numba is installed (tests turn
#: it off to check the NumPy fallback against it).
use_numba = True
#: Entries times weighted fills from which a fill task loads the compiled
#: loops. Their first load in a process costs 0.5-1 s (numba's import and
#: its on-disk cache; benchmarks/README.md, "Fill kernel") and they save
#: about 1 ns per entry and weighted fill over ``np.add.at``: a task this
#: large repays much of it at once, and the later tasks of the process use
#: the loaded loops whatever their size. Smaller tasks (a fresh cluster's
#: first small compute) import nothing.
NUMBA_WORK = 2e8
_NOT_LOADED = object()
_numba: Any = _NOT_LOADED


def numba_kernel(work: float = float("inf")) -> ModuleType | None:
    """:mod:`dask_hizt._numba_kernel`, or ``None`` when numba is missing,
    :data:`use_numba` is off, or it is not loaded yet and ``work`` (entries
    times weighted fills) is below :data:`NUMBA_WORK`."""
    global _numba  # noqa: PLW0603 - one import per process
    if not use_numba or (_numba is _NOT_LOADED and work < NUMBA_WORK):
        return None
    if _numba is _NOT_LOADED:
        try:
            from . import _numba_kernel  # noqa: PLC0415 - optional, costly import
        except ImportError:
            _numba = None
        else:
            _numba = _numba_kernel
    return _numba  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Binning:
    """What decides the bin of a value along an axis (not its name or label)."""

    kind: type
    bins: tuple[Any, ...]
    traits: tuple[bool, ...]
    transform: str

    @classmethod
    def of(cls, axis: Any) -> Binning:
        """The binning of a boost-histogram (or hist) axis."""
        t = axis.traits
        if isinstance(axis, bh.axis.StrCategory | bh.axis.IntCategory):
            bins: tuple[Any, ...] = tuple(axis)
        else:
            bins = tuple(float(e) for e in axis.edges)
        flags = (t.underflow, t.overflow, t.circular, t.growth)
        return cls(type(axis), bins, flags, repr(getattr(axis, "transform", None)))


@dataclass(frozen=True)
class AxisInput:
    """One input array binned along one binning."""

    binning: Binning
    index: int
    part: int | None


@dataclass(frozen=True)
class KeyGroup:
    """What makes two fills' per-entry keys equal: the layout, and the input
    binned along each array axis (by axis position)."""

    layout: Layout
    axes: tuple[tuple[int, AxisInput], ...]


@dataclass(frozen=True)
class Sharing:
    """Which fills of a task take the shared path, and what they share.

    Key groups and axis inputs are numbered, so that the caches of a task
    call are looked up by small integers.

    Attributes
    ----------
    group_of
        Per fill index taking the shared path, the number of its key group.
    group_axes
        Per key group, ``(axis position, axis input number)`` of each array axis.
    inputs_of
        Per fill index taking the shared path, the axis inputs it bins.
    binnings
        Per target, the binning of each axis.
    weighted
        How many of these fills have a weight.
    """

    group_of: dict[int, int]
    group_axes: tuple[tuple[tuple[int, int], ...], ...]
    inputs_of: dict[int, tuple[int, ...]]
    binnings: dict[int, tuple[Binning, ...]]
    weighted: int = 0

    @classmethod
    def plan(
        cls, targets: Sequence[Target], fills: Sequence[tuple[int, FillSpec]]
    ) -> Sharing:
        """The fills that share keys or an axis input with another fill."""
        binnings: dict[int, tuple[Binning, ...]] = {}
        groups: dict[int, KeyGroup] = {}
        for j, (t, spec) in enumerate(fills):
            schema = targets[t].schema
            if (
                schema.storage not in _SUMS
                or spec.sample is not None
                or (schema.storage is bh.storage.Int64 and spec.weight is not None)
                or all(a.index is None for a in spec.axes)
            ):
                continue
            if t not in binnings:
                binnings[t] = tuple(Binning.of(ax) for ax in schema.shared_axes)
            axes = tuple(
                (p, AxisInput(binnings[t][p], a.index, a.part))
                for p, a in enumerate(spec.axes)
                if a.index is not None
            )
            groups[j] = KeyGroup(targets[t].layout, axes)
        per_group = Counter(groups.values())
        per_input = Counter(a for g in groups.values() for _, a in g.axes)
        shared = {
            j: g
            for j, g in groups.items()
            if per_group[g] > 1 or any(per_input[a] > 1 for _, a in g.axes)
        }
        group_ids: dict[KeyGroup, int] = {}
        input_ids: dict[AxisInput, int] = {}
        for g in shared.values():
            group_ids.setdefault(g, len(group_ids))
            for _, a in g.axes:
                input_ids.setdefault(a, len(input_ids))
        group_axes = tuple(
            tuple((p, input_ids[a]) for p, a in g.axes) for g in group_ids
        )
        return cls(
            {j: group_ids[g] for j, g in shared.items()},
            group_axes,
            {j: tuple(input_ids[a] for _, a in g.axes) for j, g in shared.items()},
            binnings,
            sum(fills[j][1].weight is not None for j in shared),
        )


def context(inputs: Inputs, slots: Iterable[int]) -> Hashable:
    """What else, beyond its slot, a fill's flattened input depends on.

    NumPy and pandas inputs, and one-dimensional awkward ones, flatten to the
    same array whatever the fill reads with them (``None``). Jagged awkward
    inputs are broadcast against the fill's other arguments first, so their
    flat form depends on all of the fill's slots.
    """
    found = [inputs[i] for i in slots]
    jagged = any(is_awkward_part(x) and x.ndim > 1 for x in found)
    return frozenset(slots) if jagged else None


class _Keys:
    """The per-entry keys of one key group, and what is derived from them
    on demand (each at most once)."""

    def __init__(self, keys: npt.NDArray[np.int64], mask: Array | None) -> None:
        self.keys = keys
        self.mask = mask
        self._compact: npt.NDArray[np.int64] | None = None
        self._marked: npt.NDArray[np.int64] | None = None
        self._counts: npt.NDArray[np.int64] | None = None
        self._sorted: tuple[Array, Array, npt.NDArray[np.int64], Array] | None = None

    @property
    def compact(self) -> npt.NDArray[np.int64]:
        """Keys of the entries that land in a bin."""
        if self._compact is None:
            self._compact = self.keys if self.mask is None else self.keys[self.mask]
        return self._compact

    @property
    def marked(self) -> npt.NDArray[np.int64]:
        """Keys of every entry, ``-1`` for entries that land in no bin."""
        if self._marked is None:
            self._marked = (
                np.where(self.mask, self.keys, -1)
                if self.mask is not None
                else self.keys
            )
        return self._marked

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Entries per key, from 0 to the largest key filled."""
        if self._counts is None:
            self._counts = np.bincount(self.compact).astype(np.int64, copy=False)
        return self._counts

    @property
    def sorted(self) -> tuple[Array, Array, npt.NDArray[np.int64], Array]:
        """``(take, starts, unique keys, narrow counts)``: ``w[take]`` puts
        the weights of the entries in a bin in key order, and runs of equal
        keys begin at ``starts``."""
        if self._sorted is None:
            compact = self.compact
            order = np.argsort(compact)
            skeys = compact[order]
            starts = (
                np.flatnonzero(np.r_[True, skeys[1:] != skeys[:-1]])
                if len(skeys)
                else np.empty(0, np.intp)
            )
            take = order if self.mask is None else np.flatnonzero(self.mask)[order]
            counts = _narrow(np.diff(np.r_[starts, len(skeys)]))
            self._sorted = (take, starts, skeys[starts], counts)
        return self._sorted


class SharedFill:
    """The shared fills of one fill task call.

    Fills are added one by one, in the task's order (their inputs may be
    released right after); :meth:`partials` gives the sums per histogram.
    """

    def __init__(
        self, targets: Sequence[Target], sharing: Sharing, dense: float
    ) -> None:
        self.targets = targets
        self.sharing = sharing
        self.dense = dense
        # Fills still to come per cached key group and axis input: a cache
        # entry is dropped when its count reaches zero.
        self._group_users = Counter(sharing.group_of.values())
        self._input_users = Counter(a for v in sharing.inputs_of.values() for a in v)
        self._keys: dict[tuple[int, Hashable], _Keys] = {}
        self._indices: dict[tuple[int, Hashable], tuple[Array, Array | None]] = {}
        self._categories: dict[Binning, dict[Any, int]] = {}
        self._dense_sums: dict[int, list[Array]] = {}
        self._sparse: list[tuple[int, Partial]] = []

    def takes(self, j: int) -> bool:
        """Whether fill ``j`` goes through :meth:`add`."""
        return j in self.sharing.group_of

    def add(self, j: int, t: int, args: Arguments, where: Hashable) -> None:
        """Add fill ``j`` into target ``t``; ``where`` is its :func:`context`."""
        target = self.targets[t]
        schema, layout = target.schema, target.layout
        shift = self._shift(t, args)
        if shift is None:
            return  # a scalar lands in no bin (no flow bin to take it): nothing counted
        keys = self._keys_of(self.sharing.group_of[j], where, target, args)
        weight = args.weight
        if isinstance(weight, float):
            weight = np.full(args.n, weight)
        storage = schema.storage
        if args.n >= self.dense * layout.n_keys:
            sums = self._dense_sums.get(t)
            if sums is None:
                n_fields = 2 if storage is bh.storage.Weight else 1
                sums = [np.zeros(layout.n_keys, schema.dtype) for _ in range(n_fields)]
                self._dense_sums[t] = sums
            work = args.n * self.sharing.weighted
            _add_dense(sums, keys, shift, weight, work)
            return
        take, starts, unique, counts = keys.sorted
        if not len(unique):
            return
        fields: tuple[Array, ...]
        if weight is None:
            fields = (counts,) * (2 if storage is bh.storage.Weight else 1)
        else:
            w = weight[take]
            value = np.add.reduceat(w, starts).astype(schema.dtype, copy=False)
            if storage is bh.storage.Weight:
                fields = (value, np.add.reduceat(w * w, starts))
            else:
                fields = (value,)
        part = Partial(0, layout.n_keys, unique + shift, fields, SUM)
        self._sparse.append((t, part))

    def done(self, j: int) -> None:
        """Fill ``j`` is past (filled or not): drop what no later fill uses."""
        group = self.sharing.group_of.get(j)
        if group is None:
            return
        self._group_users[group] -= 1
        if not self._group_users[group]:
            for kk in [kk for kk in self._keys if kk[0] == group]:
                del self._keys[kk]
        for a in self.sharing.inputs_of[j]:
            self._input_users[a] -= 1
            if not self._input_users[a]:
                for ka in [ka for ka in self._indices if ka[0] == a]:
                    del self._indices[ka]

    def partials(self) -> list[tuple[int, Partial]]:
        """``(target, partial)`` of everything added, over each target's keys."""
        out = [
            (t, finish(0, len(s[0]), tuple(s), SUM, self.dense))
            for t, s in self._dense_sums.items()
        ]
        return out + self._sparse

    def _shift(self, t: int, args: Arguments) -> int | None:
        """How far the fill's scalar arguments move its keys (``None``: no bin)."""
        target = self.targets[t]
        indices = []
        for p, v in enumerate(args.values):
            if isinstance(v, np.ndarray):
                indices.append(0)
                continue
            found = self._category(self.sharing.binnings[t][p], v)
            if found is not None:
                indices.append(found)
                continue
            idx, ok = _index(target, p, np.asarray([v]))
            if ok is not None and not ok[0]:
                return None
            indices.append(int(idx[0]))
        return bin_key(target.layout, indices)

    def _category(self, binning: Binning, value: Any) -> int | None:
        """The bin of a category among an axis' categories, found in a dict
        made once per axis (an index lookup per fill costs a millisecond).
        ``None`` for values the dict cannot decide (not a category: no bin,
        the flow bin or an error, as :func:`dask_hizt.axis_indices`
        says; or of a type the dict could confuse, such as ``True`` for 1)."""
        if issubclass(binning.kind, bh.axis.StrCategory):
            exact = type(value) is str
        elif issubclass(binning.kind, bh.axis.IntCategory):
            exact = type(value) is int
        else:
            return None
        if not exact:
            return None
        lookup = self._categories.get(binning)
        if lookup is None:
            lookup = {c: i for i, c in enumerate(binning.bins)}
            self._categories[binning] = lookup
        return lookup.get(value)

    def _keys_of(
        self, group: int, where: Hashable, target: Target, args: Arguments
    ) -> _Keys:
        found = self._keys.get((group, where))
        if found is not None:
            return found
        mask: Array | None = None
        on_axes = dict(self.sharing.group_axes[group])
        indices: list[Array] = []
        for p, v in enumerate(args.values):
            a = on_axes.get(p)
            if a is None:
                indices.append(np.zeros(args.n, np.intp))
                continue
            cached = self._indices.get((a, where))
            if cached is None:
                cached = self._indices[(a, where)] = _index(target, p, v)
            idx, ok = cached
            indices.append(idx)
            if ok is not None:
                mask = ok if mask is None else mask & ok
        # Every fill of the group has an equal layout: the target's will do.
        keys = _Keys(target.layout.keys(indices), mask)
        self._keys[(group, where)] = keys
        return keys


def bin_key(layout: Layout, indices: Sequence[int]) -> int:
    """:meth:`Layout.keys` of one bin, in Python integers (a fill's scalar
    arguments are one bin each; NumPy's per-call cost is ten times this)."""
    key = 0
    grid_stride = layout.chunk_size
    local_stride = 1
    for i, c, g in zip(
        reversed(indices), reversed(layout.chunks), reversed(layout.grid), strict=True
    ):
        chunk, local = divmod(i, c)
        key += chunk * grid_stride + local * local_stride
        grid_stride *= g
        local_stride *= c
    return key


def _index(target: Target, p: int, values: Array) -> tuple[Array, Array | None]:
    """Per-entry bin index along axis ``p`` and the mask of entries in a bin."""
    schema = target.schema
    return axis_indices(schema.shared_axes[p], schema.axes[p], values)


def _add_dense(
    sums: list[Array], keys: _Keys, shift: int, weight: Array | None, work: float
) -> None:
    """Add one fill's entries (keys moved by ``shift``) into dense sums;
    ``work`` is the task's, for :func:`numba_kernel`."""
    if weight is None:
        counts = keys.counts
        for s in sums:
            s[shift : shift + len(counts)] += counts
        return
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    kernel = numba_kernel(work)
    if kernel is not None:
        marked = np.ascontiguousarray(keys.marked)
        if len(sums) == 2:
            kernel.add_weights_squares(marked, shift, weight, sums[0], sums[1])
        else:
            kernel.add_weights(marked, shift, weight, sums[0])
        return
    compact = keys.compact
    w = weight if keys.mask is None else weight[keys.mask]
    # ``np.add.at`` adds in entry order, as boost-histogram does, and its
    # 1-D path is faster than a weighted bincount.
    np.add.at(sums[0][shift:], compact, w)
    if len(sums) == 2:
        np.add.at(sums[1][shift:], compact, w * w)
