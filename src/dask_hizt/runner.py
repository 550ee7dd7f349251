"""Histograms from coffea's ``processor.Runner`` (futures executors such as
``DaskExecutor``), which run processors eagerly on chunks of events.

A processor returns a :class:`Staging` holding its histograms. The fills of
a chunk of events add up in one histogram per path, which is staged (see
:mod:`dask_hizt._stage`) when the Staging leaves the processor, where the
repository lives: a
directory of its filesystem, or its own prefix in its S3 bucket, so workers
that share no disk with the client (dask-jobqueue, a Dask Gateway, ...)
can stage too. What coffea adds up in its tree of futures are lists of
staged objects' names, not histograms. After the run,
:meth:`Staging.commit` folds every staged fill into the repository with the
usual routed graph: one commit per run, no task holding more than its key
range, and chunks of events that a commit already holds are skipped, so a
re-run after a failure never counts a chunk twice.

Examples
--------
>>> class Processor(coffea.processor.ProcessorABC):  # doctest: +SKIP
...     def process(self, events):
...         out = dh.Staging(REPO, events.metadata)
...         out.hist(dataset_axis, pt_axis, storage=hist.storage.Weight(),
...                  path="muon/pt").fill(dataset=..., pt=events.Muon.pt)
...         return {"histograms": out}
...     def postprocess(self, accumulator):
...         return accumulator
>>> result = runner(fileset, processor_instance=Processor())  # doctest: +SKIP
>>> stored = result["histograms"].commit()  # {"muon/pt": StoredHist}

``REPO`` may be a local or shared directory or an ``s3://bucket/prefix``
URL; on S3 every process takes the credentials from its own environment
(see :mod:`dask_hizt._staging_area`). Staged fills of a run that died
before its commit are removed by :func:`dask_hizt.gc`.

After a run in which chunks failed (or a later job), only what is missing:

>>> todo = dh.Staging(REPO).pending(runner.preprocess(fileset))  # doctest: +SKIP
>>> result = runner(todo, processor_instance=Processor())  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Self

import boost_histogram as bh
import dask
import dask.base

from ._history import ancestry
from ._ledger import committed
from ._repo import check_path
from ._request import Request, bind
from ._stage import StagedFile, fill_eagerly, stage, staged_id
from ._staging_area import open_staging
from ._visible import check_staged, check_staging
from .collection import Requests
from .errors import FillError, StoreError
from .schema import Schema
from .stored import StoredHist

__all__ = ["Staging", "StagingHist"]


def _item_of(item: Any) -> str:
    """The identity of a chunk of events: a string, or coffea's ``events.metadata``."""
    if isinstance(item, str) and item:
        return item
    if isinstance(item, Mapping) and {"entrystart", "entrystop"} <= set(item):
        source = item.get("fileuuid") or item.get("filename")
        if source is not None:
            uuid = source.hex() if isinstance(source, bytes) else str(source)
            tree = item.get("treename", "")
            return f"{uuid}#{tree}[{item['entrystart']}:{item['entrystop']}]"
    msg = (
        "Staging needs the identity of its chunk of events: a non-empty string, "
        f"or coffea's events.metadata; got {item!r}"
    )
    raise FillError(msg)


def _work_item_id(item: Any) -> str:
    """The identity of coffea's ``WorkItem``: that of the ``events.metadata``
    the Runner gives the processor for it (see coffea's
    ``Runner._work_function``)."""
    fileuuid = item.fileuuid
    if isinstance(fileuuid, bytes):
        fileuuid = str(uuid.UUID(bytes=fileuuid)) if fileuuid else ""
    return _item_of(
        {
            "filename": item.filename,
            "treename": item.treename,
            "entrystart": item.entrystart,
            "entrystop": item.entrystop,
            "fileuuid": fileuuid,
        }
    )


class Staging:
    """A processor's dask_hizt histograms for one chunk of events; add them up
    with ``+`` (as coffea does) and :meth:`commit` the sum once.

    Like the dict a processor returns its ``hist.Hist`` objects in, a Staging
    takes names: ``out["pt"] = out.hist(...)``, then ``out["pt"].fill(...)``.
    A chunk is recorded (and so no longer :meth:`pending`) once its processor
    makes a histogram with :meth:`hist`, whether it fills it or not.

    Parameters
    ----------
    store
        The repository: a directory on a local or shared filesystem, an
        ``s3://bucket/prefix`` URL, or an ``icechunk.Repository`` on either.
        Fills are staged inside it (``.dask_hizt-staging``: a directory, or
        objects under the repository's S3 prefix) until :meth:`commit`. On a
        distributed cluster a local directory must be one that the client
        and every worker share, and exist before the run: a Staging made on
        a worker never creates it (make it on the client with
        ``dh.Staging(store)``); see :mod:`dask_hizt._visible`.
    item
        The identity of the chunk of events, used to never count it twice:
        coffea's ``events.metadata``, or a string of your own.
    branch
        Branch to commit to.
    storage_options
        Settings of an ``s3://`` store (endpoint, region, ...), as for
        :class:`~dask_hizt.Hist`, less static keys: every process (the
        client and each worker) takes the credentials from its own
        environment, so no secret travels with a Staging.

    Raises
    ------
    StoreError
        Before anything is written, for a store that cannot hold staged
        fills (e.g. an ``s3://`` URL without a bucket, static keys, storage
        neither on a filesystem nor on S3).
    """

    def __init__(
        self,
        store: Any,
        item: Any = None,
        *,
        branch: str = "main",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._ref, self._area = open_staging(store, storage_options)
        self._branch = branch
        self._item = None if item is None else _item_of(item)
        self._schemas: dict[str, tuple[Schema, Any]] = {}
        self._files: list[StagedFile] = []
        # out["pt"] = out.hist(...): the processor's names of its histograms
        self._names: dict[str, str] = {}
        # this chunk's fills not staged yet: one boost histogram per path
        self._unstaged: dict[str, bh.Histogram[Any]] = {}
        # marker tokens seen where fills were staged -> by whom (see _visible)
        self._seen: dict[str, str] = {}
        if self._ref.local_path is not None:
            # a worker stages only where the client's repository is
            token, where = check_staging(self._ref.local_path)
            self._seen[token] = where

    def hist(
        self, *axes: Any, storage: bh.storage.Storage | None = None, path: str
    ) -> StagingHist:
        """A histogram to fill eagerly; ``path`` names it in the repository."""
        if self._item is None:
            msg = "a Staging made without item= can only be added to, not filled"
            raise FillError(msg)
        schema = Schema.from_axes(axes, storage)
        path = check_path(path)
        known = self._schemas.get(path)
        if known is not None:
            schema.check_same(known[0], f"histogram {path!r}")
        else:
            self._schemas[path] = (schema, dask.config.get("dask_hizt.chunk-bytes"))
        # staged even if nothing fills it: the commit then records the chunk
        if path not in self._unstaged:  # not setdefault: a big allocation
            self._unstaged[path] = schema.empty_boost()
        return StagingHist(self, path, schema)

    def __setitem__(self, key: str, value: StagingHist) -> None:
        """Name a histogram, as a processor names its ``hist.Hist`` objects
        in a dict: ``out["pt"] = out.hist(..., path="muon/pt")``."""
        # typed callers aside, a processor may assign anything
        if not isinstance(value, StagingHist) or value._staging is not self:  # type: ignore[redundant-expr]
            msg = (
                f"out[{key!r}] takes a histogram of this Staging (out.hist(...)), "
                f"not {type(value).__name__}"
            )
            raise FillError(msg)
        self._names[key] = value.path

    def __getitem__(self, key: str) -> StagingHist:
        """The histogram named ``key`` (see :meth:`__setitem__`)."""
        path = self._names[key]
        return StagingHist(self, path, self._schemas[path][0])

    # --------------------------------------------------------- accumulate ---

    def _stage(self) -> None:
        """Stage this chunk's fills: one object per histogram filled since
        the last time (numbered, so a re-run of the chunk overwrites them)."""
        item = self._item
        if item is None:
            return  # a sum of Stagings: only staged fills
        for path, h in self._unstaged.items():
            number = sum(1 for f in self._files if f.path == path)
            schema = self._schemas[path][0]
            self._files.append(
                stage(self._area, self._branch, path, schema, item, number, h)
            )
        self._unstaged = {}

    def __getstate__(self) -> dict[str, Any]:
        # leaving the process (coffea's futures, checkpoints): staged first
        self._stage()
        return self.__dict__

    def __add__(self, other: Staging) -> Staging:
        self._stage()
        out = Staging.__new__(Staging)
        out._ref, out._branch, out._item = self._ref, self._branch, None
        out._area = self._area
        out._schemas, out._files = dict(self._schemas), list(self._files)
        out._names = dict(self._names)
        out._unstaged = {}
        out._seen = dict(self._seen)
        return out.__iadd__(other)

    def __iadd__(self, other: Staging) -> Self:
        if not isinstance(other, Staging):
            return NotImplemented
        if (other._area, other._branch) != (self._area, self._branch):
            msg = "cannot add Staging objects of different repositories or branches"
            raise StoreError(msg)
        for path, (schema, chunk_bytes) in other._schemas.items():
            known = self._schemas.setdefault(path, (schema, chunk_bytes))
            schema.check_same(known[0], f"histogram {path!r}")
        for key, path in other._names.items():
            if self._names.setdefault(key, path) != path:
                msg = (
                    f"out[{key!r}] names histogram {self._names[key]!r} in one "
                    f"Staging and {path!r} in the other"
                )
                raise FillError(msg)
        self._stage()
        other._stage()
        self._files.extend(other._files)
        for token, where in other._seen.items():
            self._seen.setdefault(token, where)
        return self

    def __len__(self) -> int:
        """Number of staged objects (one per histogram and chunk of events)."""
        self._stage()
        return len(self._files)

    # ------------------------------------------------------------- resume ---

    def pending(
        self,
        chunks: Iterable[Any] | Mapping[str, Any],
        *,
        runner: Any = None,
        treename: str | None = None,
        paths: Iterable[str] | None = None,
    ) -> list[Any]:
        """The chunks of events not committed yet: what a resumed run must do.

        Parameters
        ----------
        chunks
            coffea's work items (``processor.WorkItem``), as
            ``runner.preprocess(fileset)`` yields them; or a fileset, which
            ``runner`` preprocesses.
        runner
            The ``processor.Runner`` to preprocess a fileset with (its
            ``chunksize`` must be the first run's, so that the chunks are the
            same).
        treename
            Passed to ``runner.preprocess``.
        paths
            The histograms whose commits count: by default this Staging's,
            or, for one that has none yet (``dh.Staging(REPO)``), every
            histogram of the branch.

        Returns
        -------
        list
            The work items of ``chunks`` whose identity (file UUID, tree,
            entry range, as the staged fills record it) none of the
            histograms records, in order: pass them to the Runner in place of the
            fileset (``runner(todo, processor_instance=...)``; the Runner
            refuses an empty list, when everything is in).
        """
        if isinstance(chunks, Mapping):
            if runner is None:
                msg = "pending(fileset) needs runner= to cut the fileset into chunks"
                raise FillError(msg)
            chunks = runner.preprocess(chunks, treename=treename)
        done = self._committed_items(None if paths is None else list(paths))
        return [c for c in chunks if _work_item_id(c) not in done]

    def _committed_items(self, paths: list[str] | None) -> set[str]:
        """The chunks of events committed into ``paths`` (see :meth:`pending`)."""
        repo = self._ref.repo
        tip = repo.lookup_branch(self._branch)
        if paths is None:
            paths = list(self._schemas) or sorted(
                {
                    p
                    for _, record in ancestry(repo, snapshot_id=tip)
                    if record
                    for p in record.inputs
                }
            )
        prefix = staged_id("")
        return {
            identity.removeprefix(prefix)
            for ids in committed(repo, tip, paths).values()
            for identity in ids
            if identity.startswith(prefix)
        }

    # ------------------------------------------------------------- commit ---

    def commit(self, **kwargs: Any) -> dict[str, StoredHist]:
        """Fold every staged fill into the repository: ONE commit.

        Chunks of events that an earlier commit of a histogram already holds
        are left out (so is the case of a re-run after a failure). Keyword
        arguments go to ``dask.compute``. Returns the histograms as committed,
        by path; staged objects are removed once they are in (those of the
        chunks left out too).
        """
        if self._ref.local_path is not None:
            # fills staged into a node's own repository at this path: refused
            check_staged(self._ref.local_path, self._seen)
        self._stage()
        requests = []
        for path, (schema, chunk_bytes) in self._schemas.items():
            # the plan leaves out the chunks of events already committed
            todo = tuple(f for f in self._files if f.path == path)
            if todo:
                requests.append(
                    Request(
                        self._ref,
                        self._branch,
                        path,
                        schema,
                        chunk_bytes,
                        (),
                        todo,
                        self._area,
                    )
                )
        stored = (
            list(dask.base.compute(Requests(requests), **kwargs)[0]) if requests else []
        )
        self._area.delete(f.name for f in self._files)
        return {r.path: s for r, s in zip(requests, stored, strict=True)}


class StagingHist:
    """One histogram of a :class:`Staging`: its fills add up in memory, and
    are staged together when the Staging leaves the processor (pickled, added
    to another, or committed)."""

    def __init__(self, staging: Staging, path: str, schema: Schema) -> None:
        self._staging = staging
        self.path = path
        self._schema = schema

    def fill(
        self, *args: Any, weight: Any = None, sample: Any = None, **kwargs: Any
    ) -> Self:
        """Fill eagerly (arguments as for :meth:`dask_hizt.Hist.fill`, NumPy or
        awkward arrays)."""
        bound = bind(self._schema, args, kwargs, weight, sample)
        staging = self._staging
        if staging._item is None:
            msg = (
                f"{self.path!r} is in a sum of Stagings, which is committed, not filled"
            )
            raise FillError(msg)
        h = staging._unstaged.get(self.path)
        if h is None:
            h = staging._unstaged[self.path] = self._schema.empty_boost()
        fill_eagerly(
            h, self.path, staging._item, bound.values, bound.weight, bound.sample
        )
        return self
