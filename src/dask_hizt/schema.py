"""Axes and storage of a histogram, to and from UHI JSON (pure, no I/O).

A :class:`Schema` is what a stored histogram *is* apart from its numbers: its
axes and its storage. It is written into the attributes of the histogram's
zarr group as a UHI JSON document without the ``values`` arrays, so any
UHI-aware reader can interpret the arrays next to it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boost_histogram as bh
import hist
import numpy as np
import numpy.typing as npt

from ._algebra import MEAN, SUM, WEIGHTED_MEAN, WEIGHTED_SUM, Algebra
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
    "AxisKind",
    "AxisSpec",
    "Schema",
    "StorageKind",
    "StorageSpec",
    "Transform",
    "TransformKind",
    "axis_from_bins",
]

#: Version of the on-disk format written by this library (see docs/format.md).
FORMAT_VERSION = 1
#: Key of dask_hizt's entries in zarr attributes and in commit metadata.
ATTR_KEY = "dask_hizt"


class StorageKind(enum.Enum):
    """The storages that can be kept on disk; the value is the UHI storage ``type``."""

    DOUBLE = "double"
    INT64 = "int"
    WEIGHT = "weighted"
    MEAN = "mean"
    WEIGHTED_MEAN = "weighted_mean"


_ALGEBRAS: dict[StorageKind, Algebra] = {
    StorageKind.DOUBLE: SUM,
    StorageKind.INT64: SUM,
    StorageKind.WEIGHT: WEIGHTED_SUM,
    StorageKind.MEAN: MEAN,
    StorageKind.WEIGHTED_MEAN: WEIGHTED_MEAN,
}


@dataclass(frozen=True)
class StorageSpec:
    """How one boost-histogram storage is kept on disk.

    Attributes
    ----------
    kind
        Which storage it is.
    fields
        One zarr array per field, named like the fields of the boost-histogram
        view (``"value"`` for simple storages).
    dtype
        NumPy dtype of every field.
    """

    kind: StorageKind
    fields: tuple[str, ...]
    dtype: str

    @property
    def uhi_type(self) -> str:
        """The storage ``type`` in UHI JSON."""
        return self.kind.value

    @property
    def single_field(self) -> bool:
        """Whether boost-histogram's view is a plain array of the one field
        ``value`` (Double, Int64), not a structured array of fields."""
        return self.fields == ("value",)

    @property
    def takes_sample(self) -> bool:
        """Whether fills need ``sample=`` (Mean, WeightedMean); others refuse it."""
        return self.kind in (StorageKind.MEAN, StorageKind.WEIGHTED_MEAN)

    @property
    def takes_weight(self) -> bool:
        """Whether fills may give ``weight=``: not to storages that count entries."""
        return self.kind not in (StorageKind.INT64, StorageKind.MEAN)

    @property
    def algebra(self) -> Algebra:
        """How the bins of this storage merge, and what a filled entry adds."""
        return _ALGEBRAS[self.kind]

    def unpack(self, view: Any) -> list[npt.NDArray[Any]]:
        """The field arrays of a boost-histogram view, in field order."""
        # a plain ndarray first: boost's views mishandle 0-d records
        arr = np.asarray(view)
        return [arr] if self.single_field else [arr[f] for f in self.fields]


STORAGES: dict[type[bh.storage.Storage], StorageSpec] = {
    bh.storage.Double: StorageSpec(StorageKind.DOUBLE, ("value",), "float64"),
    bh.storage.Int64: StorageSpec(StorageKind.INT64, ("value",), "int64"),
    bh.storage.Weight: StorageSpec(
        StorageKind.WEIGHT, ("value", "variance"), "float64"
    ),
    bh.storage.Mean: StorageSpec(
        StorageKind.MEAN, ("count", "value", "_sum_of_deltas_squared"), "float64"
    ),
    bh.storage.WeightedMean: StorageSpec(
        StorageKind.WEIGHTED_MEAN,
        (
            "sum_of_weights",
            "sum_of_weights_squared",
            "value",
            "_sum_of_weighted_deltas_squared",
        ),
        "float64",
    ),
}
_STORAGE_BY_KIND = {spec.kind: cls for cls, spec in STORAGES.items()}

#: An axis' free-form ``metadata=``, as UHI JSON allows it.
AxisMetadata = str | bool | int | float


class AxisKind(enum.Enum):
    """The kinds of axes that can be kept on disk (one per hist axis class)."""

    REGULAR = "regular"
    INTEGER = "integer"
    VARIABLE = "variable"
    BOOLEAN = "boolean"
    INT_CATEGORY = "category_int"
    STR_CATEGORY = "category_str"


_DENSE = frozenset({AxisKind.REGULAR, AxisKind.INTEGER, AxisKind.VARIABLE})
_CATEGORIES = frozenset({AxisKind.INT_CATEGORY, AxisKind.STR_CATEGORY})


class TransformKind(enum.Enum):
    """The transforms of a Regular axis that can be kept on disk (the value
    is the name they are stored under)."""

    LOG = "log"
    SQRT = "sqrt"
    POW = "pow"


#: The transforms without a parameter.
_PLAIN_TRANSFORMS: dict[TransformKind, bh.axis.transform.AxisTransform] = {
    TransformKind.LOG: bh.axis.transform.log,
    TransformKind.SQRT: bh.axis.transform.sqrt,
}


@dataclass(frozen=True)
class Transform:
    """The transform of a Regular axis, with the ``power`` of a ``POW``
    (``None`` for the others)."""

    kind: TransformKind
    power: float | None = None

    def __post_init__(self) -> None:
        if (self.power is None) is (self.kind is TransformKind.POW):
            msg = f"a {self.kind.value} transform with power={self.power!r}"
            raise ValueError(msg)

    def boost(self) -> bh.axis.transform.AxisTransform:
        """The boost-histogram transform."""
        if self.power is not None:  # a POW
            return bh.axis.transform.Pow(self.power)
        return _PLAIN_TRANSFORMS[self.kind]


@dataclass(frozen=True)
class AxisSpec:
    """One axis of a histogram, as it is kept on disk.

    :meth:`to_json` writes the UHI JSON axis of docs/format.md and
    :meth:`from_json` reads it back; only the fields of the axis' kind are
    set.

    Attributes
    ----------
    kind
        Which kind of axis.
    name, label
        The hist axis' name and label (empty when unset).
    metadata
        The axis' free-form ``metadata=``, ``None`` when not given.
    bins
        Number of bins of a Regular (transformed or not) or Integer axis.
    lower, upper
        Bounds of a Regular or Integer axis (ints for an Integer axis).
    edges
        Bin edges of a Variable or a transformed Regular axis.
    categories
        Categories of a category axis, in index order.
    underflow, overflow
        Whether the axis has an underflow or overflow bin (``flow`` of a
        category axis: one overflow bin).
    circular
        Whether a Regular, Integer or Variable axis wraps around.
    growth
        Whether a category axis grows (only those can, on disk).
    transform
        The transform of a Regular axis, if any.
    """

    kind: AxisKind
    name: str = ""
    label: str = ""
    metadata: AxisMetadata | None = None
    bins: int = 0
    lower: float = 0.0
    upper: float = 0.0
    edges: tuple[float, ...] = ()
    categories: tuple[int | str, ...] = ()
    underflow: bool = False
    overflow: bool = False
    circular: bool = False
    growth: bool = False
    transform: Transform | None = None

    @property
    def is_category(self) -> bool:
        """Whether the axis has a list of categories (IntCategory, StrCategory)."""
        return self.kind in _CATEGORIES

    @property
    def is_dense(self) -> bool:
        """Whether the axis bins a range of numbers (Regular, Integer, Variable)."""
        return self.kind in _DENSE

    @property
    def size(self) -> int:
        """Number of bins, flow bins not counted."""
        if self.kind is AxisKind.VARIABLE:
            return len(self.edges) - 1
        if self.kind is AxisKind.BOOLEAN:
            return 2
        if self.is_category:
            return len(self.categories)
        return self.bins

    @property
    def extent(self) -> int:
        """Number of bins, flow bins counted."""
        return self.size + self.underflow + self.overflow

    @classmethod
    def from_axis(cls, axis: bh.axis.Axis) -> AxisSpec:
        """Describe a hist or boost-histogram axis.

        Raises
        ------
        UnsupportedAxisError
            If the axis has no faithful on-disk form in this version.
        """
        name, label, metadata = _metadata(axis)
        shown = name or "<unnamed>"  # boost-histogram axes have no .name
        traits = axis.traits
        if traits.growth and not isinstance(
            axis, bh.axis.IntCategory | bh.axis.StrCategory
        ):
            msg = f"axis {shown!r}: only category axes can grow (growth=True) on disk"
            raise UnsupportedAxisError(msg)
        # the flow traits of every kind (none for Boolean, the flow bin of a
        # category axis as its overflow)
        make = functools.partial(
            cls,
            name=name,
            label=label,
            metadata=metadata,
            underflow=bool(traits.underflow),
            overflow=bool(traits.overflow),
            circular=bool(traits.circular),
        )
        if isinstance(axis, bh.axis.Regular):
            edges = axis.edges
            transform = None if axis.transform is None else _transform(axis, shown)
            return make(
                AxisKind.REGULAR,
                bins=int(axis.size),
                lower=float(edges[0]),
                upper=float(edges[-1]),
                edges=() if transform is None else tuple(float(e) for e in edges),
                transform=transform,
            )
        if isinstance(axis, bh.axis.Integer):
            lower, upper = int(axis.edges[0]), int(axis.edges[-1])
            return make(AxisKind.INTEGER, bins=int(axis.size), lower=lower, upper=upper)
        if isinstance(axis, bh.axis.Variable):
            return make(AxisKind.VARIABLE, edges=tuple(float(e) for e in axis.edges))
        if isinstance(axis, bh.axis.Boolean):
            return make(AxisKind.BOOLEAN)
        if isinstance(axis, bh.axis.IntCategory):
            categories: tuple[int | str, ...] = tuple(int(c) for c in axis)  # type: ignore[arg-type]
            return make(
                AxisKind.INT_CATEGORY, categories=categories, growth=traits.growth
            )
        if isinstance(axis, bh.axis.StrCategory):
            categories = tuple(str(c) for c in axis)
            return make(
                AxisKind.STR_CATEGORY, categories=categories, growth=traits.growth
            )
        msg = f"axis {shown!r}: {type(axis).__name__} axes are not supported"
        raise UnsupportedAxisError(msg)

    def hist_axis(self) -> bh.axis.Axis:
        """A fresh ``hist`` axis."""
        name, label, metadata = self.name, self.label, self.metadata
        if self.kind is AxisKind.REGULAR and self.transform is not None:
            # boost refuses flow options next to a transform: they are the defaults
            return hist.axis.Regular(
                self.bins,
                self.edges[0],
                self.edges[-1],
                transform=self.transform.boost(),
                name=name,
                label=label,
                metadata=metadata,
            )
        if self.kind is AxisKind.BOOLEAN:
            return hist.axis.Boolean(name=name, label=label, metadata=metadata)
        if self.is_category:
            cls = (
                hist.axis.IntCategory
                if self.kind is AxisKind.INT_CATEGORY
                else hist.axis.StrCategory
            )
            return cls(
                list(self.categories),  # type: ignore[arg-type]
                growth=self.growth,
                overflow=self.overflow,
                name=name,
                label=label,
                metadata=metadata,
            )
        if self.kind is AxisKind.REGULAR:
            return hist.axis.Regular(
                self.bins,
                self.lower,
                self.upper,
                underflow=self.underflow,
                overflow=self.overflow,
                circular=self.circular,
                name=name,
                label=label,
                metadata=metadata,
            )
        if self.kind is AxisKind.INTEGER:
            return hist.axis.Integer(
                int(self.lower),
                int(self.upper),
                underflow=self.underflow,
                overflow=self.overflow,
                circular=self.circular,
                name=name,
                label=label,
                metadata=metadata,
            )
        return hist.axis.Variable(
            self.edges,
            underflow=self.underflow,
            overflow=self.overflow,
            circular=self.circular,
            name=name,
            label=label,
            metadata=metadata,
        )

    def to_json(self) -> dict[str, Any]:
        """The UHI JSON axis (docs/format.md); keys in the order of format 1."""
        flow = {
            "underflow": self.underflow,
            "overflow": self.overflow,
            "circular": self.circular,
        }
        out: dict[str, Any]
        if self.kind is AxisKind.REGULAR and self.transform is not None:
            # UHI has no transforms: a reader that ignores writer_info still
            # sees the true edges of a variable axis.
            info: dict[str, Any] = {
                "kind": "regular",
                "transform": self.transform.kind.value,
            }
            if self.transform.power is not None:
                info["power"] = self.transform.power
            info["bins"] = self.bins
            out = {
                "type": "variable",
                "edges": list(self.edges),
                **flow,
                "writer_info": {"dask_hizt": info},
            }
        elif self.kind is AxisKind.REGULAR:
            bounds = {"lower": float(self.lower), "upper": float(self.upper)}
            out = {"type": "regular", **bounds, "bins": self.bins, **flow}
        elif self.kind is AxisKind.INTEGER:
            # UHI has no integer type: an Integer is a unit-width Regular
            bounds = {"lower": int(self.lower), "upper": int(self.upper)}
            out = {
                "type": "regular",
                **bounds,
                "bins": self.bins,
                **flow,
                "writer_info": {"dask_hizt": {"kind": "integer"}},
            }
        elif self.kind is AxisKind.VARIABLE:
            out = {"type": "variable", "edges": list(self.edges), **flow}
        elif self.kind is AxisKind.BOOLEAN:
            out = {"type": "boolean"}
        else:
            out = {
                "type": self.kind.value,
                "categories": list(self.categories),
                "flow": self.overflow,
            }
            if self.growth:
                out["writer_info"] = {"dask_hizt": {"growth": True}}
        meta: dict[str, Any] = {"name": self.name, "label": self.label}
        if self.metadata is not None:
            meta["metadata"] = self.metadata
        out["metadata"] = meta
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AxisSpec:
        """Read back an axis written by :meth:`to_json`.

        Raises
        ------
        SchemaMismatchError
            If the axis is of a type (or has a transform) this version does
            not know.
        """
        meta = data.get("metadata", {})
        make = functools.partial(
            cls,
            name=str(meta.get("name", "") or ""),
            label=str(meta.get("label", "") or ""),
            metadata=meta.get("metadata"),
        )
        info = data.get("writer_info", {}).get("dask_hizt", {})
        kind = data.get("type")
        if kind in ("category_int", "category_str"):
            integer = kind == "category_int"
            return make(
                AxisKind(kind),
                categories=tuple(
                    int(c) if integer else str(c) for c in data["categories"]
                ),
                overflow=bool(data["flow"]),
                growth=bool(info.get("growth", False)),
            )
        if kind == "boolean":
            return make(AxisKind.BOOLEAN)
        if kind not in ("regular", "variable"):
            msg = f"unknown axis type {kind!r} in stored schema"
            raise SchemaMismatchError(msg)
        dense = functools.partial(
            make,
            underflow=bool(data["underflow"]),
            overflow=bool(data["overflow"]),
            circular=bool(data["circular"]),
        )
        if "transform" in info:
            try:
                transform = TransformKind(info["transform"])
            except ValueError:
                msg = f"unknown axis transform {info['transform']!r} in stored schema"
                raise SchemaMismatchError(msg) from None
            edges = tuple(float(e) for e in data["edges"])
            power = float(info["power"]) if transform is TransformKind.POW else None
            return dense(
                AxisKind.REGULAR,
                bins=int(info["bins"]),
                lower=edges[0],
                upper=edges[-1],
                edges=edges,
                transform=Transform(transform, power),
            )
        if kind == "variable":
            return dense(
                AxisKind.VARIABLE, edges=tuple(float(e) for e in data["edges"])
            )
        if info.get("kind") == "integer":
            lower, upper = int(data["lower"]), int(data["upper"])
            return dense(
                AxisKind.INTEGER, bins=int(data["bins"]), lower=lower, upper=upper
            )
        return dense(
            AxisKind.REGULAR,
            bins=int(data["bins"]),
            lower=float(data["lower"]),
            upper=float(data["upper"]),
        )


def _metadata(axis: bh.axis.Axis) -> tuple[str, str, AxisMetadata | None]:
    """An axis' name, label and free-form metadata, checked."""
    # hist keeps name and label in the axis' __dict__ (``.label`` falls back to
    # the name, which must not be stored as an explicit label); plain
    # boost-histogram axes have neither, only their free-form ``metadata``.
    raw = getattr(axis, "__dict__", {})
    name = str(raw.get("name", "") or "")
    label = str(raw.get("label", "") or "")
    extra = raw.get("metadata")
    if extra is None:
        return name, label, None
    if not isinstance(extra, str | bool | int | float) or (
        isinstance(extra, float) and not math.isfinite(extra)
    ):
        msg = (
            f"axis {name or '<unnamed>'!r}: metadata={extra!r} cannot be "
            "stored; UHI axis metadata is a string, a finite number or a boolean"
        )
        raise UnsupportedAxisError(msg)
    return name, label, extra


def _transform(axis: bh.axis.Regular, name: str) -> Transform:
    """How a Regular axis' transform is recorded; refuses arbitrary functions."""
    t = axis.transform
    if isinstance(t, bh.axis.transform.Pow):
        return Transform(TransformKind.POW, float(t.power))
    for kind, plain in _PLAIN_TRANSFORMS.items():
        if t == plain:
            return Transform(kind)
    msg = (
        f"axis {name!r}: transform {t!r} cannot be stored faithfully; "
        "use log, sqrt, Pow or a Variable axis"
    )
    raise UnsupportedAxisError(msg)


def axis_from_bins(bins: Any, span: Any) -> bh.axis.Axis:
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


def _shape_free(axes: Sequence[AxisSpec]) -> list[AxisSpec]:
    """Axes compared for identity: a growing axis' categories may differ."""
    return [dataclasses.replace(a, categories=()) if a.growth else a for a in axes]


@dataclass(frozen=True)
class Schema:
    """Axes and storage of one histogram.

    Parameters
    ----------
    axes
        The axes, in order.
    storage
        The boost-histogram storage class.
    """

    axes: tuple[AxisSpec, ...]
    storage: type[bh.storage.Storage]

    @classmethod
    def from_axes(
        cls,
        axes: Sequence[bh.axis.Axis],
        storage: bh.storage.Storage | type[bh.storage.Storage] | None = None,
    ) -> Schema:
        """Validate hist/boost-histogram axes and a storage into a schema."""
        if not axes:
            msg = "a histogram needs at least one axis"
            raise UnsupportedAxisError(msg)
        storage_cls = _storage_class(
            storage if storage is not None else bh.storage.Double()
        )
        described = tuple(AxisSpec.from_axis(ax) for ax in axes)
        names = [d.name for d in described if d.name]
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
        return tuple(a.name for a in self.axes)

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

    def hist_axes(self) -> tuple[bh.axis.Axis, ...]:
        """Fresh ``hist`` axis objects."""
        return tuple(a.hist_axis() for a in self.axes)

    @functools.cached_property
    def shared_axes(self) -> tuple[bh.axis.Axis, ...]:
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
        return tuple(a.extent for a in self.axes)

    @property
    def n_bins(self) -> int:
        """Number of bins, flow bins included."""
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """NumPy dtype of the field arrays."""
        return np.dtype(self.spec.dtype)

    def grown(self, additions: Mapping[int, Sequence[int | str]]) -> Schema:
        """This schema with categories appended to growing axes (by axis position)."""
        axes = list(self.axes)
        for i, values in additions.items():
            axes[i] = dataclasses.replace(
                axes[i], categories=(*axes[i].categories, *values)
            )
        return Schema(tuple(axes), self.storage)

    def to_json(self) -> dict[str, Any]:
        """The UHI JSON document of this schema (without bin contents)."""
        return {
            "uhi_schema": 1,
            "axes": [a.to_json() for a in self.axes],
            "storage": {"type": self.spec.uhi_type},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        """Read back a document written by :meth:`to_json`."""
        try:
            storage = _STORAGE_BY_KIND[StorageKind(data["storage"]["type"])]
        except (KeyError, TypeError, ValueError):
            msg = f"unknown storage {data.get('storage')!r} in stored schema"
            raise SchemaMismatchError(msg) from None
        return cls(tuple(AxisSpec.from_json(a) for a in data["axes"]), storage)

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
                f"{where} has different axes:\n  stored:    {other.to_json()['axes']}"
                f"\n  requested: {self.to_json()['axes']}"
            )
            raise SchemaMismatchError(msg)
