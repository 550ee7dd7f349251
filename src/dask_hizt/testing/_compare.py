"""assert_hist_equal and the differences it reports (see dask_hizt.testing)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import boost_histogram as bh
import hist
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from dask_hizt.stored import StoredHist

__all__ = ["CategoryOrder", "HistLike", "assert_hist_equal"]

#: How category axes are matched: ``"in order"`` (the same categories at the
#: same indices), or ``"any order"`` (the same set of categories; bins are
#: matched by category label, as when a growing axis met its values in an
#: order that depends on the scheduler).
type CategoryOrder = Literal["in order", "any order"]

#: What :func:`assert_hist_equal` compares: a stored histogram, a
#: ``hist.Hist``, or a plain ``boost_histogram.Histogram``.
type HistLike = StoredHist | bh.Histogram[Any]

#: Differing bins listed in a failure message; the rest are only counted.
_SHOWN = 10

_CATEGORY = (bh.axis.IntCategory, bh.axis.StrCategory)


def assert_hist_equal(
    actual: HistLike,
    expected: HistLike,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    flow: bool = True,
    categories: CategoryOrder = "in order",
) -> None:
    """Assert that two histograms have the same axes, storage and bins.

    Parameters
    ----------
    actual, expected
        A :class:`dask_hizt.StoredHist` (compared through its ``to_hist()``),
        a ``hist.Hist`` or a ``boost_histogram.Histogram``, on either side.
    rtol, atol
        Relative and absolute tolerances of floating-point fields, as in
        ``numpy.isclose``. Both 0 (the default) means exactly equal. Integer
        fields (an ``Int64`` storage) are always compared exactly. NaN equals
        NaN.
    flow
        Compare the flow (underflow/overflow) bins too. The axes' flow
        options are compared either way.
    categories
        ``"in order"``: category axes must list the same categories in the same
        order. ``"any order"``: the same set of categories, bins matched by
        label.

    Raises
    ------
    AssertionError
        Naming the first axis or storage difference, or else the number of
        differing bins and the first few of them as ``index (bin) field:
        got X, expected Y``, with indices into ``view(flow=flow)``.
    """
    problems = _differences(
        actual, expected, rtol=rtol, atol=atol, flow=flow, categories=categories
    )
    if problems:
        raise AssertionError("\n".join(problems))


def _is_hist(obj: object) -> TypeGuard[HistLike]:
    """Whether ``obj`` is something :func:`assert_hist_equal` compares."""
    if isinstance(obj, bh.Histogram):
        return True
    # no StoredHist exists before dask_hizt.stored is imported: don't import it
    stored = sys.modules.get("dask_hizt.stored")
    return stored is not None and isinstance(obj, stored.StoredHist)


def _differences(
    actual: HistLike,
    expected: HistLike,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    flow: bool = True,
    categories: CategoryOrder = "in order",
) -> list[str]:
    """The lines of :func:`assert_hist_equal`'s message; empty if equal."""
    got, want = _as_histogram(actual), _as_histogram(expected)
    if got.ndim != want.ndim:
        return [f"number of axes differs: got {got.ndim}, expected {want.ndim}"]
    problems = [
        p
        for i, (a, b) in enumerate(zip(got.axes, want.axes, strict=True))
        for p in _axis_differences(i, a, b, categories)
    ]
    gs, ws = got.storage_type, want.storage_type
    if gs is not ws:
        problems.append(f"storage differs: got {gs.__name__}, expected {ws.__name__}")
    if problems:
        return problems
    gv = np.asarray(got.view(flow=flow))
    wv = np.asarray(want.view(flow=flow))
    if categories == "any order":
        gv = _reorder(gv, got.axes, want.axes, flow)
    return _bin_differences(gv, wv, want.axes, flow, rtol, atol)


def _as_histogram(h: HistLike) -> bh.Histogram[Any]:
    if isinstance(h, hist.Hist):
        return h
    if isinstance(h, bh.Histogram):
        # as hist.Hist, whose unnamed axes get labels: so a plain boost
        # histogram equals the hist.Hist of the same axes
        return hist.Hist(h)
    return h.to_hist()


def _kind(axis: bh.axis.Axis) -> type:
    """The boost-histogram axis class of ``axis`` (a hist axis subclasses one)."""
    return next(
        c for c in type(axis).__mro__ if c.__module__.startswith("boost_histogram")
    )


def _axis_name(i: int, axis: bh.axis.Axis) -> str:
    name = getattr(axis, "name", "") or ""
    return f"axis {i} ({name!r})" if name else f"axis {i}"


def _axis_differences(
    i: int, got: bh.axis.Axis, want: bh.axis.Axis, categories: CategoryOrder
) -> list[str]:
    """What differs between two axes, most telling first; empty if equal."""
    where = _axis_name(i, want)
    if _kind(got) is not _kind(want):
        return [
            (
                f"{where} type differs: got {_kind(got).__name__}, "
                f"expected {_kind(want).__name__}"
            )
        ]
    out: list[str] = []
    if isinstance(want, _CATEGORY):
        gc, wc = list(got), list(want)
        if categories == "any order":
            same = len(gc) == len(wc) and set(gc) == set(wc)
        else:
            same = gc == wc
        if not same:
            out.append(f"{where} categories differ: got {gc!r}, expected {wc!r}")
    else:
        ge, we = np.asarray(got.edges), np.asarray(want.edges)
        if ge.shape != we.shape:
            out.append(f"{where} has {got.size} bins, expected {want.size}")
        elif not np.array_equal(ge, we):
            k = int(np.argmax(ge != we))
            out.append(
                f"{where} edges differ: edge {k} is {ge[k].item()!r}, "
                f"expected {we[k].item()!r}"
            )
    for trait in ("underflow", "overflow", "circular", "growth"):
        g, w = getattr(got.traits, trait), getattr(want.traits, trait)
        if g != w:
            out.append(f"{where} {trait} differs: got {g}, expected {w}")
    for attr in ("name", "label"):
        # as set, not hist's label that falls back to the name
        g, w = got.__dict__.get(attr, ""), want.__dict__.get(attr, "")
        if g != w:
            out.append(f"{where} {attr} differs: got {g!r}, expected {w!r}")
    gt, wt = (
        repr(getattr(got, "transform", None)),
        repr(getattr(want, "transform", None)),
    )
    if gt != wt:
        out.append(f"{where} transform differs: got {gt}, expected {wt}")
    gm, wm = _metadata(got), _metadata(want)
    if gm != wm:
        out.append(f"{where} metadata differs: got {gm!r}, expected {wm!r}")
    return out


def _metadata(axis: bh.axis.Axis) -> dict[str, Any]:
    """An axis' metadata other than its name and label."""
    out = {k: v for k, v in axis.__dict__.items() if k not in ("name", "label")}
    if axis.metadata is not None:
        out["metadata"] = axis.metadata
    return out


def _reorder(
    view: npt.NDArray[Any],
    got: Sequence[bh.axis.Axis],
    want: Sequence[bh.axis.Axis],
    flow: bool,
) -> npt.NDArray[Any]:
    """``view`` with the bins of its category axes in ``want``'s order."""
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if isinstance(b, _CATEGORY):
            labels = list(a)
            order = [labels.index(c) for c in b]
            if flow and a.traits.overflow:
                order.append(len(labels))
            view = np.take(view, order, axis=i)
    return view


@dataclass(frozen=True)
class _Mismatch:
    """One differing field of one bin."""

    index: tuple[int, ...]
    field: str
    got: Any
    expected: Any


def _bin_differences(
    got: npt.NDArray[Any],
    want: npt.NDArray[Any],
    axes: Sequence[bh.axis.Axis],
    flow: bool,
    rtol: float,
    atol: float,
) -> list[str]:
    fields: Sequence[str | None] = want.dtype.names or (None,)
    bad = np.zeros(want.shape, dtype=bool)
    mismatches: list[_Mismatch] = []
    for f in fields:
        g = got if f is None else got[f]
        w = want if f is None else want[f]
        differ = ~_same(g, w, rtol, atol)
        bad |= differ
        mismatches += [
            _Mismatch(
                tuple(int(k) for k in idx), f or "value", g[idx].item(), w[idx].item()
            )
            for idx in map(tuple, np.argwhere(differ)[:_SHOWN])
        ]
    if not bad.any():
        return []
    order = {f: n for n, f in enumerate(fields)}
    mismatches.sort(key=lambda m: (m.index, order.get(m.field, 0)))
    n = int(bad.sum())
    head = (
        f"{n} of {bad.size} bins differ"
        + (" (indices into view(flow=True))" if flow else "")
        + ":"
    )
    lines = [
        f"  {m.index} ({_bin_label(m.index, axes, flow)}) {m.field}: "
        f"got {m.got!r}, expected {m.expected!r}"
        for m in mismatches[:_SHOWN]
    ]
    return [head, *lines]


def _same(
    got: npt.NDArray[Any], want: npt.NDArray[Any], rtol: float, atol: float
) -> npt.NDArray[np.bool_]:
    if want.dtype.kind in "biu" or (rtol == 0 and atol == 0):
        same = got == want
        if want.dtype.kind == "f":
            same |= np.isnan(got) & np.isnan(want)
        return np.asarray(same, dtype=bool)
    return np.asarray(
        np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True), dtype=bool
    )


def _bin_label(index: tuple[int, ...], axes: Sequence[bh.axis.Axis], flow: bool) -> str:
    """``name=bin`` for each axis: an interval, integer, category or flow bin."""
    parts = []
    for i, (k, axis) in enumerate(zip(index, axes, strict=True)):
        name = getattr(axis, "name", "") or str(i)
        parts.append(f"{name}={_one_bin(k, axis, flow)}")
    return ", ".join(parts)


def _one_bin(k: int, axis: bh.axis.Axis, flow: bool) -> str:
    if flow and axis.traits.underflow:
        if k == 0:
            return "underflow"
        k -= 1
    if k >= axis.size:
        return "overflow"
    if isinstance(axis, (*_CATEGORY, bh.axis.Boolean, bh.axis.Integer)):
        return repr(axis.bin(k))
    edges = axis.edges
    return f"[{edges[k]:g}, {edges[k + 1]:g})"
