"""Hypothesis strategies for histograms: axes, storages and fills.

Needs hypothesis (a test dependency, not one of dask_hizt's).

>>> from hypothesis import given
>>> from dask_hizt.testing import strategies as hst
>>> @given(hst.hist_setups())
... def test_lazy_equals_eager(setup): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import boost_histogram as bh
import hist
import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

__all__ = [
    "AXIS_KINDS",
    "STORAGES",
    "AxisKind",
    "Fill",
    "HistSetup",
    "StorageKind",
    "axes",
    "axis",
    "fills",
    "hist_setups",
    "storages",
]

type AxisKind = Literal["regular", "variable", "integer", "boolean", "intcat", "strcat"]
type StorageKind = Literal["Double", "Int64", "Weight", "Mean", "WeightedMean"]

#: Every axis kind dask_hizt stores.
AXIS_KINDS: tuple[AxisKind, ...] = (
    "regular",
    "variable",
    "integer",
    "boolean",
    "intcat",
    "strcat",
)
#: Every storage dask_hizt stores.
STORAGES: tuple[StorageKind, ...] = (
    "Double",
    "Int64",
    "Weight",
    "Mean",
    "WeightedMean",
)

#: Short labels, so categories repeat and fills hit the same bins often.
_LABELS = ("a", "b", "c", "d", "zz")


def _flows(draw: st.DrawFn, flow: bool | None) -> tuple[bool, bool]:
    if flow is not None:
        return flow, flow
    return draw(st.booleans()), draw(st.booleans())


def _regular(draw: st.DrawFn, name: str, flow: bool | None) -> Any:
    bins = draw(st.integers(1, 12))
    shape = draw(st.sampled_from(["plain", "circular", "log", "sqrt"]))
    if shape in ("log", "sqrt"):
        lo = draw(st.sampled_from([0.1, 1.0, 2.5]))
        hi = lo * draw(st.sampled_from([2.0, 10.0, 100.0]))
        # boost-histogram's transformed axes always have both flow bins
        transform = getattr(hist.axis.transform, shape)
        return hist.axis.Regular(bins, lo, hi, transform=transform, name=name)
    lo = draw(st.integers(-5, 5))
    hi = lo + draw(st.integers(1, 6))
    under, over = _flows(draw, flow)
    if shape == "circular":  # boost-histogram's circular axis: overflow only
        return hist.axis.Regular(bins, lo, hi, circular=True, name=name)
    return hist.axis.Regular(bins, lo, hi, underflow=under, overflow=over, name=name)


def _variable(draw: st.DrawFn, name: str, flow: bool | None) -> Any:
    steps = draw(
        st.lists(st.sampled_from([0.25, 0.5, 1.0, 3.0]), min_size=1, max_size=6)
    )
    start = draw(st.integers(-3, 3))
    edges = np.cumsum([float(start), *steps])
    under, over = _flows(draw, flow)
    return hist.axis.Variable(edges, underflow=under, overflow=over, name=name)


def _integer(draw: st.DrawFn, name: str, flow: bool | None) -> Any:
    start = draw(st.integers(-4, 4))
    stop = start + draw(st.integers(1, 8))
    under, over = _flows(draw, flow)
    return hist.axis.Integer(start, stop, underflow=under, overflow=over, name=name)


def _category(
    draw: st.DrawFn, kind: AxisKind, name: str, flow: bool | None, growth: bool | None
) -> Any:
    grow = draw(st.booleans()) if growth is None else growth
    # a growing category axis has no overflow bin
    over = False if grow else (draw(st.booleans()) if flow is None else flow)
    if kind == "intcat":
        cats: list[Any] = draw(
            st.lists(
                st.integers(-2, 6), unique=True, max_size=4, min_size=0 if grow else 1
            )
        )
        return hist.axis.IntCategory(cats, growth=grow, overflow=over, name=name)
    cats = draw(
        st.lists(
            st.sampled_from(_LABELS[:-1]),
            unique=True,
            max_size=3,
            min_size=0 if grow else 1,
        )
    )
    return hist.axis.StrCategory(cats, growth=grow, overflow=over, name=name)


@st.composite
def axis(
    draw: st.DrawFn,
    *,
    name: str = "",
    kinds: Sequence[AxisKind] = AXIS_KINDS,
    flow: bool | None = None,
    growth: bool | None = None,
) -> Any:
    """One ``hist`` axis of a kind dask_hizt stores.

    Parameters
    ----------
    name
        The axis' name.
    kinds
        The kinds to pick from.
    flow
        Whether the axis has flow bins (``None``: either, and underflow and
        overflow are drawn apart). Category axes have only an overflow bin,
        growing category axes and Boolean axes none; circular and
        transformed (log, sqrt) Regular axes keep boost-histogram's fixed
        flow bins.
    growth
        Whether category axes grow (``None``: either). Only category axes
        ever grow (dask_hizt refuses other growing axes).
    """
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "regular":
        return _regular(draw, name, flow)
    if kind == "variable":
        return _variable(draw, name, flow)
    if kind == "integer":
        return _integer(draw, name, flow)
    if kind == "boolean":
        return hist.axis.Boolean(name=name)
    return _category(draw, kind, name, flow, growth)


def axes(
    *,
    min_size: int = 1,
    max_size: int = 3,
    kinds: Sequence[AxisKind] = AXIS_KINDS,
    flow: bool | None = None,
    growth: bool | None = None,
    named: bool = True,
) -> st.SearchStrategy[tuple[Any, ...]]:
    """A tuple of axes as :func:`axis` draws them, named ``a0``, ``a1``...

    ``named=False`` leaves them unnamed (as positional fills use them).
    """

    @st.composite
    def draw_axes(draw: st.DrawFn) -> tuple[Any, ...]:
        n = draw(st.integers(min_size, max_size))
        return tuple(
            draw(
                axis(
                    name=f"a{i}" if named else "", kinds=kinds, flow=flow, growth=growth
                )
            )
            for i in range(n)
        )

    return draw_axes()


def storages(kinds: Sequence[StorageKind] = STORAGES) -> st.SearchStrategy[Any]:
    """A new ``hist.storage`` object of one of ``kinds``."""
    return st.sampled_from(list(kinds)).map(lambda k: getattr(hist.storage, k)())


@dataclass(frozen=True)
class Fill:
    """The arguments of one ``fill`` call: one array per axis, and the weights
    and samples the storage takes."""

    args: tuple[npt.NDArray[Any], ...]
    weight: npt.NDArray[np.float64] | None = None
    sample: npt.NDArray[np.float64] | None = None

    def kwargs(self) -> dict[str, npt.NDArray[Any]]:
        """``weight=`` and ``sample=``, where given."""
        out = {"weight": self.weight, "sample": self.sample}
        return {k: v for k, v in out.items() if v is not None}

    def __len__(self) -> int:
        return len(self.weight if self.weight is not None else self.args[0])


def _values(ax: Any) -> tuple[st.SearchStrategy[Any], npt.DTypeLike]:
    """Values for one axis, in range and out of it, edges included."""
    if isinstance(ax, bh.axis.Boolean):
        return st.booleans(), bool
    if isinstance(ax, bh.axis.IntCategory):
        return st.sampled_from([*list(ax), -3, 7]) | st.integers(-3, 7), np.int64
    if isinstance(ax, bh.axis.StrCategory):
        return st.sampled_from(_LABELS), np.str_
    if isinstance(ax, bh.axis.Integer):
        first, stop = int(ax.edges[0]), int(ax.edges[-1])
        return st.integers(first - 2, stop + 1), np.int64
    edges = [float(e) for e in ax.edges]
    lo, hi = edges[0], edges[-1]
    inside: st.SearchStrategy[float]
    if (
        getattr(ax, "transform", None) is not None
    ):  # values where the transform is defined
        inside = st.floats(lo / 4, hi * 4)
    else:
        half = (hi - lo) / 2
        inside = st.floats(lo - half, hi + half)
    return st.sampled_from(edges) | inside, np.float64


def _array(
    draw: st.DrawFn, strategy: st.SearchStrategy[Any], dtype: npt.DTypeLike, n: int
) -> npt.NDArray[Any]:
    return np.asarray(draw(st.lists(strategy, min_size=n, max_size=n)), dtype=dtype)


def fills(
    axes: Sequence[Any],
    storage: Any,
    *,
    min_size: int = 0,
    max_size: int = 200,
    weighted: bool | None = None,
) -> st.SearchStrategy[Fill]:
    """Fills of histograms with ``axes`` and ``storage``.

    Parameters
    ----------
    axes
        The axes; one array of values is drawn for each, in range, out of
        range (to reach flow bins) and on the edges.
    storage
        The storage: a ``Mean`` or ``WeightedMean`` storage gets samples, an
        ``Int64`` one no weights.
    min_size, max_size
        Bounds of the number of entries.
    weighted
        Whether to give weights, where the storage takes them (``None``:
        either).
    """

    @st.composite
    def draw_fill(draw: st.DrawFn) -> Fill:
        n = draw(st.integers(min_size, max_size))
        args = tuple(_array(draw, *_values(a), n) for a in axes)
        takes_weight = not isinstance(storage, bh.storage.Int64 | bh.storage.Mean)
        weight = None
        if takes_weight and (draw(st.booleans()) if weighted is None else weighted):
            weight = _array(
                draw,
                st.sampled_from([0.5, 1.0, 2.0]) | st.floats(0.1, 3),
                np.float64,
                n,
            )
        sample = None
        if isinstance(storage, bh.storage.Mean | bh.storage.WeightedMean):
            sample = _array(draw, st.floats(-5, 5), np.float64, n)
        return Fill(args, weight, sample)

    return draw_fill()


@dataclass(frozen=True)
class HistSetup:
    """Axes, a storage and fills of them: everything to make and fill a histogram."""

    axes: tuple[Any, ...]
    storage: Any
    fills: tuple[Fill, ...]

    def eager(self) -> hist.Hist:  # type: ignore[type-arg]
        """The ``hist.Hist`` of these fills."""
        h = hist.Hist(*self.axes, storage=self.storage)
        for f in self.fills:
            h.fill(*f.args, weight=f.weight, sample=f.sample)
        return h


def hist_setups(
    *,
    axes_from: st.SearchStrategy[tuple[Any, ...]] | None = None,
    storages_from: st.SearchStrategy[Any] | None = None,
    n_fills: int = 1,
    min_size: int = 0,
    max_size: int = 200,
) -> st.SearchStrategy[HistSetup]:
    """Axes (from ``axes_from``, default :func:`axes`), a storage (from
    ``storages_from``, default :func:`storages`) and ``n_fills`` fills."""
    axes_st = axes() if axes_from is None else axes_from
    storage_st = storages() if storages_from is None else storages_from

    @st.composite
    def draw_setup(draw: st.DrawFn) -> HistSetup:
        ax = draw(axes_st)
        storage = draw(storage_st)
        fs = tuple(
            draw(fills(ax, storage, min_size=min_size, max_size=max_size))
            for _ in range(n_fills)
        )
        return HistSetup(ax, storage, fs)

    return draw_setup()
