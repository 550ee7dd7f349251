"""Partial histograms: the sums of some entries over a range of bin keys.

A :class:`Partial` covers the keys ``[lo, hi)`` (see :mod:`dask_hizt.layout`)
and is either dense (one value per key) or sparse (sorted unique keys and
their values). Its form follows its density, so a partition that scatters a
million entries over a billion bins carries a million pairs, and one that
fills a small histogram carries a small dense block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt
from dask.sizeof import sizeof

__all__ = ["Partial", "combine", "dense_fraction", "empty", "finish", "from_entries"]

Array = npt.NDArray[Any]


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
    """

    lo: int
    hi: int
    keys: npt.NDArray[np.int64] | None
    fields: tuple[Array, ...]

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
        """The part of this partial inside ``[lo, hi)`` (views, no copies)."""
        lo, hi = max(lo, self.lo), min(hi, self.hi)
        if hi <= lo:
            return empty(lo, max(lo, hi), [f.dtype for f in self.fields])
        if self.keys is None:
            sl = slice(lo - self.lo, hi - self.lo)
            return Partial(lo, hi, None, tuple(f[sl] for f in self.fields))
        a, b = np.searchsorted(self.keys, (lo, hi))
        return Partial(lo, hi, self.keys[a:b], tuple(f[a:b] for f in self.fields))

    def to_dense(self) -> tuple[Array, ...]:
        """Dense field arrays of length ``hi - lo``."""
        if self.keys is None:
            return self.fields
        out = tuple(np.zeros(self.hi - self.lo, dtype=f.dtype) for f in self.fields)
        for o, f in zip(out, self.fields, strict=True):
            o[self.keys - self.lo] = f
        return out


def empty(lo: int, hi: int, dtypes: Sequence[Any]) -> Partial:
    """A partial over ``[lo, hi)`` with no filled bins."""
    return Partial(
        lo, hi, np.empty(0, dtype=np.int64), tuple(np.empty(0, dtype=d) for d in dtypes)
    )


def dense_fraction() -> float:
    """``dask_hizt.dense-fraction``: how full a key range must be to stay dense."""
    return float(dask.config.get("dask_hizt.dense-fraction"))


def finish(lo: int, hi: int, fields: tuple[Array, ...]) -> Partial:
    """A partial from dense sums: kept dense, or dropped to pairs when mostly empty."""
    filled = np.zeros(hi - lo, dtype=bool)
    for f in fields:
        filled |= f != 0
    n = int(np.count_nonzero(filled))
    if n >= dense_fraction() * (hi - lo):
        return Partial(lo, hi, None, fields)
    keys = np.flatnonzero(filled).astype(np.int64)
    return Partial(lo, hi, keys + lo, tuple(f[keys] for f in fields))


def from_entries(
    lo: int,
    hi: int,
    keys: npt.NDArray[np.int64],
    weights: Sequence[Array | None],
    dtypes: Sequence[Any],
) -> Partial:
    """Sum per-entry contributions into a partial.

    Parameters
    ----------
    lo, hi
        Key range of the result; every key must lie inside it.
    keys
        Key of each entry (any order, repeats allowed).
    weights
        Per field, the contribution of each entry, or ``None`` for 1.
    dtypes
        dtype of each field.
    """
    n_keys = hi - lo
    if len(keys) >= dense_fraction() * n_keys:
        # Many entries per bin: a bincount over the whole range is O(entries + bins).
        local = keys - lo if lo else keys
        fields = tuple(
            np.bincount(local, weights=w, minlength=n_keys).astype(dt, copy=False)
            for w, dt in zip(weights, dtypes, strict=True)
        )
        return finish(lo, hi, fields)
    # Sorting the keys alone is several times faster than an argsort; only
    # weighted fields need the permutation.
    weighted = any(w is not None for w in weights)
    order = np.argsort(keys) if weighted else None
    skeys = keys[order] if order is not None else np.sort(keys)
    if len(skeys):
        starts = np.flatnonzero(np.r_[True, skeys[1:] != skeys[:-1]])
    else:
        starts = np.empty(0, dtype=np.intp)
    out = []
    for w, dt in zip(weights, dtypes, strict=True):
        if w is None:
            counts = np.diff(np.r_[starts, len(skeys)])
            out.append(counts.astype(dt))
        elif len(starts):
            out.append(np.add.reduceat(w[order], starts).astype(dt, copy=False))
        else:
            out.append(np.empty(0, dt))
    return Partial(lo, hi, skeys[starts], tuple(out))


def combine(partials: Sequence[Partial], lo: int, hi: int) -> Partial:
    """Sum the parts of ``partials`` that fall in ``[lo, hi)``.

    The result is dense when the inputs fill enough of the range, and sorted
    unique pairs otherwise.
    """
    parts = [p.restrict(lo, hi) for p in partials]
    if len(parts) == 1:
        return parts[0]
    n_keys = hi - lo
    total = sum(len(p) for p in parts)
    if any(p.dense for p in parts) or total >= dense_fraction() * n_keys:
        out = tuple(np.zeros(n_keys, dtype=f.dtype) for f in parts[0].fields)
        for p in parts:
            if p.keys is None:
                for o, f in zip(out, p.fields, strict=True):
                    np.add(o, f, out=o)
            else:
                local = p.keys - lo
                # Keys are unique within one partial, so fancy-index add is exact.
                for o, f in zip(out, p.fields, strict=True):
                    o[local] += f
        return finish(lo, hi, out)
    keys = np.concatenate([p.keys for p in parts if p.keys is not None])
    n_fields = len(parts[0].fields)
    values = [np.concatenate([p.fields[i] for p in parts]) for i in range(n_fields)]
    return from_entries(lo, hi, keys, values, [v.dtype for v in values])


# Registered on import: every process that holds a Partial has unpickled this
# module, so distributed's memory accounting sees the arrays' real size.
@sizeof.register(Partial)  # type: ignore[untyped-decorator]
def _sizeof_partial(p: Partial) -> int:
    return p.nbytes + 64
