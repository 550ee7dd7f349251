"""How the bins of each storage add up.

Sum storages (Double, Int64, Weight) add field by field. Mean storages keep
boost-histogram's fields (counts or sums of weights, the mean, and the sum
of squared deviations from it) and are merged with the pairwise formulas of
Chan, Golub and LeVeque, which keep the variance accurate where
sum-of-squares formulas would cancel. Removing a part from a total (needed
to replay our additions on top of a concurrent commit) runs them backwards.

Fields are tuples of equally shaped arrays, in the storage's field order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SUM", "Algebra", "for_storage", "samples"]

Array = npt.NDArray[Any]
Fields = tuple[Array, ...]


class Algebra:
    """Sum storages: every field adds."""

    mean = False

    def merge(self, a: Fields, b: Fields) -> Fields:
        """The bins of ``a`` and ``b`` together."""
        return tuple(x + y for x, y in zip(a, b, strict=True))

    def merge_into(self, out: Fields, part: Fields) -> None:
        """``out = merge(out, part)``, in place."""
        for o, f in zip(out, part, strict=True):
            np.add(o, f, out=o)

    def unmerge(self, total: Fields, part: Fields) -> Fields:
        """What ``total`` holds beyond ``part`` (``merge(part, result) == total``)."""
        return tuple(x - y for x, y in zip(total, part, strict=True))

    def reduce_groups(self, fields: Fields, starts: npt.NDArray[np.intp]) -> Fields:
        """Merge runs of consecutive elements; ``starts`` are where runs begin."""
        return tuple(np.add.reduceat(f, starts) for f in fields)


class _MeanAlgebra(Algebra):
    """Mean (count, mean, M2) and WeightedMean (W, W2, mean, M2).

    The first ``n_additive`` fields add; the first of them weights the mean.
    """

    mean = True

    def __init__(self, n_additive: int) -> None:
        self.n_additive = n_additive

    def _split(self, f: Fields) -> tuple[Fields, Array, Array, Array]:
        additive = f[: self.n_additive]
        return additive, additive[0], f[self.n_additive], f[self.n_additive + 1]

    def merge(self, a: Fields, b: Fields) -> Fields:
        add_a, wa, ma, qa = self._split(a)
        add_b, wb, mb, qb = self._split(b)
        w = wa + wb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - ma
            mean = np.where(w != 0, ma + delta * np.divide(wb, w), 0.0)
            q = qa + qb + np.where(w != 0, delta * delta * np.divide(wa * wb, w), 0.0)
        return (*(x + y for x, y in zip(add_a, add_b, strict=True)), mean, q)

    def merge_into(self, out: Fields, part: Fields) -> None:
        for o, m in zip(out, self.merge(out, part), strict=True):
            o[...] = m

    def unmerge(self, total: Fields, part: Fields) -> Fields:
        add_t, wt, mt, qt = self._split(total)
        add_p, wp, mp, qp = self._split(part)
        w = wt - wp
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(w != 0, (wt * mt - wp * mp) / w, 0.0)
            delta = mean - mp
            q = qt - qp - np.where(wt != 0, delta * delta * np.divide(wp * w, wt), 0.0)
        return (*(x - y for x, y in zip(add_t, add_p, strict=True)), mean, q)

    def reduce_groups(self, fields: Fields, starts: npt.NDArray[np.intp]) -> Fields:
        additive, w, m, q = self._split(fields)
        sums = tuple(np.add.reduceat(f, starts) for f in additive)
        wsum = sums[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(wsum != 0, np.add.reduceat(w * m, starts) / wsum, 0.0)
        # Spread each group's mean back over its members to measure deviations.
        lengths = np.diff(np.r_[starts, len(m)])
        dev = m - np.repeat(mean, lengths)
        q_sum = np.add.reduceat(q + w * dev * dev, starts)
        return (*sums, mean, q_sum)


SUM = Algebra()
_ALGEBRAS = {
    "mean": _MeanAlgebra(1),
    "weighted_mean": _MeanAlgebra(2),
}


def for_storage(uhi_type: str) -> Algebra:
    """The algebra of a storage, by its UHI storage type."""
    return _ALGEBRAS.get(uhi_type, SUM)


def samples(n_fields: int, weight: Array | None, sample: Array) -> Fields:
    """Per-entry fields of Mean/WeightedMean entries, ready for ``reduce_groups``."""
    zeros = np.zeros_like(sample, dtype=np.float64)
    if n_fields == 3:  # Mean: one count per entry
        return (np.ones_like(zeros), sample.astype(np.float64, copy=False), zeros)
    w = np.ones_like(zeros) if weight is None else weight
    return (w, w * w, sample.astype(np.float64, copy=False), zeros)
