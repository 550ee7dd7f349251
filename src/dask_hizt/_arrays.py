"""The histograms' groups and arrays: their metadata, creation, growth and deletion.

A histogram is a zarr group (its schema and layout in the group's
attributes, see docs/format.md) holding one array per storage field.
:func:`prepare` creates the histograms a compute fills and appends the
categories it meets, in a fork that the compute's commit merges first
(:class:`Creation`); nothing here commits but :func:`delete_histogram`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import icechunk
import zarr
import zarr.api.asynchronous
import zarr.codecs
import zarr.core.buffer
import zarr.core.sync
import zarr.errors
import zarr.storage
from icechunk.store import IcechunkStore

from ._history import CommitRecord
from ._repo import RepoRef, check_path, writable
from .errors import CommitError, NotAHistogramError, SchemaMismatchError, StoreError
from .layout import Layout
from .schema import ATTR_KEY, FORMAT_VERSION, Schema

__all__ = [
    "Creation",
    "create_arrays",
    "delete_histogram",
    "existing_schema",
    "find_at_snapshot",
    "find_histogram",
    "grow_arrays",
    "prepare",
    "read_histogram_meta",
    "readonly_at",
]


def _group_attrs(schema: Schema, layout: Layout) -> dict[str, Any]:
    doc = schema.to_json()
    doc[ATTR_KEY] = {
        "format_version": FORMAT_VERSION,
        "fields": list(schema.spec.fields),
        "chunks": list(layout.chunks),
    }
    return doc


def read_histogram_meta(store: IcechunkStore, path: str) -> tuple[Schema, Layout]:
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


def find_histogram(store: IcechunkStore, path: str) -> tuple[Schema, Layout] | None:
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


#: What :func:`find_histogram` found per (snapshot id, path): a snapshot never
#: changes, and several plans of one compute (each collection's, then the
#: merged one) read the same histograms at the same tip.
_AT_SNAPSHOT: dict[tuple[str, str], tuple[Schema, Layout] | None] = {}
_AT_SNAPSHOT_MAX = 4096


def find_at_snapshot(
    session: icechunk.Session, path: str
) -> tuple[Schema, Layout] | None:
    """:func:`find_histogram` in a session without changes, cached per snapshot."""
    key = (str(session.snapshot_id), path)
    if key not in _AT_SNAPSHOT:
        if len(_AT_SNAPSHOT) >= _AT_SNAPSHOT_MAX:
            _AT_SNAPSHOT.clear()
        _AT_SNAPSHOT[key] = find_histogram(session.store, path)
    return _AT_SNAPSHOT[key]


def existing_schema(ref: RepoRef, branch: str, path: str) -> Schema | None:
    """The schema of the histogram at ``path`` on the branch's tip, or ``None``
    if nothing is there (a node that is not a histogram raises)."""
    try:
        tip = ref.repo.lookup_branch(branch)
    except icechunk.IcechunkError as err:
        msg = f"branch {branch!r} cannot be read: {err}"
        raise StoreError(msg) from err
    # Many Hist objects are made against one tip: they share its session.
    found = find_at_snapshot(readonly_at(ref, tip), path)
    return None if found is None else found[0]


def readonly_at(ref: RepoRef, snapshot_id: str) -> icechunk.Session:
    """A read-only session at ``snapshot_id``, shared within the process (it
    never changes): the histograms of one commit read through one."""
    key = (id(ref.repo), snapshot_id)
    session = _READONLY.get(key)
    if session is None:
        if len(_READONLY) >= _READONLY_MAX:
            _READONLY.clear()
        session = _READONLY[key] = ref.repo.readonly_session(snapshot_id=snapshot_id)
    return session


_READONLY: dict[tuple[int, str], icechunk.Session] = {}
_READONLY_MAX = 32


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

    fork: icechunk.ForkSession
    parent: icechunk.ForkSession
    created: tuple[str, ...]
    grown: Mapping[str, Mapping[str, tuple[str | int, ...]]]

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
    grown: dict[str, tuple[Schema, Schema, dict[str, tuple[str | int, ...]]]] = {}
    for path, (schema, chunk_bytes) in wanted.items():
        found = find_at_snapshot(session, path)
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
            labels = {base.names[i] or f"#{i}": tuple(v) for i, v in additions.items()}
            grown[path] = (stored, final, labels)
    if not created and not grown:
        return session, None
    fork = session.fork()
    create_arrays(fork.store, created)
    for path, (stored, final, _) in grown.items():
        grow_arrays(fork.store, path, stored, final)
    creation = Creation(
        fork,
        fork.fork(),
        tuple(created),
        {path: labels for path, (_, _, labels) in grown.items()},
    )
    return session, creation


def grow_arrays(store: IcechunkStore, path: str, schema: Schema, grown: Schema) -> None:
    """Resize the arrays of the histogram at ``path`` from ``schema`` to ``grown``."""
    group = zarr.open_group(store, path=path, mode="r+")
    group.attrs.update({"axes": grown.to_json()["axes"]})
    for name in schema.spec.fields:
        zarr.open_array(store, path=f"{path}/{name}").resize(grown.shape)


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
                        metadata=CommitRecord(deleted=(path,)).to_metadata(),
                        rebase_with=icechunk.ConflictDetector(),
                    )
                )
            except (icechunk.ConflictError, icechunk.RebaseFailedError):
                continue
    msg = f"could not delete {path!r}: {retries} conflicting commits in a row"
    raise CommitError(msg)


def create_arrays(
    store: IcechunkStore, new: Mapping[str, tuple[Schema, Layout]]
) -> None:
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
