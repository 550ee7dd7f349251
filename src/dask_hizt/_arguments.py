"""One fill's arguments in a fill task: where they are among a partition's
inputs (:class:`Arg`, :class:`FillSpec`), the histogram they go to
(:class:`Target`), the checked values of one partition (:func:`arguments`)
and their bin indices along one axis (:func:`axis_indices`).

Shared by :mod:`dask_hizt._fill` and :mod:`dask_hizt._shared_fill`. No dask
imports here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from .errors import FillError
from .layout import Layout
from .schema import AxisKind, AxisSpec, Schema

__all__ = [
    "Arg",
    "Arguments",
    "FillSpec",
    "Inputs",
    "Target",
    "arguments",
    "axis_indices",
    "is_awkward_part",
]


class Inputs(Protocol):
    """A partition's inputs by slot: a sequence, or lazily made ones that
    also have ``release(i)`` (see :mod:`dask_hizt._lazy`)."""

    def __getitem__(self, i: int, /) -> Any: ...


@dataclass(frozen=True)
class Arg:
    """Where a fill argument comes from: a partition input (``index`` into the
    task's inputs, and the ``part`` to take when that input is a tuple of
    packed dataframe partitions) or a Python scalar broadcast to every entry
    (``value``)."""

    index: int | None = None
    value: Any = None
    part: int | None = None

    def take(self, inputs: Inputs) -> Any:
        """This argument's data among a partition's inputs."""
        assert self.index is not None
        data = inputs[self.index]
        return data if self.part is None else data[self.part]


@dataclass(frozen=True)
class FillSpec:
    """One queued ``fill`` call: an :class:`Arg` per axis, the weight and the sample."""

    axes: tuple[Arg, ...]
    weight: Arg | None
    sample: Arg | None = None

    def args(self) -> tuple[Arg | None, ...]:
        """Every argument, in the order identities digest them."""
        return (*self.axes, self.weight, self.sample)


@dataclass(frozen=True)
class Target:
    """One histogram of a compute, and where its keys lie in its key space."""

    path: str
    schema: Schema
    layout: Layout
    space: int
    offset: int

    @property
    def key_range(self) -> tuple[int, int]:
        """The histogram's keys in its key space."""
        return self.offset, self.offset + self.layout.n_keys


def is_awkward_part(x: Any) -> bool:
    return type(x).__module__.startswith("awkward")


def as_1d(obj: Any, what: str, partition: str) -> npt.NDArray[Any]:
    arr = np.asarray(obj)
    if arr.ndim != 1:
        msg = f"{what} must be one-dimensional, got shape {arr.shape} in partition {partition}"
        raise FillError(msg)
    return arr


def check_dtype(spec: AxisSpec, values: npt.NDArray[Any], name: str) -> None:
    """Refuse values an axis cannot take, with an error that names the axis."""
    kind = spec.kind
    if kind is AxisKind.INT_CATEGORY and values.dtype.kind not in "iub":
        msg = f"axis {name!r} is an IntCategory axis and needs integers, got dtype {values.dtype}"
        raise FillError(msg)
    if kind is AxisKind.STR_CATEGORY and values.dtype.kind not in "OUST":
        msg = f"axis {name!r} is a StrCategory axis and needs strings, got dtype {values.dtype}"
        raise FillError(msg)
    if not spec.is_category and values.dtype.kind not in "iufb":
        msg = f"axis {name!r} is numeric and cannot be filled with values of dtype {values.dtype}"
        raise FillError(msg)
    if kind is AxisKind.INTEGER and values.dtype.kind == "f":
        msg = f"axis {name!r} is an Integer axis and needs integer values, got dtype {values.dtype}"
        raise FillError(msg)


def axis_indices(
    axis: Any, spec: AxisSpec, values: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_] | None]:
    """Per-entry bin index (flow bins counted) and the mask of entries that land in a bin."""
    if spec.is_category:
        idx = pd.Index(list(spec.categories)).get_indexer(values)
        missing = idx < 0
        if not missing.any():
            return idx, None
        if spec.growth:
            # The compute added every value to the axis before filling: a
            # missing one would be dropped silently, so refuse instead.
            msg = f"value {values[missing][0]!r} is not a category of the growing axis"
            raise FillError(msg)
        if spec.overflow:
            idx[missing] = len(spec.categories)
            return idx, None
        return idx, ~missing
    if spec.kind is AxisKind.BOOLEAN:
        return values.astype(bool).astype(np.intp), None
    idx = np.asarray(axis.index(values), dtype=np.intp)
    if axis.traits.underflow:
        idx += 1
    ok = (idx >= 0) & (idx < axis.extent)
    return idx, (None if ok.all() else ok)


@dataclass(frozen=True)
class Arguments:
    """One fill's arguments for one partition, checked: per axis a 1-D array
    or a broadcast scalar, then the weight and the sample (``None``, a float
    or a float64 array), and the number of entries."""

    values: list[Any]
    weight: Any
    sample: Any
    n: int

    def digested(self) -> list[Any]:
        """The arguments in :meth:`FillSpec.args` order."""
        return [*self.values, self.weight, self.sample]


def arguments(
    schema: Schema, spec: FillSpec, inputs: Inputs, partition: str
) -> Arguments:
    names = [n or f"#{i}" for i, n in enumerate(schema.names)]
    values: list[Any] = []
    lengths: dict[str, int] = {}
    for name, arg, ax_spec in zip(names, spec.axes, schema.axes, strict=True):
        if arg.index is None:
            check_dtype(ax_spec, np.asarray([arg.value]), name)
            values.append(arg.value)
        else:
            arr = as_1d(arg.take(inputs), f"axis {name!r}", partition)
            check_dtype(ax_spec, arr, name)
            values.append(arr)
            lengths[name] = len(arr)
    weight = numbers(spec.weight, inputs, "weight", partition, lengths)
    sample = numbers(spec.sample, inputs, "sample", partition, lengths)
    if len(set(lengths.values())) > 1:
        msg = (
            f"fill arguments have different lengths in partition {partition}: {lengths}"
        )
        raise FillError(msg)
    n = next(iter(lengths.values())) if lengths else 1
    return Arguments(values, weight, sample, n)


def numbers(
    arg: Arg | None,
    inputs: Inputs,
    what: str,
    partition: str,
    lengths: dict[str, int],
) -> Any:
    """A weight or sample: ``None``, a broadcast float, or a float64 array."""
    if arg is None:
        return None
    if arg.index is None:
        return float(arg.value)
    arr = as_1d(arg.take(inputs), what, partition)
    if arr.dtype.kind not in "iufb":
        msg = f"{what} must be numeric, got dtype {arr.dtype}"
        raise FillError(msg)
    lengths[what] = len(arr)
    return arr.astype(np.float64, copy=False)
