"""The lazy histogram collection and its ``fill``.

A :class:`Hist` names a histogram in a repository (checked against what is
there when the object is made) and queues fills. Computing it, with
``.compute()`` or ``dask.compute``, runs the graph of :mod:`dask_hizt._graph`
and returns a :class:`~dask_hizt.stored.StoredHist` of the one commit that
holds its counts. Histograms that do not exist yet are created, and growing
axes gain their new categories, in one preparing commit before the graph
runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import boost_histogram as bh
import dask
import dask.array as da
import hist
import numpy as np
from dask.base import DaskMethodsMixin, is_dask_collection, tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from ._graph import awkward_optimize, is_awkward, optimize
from ._plan import Plan, plan, prepare
from ._stage import StagedFile
from .errors import FillError
from .schema import Schema
from .stored import StoredHist
from .transaction import RepoRef, check_path, existing_schema

__all__ = ["Hist", "HistSet", "compute", "histogram"]

Key = Hashable


@dataclass(frozen=True)
class _Source:
    """One fill argument: a partitioned dask collection, or a broadcast scalar."""

    collection: Any = None
    value: Any = None

    @property
    def partitioned(self) -> bool:
        return self.collection is not None


@dataclass(frozen=True)
class _Fill:
    axes: tuple[_Source, ...]
    weight: _Source | None
    sample: _Source | None = None

    def sources(self) -> list[_Source]:
        return [s for s in self.args() if s is not None and s.partitioned]

    def args(self) -> tuple[_Source | None, ...]:
        return (*self.axes, self.weight, self.sample)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | bool | np.generic) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _npartitions(coll: Any) -> int:
    if isinstance(coll, da.Array):
        return len(coll.chunks[0])
    return int(coll.npartitions)


def _source(value: Any, what: str) -> _Source:
    """Normalise one fill argument."""
    if is_dask_collection(value):
        if isinstance(value, da.Array):
            if value.ndim != 1:
                msg = f"{what}: dask arrays must be one-dimensional, got ndim={value.ndim}"
                raise FillError(msg)
            return _Source(collection=value)
        if is_awkward(value):
            return _Source(collection=value)
        if hasattr(value, "npartitions") and hasattr(value, "optimize"):
            if getattr(value, "ndim", 1) != 1:
                msg = f"{what}: pass one column (a Series), not a DataFrame"
                raise FillError(msg)
            return _Source(collection=value)
        msg = f"{what}: unsupported dask collection {type(value).__name__}"
        raise FillError(msg)
    if _is_scalar(value):
        return _Source(
            value=value.item() if isinstance(value, np.generic | np.ndarray) else value
        )
    arr = np.asarray(value)
    if arr.ndim != 1:
        msg = f"{what}: arrays must be one-dimensional, got shape {arr.shape}"
        raise FillError(msg)
    return _Source(
        collection=arr
    )  # turned into a dask array once partitioning is known


class _Computes(DaskMethodsMixin):
    """The dask collection protocol of everything that computes into repositories.

    The graph is planned against the current tips of the branches and cached
    per tip (see ``_cached_plan``), so ``__dask_keys__`` and
    ``__dask_graph__`` agree, and a new tip gives new keys and fresh forks.
    """

    _id: str
    _plan_cache: tuple[str, Plan] | None
    _grown: list[list[str]] | None
    _pinned: tuple[list[list[str]], tuple[str, Plan]] | None = None

    def _hists(self) -> list[Hist]:
        raise NotImplementedError

    def _plan(self) -> tuple[str, Plan]:
        return _cached_plan(self, self._hists())

    def __dask_graph__(self) -> HighLevelGraph:
        return self._plan()[1].graph

    def __dask_keys__(self) -> list[Key]:
        return self._plan()[1].keys

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self._plan()[0],)

    def __dask_tokenize__(self) -> str:
        return self._plan()[0]

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    @property
    def __dask_optimize__(self) -> Any:
        """dask-awkward's own optimizer when a fill reads dask-awkward arrays
        (dask optimizes collections together only when they share the
        optimizer object, and dask-awkward projects columns over all of them);
        otherwise ours."""
        if any(
            is_awkward(s.collection)
            for h in self._hists()
            for f in h._fills
            for s in f.sources()
        ):
            return awkward_optimize()
        return _optimize

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Rebuilt.rebuild, (self,)


def _optimize(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Fuse element-wise work on the inputs into the fill tasks, made lazily."""
    del kwargs
    if not isinstance(dsk, HighLevelGraph):
        return dsk
    return optimize(dsk, list(flatten(keys)) if isinstance(keys, list) else [keys])


class _Rebuilt(DaskMethodsMixin):
    """A compute whose graph was already optimized (``dask.optimize``)."""

    def __init__(self, graph: Any, of: _Computes) -> None:
        self._graph = graph
        self._of = of

    @classmethod
    def rebuild(cls, dsk: Any, of: _Computes, *, rename: Any = None) -> _Rebuilt:
        if rename:
            msg = "dask_hizt computes cannot be renamed"
            raise NotImplementedError(msg)
        return cls(dsk, of)

    def __dask_graph__(self) -> Any:
        return self._graph

    def __dask_keys__(self) -> list[Key]:
        return self._of.__dask_keys__()

    def __dask_layers__(self) -> tuple[str, ...]:
        return self._of.__dask_layers__()

    def __dask_tokenize__(self) -> str:
        return self._of.__dask_tokenize__()

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._of.__dask_postcompute__()  # type: ignore[attr-defined,no-any-return]

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Rebuilt.rebuild, (self._of,)

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    @staticmethod
    def __dask_optimize__(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        del keys, kwargs
        return dsk


class Hist(_Computes):
    """A lazy histogram stored in an icechunk repository.

    Parameters
    ----------
    *axes
        ``hist`` or ``boost_histogram`` axes.
    storage
        A boost-histogram storage: Double (default), Int64 or Weight.
    store
        An ``icechunk.Repository``, an ``s3://bucket/prefix`` URL or the path
        of a local repository (a URL or path is created as a repository if
        none is there).
    path
        Path of the histogram's group in the repository. If a histogram is
        already there it must have the same axes and storage; computes add to it.
    branch
        Branch to commit to.
    storage_options
        Settings of an ``s3://`` store (``endpoint_url``, ``region``,
        ``access_key_id``, ...; see :mod:`dask_hizt.storage`); by default
        they come from the standard AWS environment variables.

    Examples
    --------
    >>> h = Hist(hist.axis.Regular(10, 0, 1, name="x"), store=repo, path="x")  # doctest: +SKIP
    >>> h.fill(x=ddf.x).compute().to_hist()  # doctest: +SKIP
    """

    def __init__(
        self,
        *axes: Any,
        storage: bh.storage.Storage | None = None,
        store: Any,
        path: str,
        branch: str = "main",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._schema = Schema.from_axes(axes, storage)
        self._path = check_path(path)
        self._ref = RepoRef.from_store(store, storage_options=storage_options)
        self._branch = branch
        # Checked now, created by the first compute (with every other new
        # histogram of that compute, in one commit).
        # The chunk layout follows the settings in force here, not at compute.
        self._chunk_bytes = dask.config.get("dask_hizt.chunk-bytes")
        stored = existing_schema(self._ref, branch, self._path)
        if stored is not None:
            self._schema.check_same(stored, f"histogram {self._path!r}")
        self._fills: list[_Fill] = []
        # eager fills staged by dask_hizt.runner, folded in by the compute
        self._staged: list[StagedFile] = []
        self._id = uuid.uuid4().hex
        self._plan_cache: tuple[str, Plan] | None = None
        self._grown: list[list[str]] | None = None

    # ------------------------------------------------------------ public ---

    @property
    def axes(self) -> hist.axestuple.NamedAxesTuple:
        """The axes, as ``hist`` axis objects."""
        return hist.axestuple.NamedAxesTuple(self._schema.hist_axes())

    @property
    def storage_type(self) -> type[Any]:
        """The boost-histogram storage class."""
        return self._schema.storage

    @property
    def path(self) -> str:
        """Path of the histogram in the repository."""
        return self._path

    @property
    def repository(self) -> Any:
        """The icechunk repository."""
        return self._ref.repo

    def fill(
        self,
        *args: Any,
        weight: Any = None,
        sample: Any = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> Self:
        """Queue a fill; nothing runs until the histogram is computed.

        Arguments are given per axis, positionally or by axis name, as 1-D
        dask arrays, dask.dataframe Series, NumPy arrays or Python scalars
        (broadcast to every entry). All partitioned arguments of one fill must
        be partitioned alike. ``weight`` is a scalar or an argument
        partitioned like the data.
        """
        del threads  # parallelism comes from dask
        storage = self._schema.storage.__name__
        mean = self._schema.spec.uhi_type in ("mean", "weighted_mean")
        if sample is not None and not mean:
            msg = f"sample= is only for Mean and WeightedMean storages; this histogram has {storage}"
            raise FillError(msg)
        if sample is None and mean:
            msg = f"a {storage} histogram needs sample= (the values to average)"
            raise FillError(msg)
        if weight is not None and self._schema.storage in (
            bh.storage.Int64,
            bh.storage.Mean,
        ):
            msg = (
                f"weight= cannot be used with {storage} storage (it counts entries); "
                "use Double, Weight or WeightedMean"
            )
            raise FillError(msg)
        names = self._schema.names
        if len(args) > len(names):
            msg = f"fill got {len(args)} positional arguments for a {len(names)}-axis histogram"
            raise FillError(msg)
        given: dict[int, Any] = dict(enumerate(args))
        for key, value in kwargs.items():
            if key not in names or not key:
                msg = (
                    f"fill got an unknown axis name {key!r}; the axes are {list(names)}"
                )
                raise FillError(msg)
            i = names.index(key)
            if i in given:
                msg = f"fill got axis {key!r} twice (positionally and by name)"
                raise FillError(msg)
            given[i] = value
        missing = [names[i] or f"#{i}" for i in range(len(names)) if i not in given]
        if missing:
            msg = f"fill is missing values for axes {missing}"
            raise FillError(msg)
        label = [names[i] or f"#{i}" for i in range(len(names))]
        sources = [_source(given[i], f"axis {label[i]!r}") for i in range(len(names))]
        wsource = None if weight is None else _source(weight, "weight")
        ssource = None if sample is None else _source(sample, "sample")
        self._fills.append(_align(_Fill(tuple(sources), wsource, ssource)))
        self._plan_cache = None
        return self

    def __repr__(self) -> str:
        axes = ", ".join(repr(a) for a in self._schema.hist_axes())
        return (
            f"dask_hizt.Hist({axes}, storage={self._schema.storage.__name__}(), "
            f"path={self._path!r}, fills={len(self._fills)})"
        )

    def _hists(self) -> list[Hist]:
        return [self]

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        self._pinned = None  # the next compute plans anew
        return _finalize, (self._ref, self._path)

    # -------------------------------------------------------------- plan ---


def _cached_plan(owner: _Computes, hists: Sequence[Hist]) -> tuple[str, Plan]:
    fills = [
        [_fill_token(f) for f in h._fills] + [f.file for f in h._staged] for h in hists
    ]
    pinned = owner._pinned
    if pinned is not None and pinned[0] == fills:
        return pinned[1]
    if owner._grown != fills:
        # Before reading the tips: the plan must be built on histograms that
        # exist (again, if deleted since) with all their categories.
        prepare(hists)
        owner._grown = fills
    tips = [h._ref.repo.lookup_branch(h._branch) for h in hists]
    token = tokenize(owner._id, tips, fills)
    name = f"hizt-commit-{token}"
    cached = owner._plan_cache
    if cached is None or cached[0] != token:
        cached = owner._plan_cache = (token, plan(hists, name, token))
    # dask asks for the graph, the keys and the post-compute step at different
    # moments of one compute; a commit landing in between must not make them
    # come from two plans. The plan stays pinned until __dask_postcompute__.
    owner._pinned = (fills, (name, cached[1]))
    return name, cached[1]


class HistSet(_Computes):
    """Histograms computed together: one fill task per input partition for all
    of them, and ONE commit per repository.

    Parameters
    ----------
    hists
        The lazy histograms, with their fills queued.

    Examples
    --------
    >>> stored = HistSet([h1, h2, h3]).compute()  # doctest: +SKIP
    >>> stored[0].to_hist()  # doctest: +SKIP
    """

    def __init__(self, hists: Sequence[Hist]) -> None:
        self.hists = list(hists)
        if not all(isinstance(h, Hist) for h in self.hists):
            msg = "HistSet takes dask_hizt.Hist objects"
            raise TypeError(msg)
        self._id = uuid.uuid4().hex
        self._plan_cache: tuple[str, Plan] | None = None
        self._grown: list[list[str]] | None = None

    def _hists(self) -> list[Hist]:
        return self.hists

    def __len__(self) -> int:
        return len(self.hists)

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        targets = [(h._ref, h._path) for h in self.hists]
        output_of = self._plan()[1].output_of
        self._pinned = None  # the next compute plans anew
        return _finalize_set, (targets, output_of)


def compute(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Compute like ``dask.compute``, with every :class:`Hist` found in
    ``args`` (also inside dicts, lists and tuples, as a coffea processor's
    output) computed together: one pass over the inputs and ONE commit per
    repository, however many objects name the same histogram.

    Other dask collections in ``args`` are computed in the same graph, so an
    input partition is read once for all of them. Each ``Hist`` comes back
    as a :class:`~dask_hizt.stored.StoredHist`.

    Examples
    --------
    >>> out, report = dh.compute(out, report)  # doctest: +SKIP
    """
    found: list[Hist] = []

    def pull(obj: Any) -> Any:
        if isinstance(obj, Hist):
            found.append(obj)
            return _Slot(len(found) - 1)
        if isinstance(obj, dict):
            return {k: pull(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(pull(v) for v in obj)
        return obj

    def put(obj: Any, stored: Sequence[StoredHist]) -> Any:
        if isinstance(obj, _Slot):
            return stored[obj.index]
        if isinstance(obj, dict):
            return {k: put(v, stored) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(put(v, stored) for v in obj)
        return obj

    rest = [pull(a) for a in args]
    if not found:
        return tuple(dask.base.compute(*args, **kwargs))
    stored, *results = dask.base.compute(HistSet(found), *rest, **kwargs)
    return tuple(put(r, stored) for r in results)


@dataclass(frozen=True)
class _Slot:
    index: int


def _fill_token(fill: _Fill) -> str:
    parts = [
        s.collection if s.partitioned else ("scalar", s.value)
        for s in fill.args()
        if s is not None
    ]
    return tokenize(*parts)


def _align(fill: _Fill) -> _Fill:
    """Check that a fill's partitioned arguments line up; wrap NumPy arrays as dask arrays."""
    colls = [s.collection for s in fill.sources()]
    lazy = [c for c in colls if is_dask_collection(c)]
    ref = lazy[0] if lazy else None
    if ref is not None:
        n = _npartitions(ref)
        for c in lazy[1:]:
            if _npartitions(c) != n:
                msg = f"fill arguments are partitioned differently: {n} and {_npartitions(c)} partitions"
                raise FillError(msg)
            if (
                isinstance(c, da.Array)
                and isinstance(ref, da.Array)
                and c.chunks != ref.chunks
            ):
                msg = f"fill arguments are chunked differently: {ref.chunks[0]} and {c.chunks[0]}"
                raise FillError(msg)
            known = getattr(c, "known_divisions", False) and getattr(
                ref, "known_divisions", False
            )
            if known and tuple(c.divisions) != tuple(ref.divisions):
                msg = "fill arguments have different divisions; align them (e.g. take both columns from one DataFrame)"
                raise FillError(msg)

    def wrap(s: _Source | None) -> _Source | None:
        if s is None or not isinstance(s.collection, np.ndarray):
            return s
        if ref is None:
            return _Source(collection=da.from_array(s.collection, chunks="auto"))
        if not isinstance(ref, da.Array):
            msg = "NumPy arrays can only be filled together with dask arrays, not with dask.dataframe columns"
            raise FillError(msg)
        if len(s.collection) != ref.shape[0]:
            msg = f"fill arguments have different lengths: {len(s.collection)} and {ref.shape[0]}"
            raise FillError(msg)
        return _Source(collection=da.from_array(s.collection, chunks=ref.chunks))

    axes = tuple(wrap(s) for s in fill.axes)
    out = _Fill(
        tuple(a for a in axes if a is not None), wrap(fill.weight), wrap(fill.sample)
    )
    if ref is None and out.sources():
        first = out.sources()[0].collection
        for s in out.sources()[1:]:
            if s.collection.chunks != first.chunks:
                msg = f"fill arguments have different lengths: {first.shape[0]} and {s.collection.shape[0]}"
                raise FillError(msg)
    return out


def _finalize(results: Sequence[Any], ref: RepoRef, path: str) -> StoredHist:
    (snapshot_id,) = results
    return StoredHist(ref, path, snapshot_id)


def _finalize_set(
    results: Sequence[Any],
    targets: Sequence[tuple[RepoRef, str]],
    output_of: Sequence[int],
) -> list[StoredHist]:
    # One read-only session per snapshot, shared by its histograms.
    sessions: dict[int, Any] = {}
    for (ref, _), i in zip(targets, output_of, strict=True):
        if i not in sessions:
            sessions[i] = ref.repo.readonly_session(snapshot_id=results[i])
    return [
        StoredHist(ref, path, results[i], sessions[i])
        for (ref, path), i in zip(targets, output_of, strict=True)
    ]


def histogram(
    x: Any,
    bins: int | Sequence[float] = 10,
    range: tuple[float, float] | None = None,
    weights: Any = None,
    *,
    storage: bh.storage.Storage | None = None,
    store: Any,
    path: str,
    branch: str = "main",
    storage_options: Mapping[str, Any] | None = None,
) -> Hist:
    """A one-dimensional stored histogram of ``x``, like ``numpy.histogram``.

    Parameters
    ----------
    x
        The data: a 1-D dask array, a dask.dataframe Series or a NumPy array.
    bins
        Number of equal bins in ``range``, or the bin edges.
    range
        Lower and upper edge; required with an integer ``bins``.
    weights
        Per-entry weights, partitioned like ``x``.
    storage, store, path, branch, storage_options
        As for :class:`Hist`.

    Returns
    -------
    Hist
        The lazy histogram with the fill queued; compute it to store it.
    """
    axis: Any
    if isinstance(bins, int | np.integer):
        if range is None:
            msg = "range=(lower, upper) is required when bins is a number"
            raise FillError(msg)
        axis = hist.axis.Regular(int(bins), float(range[0]), float(range[1]), name="")
    else:
        axis = hist.axis.Variable(list(bins), name="")
    h = Hist(
        axis,
        storage=storage,
        store=store,
        path=path,
        branch=branch,
        storage_options=storage_options,
    )
    return h.fill(x, weight=weights)
