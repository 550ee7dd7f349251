"""Axes and storage of a histogram, to and from UHI JSON (pure, no I/O).

A :class:`Schema` is what a stored histogram *is* apart from its numbers: its
axes and its storage. It is written into the attributes of the histogram's
zarr group as a UHI JSON document without the ``values`` arrays, so any
UHI-aware reader can interpret the arrays next to it.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boost_histogram as bh
import hist
import numpy as np

from .errors import (
    FillError,
    SchemaMismatchError,
    UnsupportedAxisError,
    UnsupportedStorageError,
)

__all__ = [
    "ATTR_KEY",
    "FORMAT_VERSION",
    "STORAGES",
    "Schema",
    "StorageSpec",
    "axis_from_bins",
]

#: Version of the on-disk format written by this library (see docs/format.md).
FORMAT_VERSION = 1
#: Key of dask_hizt's entries in zarr attributes and in commit metadata.
ATTR_KEY = "dask_hizt"


@dataclass(frozen=True)
class StorageSpec:
    """How one boost-histogram storage is kept on disk.

    Attributes
    ----------
    uhi_type
        The storage ``type`` in UHI JSON.
    fields
        One zarr array per field, named like the fields of the boost-histogram
        view (``"value"`` for simple storages).
    dtype
        NumPy dtype of every field.
    """

    uhi_type: str
    fields: tuple[str, ...]
    dtype: str


STORAGES: dict[type[bh.storage.Storage], StorageSpec] = {
    bh.storage.Double: StorageSpec("double", ("value",), "float64"),
    bh.storage.Int64: StorageSpec("int", ("value",), "int64"),
    bh.storage.Weight: StorageSpec("weighted", ("value", "variance"), "float64"),
    bh.storage.Mean: StorageSpec(
        "mean", ("count", "value", "_sum_of_deltas_squared"), "float64"
    ),
    bh.storage.WeightedMean: StorageSpec(
        "weighted_mean",
        (
            "sum_of_weights",
            "sum_of_weights_squared",
            "value",
            "_sum_of_weighted_deltas_squared",
        ),
        "float64",
    ),
}
_STORAGE_BY_UHI = {spec.uhi_type: cls for cls, spec in STORAGES.items()}


def _metadata(axis: Any) -> dict[str, Any]:
    # hist keeps name and label in the axis' __dict__ (``.label`` falls back to
    # the name, which must not be stored as an explicit label); plain
    # boost-histogram axes have neither, only their free-form ``metadata``.
    raw = getattr(axis, "__dict__", {})
    out: dict[str, Any] = {
        "name": str(raw.get("name", "") or ""),
        "label": str(raw.get("label", "") or ""),
    }
    extra = raw.get("metadata")
    if extra is None:
        return out
    if not isinstance(extra, str | bool | int | float) or (
        isinstance(extra, float) and not math.isfinite(extra)
    ):
        msg = (
            f"axis {out['name'] or '<unnamed>'!r}: metadata={extra!r} cannot be "
            "stored; UHI axis metadata is a string, a finite number or a boolean"
        )
        raise UnsupportedAxisError(msg)
    out["metadata"] = extra
    return out


def _transform(axis: Any, name: str) -> dict[str, Any]:
    """How a Regular axis' transform is recorded; refuses arbitrary functions."""
    t = axis.transform
    if isinstance(t, bh.axis.transform.Pow):
        return {"kind": "regular", "transform": "pow", "power": float(t.power)}
    for known in ("log", "sqrt"):
        if t == getattr(bh.axis.transform, known):
            return {"kind": "regular", "transform": known}
    msg = (
        f"axis {name!r}: transform {t!r} cannot be stored faithfully; "
        "use log, sqrt, Pow or a Variable axis"
    )
    raise UnsupportedAxisError(msg)


def axis_to_dict(axis: Any) -> dict[str, Any]:
    """Describe one axis as a UHI JSON axis.

    Raises
    ------
    UnsupportedAxisError
        If the axis has no faithful on-disk form in this version.
    """
    traits = axis.traits
    meta = _metadata(axis)
    name = meta["name"] or "<unnamed>"  # boost-histogram axes have no .name
    if traits.growth and not isinstance(
        axis, bh.axis.IntCategory | bh.axis.StrCategory
    ):
        msg = f"axis {name!r}: only category axes can grow (growth=True) on disk"
        raise UnsupportedAxisError(msg)
    if isinstance(axis, bh.axis.Regular) and axis.transform is not None:
        # UHI has no transforms: a reader that ignores writer_info still sees
        # the true edges of a variable axis.
        out: dict[str, Any] = {
            "type": "variable",
            "edges": [float(e) for e in axis.edges],
            "underflow": bool(traits.underflow),
            "overflow": bool(traits.overflow),
            "circular": bool(traits.circular),
            "writer_info": {
                "dask_hizt": _transform(axis, name) | {"bins": int(axis.size)}
            },
        }
    elif isinstance(axis, bh.axis.Regular):
        out = {
            "type": "regular",
            "lower": float(axis.edges[0]),
            "upper": float(axis.edges[-1]),
            "bins": int(axis.size),
            "underflow": bool(traits.underflow),
            "overflow": bool(traits.overflow),
            "circular": bool(traits.circular),
        }
    elif isinstance(axis, bh.axis.Integer):
        out = {
            "type": "regular",  # UHI has no integer type: an Integer is a unit-width Regular
            "lower": int(axis.edges[0]),
            "upper": int(axis.edges[-1]),
            "bins": int(axis.size),
            "underflow": bool(traits.underflow),
            "overflow": bool(traits.overflow),
            "circular": bool(traits.circular),
            "writer_info": {"dask_hizt": {"kind": "integer"}},
        }
    elif isinstance(axis, bh.axis.Variable):
        out = {
            "type": "variable",
            "edges": [float(e) for e in axis.edges],
            "underflow": bool(traits.underflow),
            "overflow": bool(traits.overflow),
            "circular": bool(traits.circular),
        }
    elif isinstance(axis, bh.axis.Boolean):
        out = {"type": "boolean"}
    elif isinstance(axis, bh.axis.IntCategory):
        out = {
            "type": "category_int",
            "categories": [int(c) for c in axis],  # type: ignore[arg-type]
            "flow": bool(traits.overflow),
        }
    elif isinstance(axis, bh.axis.StrCategory):
        out = {
            "type": "category_str",
            "categories": [str(c) for c in axis],
            "flow": bool(traits.overflow),
        }
    else:
        msg = f"axis {name!r}: {type(axis).__name__} axes are not supported"
        raise UnsupportedAxisError(msg)
    if traits.growth:
        out["writer_info"] = {"dask_hizt": {"growth": True}}
    out["metadata"] = meta
    return out


def axis_from_dict(data: Mapping[str, Any]) -> Any:
    """Build a ``hist`` axis from a UHI JSON axis written by :func:`axis_to_dict`."""
    meta = dict(data.get("metadata", {}))
    name = meta.pop("name", "") or ""
    label = meta.pop("label", "") or ""
    # the axis' free-form metadata (boost-histogram's metadata=), if any
    extra = {"metadata": meta["metadata"]} if "metadata" in meta else {}
    kind = data["type"]
    info = data.get("writer_info", {}).get("dask_hizt", {})
    axis: Any
    if info.get("transform"):
        t = info["transform"]
        transform = (
            bh.axis.transform.Pow(info["power"])
            if t == "pow"
            else getattr(bh.axis.transform, t)
        )
        axis = hist.axis.Regular(
            int(info["bins"]),
            float(data["edges"][0]),
            float(data["edges"][-1]),
            transform=transform,
            name=name,
            label=label,
            **extra,
        )  # boost refuses flow options next to a transform: they are the defaults
    elif kind == "regular" and info.get("kind") == "integer":
        axis = hist.axis.Integer(
            int(data["lower"]),
            int(data["upper"]),
            underflow=data["underflow"],
            overflow=data["overflow"],
            circular=data["circular"],
            name=name,
            label=label,
            **extra,
        )
    elif kind == "regular":
        axis = hist.axis.Regular(
            int(data["bins"]),
            float(data["lower"]),
            float(data["upper"]),
            underflow=data["underflow"],
            overflow=data["overflow"],
            circular=data["circular"],
            name=name,
            label=label,
            **extra,
        )
    elif kind == "variable":
        axis = hist.axis.Variable(
            data["edges"],
            underflow=data["underflow"],
            overflow=data["overflow"],
            circular=data["circular"],
            name=name,
            label=label,
            **extra,
        )
    elif kind == "boolean":
        axis = hist.axis.Boolean(name=name, label=label, **extra)
    elif kind in ("category_int", "category_str"):
        cls = hist.axis.IntCategory if kind == "category_int" else hist.axis.StrCategory
        growth = bool(info.get("growth", False))
        flow = (
            {} if growth else {"overflow": data["flow"]}
        )  # growth implies no flow bin
        axis = cls(
            data["categories"],
            growth=growth,
            name=name,
            label=label,
            **flow,
            **extra,
        )
    else:
        msg = f"unknown axis type {kind!r} in stored schema"
        raise SchemaMismatchError(msg)
    return axis


def axis_from_bins(bins: Any, span: Any) -> Any:
    """The unnamed axis of numpy-style ``bins`` and ``range``, checked.

    Parameters
    ----------
    bins
        A positive number of equal bins over ``span``, or the bin edges (at
        least 2, finite, strictly increasing).
    span
        ``(lower, upper)``: finite, ``lower < upper``; required with a number
        of bins, ignored with edges (as by ``numpy.histogram``).

    Raises
    ------
    FillError
        Naming what is wrong, before any repository is touched (boost's own
        errors name none, and it takes a reversed range).
    """
    not_bins = (
        "bins must be an integer number of bins or a sequence of bin edges, "
        f"got {bins!r}"
    )
    if isinstance(bins, bool | str | bytes):
        raise FillError(not_bins)
    if isinstance(bins, numbers.Integral):
        if bins < 1:
            msg = f"bins must be a positive number of bins, got {bins!r}"
            raise FillError(msg)
        lower, upper = _range(span)
        return hist.axis.Regular(int(bins), lower, upper, name="")
    if isinstance(bins, numbers.Number) or np.ndim(bins) == 0:
        raise FillError(not_bins)
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"bin edges must be numbers, got {bins!r}"
        raise FillError(msg) from None
    if edges.ndim != 1 or edges.size < 2:
        msg = f"bins needs at least 2 edges in a flat sequence, got {bins!r}"
        raise FillError(msg)
    bad = np.flatnonzero(~np.isfinite(edges))
    if bad.size:
        msg = f"bin edges must be finite; edge {bad[0]} is {edges[bad[0]]}"
        raise FillError(msg)
    bad = np.flatnonzero(~(np.diff(edges) > 0))
    if bad.size:
        i = int(bad[0])
        msg = (
            f"bin edges must be strictly increasing; edge {i + 1} "
            f"({edges[i + 1]:g}) does not exceed edge {i} ({edges[i]:g})"
        )
        raise FillError(msg)
    return hist.axis.Variable(edges.tolist(), name="")


def _range(span: Any) -> tuple[float, float]:
    """``range=(lower, upper)`` of a number of bins, checked."""
    if span is None:
        msg = "range=(lower, upper) is required when bins is a number"
        raise FillError(msg)
    try:
        lower, upper = (float(v) for v in span)
    except (TypeError, ValueError):
        msg = f"range must be (lower, upper), two numbers, got {span!r}"
        raise FillError(msg) from None
    if not (math.isfinite(lower) and math.isfinite(upper)):
        msg = f"range must be finite, got {span!r}"
        raise FillError(msg)
    if lower > upper:
        msg = (
            f"range is reversed: lower {lower:g} > upper {upper:g}; give (lower, upper)"
        )
        raise FillError(msg)
    if lower == upper:
        msg = f"range is empty: lower and upper are both {lower:g}"
        raise FillError(msg)
    return lower, upper


def _storage_class(
    storage: bh.storage.Storage | type[bh.storage.Storage],
) -> type[bh.storage.Storage]:
    cls = storage if isinstance(storage, type) else type(storage)
    for known in STORAGES:
        if issubclass(cls, known):
            return known
    msg = f"storage {cls.__name__} is not supported; use one of " + ", ".join(
        c.__name__ for c in STORAGES
    )
    raise UnsupportedStorageError(msg)


def growing(axis: Mapping[str, Any]) -> bool:
    """Whether a described axis is a category axis that grows."""
    return bool(axis.get("writer_info", {}).get("dask_hizt", {}).get("growth", False))


def _shape_free(axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Axes compared for identity: a growing axis' categories may differ."""
    return [
        {k: v for k, v in a.items() if k != "categories"} if growing(a) else dict(a)
        for a in axes
    ]


@dataclass(frozen=True)
class Schema:
    """Axes and storage of one histogram.

    Parameters
    ----------
    axes
        UHI JSON descriptions of the axes, in order.
    storage
        The boost-histogram storage class.
    """

    axes: tuple[Mapping[str, Any], ...]
    storage: type[bh.storage.Storage]

    @classmethod
    def from_axes(
        cls,
        axes: Sequence[Any],
        storage: bh.storage.Storage | type[bh.storage.Storage] | None = None,
    ) -> Schema:
        """Validate hist/boost-histogram axes and a storage into a schema."""
        if not axes:
            msg = "a histogram needs at least one axis"
            raise UnsupportedAxisError(msg)
        storage_cls = _storage_class(
            storage if storage is not None else bh.storage.Double()
        )
        described = tuple(axis_to_dict(ax) for ax in axes)
        names = [d["metadata"]["name"] for d in described if d["metadata"]["name"]]
        if len(set(names)) != len(names):
            msg = f"axis names must be unique, got {names}"
            raise UnsupportedAxisError(msg)
        return cls(described, storage_cls)

    @property
    def spec(self) -> StorageSpec:
        """The on-disk description of the storage."""
        return STORAGES[self.storage]

    @property
    def names(self) -> tuple[str, ...]:
        """Axis names (empty string for unnamed axes)."""
        return tuple(str(a["metadata"]["name"]) for a in self.axes)

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The zarr ``dimension_names`` of the field arrays: each axis' name,
        or ``axis_<i>`` for an unnamed axis ``i`` (with ``_`` appended until
        it differs from every other dimension name). xarray needs a name for
        every dimension."""
        taken = {n for n in self.names if n}
        out = []
        for i, name in enumerate(self.names):
            dim = name or f"axis_{i}"
            while not name and dim in taken:
                dim += "_"
            taken.add(dim)
            out.append(dim)
        return tuple(out)

    def hist_axes(self) -> tuple[Any, ...]:
        """Fresh ``hist`` axis objects."""
        return tuple(axis_from_dict(a) for a in self.axes)

    @functools.cached_property
    def shared_axes(self) -> tuple[Any, ...]:
        """Axis objects made once, for read-only use (fill tasks make many
        histograms of one schema, and building axes costs more than filling
        a small partition)."""
        return self.hist_axes()

    def empty_boost(self) -> bh.Histogram[Any]:
        """An empty ``boost_histogram.Histogram``: cheaper to make than a ``hist.Hist``."""
        return bh.Histogram(*self.shared_axes, storage=self.storage())

    def empty_hist(self) -> hist.Hist:  # type: ignore[type-arg]
        """An empty ``hist.Hist`` with these axes and this storage."""
        return hist.Hist(*self.hist_axes(), storage=self.storage())

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of each field array: axis extents, flow bins included."""
        return tuple(int(ax.extent) for ax in self.hist_axes())

    @property
    def n_bins(self) -> int:
        """Number of bins, flow bins included."""
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """NumPy dtype of the field arrays."""
        return np.dtype(self.spec.dtype)

    def grown(self, additions: Mapping[int, Sequence[Any]]) -> Schema:
        """This schema with categories appended to growing axes (by axis position)."""
        axes = [dict(a) for a in self.axes]
        for i, values in additions.items():
            axes[i]["categories"] = [*axes[i]["categories"], *values]
        return Schema(tuple(axes), self.storage)

    def to_json(self) -> dict[str, Any]:
        """The UHI JSON document of this schema (without bin contents)."""
        return {
            "uhi_schema": 1,
            "axes": [dict(a) for a in self.axes],
            "storage": {"type": self.spec.uhi_type},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        """Read back a document written by :meth:`to_json`."""
        try:
            storage = _STORAGE_BY_UHI[data["storage"]["type"]]
        except KeyError:
            msg = f"unknown storage {data.get('storage')!r} in stored schema"
            raise SchemaMismatchError(msg) from None
        return cls(tuple(dict(a) for a in data["axes"]), storage)

    def check_same(self, other: Schema, where: str) -> None:
        """Raise :class:`SchemaMismatchError` unless ``other`` describes the same histogram.

        The categories of growing axes may differ: they are added as met.
        """
        if self.storage is not other.storage:
            msg = (
                f"{where} holds a {other.storage.__name__} histogram, "
                f"not {self.storage.__name__}"
            )
            raise SchemaMismatchError(msg)
        if _shape_free(self.axes) != _shape_free(other.axes):
            msg = (
                f"{where} has different axes:\n  stored:    {list(other.axes)}"
                f"\n  requested: {list(self.axes)}"
            )
            raise SchemaMismatchError(msg)
