"""Reading parts of a stored histogram: indexing, projections, dask arrays.

Pure functions of a zarr store (a readonly icechunk session's store), the
histogram's :class:`~dask_hizt.schema.Schema` and
:class:`~dask_hizt.layout.Layout`, and its path. Each reads only the chunks
it needs and leaves every piece of histogram arithmetic (slicing into flow
bins, summing, rebinning, merging accumulators) to boost-histogram itself,
so results equal the eager ``hist.Hist`` ones bit for bit. A damaged chunk
object raises :class:`~dask_hizt.errors.CorruptChunkError`.
"""

from __future__ import annotations

import itertools
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import boost_histogram as bh
import dask.array as da
import hist
import numpy as np
import numpy.typing as npt
import zarr
from dask.base import tokenize
from zarr.abc.store import Store
from zarr.core.sync import sync

from ._chunkio import ChunkFormat, basic_region, open_format, read_region
from ._damage import READ_ERRORS, corrupt, read
from .layout import Layout
from .schema import Schema, StorageSpec

__all__ = ["getitem", "project", "read_full", "to_dask_array"]


def _array(store: Store, path: str, field: str) -> zarr.Array[Any]:
    return zarr.open_array(store, path=f"{path}/{field}", mode="r")


@dataclass(frozen=True)
class _Field:
    """One storage field's array, read chunk by chunk through the store.

    Selections of integers and unit-step slices of a plain array (see
    :class:`~dask_hizt._chunkio.ChunkFormat`) are read with the codecs
    applied by hand: about twice as fast as zarr for chunks up to tens of
    KiB, as fast for 1 MiB ones. Any other selection goes through zarr.
    """

    path: str
    name: str
    array: zarr.Array[Any]
    fmt: ChunkFormat | None

    @classmethod
    def open(cls, store: Store, path: str, name: str) -> _Field:
        fmt, array = sync(open_format(store, f"{path}/{name}", mode="r"))
        return cls(path, name, zarr.Array(array), fmt)

    def read(self, selection: Any, *, orthogonal: bool = False) -> npt.NDArray[Any]:
        """``array[selection]`` (``oindex`` if ``orthogonal``) as a NumPy array;
        :class:`CorruptChunkError` if a chunk object it needs is damaged."""
        basic = None if self.fmt is None else basic_region(selection, self.fmt.shape)
        if self.fmt is None or basic is None:
            return read(
                self.array, self.path, self.name, selection, orthogonal=orthogonal
            )
        region, picked = basic
        fmt = self.fmt

        def damaged(
            err: BaseException, coords: tuple[int, ...]
        ) -> BaseException | None:
            return corrupt(err, self.path, self.name, coords)

        out = sync(
            read_region(
                self.array.store_path.store,
                fmt,
                region,
                concurrency=int(zarr.config.get("async.concurrency")),
                on_error=damaged,
            )
        )
        if picked:  # integers drop their axes, as in zarr
            keep = tuple(0 if i in picked else slice(None) for i in range(out.ndim))
            out = np.asarray(out[keep])
        return out


def _set_field(view: Any, spec: StorageSpec, name: str, where: Any, data: Any) -> None:
    """Write one storage field into a (possibly structured) boost view."""
    if spec.single_field:
        view[where] = data
    else:
        view[name][where] = data


def read_full(store: Store, schema: Schema, path: str) -> hist.Hist:  # type: ignore[type-arg]
    """The whole histogram, flow bins included.

    Parameters
    ----------
    store
        Zarr store holding the histogram.
    schema
        Its axes and storage.
    path
        Path of its group in the store.

    Returns
    -------
    hist.Hist
        Every bin, read at once.
    """
    h = schema.empty_hist()
    view: Any = h.view(flow=True)
    fields = schema.spec.fields
    for name in fields:
        _set_field(
            view, schema.spec, name, ..., _Field.open(store, path, name).read(...)
        )
    return h


def _labelled_axes(schema: Schema) -> tuple[Any, ...]:
    """The axes as they are in ``schema.empty_hist()``, without its storage.

    ``hist.Hist`` labels each axis without a name or label ``"Axis i"`` by
    its position. A result built from some of the axes must keep the labels
    of the whole histogram, as ``to_hist()[index]`` and ``to_hist().project()``
    do, not get new ones from its own positions.
    """
    axes = schema.hist_axes()
    for i, ax in enumerate(axes):
        if not ax.label:  # .label falls back to the name
            ax.label = f"Axis {i}"
    return axes


# ----------------------------------------------------------------- indexing --


@dataclass(frozen=True)
class _AxisPlan:
    """What one axis' part of an index needs.

    Attributes
    ----------
    read
        Flow positions to read along the axis: one position (the axis is
        picked away), a sorted array of positions (a list pick; the rest of
        the axis stays zero), or ``None`` for the whole axis.
    rest
        The index part to apply afterwards with ``hist``'s own indexing
        (meaningless when ``read`` is an int).
    """

    read: int | npt.NDArray[np.intp] | None
    rest: Any


def _expand(index: Any, schema: Schema) -> list[Any]:
    """One index part per axis, as ``hist`` and boost-histogram expand them."""
    rank = len(schema.axes)
    names = schema.names
    if isinstance(index, dict):
        parts: list[Any] = [slice(None)] * rank
        keys = []
        for k in index:
            if isinstance(k, str):
                if k not in names or not k:
                    msg = f"The axis name {k} could not be found"
                    raise ValueError(msg)
                keys.append(names.index(k))
            else:
                keys.append(k)
        if len(set(keys)) != len(keys):
            msg = "Duplicate index keys, numbers and names cannot overlap"
            raise ValueError(msg)
        for k, v in zip(keys, index.values(), strict=True):
            parts[k] = v
        return parts
    parts = list(index) if isinstance(index, tuple) else [index]
    # by identity: ``==`` is ambiguous for array parts
    dots = [i for i, p in enumerate(parts) if p is Ellipsis]
    if len(dots) > 1:
        msg = "an index can only have a single ellipsis ('...')"
        raise IndexError(msg)
    if dots:
        fill = rank + 1 - len(parts)
        if fill < 0:
            msg = "too many indices for histogram"
            raise IndexError(msg)
        parts[dots[0] : dots[0] + 1] = [slice(None)] * fill
    if len(parts) != rank:
        msg = "Wrong number of indices for histogram"
        raise IndexError(msg)
    return parts


def _is_sum(part: Any) -> bool:
    return part is sum or (isinstance(part, slice) and part.step is sum)


def _plan_axis(axis: Any, part: Any) -> _AxisPlan:
    """Classify one index part by applying it to a 1-D histogram of positions.

    The probe's bin contents are the bins' flow positions, so whatever
    ``hist`` makes of the part (locators, labels, wildcards, negative
    integers, flow sentinels and their errors) comes back as positions.
    """
    probe = hist.Hist(axis, storage=hist.storage.Double())
    probe.view(flow=True)[...] = np.arange(axis.extent, dtype=np.float64)
    with warnings.catch_warnings():
        # list picks warn that they are experimental; the real pick applied
        # afterwards warns the caller once
        warnings.simplefilter("ignore")
        got = probe[part]
    if isinstance(got, hist.Hist):
        if isinstance(part, (list, str)):  # a list of labels, or a wildcard
            picked = np.asarray(got.view(flow=True), dtype=np.intp)
            return _AxisPlan(np.unique(picked), part)
        return _AxisPlan(None, part)
    if _is_sum(part):
        return _AxisPlan(None, part)
    return _AxisPlan(int(got), None)


def _selection(plans: Sequence[_AxisPlan]) -> tuple[Any, ...]:
    return tuple(slice(None) if p.read is None else p.read for p in plans)


def getitem(store: Store, schema: Schema, path: str, index: Any) -> Any:
    """``hist.Hist.__getitem__`` on a stored histogram, reading only what it needs.

    Axes picked down to one bin (integers, ``loc``, labels, flow locators)
    are read at that bin only, and list picks of categories at the picked
    categories only; every other axis is read whole. The bins read form a
    smaller ``hist.Hist`` to which the rest of the index (slices, ``sum``,
    ``rebin``, list picks) is applied by ``hist`` itself, which is what
    ``hist.Hist.__getitem__`` does after its picks.

    Parameters
    ----------
    store
        Zarr store holding the histogram.
    schema
        Its axes and storage.
    path
        Path of its group in the store.
    index
        Any index ``hist.Hist`` accepts.

    Returns
    -------
    hist.Hist or scalar
        What ``hist.Hist.__getitem__`` returns for the same index: a
        histogram, or a bin content when every axis is picked or summed.
    """
    axes = _labelled_axes(schema)
    parts = _expand(index, schema)
    if any(isinstance(p, np.ndarray) for p in parts):
        # vectorized (gather) indexing couples the axes: read all, stay exact
        return read_full(store, schema, path)[index]
    plans = [_plan_axis(ax, p) for ax, p in zip(axes, parts, strict=True)]
    kept = [i for i, p in enumerate(plans) if not isinstance(p.read, int)]
    fields = schema.spec.fields
    storage = schema.storage()

    if not kept:
        # A one-bin histogram gives the bin content with boost's own type.
        one = hist.Hist(
            hist.axis.Integer(0, 1, underflow=False, overflow=False), storage=storage
        )
        view: Any = one.view(flow=True)
        for name in fields:
            block = _Field.open(store, path, name).read(
                _selection(plans), orthogonal=True
            )
            _set_field(view, schema.spec, name, 0, block)
        return one[0]

    small = hist.Hist(*(axes[i] for i in kept), storage=storage)
    view = small.view(flow=True)
    lists = [plans[i].read for i in kept]
    where: Any = ...
    if any(r is not None for r in lists):
        where = np.ix_(
            *(
                np.arange(axes[i].extent) if r is None else r
                for i, r in zip(kept, lists, strict=True)
            )
        )
    sel = _selection(plans)
    for name in fields:
        whole = all(p.read is None for p in plans)
        block = _Field.open(store, path, name).read(
            ... if whole else sel, orthogonal=not whole
        )
        _set_field(view, schema.spec, name, where, block)
    rest = tuple(plans[i].rest for i in kept)
    if all(isinstance(r, slice) and r == slice(None) for r in rest):
        return small
    return small[rest]


# --------------------------------------------------------------- projection --


def _axis_numbers(schema: Schema, axes: Sequence[int | str]) -> list[int]:
    """Axis numbers from names or numbers, checked like ``hist.Hist.project``."""
    rank = len(schema.axes)
    names = schema.names
    out = []
    for a in axes:
        if isinstance(a, str):
            if a not in names or not a:
                msg = f"The axis name {a} could not be found"
                raise ValueError(msg)
            i = names.index(a)
        else:
            i = operator.index(a)
            if not 0 <= i < rank:
                msg = (
                    "Projection axis must be a valid axis number "
                    f"0 to {rank - 1}, not {i}"
                )
                raise ValueError(msg)
        out.append(i)
    if len(set(out)) != len(out):
        msg = "indices are not unique"
        raise ValueError(msg)
    return out


def _block_hist(
    kshape: Sequence[int], blocks: dict[str, npt.NDArray[Any]], schema: Schema
) -> bh.Histogram[Any]:
    """A histogram of flow-less integer axes holding ``kshape + (n,)`` blocks
    of the storage of ``schema``."""
    n = next(iter(blocks.values())).shape[-1]
    h = bh.Histogram(
        *(bh.axis.Integer(0, k, underflow=False, overflow=False) for k in kshape),
        bh.axis.Integer(0, n, underflow=False, overflow=False),
        storage=schema.storage(),
    )
    view = np.asarray(h.view(flow=True))
    for name, block in blocks.items():
        _set_field(view, schema.spec, name, ..., block)
    return h


def _cropped(h: Any) -> bh.Histogram[Any]:
    """``h`` through boost's slicing machinery (a crop of nothing), as
    ``project(flow=False)`` passes its input."""
    out: bh.Histogram[Any] = h[..., 0 : h.axes[-1].size]
    return out


def _fields(h: bh.Histogram[Any], spec: StorageSpec) -> dict[str, npt.NDArray[Any]]:
    return dict(zip(spec.fields, spec.unpack(h.view(flow=True)), strict=True))


def _chunk_slices(start: int, stop: int, chunk: int) -> list[slice]:
    """The parts of ``[start, stop)`` in successive chunks of size ``chunk``."""
    return [
        slice(max(start, c), min(stop, c + chunk))
        for c in range(start - start % chunk, stop, chunk)
    ]


def project(
    store: Store,
    schema: Schema,
    layout: Layout,
    path: str,
    axes: Sequence[int | str],
    *,
    flow: bool = True,
) -> hist.Hist:  # type: ignore[type-arg]
    """``hist.Hist.project`` on a stored histogram, streaming over its chunks.

    boost-histogram projects by adding the bins of the dropped axes into
    each output bin one by one, in its storage order (first axis fastest).
    The same additions are made here in the same order, by boost itself on
    small temporary histograms, so the result is exactly the eager one
    (floating-point sums and mean merges included). Each step adds the running result of an
    output region and one *group* of chunks: one chunk, except when a dropped
    axis with chunk size 1 (a category axis) precedes a dropped axis with
    larger chunks; then the group holds all chunks along the former, since
    boost's order interleaves them.

    Parameters
    ----------
    store
        Zarr store holding the histogram.
    schema
        Its axes and storage.
    layout
        Its chunking.
    path
        Path of its group in the store.
    axes
        Axes to keep, by name or number, in the order wanted.
    flow
        Whether the flow bins of the dropped axes are added in.

    Returns
    -------
    hist.Hist
        The projection; memory is the output plus one group of chunks (times
        a small constant).
    """
    hist_axes = _labelled_axes(schema)
    rank = len(hist_axes)
    keep = _axis_numbers(schema, axes)
    drop = [i for i in range(rank) if i not in keep]
    fields = schema.spec.fields
    storage = schema.storage()
    out = hist.Hist(*(hist_axes[i] for i in keep), storage=storage)
    # plain ndarrays: boost's views mishandle 0-d records (no kept axes)
    out_view = np.asarray(out.view(flow=True))
    arrays = {name: _Field.open(store, path, name) for name in fields}

    # The range of stored positions that is added in along each axis.
    bounds: list[tuple[int, int]] = []
    for i, ax in enumerate(hist_axes):
        if i in drop and not flow:
            under = int(ax.traits.underflow)
            bounds.append((under, under + int(ax.size)))
        else:
            bounds.append((0, int(ax.extent)))
    # Dropped axes before the last one with chunks > 1 are read whole per
    # step, so that each step adds a contiguous run of boost's order.
    wide = [i for i in drop if layout.chunks[i] > 1]
    whole = {i for i in drop if wide and i < wide[-1]}
    pieces = [
        [slice(*bounds[i])]
        if i in whole
        else _chunk_slices(*bounds[i], layout.chunks[i])
        for i in range(rank)
    ]
    # Steps run over kept regions (any order) and, within one, over the
    # other dropped axes in boost's order: slowest axis outermost.
    stepped = [i for i in reversed(drop) if i not in whole]
    order = keep + stepped
    to_flat = keep + sorted(drop, reverse=True)  # C order of dropped = boost's
    started: set[tuple[int, ...]] = set()
    for combo in itertools.product(*(pieces[i] for i in order)):
        if any(s.start >= s.stop for s in combo):
            continue
        sel_by_axis = dict(zip(order, combo, strict=True))
        for i in whole:
            sel_by_axis[i] = pieces[i][0]
        sel = tuple(sel_by_axis[i] for i in range(rank))
        region = tuple(sel[i] for i in keep)
        region_key = tuple(s.start for s in region)
        kshape = [s.stop - s.start for s in region]
        first = region_key not in started
        started.add(region_key)
        n_add = int(np.prod([sel[i].stop - sel[i].start for i in drop], dtype=np.int64))
        blocks = {
            name: arrays[name].read(sel).transpose(to_flat).reshape([*kshape, n_add])
            for name in fields
        }
        if not flow:
            # boost crops the dropped axes before projecting; that pass merges
            # each bin into an empty one, which moves mean accumulators by an ulp
            blocks = _fields(_cropped(_block_hist(kshape, blocks, schema)), schema.spec)
        if not first:
            # the running result is added first, then the group's bins
            run = np.asarray(out_view[region])[..., np.newaxis]
            blocks = {
                name: np.concatenate(
                    [run if schema.spec.single_field else run[name], block],
                    axis=-1,
                )
                for name, block in blocks.items()
            }
        summed = _block_hist(kshape, blocks, schema).project(*range(len(keep)))
        out_view[region] = np.asarray(summed.view(flow=True))
    return out


# -------------------------------------------------------------- dask arrays --


def to_dask_array(
    store: Store,
    schema: Schema,
    path: str,
    field: str = "value",
    *,
    flow: bool = False,
    name: str | None = None,
) -> da.Array:
    """One storage field as a dask array over the zarr array, chunk for chunk.

    Parameters
    ----------
    store
        Zarr store holding the histogram; it must pickle (a readonly
        icechunk session's store does) for distributed schedulers.
    schema
        Its axes and storage.
    path
        Path of its group in the store.
    field
        A storage field: ``"value"``, or ``"variance"`` for Weight storage.
    flow
        Keep the flow bins; without them each axis loses its underflow and
        overflow positions.
    name
        Dask name of the unsliced array (default: from the zarr array).

    Returns
    -------
    dask.array.Array
        Lazy bin contents with the zarr chunking.
    """
    if field not in schema.spec.fields:
        msg = (
            f"no field {field!r} in a {schema.storage.__name__} histogram; "
            f"fields are {list(schema.spec.fields)}"
        )
        raise ValueError(msg)
    z = _array(store, path, field)
    if name is None:
        name = "from-zarr-" + tokenize(z, z.chunks)
    arr: da.Array = da.from_array(
        _Checked(z, path, field), chunks=z.chunks, name=name, inline_array=False
    )
    if flow:
        return arr
    inner = []
    for ax in schema.hist_axes():
        under = int(ax.traits.underflow)
        inner.append(slice(under, under + int(ax.size)))
    out: da.Array = arr[tuple(inner)]
    return out


@dataclass(frozen=True)
class _Checked:
    """A zarr array whose reads raise :class:`CorruptChunkError` on damaged
    chunks, for dask: it is what the tasks of :func:`to_dask_array` slice."""

    array: zarr.Array[Any]
    path: str
    field: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    def __getitem__(self, selection: Any) -> npt.NDArray[Any]:
        # a dask task reads one zarr chunk: the error names it without probing
        try:
            return np.asarray(self.array[selection])
        except READ_ERRORS as err:
            error = corrupt(
                err, self.path, self.field, _chunk_at(selection, self.array.chunks)
            )
            if error is None:
                raise
            raise error from err


def _chunk_at(selection: Any, chunks: Sequence[int]) -> tuple[int, ...] | None:
    """The chunk that a dask block's selection (slices, one per axis) starts in."""
    if not isinstance(selection, tuple) or len(selection) != len(chunks):
        return None
    if not all(isinstance(s, slice) for s in selection):
        return None
    return tuple((s.start or 0) // c for s, c in zip(selection, chunks, strict=True))
