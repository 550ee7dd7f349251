"""Shared fixtures: real icechunk repositories on disk, and eager-vs-lazy comparison."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest

os.environ.setdefault("ICECHUNK_LOG", "error")


def assert_hist_equal(stored: Any, expected: hist.Hist, *, rtol: float = 0.0) -> None:
    """Compare a StoredHist (or hist.Hist) with an eager hist.Hist, flow bins included.

    Exact (``rtol=0``) unless a tolerance is given; on failure the message
    names the differing bins.
    """
    got = (
        stored.to_hist()
        if hasattr(stored, "to_hist") and not isinstance(stored, hist.Hist)
        else stored
    )
    assert [type(a) for a in got.axes] == [type(a) for a in expected.axes]
    for a, b in zip(got.axes, expected.axes, strict=True):
        assert a == b, f"axis differs: {a!r} != {b!r}"
    assert type(got.storage_type()) is type(expected.storage_type())
    gv, ev = np.asarray(got.view(flow=True)), np.asarray(expected.view(flow=True))
    fields = gv.dtype.names or (None,)
    for f in fields:
        g = gv if f is None else gv[f]
        e = ev if f is None else ev[f]
        ok = np.isclose(g, e, rtol=rtol, atol=0) if rtol else g == e
        if not ok.all():
            bad = np.argwhere(~ok)[:10]
            details = ", ".join(
                f"{tuple(int(i) for i in b)}: {g[tuple(b)]!r} != {e[tuple(b)]!r}"
                for b in bad
            )
            raise AssertionError(
                f"{(~ok).sum()} bins of field {f or 'value'} differ (flow indices): {details}"
            )


#: Scheduler options that keep its HTTP server on a free port of 127.0.0.1.
LOCAL_HTTP: dict[str, Any] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}


def assert_landed(
    repo: Any, before: list[str], stored: Any, *, created: str | None = None
) -> None:
    """The compute added exactly one fill commit, ``stored``'s snapshot, on top
    of ``before`` (snapshot ids, newest first), and before it the commit that
    created the histogram ``created``, if it was new."""
    now = list(repo.ancestry(branch="main"))
    new = now[: len(now) - len(before)]
    assert [s.id for s in now[len(new) :]] == before
    assert [s.id for s in new[:1]] == [stored.snapshot_id]
    assert new[0].message.startswith("dask_hizt: fill")
    want = [] if created is None else [f"dask_hizt: create {created}"]
    assert [s.message for s in new[1:]] == want


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
