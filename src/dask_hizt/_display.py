"""Showing histograms to people: text tables, matplotlib drawings, notebook HTML.

Used by :class:`~dask_hizt.stored.StoredHist` (``_repr_html_``, ``plot``) and
by the command line (``show``, ``plot``). matplotlib is imported only by the
functions that draw; it is an optional dependency (the ``plot`` extra).
"""

from __future__ import annotations

import html
import io
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import boost_histogram as bh
import hist
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .layout import Layout
    from .schema import Schema

__all__ = [
    "REPR_MAX_BINS",
    "Displayed",
    "axis_kind",
    "bin_labels",
    "describe_axis",
    "draw",
    "missing_extra",
    "repr_html",
    "text",
    "total",
]

#: ``_repr_html_`` reads and draws histograms of at most this many bins
#: (flow bins included); larger ones are described without being read.
REPR_MAX_BINS = 1_000_000

_CATEGORY = (bh.axis.StrCategory, bh.axis.IntCategory, bh.axis.Boolean)


def missing_extra(package: str, extra: str, what: str) -> ImportError:
    """The error for an optional dependency that is not installed.

    Parameters
    ----------
    package
        The module that failed to import.
    extra
        The extra of ``dask-hizt`` that installs it.
    what
        What needs it, e.g. ``"plotting"``.

    Returns
    -------
    ImportError
        With a one-line message naming the extra.
    """
    return ImportError(
        f"{what} needs {package}, which is not installed: "
        f"pip install 'dask-hizt[{extra}]'"
    )


def axis_kind(axis: Any) -> str:
    """The axis type's name, as in ``hist.axis`` (``"Regular"``, ...)."""
    for cls in (
        bh.axis.Regular,
        bh.axis.Variable,
        bh.axis.Integer,
        bh.axis.Boolean,
        bh.axis.IntCategory,
        bh.axis.StrCategory,
    ):
        if isinstance(axis, cls):
            return cls.__name__
    return type(axis).__name__


def describe_axis(axis: Any) -> str:
    """Bins and range (or categories) of an axis in a few words."""
    if isinstance(axis, bh.axis.Boolean):
        return "False, True"
    if isinstance(axis, bh.axis.StrCategory | bh.axis.IntCategory):
        cats = [str(c) for c in axis]
        shown = ", ".join(cats[:6]) + (f", ... ({len(cats)})" if len(cats) > 6 else "")
        growth = ", growing" if axis.traits.growth else ""
        return f"{len(cats)} categories: {shown}{growth}"
    if isinstance(axis, bh.axis.Integer):
        return f"{axis.size} integers [{int(axis.edges[0])}, {int(axis.edges[-1])})"
    edges = axis.edges
    transform = getattr(axis, "transform", None)
    how = f", {type(transform).__name__.lower()}" if transform is not None else ""
    return f"{axis.size} bins [{edges[0]:g}, {edges[-1]:g}){how}"


def bin_labels(axis: Any, flow: bool = False) -> list[str]:
    """One label per bin of an axis: ``[lo, hi)``, an integer or a category.

    Parameters
    ----------
    axis
        A ``hist`` / boost-histogram axis.
    flow
        Include the labels of the underflow and overflow bins the axis has.

    Returns
    -------
    list of str
        In the order of ``values(flow=flow)``.
    """
    traits = axis.traits
    if isinstance(axis, bh.axis.Boolean):
        labels = ["False", "True"]
    elif isinstance(axis, bh.axis.StrCategory | bh.axis.IntCategory):
        labels = [str(c) for c in axis]
    elif isinstance(axis, bh.axis.Integer):
        labels = [str(int(v)) for v in axis.edges[:-1]]
    else:
        e = axis.edges
        labels = [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(e)]
    if not flow:
        return labels
    if isinstance(axis, _CATEGORY):
        return labels + (["<other>"] if traits.overflow else [])
    under = [f"(-inf, {axis.edges[0]:g})"] if traits.underflow else []
    over = [f"[{axis.edges[-1]:g}, inf)"] if traits.overflow else []
    return under + labels + over


def total(h: Any) -> str:
    """The sum over all bins (flow included), in words fit for the storage."""
    s = h.sum(flow=True) if isinstance(h, bh.Histogram) else h
    if isinstance(s, bh.accumulators.WeightedSum):
        return f"{s.value:.10g} ± {math.sqrt(max(s.variance, 0.0)):.4g}"
    if isinstance(s, bh.accumulators.Mean):
        return f"{s.count:.10g} entries, mean {s.value:.6g}"
    if isinstance(s, bh.accumulators.WeightedMean):
        return f"{s.sum_of_weights:.10g} sum of weights, mean {s.value:.6g}"
    return f"{float(s):.10g}"


def _errors(h: bh.Histogram[Any], flow: bool) -> npt.NDArray[Any] | None:
    if h.storage_type in (bh.storage.Double, bh.storage.Int64):
        return None  # Poisson errors would be a guess about the data
    variances = h.variances(flow=flow)
    return None if variances is None else np.sqrt(np.maximum(variances, 0.0))


def text(h: Any, *, flow: bool = False, max_rows: int = 200, width: int = 40) -> str:
    """A histogram (or a single bin's content) as a text table.

    One-dimensional histograms get a bar per bin; more dimensions get one row
    per bin, labelled by each axis's bin. Values are printed with 10
    significant digits; the error column (square root of the variance) is
    there for the storages that track variances.

    Parameters
    ----------
    h
        A ``hist.Hist`` or an accumulator / number (a fully picked selection).
    flow
        Include the flow bins.
    max_rows
        Rows shown at most; the rest are counted in a last line.
    width
        Width of the longest bar, in characters.

    Returns
    -------
    str
        The table, without a trailing newline.
    """
    if not isinstance(h, bh.Histogram):
        return f"value: {total(h)}"
    values = np.asarray(h.values(flow=flow), dtype=float)
    errors = _errors(h, flow)
    names = [ax.name or f"axis {i}" for i, ax in enumerate(h.axes)]
    labels = [bin_labels(ax, flow) for ax in h.axes]
    header = [*names, "value"] + (["error"] if errors is not None else [])
    rows: list[list[str]] = []
    bars: list[float] = []
    for index in np.ndindex(values.shape):
        if len(rows) == max_rows:
            break
        row = [labels[d][i] for d, i in enumerate(index)]
        row.append(f"{values[index]:.10g}")
        if errors is not None:
            row.append(f"{errors[index]:.4g}")
        rows.append(row)
        bars.append(float(values[index]))
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    top = max([abs(b) for b in bars if math.isfinite(b)] + [0.0]) or 1.0
    out = ["  ".join(t.rjust(w) for t, w in zip(header, widths, strict=True))]
    for row, v in zip(rows, bars, strict=True):
        line = "  ".join(t.rjust(w) for t, w in zip(row, widths, strict=True))
        if values.ndim == 1 and math.isfinite(v):
            line += "  " + "#" * round(width * max(v, 0.0) / top)
        out.append(line)
    hidden = values.size - len(rows)
    if hidden > 0:
        out.append(
            f"... {hidden} more bins (show fewer with a selection, or --max-rows)"
        )
    out.append(f"sum (flow bins included): {total(h)}")
    return "\n".join(out)


def _edges_and_ticks(axis: Any) -> tuple[npt.NDArray[Any], list[str] | None]:
    """Bin edges to draw an axis with, and tick labels for category axes."""
    if isinstance(axis, _CATEGORY):
        return np.arange(axis.size + 1, dtype=float) - 0.5, bin_labels(axis)
    return np.asarray(axis.edges, dtype=float), None


def _axis_title(axis: Any, i: int) -> str:
    return str(axis.label or axis.name or f"axis {i}")


def draw(h: hist.Hist, ax: Axes) -> Any:  # type: ignore[type-arg]
    """Draw a 1-D or 2-D histogram with plain matplotlib.

    1-D: steps (bars for category axes) with error bars where the storage has
    variances; 2-D: a colour mesh with a colour bar. Category axes get one
    tick per category.

    Parameters
    ----------
    h
        The histogram.
    ax
        Where to draw.

    Returns
    -------
    Any
        The main artist (a ``StepPatch``, ``BarContainer`` or ``QuadMesh``).

    Raises
    ------
    ValueError
        For histograms of other dimensions.
    """
    values = np.asarray(h.values(), dtype=float)
    if h.ndim == 1:
        axis = h.axes[0]
        edges, ticks = _edges_and_ticks(axis)
        if ticks is not None:
            artist: Any = ax.bar(np.arange(len(values)), values, width=0.8)
            ax.set_xticks(np.arange(len(values)), ticks)
        else:
            artist = ax.stairs(values, edges)
        errors = _errors(h, flow=False)
        if errors is not None:
            centers = (edges[:-1] + edges[1:]) / 2
            ax.errorbar(centers, values, yerr=errors, fmt="none", ecolor="k", lw=0.8)
        ax.set_xlabel(_axis_title(axis, 0))
        ax.set_ylabel("value")
        return artist
    if h.ndim == 2:
        (xe, xt), (ye, yt) = (_edges_and_ticks(a) for a in h.axes)
        mesh = ax.pcolormesh(xe, ye, values.T, rasterized=True)
        if xt is not None:
            ax.set_xticks(np.arange(len(xt)), xt)
        if yt is not None:
            ax.set_yticks(np.arange(len(yt)), yt)
        ax.set_xlabel(_axis_title(h.axes[0], 0))
        ax.set_ylabel(_axis_title(h.axes[1], 1))
        ax.figure.colorbar(mesh, ax=ax)
        return mesh
    msg = (
        f"only 1-D and 2-D histograms can be drawn; this one has {h.ndim} axes: "
        "select or sum axes first"
    )
    raise ValueError(msg)


def _svg(h: hist.Hist) -> str:  # type: ignore[type-arg]
    """A small SVG drawing of a 1-D or 2-D histogram (matplotlib, no pyplot)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency

    fig = Figure(figsize=(4.8, 3.2), layout="constrained")
    draw(h, fig.add_subplot())
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text_ = buf.getvalue()
    return text_[text_.find("<svg") :]


class Displayed(Protocol):
    """What the notebook display reads of a stored histogram.

    A :class:`~dask_hizt.stored.StoredHist`; named by what it has, since
    ``stored`` imports this module and the two must not import each other.
    """

    path: str
    snapshot_id: str

    @property
    def schema(self) -> Schema:
        """Axes and storage."""
        ...

    @property
    def layout(self) -> Layout:
        """Shape and chunking of the stored arrays."""
        ...

    def to_hist(self) -> hist.Hist:  # type: ignore[type-arg]
        """Every bin, read."""
        ...


def repr_html(stored: Displayed, where: str, *, max_bins: int = REPR_MAX_BINS) -> str:
    """The notebook display of a stored histogram.

    A table of path, snapshot, repository, storage and sum, a table of the
    axes, and, for 1-D and 2-D histograms with matplotlib installed, a small
    SVG drawing. Histograms of more than ``max_bins`` bins are not read.

    Parameters
    ----------
    stored
        The histogram.
    where
        Where its repository is (a directory or URL), as shown.
    max_bins
        Read (for the sum and the drawing) only histograms of at most this
        many bins, flow included.

    Returns
    -------
    str
        An HTML fragment.
    """
    e = html.escape
    schema = stored.schema
    n_bins = schema.n_bins
    small = n_bins <= max_bins
    h = stored.to_hist() if small else None
    summed = (
        total(h)
        if h is not None
        else f"not read: {n_bins:,} bins is more than {max_bins:,} "
        "(use .project(...) or a selection)"
    )
    rows = [
        ("path", stored.path),
        ("snapshot", stored.snapshot_id),
        ("repository", where),
        ("storage", schema.storage.__name__),
        (
            "bins",
            f"{n_bins:,} (flow bins included), in {stored.layout.n_chunks:,} chunks",
        ),
        ("sum", summed),
    ]
    info = "".join(
        f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>"
        f"{e(v)}</td></tr>"
        for k, v in rows
    )
    axes = "".join(
        f"<tr><td>{i}</td><td>{e(ax.name)}</td><td>{e(ax.label if ax.label != ax.name else '')}"
        f"</td><td>{e(axis_kind(ax))}</td><td style='text-align:left'>"
        f"{e(describe_axis(ax))}</td></tr>"
        for i, ax in enumerate(schema.hist_axes())
    )
    parts = [
        "<div class='dask-hizt'>",
        "<b>dask_hizt.StoredHist</b>",
        f"<table>{info}</table>",
        (
            "<table><tr><th>#</th><th>name</th><th>label</th><th>type</th>"
            f"<th>bins</th></tr>{axes}</table>"
        ),
        _picture(h, n_bins, max_bins),
        "</div>",
    ]
    return "\n".join(p for p in parts if p)


def _picture(h: hist.Hist | None, n_bins: int, max_bins: int) -> str:  # type: ignore[type-arg]
    if h is None:
        return f"<p>No drawing: {n_bins:,} bins is more than {max_bins:,}.</p>"
    if h.ndim > 2:
        return ""
    try:
        return _svg(h)
    except ImportError:
        return "<p>No drawing: matplotlib is not installed (dask-hizt[plot]).</p>"


def selection_title(path: str, tokens: Sequence[str]) -> str:
    """``path`` followed by the selection that was applied, if any."""
    return f"{path} [{' '.join(tokens)}]" if tokens else path
