"""Repositories, sessions, forks, the one commit per compute, conflict fix-up, locks.

Facts this module is built on (see docs/format.md and the design notes):

* Forks of one session that wrote the same chunk merge silently, last one
  wins; so each chunk has exactly one writer per compute.
* A fork merged into a session based on a newer snapshot silently overwrites
  the newer chunks; so when the branch moved while we computed, every chunk
  that both we and the newer commits wrote is rewritten as
  ``theirs + (ours - base)`` before committing.
* Racing commits on local-filesystem storage can be lost although each
  ``commit()`` reports success; so commits there hold an OS file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import posixpath
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.codecs
import zarr.core.buffer
import zarr.core.sync
import zarr.errors
import zarr.storage

from ._ledger import committed_between
from .errors import (
    CommitError,
    DuplicateInputError,
    NotAHistogramError,
    SchemaMismatchError,
    StoreError,
)
from .layout import Layout
from .schema import ATTR_KEY, FORMAT_VERSION, Schema
from .storage import cache_key, is_url, open_repository, parse_url, quiet_icechunk_logs

__all__ = [
    "Creation",
    "RepoRef",
    "check_path",
    "commit_forks",
    "delete_histogram",
    "existing_schema",
    "prepare",
    "read_histogram_meta",
    "writable",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".dask_hizt.lock"


@dataclass(frozen=True)
class RepoRef:
    """A picklable way to reach one icechunk repository from any process.

    Parameters
    ----------
    repo
        The repository (icechunk repositories pickle with their storage).
    local_path
        Directory of a local-filesystem repository, used for the commit lock;
        ``None`` for object storage, whose conditional writes need no lock.
    url
        The ``s3://bucket/prefix`` URL the repository was opened from, if any
        (named in errors; never holds credentials).
    """

    repo: icechunk.Repository
    local_path: str | None = None
    url: str | None = None

    @classmethod
    def from_store(
        cls,
        store: Any,
        *,
        create: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> RepoRef:
        """Resolve a ``store=`` argument: a repository, an ``s3://bucket/prefix``
        URL (see :mod:`dask_hizt.storage`; ``storage_options`` are its
        settings), or a local directory; a URL or directory is created as a
        repository if none is there and ``create``."""
        if isinstance(store, RepoRef):
            return store
        if isinstance(store, icechunk.Repository):
            return cls(store, _local_path_of(store))
        if storage_options and not (isinstance(store, str) and is_url(store)):
            msg = "storage_options= is only for stores given as s3:// URLs"
            raise StoreError(msg)
        if isinstance(store, str) and is_url(store):
            url = parse_url(store)
            key = cache_key(url, storage_options)
            ref = _OPENED_URLS.get(key)
            if ref is None:
                repo = open_repository(url, storage_options, create=create)
                ref = _OPENED_URLS[key] = cls(repo, None, str(url))
            return ref
        if isinstance(store, str | os.PathLike):
            text = os.fspath(store)
            path = Path(text).expanduser().resolve()
            cached = _OPENED.get(str(path))
            if cached is not None and path.is_dir():
                return cached
            if path.exists() and not path.is_dir():
                msg = f"store {text!r} is a file, not a repository directory"
                raise StoreError(msg)
            if not create and not path.exists():
                msg = f"no repository at {text!r}"
                raise StoreError(msg)
            quiet_icechunk_logs()  # before the storage exists: it warns when made
            storage = icechunk.local_filesystem_storage(str(path))
            try:
                repo = _open_local(storage, create)
            except icechunk.IcechunkError as err:
                msg = (
                    f"store {text!r} cannot be opened as an icechunk repository: {err}"
                )
                raise StoreError(msg) from err
            ref = _OPENED[str(path)] = cls(repo, str(path))
            return ref
        msg = f"store must be a path or an icechunk.Repository, got {type(store).__name__}"
        raise StoreError(msg)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the repository's commit lock (a no-op on object storage)."""
        if self.local_path is None:
            yield
            return
        with Path(self.local_path, LOCK_NAME).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# Local repositories opened in this process, by directory: many Hist objects
# on one path share one Repository (and its caches) instead of reopening it.
_OPENED: dict[str, RepoRef] = {}
# The same for object storage, by URL and effective settings.
_OPENED_URLS: dict[tuple[str, ...], RepoRef] = {}


def _open_local(storage: icechunk.Storage, create: bool) -> icechunk.Repository:
    if not create:
        return icechunk.Repository.open(storage)
    # open_or_create is not atomic: a racing creator may have won (its
    # repository info landed first: a conflict), or may be halfway (the
    # prefix is no longer clean, the repository not there yet). Any of its
    # errors is tried again, 50 times at most: the last one is raised.
    for _ in range(49):
        try:
            return icechunk.Repository.open_or_create(storage)
        except icechunk.IcechunkError:
            time.sleep(0.1)
    return icechunk.Repository.open_or_create(storage)


def _local_path_of(repo: icechunk.Repository) -> str | None:
    # icechunk exposes no accessor for the storage kind; its repr names it.
    text = repr(repo.storage)
    if "type: local filesystem" not in text:
        return None
    match = re.search(r"^path: (.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def check_path(path: str) -> str:
    """Normalise a histogram path, refusing ones that leave their group."""
    if not path.strip("/"):
        msg = f"path must be a non-empty string, got {path!r}"
        raise StoreError(msg)
    if path.startswith("/") or "\\" in path:
        msg = f"path {path!r} must be relative (no leading '/')"
        raise StoreError(msg)
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        msg = f"path {path!r} may not contain empty, '.' or '..' components"
        raise StoreError(msg)
    return posixpath.join(*parts)


# ---------------------------------------------------------------- metadata ---


def _group_attrs(schema: Schema, layout: Layout) -> dict[str, Any]:
    doc = schema.to_json()
    doc[ATTR_KEY] = {
        "format_version": FORMAT_VERSION,
        "fields": list(schema.spec.fields),
        "chunks": list(layout.chunks),
    }
    return doc


def read_histogram_meta(store: Any, path: str) -> tuple[Schema, Layout]:
    """Read the schema and layout of the histogram at ``path`` in a session's store.

    Raises
    ------
    NotAHistogramError
        If nothing, or something that is not a dask_hizt histogram, is there.
    SchemaMismatchError
        If it was written by a newer version of the on-disk format.
    """
    found = find_histogram(store, path)
    if found is None:
        msg = f"no histogram at path {path!r}"
        raise NotAHistogramError(msg)
    return found


def find_histogram(store: Any, path: str) -> tuple[Schema, Layout] | None:
    """Like :func:`read_histogram_meta`, but ``None`` when nothing is at ``path``."""
    try:
        group = zarr.open_group(
            store, path=path, mode="r", zarr_format=3, use_consolidated=False
        )
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    except zarr.errors.ContainsArrayError as err:
        msg = f"path {path!r} holds a zarr array, not a dask_hizt histogram"
        raise NotAHistogramError(msg) from err
    attrs: dict[str, Any] = dict(group.attrs.asdict())
    meta: Any = attrs.get(ATTR_KEY)
    if not isinstance(meta, Mapping) or "format_version" not in meta:
        msg = f"path {path!r} holds a zarr group that is not a dask_hizt histogram"
        raise NotAHistogramError(msg)
    version = int(meta["format_version"])
    if version > FORMAT_VERSION:
        msg = (
            f"histogram {path!r} has on-disk format version {version}, newer than this "
            f"dask_hizt understands ({FORMAT_VERSION}); upgrade dask_hizt"
        )
        raise SchemaMismatchError(msg)
    schema = Schema.from_json(attrs)
    return schema, Layout(schema.shape, tuple(int(c) for c in meta["chunks"]))


def existing_schema(ref: RepoRef, branch: str, path: str) -> Schema | None:
    """The schema of the histogram at ``path`` on the branch's tip, or ``None``
    if nothing is there (a node that is not a histogram raises)."""
    try:
        tip = ref.repo.lookup_branch(branch)
    except icechunk.IcechunkError as err:
        msg = f"branch {branch!r} cannot be read: {err}"
        raise StoreError(msg) from err
    cached = _TIP_SESSIONS.get((id(ref.repo), tip))
    if cached is None:
        # Many Hist objects are made against one tip: share its session.
        _TIP_SESSIONS.clear()
        cached = _TIP_SESSIONS[(id(ref.repo), tip)] = ref.repo.readonly_session(
            snapshot_id=tip
        )
    found = find_histogram(cached.store, path)
    return None if found is None else found[0]


_TIP_SESSIONS: dict[tuple[int, str], icechunk.Session] = {}


@dataclass(frozen=True)
class Creation:
    """The histograms a compute creates, and the categories it appends to
    growing axes, made in a fork of the session the compute is planned on.

    The owners' forks are forked from ``fork``, and the commit merges
    ``fork`` first: the creation lands in the commit that holds the counts,
    so a compute that fails leaves the repository as it was.

    Attributes
    ----------
    fork
        The ``icechunk.ForkSession`` holding the new groups and arrays.
    parent
        A fork of ``fork`` without changes of its own, that the owners fork
        from: each fork of a fork with changes writes a snapshot of them (no
        branch refers to it; ``dh.gc`` removes it), this one does it once.
    created
        Paths of the histograms created.
    grown
        Per histogram path, per axis label, the categories appended.
    """

    fork: Any
    parent: Any
    created: tuple[str, ...]
    grown: Mapping[str, Mapping[str, list[Any]]]

    @property
    def paths(self) -> set[str]:
        """Every histogram whose metadata the creation changes."""
        return set(self.created) | set(self.grown)


def prepare(
    ref: RepoRef,
    branch: str,
    wanted: Mapping[str, tuple[Schema, int | str]],
    grow: Mapping[str, Mapping[int, Sequence[Any]]],
) -> tuple[icechunk.Session, Creation | None]:
    """A writable session on the branch's tip and, if some histograms are
    missing or some growing axes get new categories, their :class:`Creation`.

    ``wanted`` gives each histogram's schema and the chunk budget its layout
    is chosen with (see :meth:`Layout.for_schema`); ``grow`` per histogram
    and axis position the values its fills meet, in order of first
    appearance. Existing histograms must match their schema. Categories are
    only appended (in order of first appearance, as ``hist`` does), so a
    category's index never changes. Nothing is committed.
    """
    session = writable(ref, branch)
    created: dict[str, tuple[Schema, Layout]] = {}
    grown: dict[str, tuple[Schema, Schema, dict[str, list[Any]]]] = {}
    for path, (schema, chunk_bytes) in wanted.items():
        found = find_histogram(session.store, path)
        stored = None if found is None else found[0]
        if stored is not None:
            schema.check_same(stored, f"histogram {path!r}")
        base = schema if stored is None else stored
        additions: dict[int, list[Any]] = {}
        for i, values in grow.get(path, {}).items():
            have = set(base.axes[i].categories)
            new = [v for v in dict.fromkeys(values) if v not in have]
            if new:
                additions[i] = new
        final = base.grown(additions) if additions else base
        if stored is None:
            created[path] = (final, Layout.for_schema(final, chunk_bytes))
        elif additions:
            labels = {base.names[i] or f"#{i}": v for i, v in additions.items()}
            grown[path] = (stored, final, labels)
    if not created and not grown:
        return session, None
    fork = session.fork()
    _create_arrays(fork.store, created)
    for path, (stored, final, _) in grown.items():
        _grow_arrays(fork.store, path, stored, final)
    creation = Creation(
        fork,
        fork.fork(),
        tuple(created),
        {path: labels for path, (_, _, labels) in grown.items()},
    )
    return session, creation


def _grow_arrays(store: Any, path: str, schema: Schema, grown: Schema) -> None:
    group = zarr.open_group(store, path=path, mode="r+")
    group.attrs.update({"axes": grown.to_json()["axes"]})
    for name in schema.spec.fields:
        zarr.open_array(store, path=f"{path}/{name}").resize(grown.shape)


def writable(ref: RepoRef, branch: str) -> icechunk.Session:
    """A writable session on the branch's tip."""
    try:
        return ref.repo.writable_session(branch)
    except icechunk.IcechunkError as err:
        msg = f"branch {branch!r} cannot be opened for writing: {err}"
        raise StoreError(msg) from err


def delete_histogram(ref: RepoRef, branch: str, path: str, retries: int) -> str:
    """Delete the histogram at ``path``: one commit; returns its snapshot id.

    The commit records the deletion, so the identities of the partitions
    that were in the histogram are forgotten with it: a histogram created
    again at ``path`` starts empty.
    """
    path = check_path(path)
    with ref.lock():
        for _ in range(retries):
            session = writable(ref, branch)
            read_histogram_meta(session.store, path)  # refuses what is not one
            zarr.core.sync.sync(session.store.delete_dir(path))
            try:
                return str(
                    session.commit(
                        f"dask_hizt: delete {path}",
                        metadata={ATTR_KEY: {"deleted": [path]}},
                        rebase_with=icechunk.ConflictDetector(),
                    )
                )
            except (icechunk.ConflictError, icechunk.RebaseFailedError):
                continue
    msg = f"could not delete {path!r}: {retries} conflicting commits in a row"
    raise CommitError(msg)


def _create_arrays(store: Any, new: Mapping[str, tuple[Schema, Layout]]) -> None:
    """Create the groups and arrays of new histograms.

    zarr writes the metadata documents into a memory store first, and they
    are copied over: creating nodes one by one in an icechunk session costs
    about 7 ms a histogram (existence checks of every parent), copying 0.4 ms.
    Groups that exist already (the root, shared parents) are left as they are.
    """

    async def create() -> None:
        proto = zarr.core.buffer.default_buffer_prototype()
        mem = zarr.storage.MemoryStore()
        root = await zarr.api.asynchronous.open_group(mem, mode="w", zarr_format=3)
        # Array documents depend only on shape, chunks, dtype and dimension
        # names: histograms of one kind share them.
        scratch = await zarr.api.asynchronous.open_group(
            zarr.storage.MemoryStore(), mode="w", zarr_format=3
        )
        array_docs: dict[Any, Any] = {}
        for path, (schema, layout) in new.items():
            await root.create_group(path, attributes=_group_attrs(schema, layout))
            names = schema.names
            kind = (layout.shape, layout.chunks, schema.dtype.str, names)
            if kind not in array_docs:
                array = await scratch.create_array(
                    str(len(array_docs)),
                    shape=layout.shape,
                    chunks=layout.chunks,
                    dtype=schema.dtype,
                    fill_value=0,
                    dimension_names=schema.dimension_names,
                    # A checksum turns a flipped byte into an error instead
                    # of wrong counts, for about 5% of the codec's time;
                    # level 1 is as small as zarr's default and faster.
                    compressors=zarr.codecs.ZstdCodec(level=1, checksum=True),
                )
                array_docs[kind] = await array.store_path.store.get(
                    f"{array.path}/zarr.json", proto
                )
            for name in schema.spec.fields:
                await mem.set(f"{path}/{name}/zarr.json", array_docs[kind])
        keys = sorted([k async for k in mem.list()], key=lambda k: k.count("/"))
        for key in keys:
            ours = any(key.startswith(f"{p}/") for p in new)
            if not ours and await store.exists(key):
                continue
            doc = await mem.get(key, proto)
            assert doc is not None
            await store.set(key, doc)

    zarr.core.sync.sync(create())


# ------------------------------------------------------------------ commit ---


@dataclass
class Written:
    """What one owner task wrote: its fork, the chunks it touched per array,
    and the ``(target, identity)`` of the partitions in what it merged."""

    fork: Any
    chunks: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    inputs: frozenset[tuple[int, str]] = frozenset()


def commit_forks(
    ref: RepoRef,
    branch: str,
    base: str,
    written: Sequence[Written],
    message: str,
    metadata: Mapping[str, Any],
    compute_id: str,
    *,
    retries: int,
    since: str | None = None,
    creation: Creation | None = None,
) -> str:
    """Merge the owners' forks (after ``creation``'s) and make one commit on ``branch``.

    The commit records ``compute_id``; if a commit with it is already on the
    branch after ``since`` (default ``base``: this task ran before, and its
    worker died before reporting), that commit is returned and nothing is
    added twice. If a commit after ``base`` recorded any of the partition
    identities this one records (``metadata["dask_hizt"]["histograms"]``),
    nothing is committed and :class:`DuplicateInputError` is raised.

    If the branch moved past ``base`` while we computed, the chunks that both
    sides changed are rewritten additively before the commit; if the other
    commits created, grew or deleted a histogram we write, our additions are
    replayed on top of theirs instead (:func:`_replay`). A commit racing ours
    on object storage is absorbed by rebasing with a
    :class:`icechunk.ConflictDetector`, and retried from the new tip when
    chunks overlap (at most ``retries`` times). Never picks a side: that
    would lose counts.

    Returns
    -------
    str
        The new snapshot id.
    """
    forks = [w.fork for w in written]
    ours: dict[str, set[tuple[int, ...]]] = {}
    for w in written:
        for path, coords in w.chunks.items():
            ours.setdefault(path, set()).update(coords)
    inputs = {
        path: set(h.get("inputs", ()))
        for path, h in metadata.get(ATTR_KEY, {}).get("histograms", {}).items()
    }
    if not ours and not any(inputs.values()) and creation is None:
        return base  # nothing went in (e.g. every partition was in already)
    with ref.lock():
        for attempt in range(retries):
            done = _committed(ref.repo, branch, since or base, compute_id)
            if done is not None:
                return done
            session = writable(ref, branch)
            tip = str(session.snapshot_id)
            created = () if creation is None else creation.created
            grown: Mapping[str, Any] = {} if creation is None else creation.grown
            if tip != base:
                _refuse_duplicates(ref.repo, base, tip, inputs)
                theirs = _changed_by_others(
                    ref.repo,
                    base,
                    tip,
                    _histogram_paths(ours),
                    set() if creation is None else creation.paths,
                )
            if tip == base or not theirs:
                if creation is not None:
                    session.merge(creation.fork)
                session.merge(*forks)
                if tip != base:
                    _add_theirs(ref.repo, session, base, ours)
            else:
                created, grown = _replay(ref.repo, session, base, written, creation)
            meta = dict(metadata)
            meta[ATTR_KEY] = {**meta.get(ATTR_KEY, {}), "compute": compute_id}
            if created:
                meta[ATTR_KEY]["created"] = list(created)
            if grown:
                meta[ATTR_KEY]["grown"] = grown
            try:
                return str(
                    session.commit(
                        message,
                        metadata=meta,
                        rebase_with=icechunk.ConflictDetector(),
                        allow_empty=True,
                    )
                )
            except (icechunk.ConflictError, icechunk.RebaseFailedError) as err:
                log.info(
                    "commit attempt %d conflicted (%s); retrying from the new tip",
                    attempt,
                    err,
                )
    msg = (
        f"gave up committing to branch {branch!r} after {retries} conflicting attempts"
    )
    raise CommitError(msg)


def _histogram_paths(chunks: Mapping[str, Any]) -> set[str]:
    """Histogram paths of ``"<histogram>/<field>"`` array paths."""
    return {posixpath.dirname(p) for p in chunks}


def _changed_by_others(
    repo: icechunk.Repository,
    base: str,
    tip: str,
    written: set[str],
    changed: set[str],
) -> set[str]:
    """The histograms among ``written`` (whose chunks we write) and
    ``changed`` (that we create or grow) that the commits after ``base``
    touched so that our forks cannot simply be merged: whose groups or
    arrays (or a parent group) they created, changed or deleted, and, of
    ``changed``, also those whose chunks they wrote."""
    diff = repo.diff(from_snapshot_id=base, to_snapshot_id=tip)
    nodes: set[str] = set()
    for kind in (
        "new_groups",
        "new_arrays",
        "deleted_groups",
        "deleted_arrays",
        "updated_groups",
        "updated_arrays",
    ):
        nodes.update(str(p).strip("/") for p in getattr(diff, kind))
    chunks = {posixpath.dirname(str(p).strip("/")) for p in diff.updated_chunks}
    hit = {
        p
        for p in written | changed
        if any(
            n == p or posixpath.dirname(n) == p or p.startswith(f"{n}/") for n in nodes
        )
    }
    return hit | (changed & chunks)


def _committed(
    repo: icechunk.Repository, branch: str, base: str, compute_id: str
) -> str | None:
    """The snapshot after ``base`` on ``branch`` made by ``compute_id``, if any."""
    for snap in repo.ancestry(branch=branch):
        if snap.id == base:
            return None
        if (snap.metadata or {}).get(ATTR_KEY, {}).get("compute") == compute_id:
            return str(snap.id)
    return None


def _refuse_duplicates(
    repo: icechunk.Repository, base: str, tip: str, ours: Mapping[str, set[str]]
) -> None:
    """Raise if a commit after ``base`` recorded partitions that we record too."""
    theirs = committed_between(repo, base, tip, ours)
    for path, ids in theirs.items():
        both = sorted(ids & ours[path])
        if both:
            msg = (
                f"{len(both)} input partitions of histogram {path!r} (e.g. {both[0]!r}) "
                "were committed by another compute while this one ran; nothing was "
                "committed. Compute again to add the partitions not yet in."
            )
            raise DuplicateInputError(msg)


def _replay(
    repo: icechunk.Repository,
    session: icechunk.Session,
    base: str,
    written: Sequence[Written],
    creation: Creation | None,
) -> tuple[tuple[str, ...], dict[str, dict[str, list[Any]]]]:
    """Add what our forks wrote, as ``ours - base``, to the histograms at the
    tip in ``session``: creating those that are not there (any more), and
    appending our new categories to theirs.

    For when the commits after ``base`` created, grew or deleted histograms
    that we write: then our forks (whose arrays and category indices are
    those of ``base`` plus our creation) cannot be merged. Growing category
    axes have chunk size 1, so each of our chunks lands in one place of theirs.

    Returns
    -------
    tuple
        The paths created, and per path the categories appended, per axis.
    """
    base_store = repo.readonly_session(snapshot_id=base).store
    per_path: dict[str, list[tuple[Any, set[tuple[int, ...]]]]] = {}
    for w in written:
        coords_of: dict[str, set[tuple[int, ...]]] = {}
        for array_path, written_coords in w.chunks.items():
            coords_of.setdefault(posixpath.dirname(array_path), set()).update(
                written_coords
            )
        for path, coords in coords_of.items():
            per_path.setdefault(path, []).append((w.fork, coords))
    extra = [] if creation is None else [p for p in creation.paths if p not in per_path]
    created: list[str] = []
    grown: dict[str, dict[str, list[Any]]] = {}
    for path in [*per_path, *extra]:
        entries = per_path.get(path, [])
        source = entries[0][0] if entries else creation.fork  # type: ignore[union-attr]
        ours, layout = read_histogram_meta(source.store, path)
        at_tip = find_histogram(session.store, path)
        if at_tip is None:
            _create_arrays(session.store, {path: (ours, layout)})
            created.append(path)
            final = ours
        else:
            theirs = at_tip[0]
            theirs.check_same(ours, f"histogram {path!r}")
            additions: dict[int, list[Any]] = {}
            for i, axis in enumerate(ours.axes):
                if axis.growth:
                    have = set(theirs.axes[i].categories)
                    new = [c for c in axis.categories if c not in have]
                    if new:
                        additions[i] = new
            final = theirs.grown(additions) if additions else theirs
            if additions:
                _grow_arrays(session.store, path, theirs, final)
                grown[path] = {
                    ours.names[i] or f"#{i}": v for i, v in additions.items()
                }
        moved = {
            i: [final.axes[i].categories.index(c) for c in axis.categories]
            for i, axis in enumerate(ours.axes)
            if axis.growth
        }
        before = find_histogram(base_store, path)
        fields = ours.spec.fields
        algebra = ours.spec.algebra
        target = [zarr.open_array(session.store, path=f"{path}/{f}") for f in fields]
        old = (
            None
            if before is None
            else [
                zarr.open_array(base_store, path=f"{path}/{f}", mode="r")
                for f in fields
            ]
        )
        for fork, chunk_coords in entries:
            mine = [
                zarr.open_array(fork.store, path=f"{path}/{f}", mode="r")
                for f in fields
            ]
            for c in sorted(chunk_coords):
                sel = tuple(
                    slice(i * s, min((i + 1) * s, n))
                    for i, s, n in zip(c, layout.chunks, layout.shape, strict=True)
                )
                values = tuple(np.asarray(a[sel]) for a in mine)
                if old is not None and all(
                    s.stop <= n for s, n in zip(sel, old[0].shape, strict=True)
                ):
                    start = tuple(np.asarray(a[sel]) for a in old)
                else:
                    start = tuple(np.zeros_like(v) for v in values)
                delta = algebra.unmerge(values, start)
                where = tuple(
                    slice(moved[i][s.start], moved[i][s.start] + 1) if i in moved else s
                    for i, s in enumerate(sel)
                )
                now = tuple(np.asarray(a[where]) for a in target)
                for a, v in zip(target, algebra.merge(now, delta), strict=True):
                    a[where] = v
    return tuple(created), grown


def _add_theirs(
    repo: icechunk.Repository,
    session: icechunk.Session,
    base: str,
    ours: Mapping[str, set[tuple[int, ...]]],
) -> None:
    """Rewrite chunks changed on both sides as ``theirs + (ours - base)``.

    For mean storages "+" and "-" are the merge and its inverse, applied to
    all fields of a chunk together.
    """
    tip = session.snapshot_id
    changed = repo.diff(from_snapshot_id=base, to_snapshot_id=tip).updated_chunks
    both: dict[str, set[tuple[int, ...]]] = {}
    for raw, coords in changed.items():
        path = raw.lstrip("/")
        hit = ours.get(path, set()) & {tuple(c) for c in coords}
        if hit:
            both.setdefault(posixpath.dirname(path), set()).update(hit)
    if not both:
        return
    base_store = repo.readonly_session(snapshot_id=base).store
    tip_store = repo.readonly_session(snapshot_id=tip).store
    for hist_path, hits in both.items():
        schema, layout = read_histogram_meta(session.store, hist_path)
        algebra = schema.spec.algebra
        names = [f"{hist_path}/{f}" for f in schema.spec.fields]
        mine: list[Any] = [zarr.open_array(session.store, path=p) for p in names]
        before = [zarr.open_array(base_store, path=p) for p in names]
        theirs = [zarr.open_array(tip_store, path=p) for p in names]
        for c in sorted(hits):
            sel = tuple(
                slice(i * s, min((i + 1) * s, n))
                for i, s, n in zip(c, layout.chunks, layout.shape, strict=True)
            )
            delta = algebra.unmerge(
                tuple(np.asarray(a[sel]) for a in mine),
                tuple(np.asarray(a[sel]) for a in before),
            )
            new = algebra.merge(tuple(np.asarray(a[sel]) for a in theirs), delta)
            for a, v in zip(mine, new, strict=True):
                a[sel] = v
