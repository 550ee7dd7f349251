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

import datetime as dt
import math
import time
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

from . import _progress
from ._checkpoint import parse_duration
from ._graph import Checkpoint, awkward_optimize, is_awkward, optimize
from ._ledger import committed, default_ids
from ._plan import Plan, plan, prepare
from ._stage import StagedFile
from .errors import FillError
from .schema import Schema, axis_from_bins
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
    given: tuple[str, ...] | None = None  # the user's partition identities

    def sources(self) -> list[_Source]:
        return [s for s in self.args() if s is not None and s.partitioned]

    def args(self) -> tuple[_Source | None, ...]:
        return (*self.axes, self.weight, self.sample)

    def ids(self) -> list[str]:
        """The identity of each partition (see :mod:`dask_hizt._ledger`)."""
        if self.given is not None:
            return list(self.given)
        sources = self.sources()
        keys = (
            list(flatten(sources[0].collection.__dask_keys__()))
            if sources
            else ["scalars"]
        )
        return default_ids(keys, _fill_token(self))

    def partitions(self, taken: Sequence[int]) -> _Fill:
        """The fill of some of its partitions only (dask.dataframe columns
        stay whole: the plan takes the partitions of the frame it gathers
        them into, see ``_plan._inputs``)."""

        def sub(s: _Source | None) -> _Source | None:
            if s is None or not s.partitioned:
                return s
            c = s.collection
            if isinstance(c, da.Array):
                return _Source(collection=c.blocks[list(taken)])
            return _Source(collection=c.partitions[list(taken)] if is_awkward(c) else c)

        axes = tuple(sub(a) for a in self.axes)
        given = None if self.given is None else tuple(self.given[i] for i in taken)
        return _Fill(
            tuple(a for a in axes if a is not None),
            sub(self.weight),
            sub(self.sample),
            given,
        )


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
    _checkpoint: Any = None

    def _hists(self) -> list[Hist]:
        raise NotImplementedError

    def compute(
        self, *, checkpoint: Any = None, progress: bool = False, **kwargs: Any
    ) -> Any:
        """Compute into the repositories, like ``dask.compute``.

        Parameters
        ----------
        checkpoint
            Commit in batches, so that a job that dies keeps what it
            committed, and computing it again adds only the rest: an integer
            commits every that many partitions; a duration (``"10 min"``, a
            ``datetime.timedelta`` or seconds as a float) commits once that
            much time has passed since the last commit, checked every
            ``dask_hizt.checkpoint-step`` partitions. Default: the
            ``dask_hizt.checkpoint`` setting, ``None``: ONE commit.
        progress
            Show a progress bar while the graph runs: distributed's progress
            when it runs on a distributed ``Client``, dask's
            ``ProgressBar`` on the local schedulers.
        **kwargs
            Passed to ``dask.compute``.
        """
        before = self._checkpoint
        if checkpoint is not None:
            self._checkpoint = checkpoint
        try:
            (result,) = _progress.compute(
                self, progress=progress, traverse=False, **kwargs
            )
            return result
        finally:
            self._checkpoint = before

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
        partition_ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Queue a fill; nothing runs until the histogram is computed.

        Arguments are given per axis, positionally or by axis name, as 1-D
        dask arrays, dask.dataframe Series, NumPy arrays or Python scalars
        (broadcast to every entry). All partitioned arguments of one fill must
        be partitioned alike. ``weight`` is a scalar or an argument
        partitioned like the data.

        Each partition of a fill goes into the histogram exactly once: a
        compute skips partitions already committed to it (see
        :meth:`pending`). A partition is known by its dask key and the fill's
        arguments, or by ``partition_ids``: one unique string per partition
        (e.g. a file name and entry range) that stays the same when the job
        is built again.
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
        fill = _align(_Fill(tuple(sources), wsource, ssource))
        if partition_ids is not None:
            fill = _with_ids(fill, partition_ids)
        self._fills.append(fill)
        self._plan_cache = None
        return self

    def pending(self) -> list[str]:
        """Identities of the queued fills' partitions that are not in the
        stored histogram yet (at the branch's tip): what a compute would add.

        Examples
        --------
        >>> h.fill(x=ddf.x).pending()  # doctest: +SKIP
        ['getitem-1f…/0#9e0b…', 'getitem-1f…/1#9e0b…']
        """
        return _pending([self])[0]

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
    checkpoint = _parse_checkpoint(owner._checkpoint)
    tips = [h._ref.repo.lookup_branch(h._branch) for h in hists]
    every = None if checkpoint is None else (checkpoint.batch, checkpoint.seconds)
    token = tokenize(owner._id, tips, fills, every)
    name = f"hizt-commit-{token}"
    cached = owner._plan_cache
    if cached is None or cached[0] != token:
        cached = owner._plan_cache = (token, plan(hists, name, token, checkpoint))
    # dask asks for the graph, the keys and the post-compute step at different
    # moments of one compute; a commit landing in between must not make them
    # come from two plans. The plan stays pinned until __dask_postcompute__.
    owner._pinned = (fills, (name, cached[1]))
    return name, cached[1]


def _pending(hists: Sequence[Hist]) -> list[list[str]]:
    out = []
    for h in hists:
        tip = h._ref.repo.lookup_branch(h._branch)
        done = committed(h._ref.repo, tip, [h._path])[h._path]
        out.append([x for f in h._fills for x in f.ids() if x not in done])
    return out


def _parse_checkpoint(value: Any) -> Checkpoint | None:
    """A ``checkpoint=`` argument (or the ``dask_hizt.checkpoint`` setting)."""
    if value is None:
        value = dask.config.get("dask_hizt.checkpoint", None)
    if value is None:
        return None
    start = time.time()
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            msg = f"checkpoint must be at least 1 partition, got {value}"
            raise ValueError(msg)
        return Checkpoint(value, None, start)
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as err:
            msg = f"checkpoint {value!r} is neither a number of partitions nor a duration: {err}"
            raise ValueError(msg) from err
    elif isinstance(value, float):
        seconds = value
    else:
        msg = f"checkpoint must be a number of partitions or a duration, got {value!r}"
        raise TypeError(msg)
    if not seconds >= 0 or not math.isfinite(seconds):
        msg = f"checkpoint duration must be finite and not negative, got {value!r}"
        raise ValueError(msg)
    step = int(dask.config.get("dask_hizt.checkpoint-step"))
    return Checkpoint(max(1, step), seconds, start)


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

    def __init__(self, hists: Sequence[Hist], *, checkpoint: Any = None) -> None:
        self.hists = list(hists)
        if not all(isinstance(h, Hist) for h in self.hists):
            msg = "HistSet takes dask_hizt.Hist objects"
            raise TypeError(msg)
        self._checkpoint = checkpoint
        self._id = uuid.uuid4().hex
        self._plan_cache: tuple[str, Plan] | None = None
        self._grown: list[list[str]] | None = None

    def _hists(self) -> list[Hist]:
        return self.hists

    def pending(self) -> list[list[str]]:
        """Per histogram, what :meth:`Hist.pending` gives."""
        return _pending(self.hists)

    def __len__(self) -> int:
        return len(self.hists)

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        targets = [(h._ref, h._path) for h in self.hists]
        output_of = self._plan()[1].output_of
        self._pinned = None  # the next compute plans anew
        return _finalize_set, (targets, output_of)


def compute(
    *args: Any, checkpoint: Any = None, progress: bool = False, **kwargs: Any
) -> tuple[Any, ...]:
    """Compute like ``dask.compute``, with every :class:`Hist` found in
    ``args`` (also inside dicts, lists and tuples, as a coffea processor's
    output) computed together: one pass over the inputs and ONE commit per
    repository, however many objects name the same histogram.

    Other dask collections in ``args`` are computed in the same graph, so an
    input partition is read once for all of them. Each ``Hist`` comes back
    as a :class:`~dask_hizt.stored.StoredHist`. ``checkpoint`` and
    ``progress`` are as for :meth:`Hist.compute`.

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
        return _progress.compute(*args, progress=progress, **kwargs)
    stored, *results = _progress.compute(
        HistSet(found, checkpoint=checkpoint), *rest, progress=progress, **kwargs
    )
    return tuple(put(r, stored) for r in results)


def _with_ids(fill: _Fill, given: Sequence[str]) -> _Fill:
    """Check the user's partition identities of a fill and attach them."""
    if isinstance(given, str) or not all(isinstance(x, str) for x in given):
        msg = "partition_ids must be a sequence of strings, one per partition"
        raise FillError(msg)
    sources = fill.sources()
    n = _npartitions(sources[0].collection) if sources else 1
    if len(given) != n:
        msg = f"partition_ids has {len(given)} identities for {n} partitions"
        raise FillError(msg)
    if len(set(given)) != n:
        twice = sorted(x for x in set(given) if list(given).count(x) > 1)
        msg = f"partition_ids must be unique; repeated: {twice[:3]}"
        raise FillError(msg)
    return _Fill(fill.axes, fill.weight, fill.sample, tuple(given))


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
        Number of equal bins in ``range`` (a positive integer), or the bin
        edges (at least 2, finite, strictly increasing).
    range
        Lower and upper edge (finite, lower < upper); required with an
        integer ``bins``.
    weights
        Per-entry weights, partitioned like ``x``.
    storage, store, path, branch, storage_options
        As for :class:`Hist`.

    Returns
    -------
    Hist
        The lazy histogram with the fill queued; compute it to store it.

    Raises
    ------
    FillError
        For bad ``bins`` or ``range``, naming the problem, before the
        repository is opened or created.
    """
    h = Hist(
        axis_from_bins(bins, range),  # checked before the repository is touched
        storage=storage,
        store=store,
        path=path,
        branch=branch,
        storage_options=storage_options,
    )
    return h.fill(x, weight=weights)
