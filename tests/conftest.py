"""Shared fixtures: real icechunk repositories on disk, clusters, an S3 server."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest

os.environ.setdefault("ICECHUNK_LOG", "error")


def as_hist(picked: object) -> hist.Hist[Any]:
    """A selection that keeps axes: hist's stubs type ``h[...]`` as a
    histogram or one bin's content."""
    assert isinstance(picked, hist.Hist)
    return picked


def weighted_sum(h: hist.Hist[Any]) -> float:
    """The sum of a Weight histogram's values, flow bins included."""
    return float(np.sum(h.values(flow=True)))


def damage(path: Path, how: str) -> None:
    """Damage a chunk object on disk: ``overwritten`` with zeros, one byte
    ``flipped`` inside the compressed frame (caught by zstd's checksum),
    ``truncated`` to half, or ``missing``."""
    data = path.read_bytes()
    if how == "overwritten":
        path.write_bytes(b"\0" * len(data))
    elif how == "flipped":
        middle = len(data) // 2
        path.write_bytes(
            data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]
        )
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


#: Scheduler options that keep its HTTP server on a free port of 127.0.0.1.
LOCAL_HTTP: dict[str, Any] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}


def assert_landed(
    repo: Any, before: list[str], stored: Any, *, created: str | None = None
) -> None:
    """The compute added exactly one commit, ``stored``'s snapshot, on top of
    ``before`` (snapshot ids, newest first): a fill commit that also created
    the histogram ``created``, if it was new."""
    now = list(repo.ancestry(branch="main"))
    new = now[: len(now) - len(before)]
    assert [s.id for s in now[len(new) :]] == before
    assert [s.id for s in new] == [stored.snapshot_id]
    assert new[0].message.startswith("dask_hizt: fill")
    meta = (new[0].metadata or {}).get("dask_hizt", {})
    assert meta.get("created", []) == ([] if created is None else [created])


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """Path of a fresh local icechunk repository (created on first use)."""
    return tmp_path / "repo.icechunk"


def local_cluster(memory_limit: str) -> Any:
    """A real distributed.LocalCluster with two worker processes, bound to 127.0.0.1."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # The scheduler's HTTP server (metrics, health) always starts; give it a
        # free port on 127.0.0.1 instead of 8787, which may be taken (and then
        # distributed warns, an error under filterwarnings=error).
        scheduler_kwargs=LOCAL_HTTP,
        memory_limit=memory_limit,
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """The session's LocalCluster."""
    with local_cluster("4GiB") as lc:
        yield lc


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    """A distributed Client on the session's LocalCluster."""
    from distributed import Client

    with Client(cluster) as c:
        yield c


# ------------------------------------------------------------------ S3 ---
#
# A real S3 HTTP endpoint: moto's server, in this process, on a free port of
# 127.0.0.1. Tests reach it with fake credentials set in the environment (as
# a user would) by the ``s3_env`` fixture; each test gets its own bucket.

#: The fake secret key of the S3 tests; security tests look for it everywhere.
S3_SECRET = "dhz-FAKE-secret-7c2e91b04d5a"
S3_KEY_ID = "dhzFAKEKEYID"


class TCPProxy:
    """A TCP proxy on 127.0.0.1 that can be stopped and started again on the
    same port: stopping closes the listener and every open connection, as an
    endpoint that goes away does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._open = list(self._open), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(
                target=self._pipe, args=(client, upstream), daemon=True
            ).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.difference_update((a, b))
            a.close()
            b.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO level
    wlog = logging.getLogger("werkzeug")
    level = wlog.level
    wlog.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        wlog.setLevel(level)


def s3_user(mp: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Give this process the environment of an S3 user: fake credentials, a
    region, ``endpoint`` (moto's), and no other source of AWS settings
    (``home``: where the absent config files would be)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            mp.delenv(name)
    mp.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    mp.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    mp.setenv("AWS_REGION", "us-east-1")
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    # no instance-metadata lookups, no profile files of this machine
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-creds"))


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The environment of an S3 user (see :func:`s3_user`). Returns the endpoint."""
    s3_user(monkeypatch, s3_server, tmp_path)
    return s3_server


def new_bucket(endpoint: str) -> str:
    """Create a bucket of a unique name on the S3 endpoint; return its name."""
    import boto3

    name = f"dhz-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_url(s3_env: str) -> str:
    """``s3://BUCKET/repo`` in a new bucket of its own (the repository is created
    on first use)."""
    return f"s3://{new_bucket(s3_env)}/repo"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A ``store=`` argument, once for each kind of storage: a local directory,
    and an ``s3://`` URL on moto's S3 endpoint."""
    if request.param == "local":
        return tmp_path / "repo.icechunk"
    return request.getfixturevalue("s3_url")
