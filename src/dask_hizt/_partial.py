"""Partial histograms: the sums of some entries over a range of bin keys.

A :class:`Partial` covers the keys ``[lo, hi)`` (see :mod:`dask_hizt.layout`)
and is either dense (one value per key) or sparse (sorted unique keys and
their values). Its form follows its density, so a partition that scatters a
million entries over a billion bins carries a million pairs, and one that
fills a small histogram carries a small dense block.

Counts (the fields of unweighted sums) travel in the narrowest unsigned
integer type that holds them: a sparse partial of a large histogram is
mostly ones, and 1 byte per count instead of 8 makes it 9 bytes per entry
instead of 16 (the routed partials are what fills a worker's memory).
Merges add them up in ``int64`` and narrow the result again; merged into a
stored chunk they take the chunk's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt
from dask.sizeof import sizeof

from ._algebra import SUM, Algebra

__all__ = ["Partial", "combine", "dense_fraction", "empty", "finish", "from_entries"]

Array = npt.NDArray[Any]

_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def _narrow(counts: Array) -> Array:
    """Non-negative integer counts in the narrowest unsigned type holding them."""
    top = int(counts.max(initial=0))
    for dt in _NARROW:
        if top <= np.iinfo(dt).max:
            return counts.astype(dt, copy=False)
    return counts.astype(np.int64, copy=False)


def _is_narrow(dt: Any) -> bool:
    return np.dtype(dt) in _NARROW


def _wide(dt: Any) -> np.dtype[Any]:
    """The type in which values of ``dt`` are added up (narrow counts: int64)."""
    return np.dtype(np.int64) if _is_narrow(dt) else np.dtype(dt)


@dataclass(frozen=True)
class Partial:
    """Sums over the bin keys ``[lo, hi)``.

    Attributes
    ----------
    lo, hi
        Key range covered.
    keys
        Sorted unique keys of the filled bins, or ``None`` when dense.
    fields
        One array per storage field: values at ``keys``, or ``hi - lo``
        values when dense.
    algebra
        How the fields of two partials add up.
    inputs
        ``(target, partition identity)`` of every fill whose entries are in
        these sums: they travel with the partials to the owners, and from
        the owners to the commit that records them (no task of their own).
    """

    lo: int
    hi: int
    keys: npt.NDArray[np.int64] | None
    fields: tuple[Array, ...]
    algebra: Algebra = SUM
    inputs: frozenset[tuple[int, str]] = frozenset()

    def with_inputs(self, inputs: frozenset[tuple[int, str]]) -> Partial:
        """The same sums, recording ``inputs``."""
        return dataclasses.replace(self, inputs=inputs) if inputs else self

    @property
    def dense(self) -> bool:
        """Whether every key of the range has a value."""
        return self.keys is None

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        extra = 0 if self.keys is None else self.keys.nbytes
        return extra + sum(f.nbytes for f in self.fields)

    def __len__(self) -> int:
        return len(self.fields[0])

    def restrict(self, lo: int, hi: int) -> Partial:
        """The part of this partial inside ``[lo, hi)`` (views, no copies).

        A sparse result covers exactly ``[lo, hi)``; a dense one only the part
        of it that this partial covers.
        """
        hi = max(lo, hi)
        if self.keys is not None:
            a, b = np.searchsorted(self.keys, (lo, hi))
            return Partial(
                lo,
                hi,
                self.keys[a:b],
                tuple(f[a:b] for f in self.fields),
                self.algebra,
                self.inputs,
            )
        clo, chi = max(lo, self.lo), min(hi, self.hi)
        if chi <= clo:
            out = empty(lo, hi, [f.dtype for f in self.fields], self.algebra)
            return out.with_inputs(self.inputs)
        sl = slice(clo - self.lo, chi - self.lo)
        return Partial(
            clo, chi, None, tuple(f[sl] for f in self.fields), self.algebra, self.inputs
        )

    def shifted(self, offset: int) -> Partial:
        """The same sums, ``offset`` keys further on."""
        keys = None if self.keys is None else self.keys + offset
        return Partial(
            self.lo + offset,
            self.hi + offset,
            keys,
            self.fields,
            self.algebra,
            self.inputs,
        )

    def to_dense(self) -> tuple[Array, ...]:
        """Dense field arrays of length ``hi - lo`` (empty bins are zero)."""
        if self.keys is None:
            return self.fields
        out = tuple(np.zeros(self.hi - self.lo, dtype=f.dtype) for f in self.fields)
        for o, f in zip(out, self.fields, strict=True):
            o[self.keys - self.lo] = f
        return out


def empty(lo: int, hi: int, dtypes: Sequence[Any], algebra: Algebra = SUM) -> Partial:
    """A partial over ``[lo, hi)`` with no filled bins."""
    fields = tuple(np.empty(0, dtype=d) for d in dtypes)
    return Partial(lo, hi, np.empty(0, dtype=np.int64), fields, algebra)


def dense_fraction() -> float:
    """``dask_hizt.dense-fraction``: how full a key range must be to stay dense.

    Read where a graph is built; tasks are given the value (a setting made on
    the client does not reach the workers of a cluster).
    """
    return float(dask.config.get("dask_hizt.dense-fraction"))


def finish(
    lo: int,
    hi: int,
    fields: tuple[Array, ...],
    algebra: Algebra = SUM,
    dense: float | None = None,
) -> Partial:
    """A partial from dense sums: kept dense, or dropped to pairs when mostly
    empty (fewer than ``dense`` of the keys filled; default
    :func:`dense_fraction`)."""
    filled = np.zeros(hi - lo, dtype=bool)
    for f in fields:
        filled |= f != 0
    n = int(np.count_nonzero(filled))
    if n >= (dense_fraction() if dense is None else dense) * (hi - lo):
        return Partial(lo, hi, None, fields, algebra)
    keys = np.flatnonzero(filled).astype(np.int64)
    return Partial(lo, hi, keys + lo, tuple(f[keys] for f in fields), algebra)


def from_entries(
    lo: int,
    hi: int,
    keys: npt.NDArray[np.int64],
    fields: Sequence[Array | None],
    dtypes: Sequence[Any],
    algebra: Algebra = SUM,
    dense: float | None = None,
) -> Partial:
    """Merge per-entry contributions into a partial.

    Parameters
    ----------
    lo, hi
        Key range of the result; every key must lie inside it.
    keys
        Key of each entry (any order, repeats allowed).
    fields
        Per field, the contribution of each entry; ``None`` stands for 1
        (sum storages only).
    dtypes
        dtype of each field; counts (a ``None`` field, or a narrow unsigned
        one) of a sum come out narrow (see the module's docstring).
    algebra
        How contributions merge.
    dense
        The dense fraction (see :func:`finish`).
    """
    n_keys = hi - lo
    dense = dense_fraction() if dense is None else dense
    if not algebra.mean and len(keys) >= dense * n_keys:
        # Many entries per bin: a bincount over the whole range is O(entries + bins).
        local = keys - lo if lo else keys
        counts = [w is None or _is_narrow(w.dtype) for w in fields]
        sums = tuple(
            np.bincount(local, weights=w, minlength=n_keys).astype(
                np.int64 if c else dt, copy=False
            )
            for w, dt, c in zip(fields, dtypes, counts, strict=True)
        )
        part = finish(lo, hi, sums, algebra, dense)
        if part.keys is None or not any(counts):
            return part
        narrowed = (
            _narrow(f) if c else f for f, c in zip(part.fields, counts, strict=True)
        )
        return Partial(lo, hi, part.keys, tuple(narrowed), algebra)
    # Sorting the keys alone is several times faster than an argsort; only
    # fields with per-entry values need the permutation.
    weighted = any(f is not None for f in fields)
    order = np.argsort(keys) if weighted else None
    skeys = keys[order] if order is not None else np.sort(keys)
    if not len(skeys):
        return empty(lo, hi, dtypes, algebra)
    starts = np.flatnonzero(np.r_[True, skeys[1:] != skeys[:-1]])
    if algebra.mean:
        merged = algebra.reduce_groups(
            tuple(f[order] for f in fields if f is not None), starts
        )
        return Partial(lo, hi, skeys[starts], merged, algebra)
    out = []
    for w, dt in zip(fields, dtypes, strict=True):
        if w is None:
            out.append(_narrow(np.diff(np.r_[starts, len(skeys)])))
        elif _is_narrow(w.dtype):
            out.append(_narrow(np.add.reduceat(w[order], starts, dtype=np.int64)))
        else:
            out.append(np.add.reduceat(w[order], starts).astype(dt, copy=False))
    return Partial(lo, hi, skeys[starts], tuple(out), algebra)


def combine(
    partials: Sequence[Partial], lo: int, hi: int, dense: float | None = None
) -> Partial:
    """Merge the parts of ``partials`` that fall in ``[lo, hi)``.

    The result is dense when the inputs fill at least ``dense`` of the range
    (default :func:`dense_fraction`), and sorted unique pairs otherwise.
    """
    parts = [p.restrict(lo, hi) for p in partials]
    if len(parts) == 1 and (parts[0].lo, parts[0].hi) == (lo, hi):
        return parts[0]
    inputs = frozenset().union(*(p.inputs for p in parts))
    return _combine(parts, lo, hi, dense).with_inputs(inputs)


def _combine(
    parts: Sequence[Partial], lo: int, hi: int, dense: float | None
) -> Partial:
    algebra = parts[0].algebra
    n_keys = hi - lo
    total = sum(len(p) for p in parts)
    dense = dense_fraction() if dense is None else dense
    if any(p.dense for p in parts) or total >= dense * n_keys:
        out = tuple(
            np.zeros(n_keys, dtype=_wide(np.result_type(*(p.fields[i] for p in parts))))
            for i in range(len(parts[0].fields))
        )
        for p in parts:
            if p.keys is None:
                algebra.merge_into(
                    tuple(o[p.lo - lo : p.hi - lo] for o in out), p.fields
                )
            else:
                # Keys are unique within one partial: one gather, merge, scatter.
                local = p.keys - lo
                merged = algebra.merge(tuple(o[local] for o in out), p.fields)
                for o, m in zip(out, merged, strict=True):
                    o[local] = m
        return finish(lo, hi, out, algebra, dense)
    keys = np.concatenate([p.keys for p in parts if p.keys is not None])
    n_fields = len(parts[0].fields)
    values = [np.concatenate([p.fields[i] for p in parts]) for i in range(n_fields)]
    return from_entries(lo, hi, keys, values, [v.dtype for v in values], algebra, dense)


# Registered on import: every process that holds a Partial has unpickled this
# module, so distributed's memory accounting sees the arrays' real size.
@sizeof.register(Partial)  # type: ignore[untyped-decorator]
def _sizeof_partial(p: Partial) -> int:
    return p.nbytes + 64 + 100 * len(p.inputs)
