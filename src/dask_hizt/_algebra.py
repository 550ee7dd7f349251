"""How the bins of each storage add up.

Sum storages (Double, Int64, Weight) add field by field. Mean storages keep
boost-histogram's fields (counts or sums of weights, the mean, and the sum
of squared deviations from it) and are merged with the pairwise formulas of
Chan, Golub and LeVeque, which keep the variance accurate where
sum-of-squares formulas would cancel. Removing a part from a total (needed
to replay our additions on top of a concurrent commit) runs them backwards.

Fields are tuples of equally shaped arrays, in the storage's field order.
Which algebra a storage has is :attr:`dask_hizt.schema.StorageSpec.algebra`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MEAN", "SUM", "WEIGHTED_MEAN", "WEIGHTED_SUM", "Algebra"]

Array = npt.NDArray[Any]
Fields = tuple[Array, ...]


class Algebra:
    """Sum storages: every field adds; an entry adds its weight (Double, Int64)."""

    mean = False

    def entries(self, weight: Array | None, sample: Array | None) -> list[Array | None]:
        """Per-entry fields of filled entries, for
        :func:`dask_hizt._partial.from_entries` (``None``: 1 per entry)."""
        del sample  # sum storages take none
        return [weight]

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


class _WeightedSumAlgebra(Algebra):
    """Weight: the sum of weights and the sum of their squares (the variance)."""

    def entries(self, weight: Array | None, sample: Array | None) -> list[Array | None]:
        del sample
        return [weight, None if weight is None else weight * weight]


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

    def entries(self, weight: Array | None, sample: Array | None) -> list[Array | None]:
        if sample is None:
            msg = "a mean storage is filled with samples"
            raise ValueError(msg)
        zeros = np.zeros_like(sample, dtype=np.float64)
        mean = sample.astype(np.float64, copy=False)
        if self.n_additive == 1:  # Mean: one count per entry, weights are refused
            return [np.ones_like(zeros), mean, zeros]
        w = np.ones_like(zeros) if weight is None else weight
        return [w, w * w, mean, zeros]

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
WEIGHTED_SUM = _WeightedSumAlgebra()
MEAN = _MeanAlgebra(1)
WEIGHTED_MEAN = _MeanAlgebra(2)
