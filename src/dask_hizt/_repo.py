"""Repositories: reaching one from any process, its caches, its commit lock.

:class:`RepoRef` resolves a ``store=`` argument (a repository, an ``s3://``
URL, a local directory) once per process and pickles into the graph's
tasks. Racing commits on local-filesystem storage can be lost although each
``commit()`` reports success; so commits there hold an OS file lock
(:meth:`RepoRef.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import icechunk

from ._visible import before_create, refuse_creation_on_worker
from .errors import StoreError
from .storage import cache_key, is_url, open_repository, parse_url, quiet_icechunk_logs

__all__ = ["RepoRef", "check_path", "writable"]

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
        store: object,
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
            if not path.exists():
                # a worker's disk is not the client's: see _visible
                refuse_creation_on_worker(str(path))
                before_create(path)
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


def writable(ref: RepoRef, branch: str) -> icechunk.Session:
    """A writable session on the branch's tip."""
    try:
        return ref.repo.writable_session(branch)
    except icechunk.IcechunkError as err:
        msg = f"branch {branch!r} cannot be opened for writing: {err}"
        raise StoreError(msg) from err
