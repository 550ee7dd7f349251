"""Is a local repository the same directory on the client and on the workers?

On a cluster, ``store="out.icechunk"`` or ``/tmp/...`` may name a different
disk on every machine. Owners would then write chunks that the commit and
the client never see. So the client writes a *marker* (a random token, in
:data:`MARKER_NAME` inside the repository directory) and the workers look
for it before anything is written:

- at plan time, when a distributed ``Client`` is active, every current
  worker reads the marker (``client.run``; :func:`check_workers`);
- every task that touches a repository reads it too (:meth:`Marker.check`,
  through ``Guarded``), which covers workers that join later;
- before the client creates a local repository with a ``Client`` active, a
  probe file in the nearest existing parent directory is looked for the same
  way (:func:`before_create`), so a refused path is left uncreated; and a
  distributed worker never creates one (:func:`refuse_creation_on_worker`)
  and stages fills only into a repository with a marker (:func:`check_staging`);
  a commit of staged fills refuses those staged where another token was
  seen (:func:`check_staged`: a node's own repository at the same path).

A mismatch raises :class:`~dask_hizt.errors.UnsharedStoreError`. On the
local schedulers (no ``distributed`` imported) none of this costs more than
a lookup in this process's table of markers already read.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UnsharedStoreError

__all__ = [
    "MARKER_NAME",
    "Marker",
    "before_create",
    "check_staged",
    "check_staging",
    "check_workers",
    "marker_of",
    "refuse_creation_on_worker",
]

MARKER_NAME = ".dask_hizt-marker"
_PROBE_PREFIX = ".dask_hizt-probe-"

# Per repository directory, the token read (or written) in this process.
_TOKENS: dict[str, str] = {}
# Markers this process saw as expected: a task's check is a set lookup then.
_SEEN: set[tuple[str, str]] = set()
# (markers, workers) checked with client.run already.
_CHECKED: set[tuple[tuple[Marker, ...], frozenset[str]]] = set()


@dataclass(frozen=True)
class Marker:
    """The client's marker of a local repository: its directory and token."""

    path: str
    token: str

    def check(self) -> None:
        """Refuse, in a task, when this process sees another directory."""
        if (self.path, self.token) in _SEEN:
            return
        found = read_marker(self.path)
        if found != self.token:
            raise UnsharedStoreError(self.path, where_am_i(), _reason(found))
        _SEEN.add((self.path, self.token))


def read_marker(path: str) -> str | None:
    """The token in a repository directory, or ``None``."""
    try:
        return Path(path, MARKER_NAME).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _reason(found: str | None) -> str:
    if found is None:
        return "the worker finds no repository made by the client there"
    return "the worker finds another repository there"


def marker_of(path: str) -> Marker:
    """The marker of the local repository at ``path``, written if missing.

    Written once per repository, whole (linked from a temporary file), so
    two racing clients agree on one token.
    """
    token = _TOKENS.get(path)
    if token is None:
        token = read_marker(path)
        if token is None:
            tmp = Path(path, f"{MARKER_NAME}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(uuid.uuid4().hex)
            try:
                os.link(tmp, Path(path, MARKER_NAME))
            except FileExistsError:
                pass  # another client won: its token stands
            finally:
                tmp.unlink()
            token = read_marker(path)
            assert token is not None
        _TOKENS[path] = token
    _SEEN.add((path, token))
    return Marker(path, token)


def check_staging(path: str) -> tuple[str, str]:
    """A ``dh.Staging`` of the local repository at ``path``: on a distributed
    worker, the repository must be one a client made (its marker is there);
    on the client, the marker is written if missing and, with a ``Client``
    active, every worker must see it.

    Returns the token seen and who saw it, for the commit to compare with
    its own (:func:`check_staged`): a worker may have a repository of its
    own at that path."""
    worker = _worker_address()
    if worker is None:
        check_workers([marker_of(path)])
        return marker_of(path).token, where_am_i()
    token = read_marker(path)
    if token is None:
        raise UnsharedStoreError(path, worker, _reason(None))
    return token, worker


def check_staged(path: str, seen: dict[str, str]) -> None:
    """Before a commit of staged fills: every stager saw the client's marker
    (``seen``: token -> who saw it, from :func:`check_staging`)."""
    token = marker_of(path).token
    for other, worker in sorted(seen.items()):
        if other != token:
            raise UnsharedStoreError(path, worker, _reason(other))


def refuse_creation_on_worker(path: str) -> None:
    """A distributed worker never creates a local repository: if it sees none
    at ``path``, the client's is on another disk (or was never made)."""
    worker = _worker_address()
    if worker is not None:
        raise UnsharedStoreError(path, worker, _reason(None))


def check_workers(markers: Iterable[Marker]) -> None:
    """With a distributed ``Client`` active: every current worker must see
    ``markers`` (checked once per set of workers)."""
    wanted = tuple(markers)
    client = _client()
    if client is None or not wanted:
        return
    workers = frozenset(client.scheduler_info().get("workers", {}))
    if (wanted, workers) in _CHECKED:
        return
    found: dict[str, list[str | None]] = client.run(
        _read_markers, [m.path for m in wanted]
    )
    for worker, tokens in sorted(found.items()):
        for m, token in zip(wanted, tokens, strict=True):
            if token != m.token:
                raise UnsharedStoreError(m.path, worker, _reason(token))
    _CHECKED.add((wanted, workers))


def before_create(path: Path) -> None:
    """Before the client creates a local repository at ``path`` with a
    ``Client`` active: every worker must see the nearest existing parent
    directory as the client does (a probe file written there)."""
    client = _client()
    if client is None or _worker_address() is not None:
        return
    parent = next((p for p in path.parents if p.is_dir()), None)
    if parent is None:
        return
    probe = parent / f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        probe.write_text(probe.name)
    except OSError:
        return  # not writable here: the compute checks the marker instead
    try:
        found: dict[str, bool] = client.run(_sees_probe, str(probe))
    finally:
        probe.unlink()
    for worker, seen in sorted(found.items()):
        if not seen:
            reason = f"the worker does not see the client's directory {str(parent)!r}"
            raise UnsharedStoreError(str(path), worker, reason)


def _read_markers(paths: list[str]) -> list[str | None]:
    return [read_marker(p) for p in paths]


def _sees_probe(probe: str) -> bool:
    try:
        return Path(probe).read_text() == Path(probe).name
    except OSError:
        return False


def _client() -> Any:
    """The active distributed ``Client``, or ``None`` (without importing
    distributed: a process that never did has none)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client  # noqa: PLC0415 - optional

    try:
        return default_client()
    except ValueError:
        return None


def _worker_address() -> str | None:
    """The address of the distributed worker running this code, or ``None``."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker  # noqa: PLC0415 - optional

    try:
        return str(get_worker().address)
    except ValueError:
        return None


def where_am_i() -> str:
    """This process, as an error names it: a worker's address, or host and pid."""
    return _worker_address() or f"{socket.gethostname()} (pid {os.getpid()})"
