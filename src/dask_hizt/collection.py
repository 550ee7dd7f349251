"""The lazy histogram collection and its ``fill``.

A :class:`Hist` names a histogram in a repository (checked against what is
there when the object is made) and queues fills. Computing it, with
``.compute()`` or ``dask.compute``, runs the graph of :mod:`dask_hizt._graph`
and returns a :class:`~dask_hizt.stored.StoredHist` of the one commit that
holds its counts. Histograms that do not exist yet are created, and growing
axes gain their new categories, in that same commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import boost_histogram as bh
import dask
import hist
import icechunk
from dask.base import DaskMethodsMixin, tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from . import _progress
from ._arrays import existing_schema
from ._checkpoint import CheckpointArg, parse_checkpoint
from ._graph import (
    Planned,
    Unplanned,
    awkward_optimize,
    join_awkward_optimizer,
    merge,
    optimize,
    pending_outputs,
)
from ._inputs import is_awkward
from ._plan import pending
from ._repo import RepoRef, check_path
from ._request import Fill, Request, bind, queue
from .schema import Schema, axis_from_bins
from .stored import StoredHist

__all__ = ["Hist", "HistSet", "Requests", "compute", "histogram"]

Key = Hashable


class _Computes(DaskMethodsMixin):
    """The dask collection protocol of everything that computes into repositories.

    The graph is an :class:`~dask_hizt._graph.Unplanned` layer, planned in
    the optimizer together with every other compute of the same
    ``dask.compute`` (planned at once when a fill reads dask-awkward arrays,
    whose column reports read the fill layers). Its name comes from the current tips of the branches
    (see ``_outline``), so ``__dask_keys__`` and ``__dask_graph__`` agree,
    and a new tip gives new keys.
    """

    _id: str
    _pinned: tuple[list[list[str]], _Outline] | None = None
    _checkpoint: CheckpointArg = None

    def _requests(self) -> list[Request]:
        raise NotImplementedError

    def compute(
        self,
        *,
        checkpoint: CheckpointArg = None,
        progress: bool = False,
        **kwargs: Any,
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

    def _outline(self) -> _Outline:
        return _outline(self, self._requests())

    def __dask_graph__(self) -> HighLevelGraph:
        layer = self._outline().layer
        if self._reads_awkward():
            # dask-awkward's column reports (dak.report_necessary_columns)
            # read the fill layers from the graph as it is: planned
            return layer.built.graph
        return HighLevelGraph({layer.name: layer}, {layer.name: set()})

    def _reads_awkward(self) -> bool:
        return any(
            is_awkward(s.collection)
            for r in self._requests()
            for f in r.fills
            for s in f.sources()
        )

    def __dask_keys__(self) -> list[Key]:
        return list(self._outline().layer.outputs)

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self._outline().layer.name,)

    def __dask_tokenize__(self) -> str:
        # Without planning: a token must not read inputs or storage.
        return tokenize(self._id, _fill_tokens(self._requests()))

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    @property
    def __dask_optimize__(self) -> Any:
        """The optimizer of dask-awkward's arrays when a fill reads them (dask
        optimizes collections together only when they share the optimizer
        object, and dask-awkward projects columns over all of them; the fill
        made it :func:`~dask_hizt._graph.join_awkward_optimizer`'s, which
        merges the computes first); otherwise ours. Either way the computes
        of one ``dask.compute`` are planned as one."""
        if self._reads_awkward():
            return awkward_optimize()
        return _optimize

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Rebuilt.rebuild, (self,)

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        targets = [(r.ref, r.path) for r in self._requests()]
        output_of = self._outline().output_of
        self._pinned = None  # the next compute plans anew
        return _finalize_set, (targets, output_of)


class Requests(_Computes):
    """Requests computed together, without ``Hist`` objects (the runner's
    staged fills): a list of :class:`~dask_hizt.stored.StoredHist`."""

    def __init__(self, requests: Sequence[Request]) -> None:
        self._fixed = list(requests)
        self._id = uuid.uuid4().hex

    def _requests(self) -> list[Request]:
        return self._fixed


def _optimize(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Plan the computes in ``dsk`` as one (:func:`~dask_hizt._graph.merge`),
    and fuse element-wise work on the inputs into the fill tasks, made lazily."""
    del kwargs
    if not isinstance(dsk, HighLevelGraph):
        return dsk
    keys = list(flatten(keys)) if isinstance(keys, list) else [keys]
    return optimize(merge(dsk), keys)


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
        return self._of.__dask_postcompute__()

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
        self._fills: list[Fill] = []
        self._id = uuid.uuid4().hex

    # ------------------------------------------------------------ public ---

    @property
    def axes(self) -> hist.axestuple.NamedAxesTuple:
        """The axes, as ``hist`` axis objects."""
        return hist.axestuple.NamedAxesTuple(self._schema.hist_axes())

    @property
    def storage_type(self) -> type[bh.storage.Storage]:
        """The boost-histogram storage class."""
        return self._schema.storage

    @property
    def path(self) -> str:
        """Path of the histogram in the repository."""
        return self._path

    @property
    def repository(self) -> icechunk.Repository:
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

        Each partition of a fill goes into the histogram exactly once, also
        when the job runs again in another process: a compute adds only
        partitions whose identity is not recorded in the histogram yet (see
        :meth:`pending`). By default a partition is known by where it comes
        from (file and row groups, or its position) and a digest of what the
        fill puts in from it, so a re-run reads it again but adds nothing. With
        ``partition_ids`` (one unique string per partition, e.g. a file name
        and entry range, the same whenever the job is built) a re-run skips
        the partitions already in without reading them.
        """
        del threads  # parallelism comes from dask
        bound = bind(self._schema, args, kwargs, weight, sample)
        fill = queue(self._schema, bound, partition_ids)
        if any(is_awkward(s.collection) for s in fill.sources()):
            join_awkward_optimizer()
        self._fills.append(fill)
        return self

    def pending(self) -> list[str]:
        """Identities of the queued fills' partitions that are not in the
        stored histogram yet (at the branch's tip): what a compute would add.

        Partitions known by ``partition_ids`` are looked up without reading
        anything; the others are identified by their content (see
        docs/format.md), so this reads them.

        Examples
        --------
        >>> h.fill(x=ddf.x).pending()  # doctest: +SKIP
        ['pq:part.0.parquet:all#9e0b4c1d2a7f3e6b', 'pq:part.1.parquet:all#...']
        """
        return _pending([self._request()])[0]

    def __repr__(self) -> str:
        axes = ", ".join(repr(a) for a in self._schema.hist_axes())
        return (
            f"dask_hizt.Hist({axes}, storage={self._schema.storage.__name__}(), "
            f"path={self._path!r}, fills={len(self._fills)})"
        )

    def _requests(self) -> list[Request]:
        return [self._request()]

    def _request(self) -> Request:
        return Request(
            self._ref,
            self._branch,
            self._path,
            self._schema,
            self._chunk_bytes,
            tuple(self._fills),
        )

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        self._pinned = None  # the next compute plans anew
        return _finalize, (self._ref, self._path)

    # -------------------------------------------------------------- plan ---


def _fill_tokens(requests: Sequence[Request]) -> list[list[str]]:
    return [[f.token() for f in r.fills] + [f.name for f in r.staged] for r in requests]


@dataclass(frozen=True)
class _Outline:
    """A compute before it is planned: its graph's layer, and per request the
    index of the output holding its snapshot id (one output per repository,
    in order of first appearance, as the plan orders its commits)."""

    layer: Unplanned
    output_of: tuple[int, ...]


def _outline(owner: _Computes, requests: Sequence[Request]) -> _Outline:
    fills = _fill_tokens(requests)
    pinned = owner._pinned
    if pinned is not None and pinned[0] == fills:
        return pinned[1]
    checkpoint = parse_checkpoint(owner._checkpoint)
    tips = [r.ref.repo.lookup_branch(r.branch) for r in requests]
    every = None if checkpoint is None else (checkpoint.batch, checkpoint.seconds)
    token = tokenize(owner._id, tips, fills, every)
    index: dict[tuple[Any, str], int] = {}
    output_of = tuple(index.setdefault(r.repository, len(index)) for r in requests)
    source = Planned(tuple(requests), checkpoint, tuple(index))
    outline = _Outline(Unplanned(source, f"hizt-commit-{token}", token), output_of)
    # dask asks for the graph, the keys and the post-compute step at different
    # moments of one compute; a commit landing in between must not make them
    # disagree. The outline stays pinned until __dask_postcompute__.
    owner._pinned = (fills, outline)
    return outline


def _pending(requests: Sequence[Request]) -> list[list[str]]:
    """``pending()``: what is known unread, and what the dry fill tasks find."""
    p = pending(requests)
    found = dask.base.compute(*pending_outputs(p.groups, p.tasks, uuid.uuid4().hex))
    return p.answer(found)


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

    def __init__(
        self, hists: Sequence[Hist], *, checkpoint: CheckpointArg = None
    ) -> None:
        self.hists = list(hists)
        if not all(isinstance(h, Hist) for h in self.hists):
            msg = "HistSet takes dask_hizt.Hist objects"
            raise TypeError(msg)
        self._checkpoint = checkpoint
        self._id = uuid.uuid4().hex

    def _requests(self) -> list[Request]:
        return [h._request() for h in self.hists]

    def pending(self) -> list[list[str]]:
        """Per histogram, what :meth:`Hist.pending` gives."""
        return _pending(self._requests())

    def __len__(self) -> int:
        return len(self.hists)


def compute(
    *args: Any,
    checkpoint: CheckpointArg = None,
    progress: bool = False,
    **kwargs: Any,
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


@dataclass(frozen=True)
class _Slot:
    index: int


def _finalize(results: Sequence[str], ref: RepoRef, path: str) -> StoredHist:
    (snapshot_id,) = results
    return StoredHist(ref, path, snapshot_id)


def _finalize_set(
    results: Sequence[str],
    targets: Sequence[tuple[RepoRef, str]],
    output_of: Sequence[int],
) -> list[StoredHist]:
    # StoredHist shares one read-only session per snapshot.
    return [
        StoredHist(ref, path, results[i])
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
