"""Object storage: ``store="s3://bucket/prefix"`` against a real S3 HTTP endpoint
(moto's server on 127.0.0.1, see ``s3_server`` in conftest.py).

Credentials come from the environment, as on a cluster: the tests check that
the secret key never ends up in what dask_hizt writes, logs, raises or ships.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import hist
import numpy as np
import pytest
from conftest import (
    S3_KEY_ID,
    S3_SECRET,
    TCPProxy,
    local_cluster,
    new_bucket,
)
from test_concurrency import _axes, _data, _expected

import dask_hizt as dh
from dask_hizt import storage
from dask_hizt.testing import assert_hist_equal

AXIS = hist.axis.Regular(20, 0, 1, name="x")


def _int_hist(store: Any, path: str = "h", **kwargs: Any) -> dh.Hist:
    return dh.Hist(AXIS, storage=hist.storage.Int64(), store=store, path=path, **kwargs)


def _eager(*xs: np.ndarray) -> hist.Hist[Any]:
    out = hist.Hist(AXIS, storage=hist.storage.Int64())
    for x in xs:
        out.fill(x)
    return out


def _uniform(seed: int, n: int = 4_000) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ URLs, options ---


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("gs://bucket/h", "'gs' scheme"),
        ("az://container/h", "'az' scheme"),
        ("https://example.org/h", "'https' scheme"),
        ("s3://bucket", "give a prefix"),
        ("s3:///prefix", "no bucket"),
    ],
)
def test_unsupported_urls_are_refused_by_name(url: str, match: str) -> None:
    with pytest.raises(dh.StoreError, match=match):
        _int_hist(url)


def test_storage_options_are_checked(s3_url: str, tmp_path: Path) -> None:
    with pytest.raises(dh.StoreError, match=r"unknown storage_options \['endpoint'\]"):
        _int_hist(s3_url, storage_options={"endpoint": "http://127.0.0.1:1"})
    with pytest.raises(dh.StoreError, match="need both access_key_id"):
        _int_hist(s3_url, storage_options={"access_key_id": "k"})
    with pytest.raises(dh.StoreError, match="only for stores given as s3:// URLs"):
        _int_hist(tmp_path / "r.icechunk", storage_options={"region": "x"})


def test_settings_from_environment_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """What goes into icechunk.s3_storage: the options win over the environment,
    an http:// endpoint allows http, credentials are looked up by each process."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    url = storage.parse_url("s3://b/some/prefix/")
    assert (url.bucket, url.prefix, str(url)) == (
        "b",
        "some/prefix",
        "s3://b/some/prefix",
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    kw = storage.s3_kwargs(url)
    assert kw == {
        "bucket": "b",
        "prefix": "some/prefix",
        "region": "eu-west-3",
        "endpoint_url": "http://127.0.0.1:9",
        "allow_http": True,
        "force_path_style": True,
        "from_env": True,
    }
    monkeypatch.setenv("AWS_REGION", "us-west-2")  # wins over AWS_DEFAULT_REGION
    kw = storage.s3_kwargs(
        url,
        {
            "endpoint_url": "https://s3.example.org",
            "force_path_style": False,
            "access_key_id": "AK",
            "secret_access_key": "SK",
        },
    )
    assert kw["region"] == "us-west-2"
    assert kw["endpoint_url"] == "https://s3.example.org"
    assert (kw["allow_http"], kw["force_path_style"]) == (False, False)
    assert (kw["access_key_id"], kw["secret_access_key"]) == ("AK", "SK")
    assert "from_env" not in kw
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    kw = storage.s3_kwargs(url, {"anonymous": True})
    assert kw["anonymous"] is True
    assert kw["endpoint_url"] is None
    assert not kw["allow_http"]
    assert not kw["force_path_style"]


def test_endpoint_from_storage_options_histogram_and_open(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No endpoint in the environment: ``storage_options`` give it (an http://
    one, so http must be allowed) to dh.histogram and dh.open."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    url = f"s3://{new_bucket(s3_env)}/deep/prefix"
    opts = {"endpoint_url": s3_env}
    x = _uniform(1)
    stored = dh.histogram(
        da.from_array(x, chunks=1_000),
        bins=20,
        range=(0, 1),
        storage=hist.storage.Int64(),
        store=url,
        path="x",
        storage_options=opts,
    ).compute()
    expected = hist.Hist(hist.axis.Regular(20, 0, 1), storage=hist.storage.Int64())
    assert_hist_equal(stored, expected.fill(x))
    assert_hist_equal(dh.open(url, "x", storage_options=opts), expected)
    assert dh.open(url, "x", storage_options=opts).snapshot_id == stored.snapshot_id
    # another endpoint (nothing listens there): an error naming the URL
    with (
        dask.config.set({"dask_hizt.storage-retries": 1}),
        pytest.raises(dh.StoreError, match="cannot be opened") as info,
    ):
        dh.open(
            url,
            "x",
            storage_options={"endpoint_url": f"http://127.0.0.1:{_free_port()}"},
        )
    assert url in str(info.value)


def test_static_keys_in_storage_options_travel_with_the_graph(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys given explicitly work without any in the environment, and (as the
    README says) are pickled with the repository into every graph."""
    url = f"s3://{new_bucket(s3_env)}/repo"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    opts = {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}
    x = _uniform(2)
    h = _int_hist(url, storage_options=opts).fill(x=da.from_array(x, chunks=1_000))
    assert S3_SECRET.encode() in pickle.dumps(dict(h.__dask_graph__()))
    assert_hist_equal(h.compute(), _eager(x))


def test_new_prefix_is_created_and_open_needs_a_repository(s3_url: str) -> None:
    with pytest.raises(dh.StoreError, match=f"no repository at '{s3_url}'"):
        dh.open(s3_url, "h")
    h = _int_hist(s3_url)  # creates the repository at the empty prefix
    assert [s.message for s in h.repository.ancestry(branch="main")] == [
        "Repository initialized"
    ]
    with pytest.raises(dh.NotAHistogramError):
        dh.open(s3_url, "h")


def test_prefix_with_other_objects_is_refused(s3_env: str) -> None:
    import boto3

    bucket = new_bucket(s3_env)
    boto3.client("s3", endpoint_url=s3_env).put_object(
        Bucket=bucket, Key="data/file.csv", Body=b"a,b"
    )
    with pytest.raises(dh.StoreError, match="holds objects that are not an icechunk"):
        _int_hist(f"s3://{bucket}/data")


def test_one_repository_per_url_one_commit_per_repository(
    s3_url: str, tmp_path: Path
) -> None:
    """Hist objects on one URL share the opened repository, so a HistSet of
    them makes one commit; a local one next to them gets its own."""
    xa, xb, xc = _uniform(3), _uniform(4), _uniform(5)
    a = _int_hist(s3_url, "a").fill(x=da.from_array(xa, chunks=1_000))
    b = _int_hist(s3_url, "b").fill(x=da.from_array(xb, chunks=1_000))
    c = _int_hist(tmp_path / "r.icechunk", "c").fill(x=da.from_array(xc, chunks=1_000))
    assert a.repository is b.repository
    assert _int_hist(s3_url, "d").repository is a.repository
    assert c.repository is not a.repository
    sa, sb, sc = dh.HistSet([a, b, c]).compute()
    assert sa.snapshot_id == sb.snapshot_id != sc.snapshot_id
    for s, x in ((sa, xa), (sb, xb), (sc, xc)):
        assert_hist_equal(s, _eager(x))
    messages = [s.message for s in a.repository.ancestry(branch="main")]
    assert sum(m.startswith("dask_hizt: fill") for m in messages) == 1


# ------------------------------------------------------------- concurrency ---

# What each racing process runs: one compute of two histograms, "h" (fixed
# axes, the same chunks for every process, its own data: test_concurrency's)
# and "g" (a growing category axis, to which each process adds its own new
# label). The processes say when they are ready and compute when told.
RACER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["tests"])
    import dask, dask.array as da, hist, numpy as np
    import dask_hizt as dh
    from test_concurrency import _axes, _data
    from test_s3 import _growing_axes

    def slow(block):
        time.sleep(0.2)
        return block

    x, n = _data(cfg["seed"])
    dx = da.from_array(x, chunks=len(x) // 4).map_blocks(slow, dtype=x.dtype)
    dn = da.from_array(n, chunks=len(x) // 4)
    dask.config.set({"dask_hizt.chunk-bytes": "1KiB", "dask_hizt.owners": 3})
    h = dh.Hist(*_axes(), storage=hist.storage.Int64(), store=cfg["url"], path="h")
    h.fill(proc="p1", x=dx, n=dn)
    g = dh.Hist(*_growing_axes(), storage=hist.storage.Int64(), store=cfg["url"], path="g")
    g.fill(d=cfg["label"], x=dx)
    Path(cfg["ready"]).touch()
    while not Path(cfg["go"]).exists():
        time.sleep(0.005)
    base = h.repository.lookup_branch("main")
    sh, sg = dh.compute(h, g, scheduler="threads", num_workers=2)
    out = {"base": base, "h": sh.snapshot_id, "g": sg.snapshot_id}
    Path(cfg["out"]).write_text(json.dumps(out))
    """
)


def _growing_axes() -> tuple[Any, ...]:
    return (
        hist.axis.StrCategory([], growth=True, name="d"),
        hist.axis.Regular(8, -4, 4, name="x"),
    )


def _run_racers(cfgs: list[dict[str, Any]], go: Path) -> list[dict[str, str]]:
    """Start one racer per configuration, release them together once all are
    ready, and return their reports."""
    # Warnings are errors, as in the suite, except the one dask 2025.3 (stack
    # B) raises on importing dask.dataframe under numpy >= 2.5 (see .ci/stack-b).
    warnings = "error,ignore:The 'generic' unit for NumPy timedelta is deprecated:DeprecationWarning"
    env = {**os.environ, "ICECHUNK_LOG": "error", "PYTHONWARNINGS": warnings}
    procs = []
    try:
        for c in cfgs:
            with Path(c["out"]).with_suffix(".err").open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", RACER, json.dumps(c)],
                        env=env,  # the fixture's AWS_* variables, as on a cluster
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        deadline = time.monotonic() + 120
        while not all(Path(c["ready"]).exists() for c in cfgs):
            for proc, c in zip(procs, cfgs, strict=True):
                if proc.poll() is not None:
                    log = Path(c["out"]).with_suffix(".err").read_text()
                    pytest.fail(f"racer exited early:\n{log}")
            assert time.monotonic() < deadline, "racers never got ready"
            time.sleep(0.01)
        go.touch()
        for proc, c in zip(procs, cfgs, strict=True):
            err_log = Path(c["out"]).with_suffix(".err")
            assert proc.wait(timeout=120) == 0, f"racer failed:\n{err_log.read_text()}"
    finally:
        for proc in procs:  # only the processes this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [json.loads(Path(c["out"]).read_text()) for c in cfgs]


# Racing first use: each process fills its own data into one new store after
# another, all of them at once (they wait for each other before each store).
FIRST_USE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    cfg = json.loads(sys.argv[1])
    import dask.array as da
    import hist
    import numpy as np
    import dask_hizt as dh

    met = Path(cfg["met"])
    out = []
    for k, store in enumerate(cfg["stores"]):
        # as _uniform and _int_hist (this test module is slow to import)
        x = np.random.default_rng(cfg["seed"] * 100 + k).uniform(0, 1, 1_000)
        axis = hist.axis.Regular(20, 0, 1, name="x")
        (met / f"{k}-{cfg['i']}").touch()
        deadline = time.monotonic() + 120
        while len(list(met.glob(f"{k}-*"))) < cfg["n"]:
            if time.monotonic() > deadline:
                sys.exit("the other processes never came")
            time.sleep(0.001)
        h = dh.Hist(axis, storage=hist.storage.Int64(), store=store, path="h")
        h.fill(x=da.from_array(x, chunks=250))
        out.append(h.compute(scheduler="sync").snapshot_id)
    Path(cfg["out"]).write_text(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: see test_concurrency's SCRIPT
    """
)


def test_processes_racing_to_create_a_store_all_land(
    s3_env: str, tmp_path: Path
) -> None:
    """Four processes go at once for an empty prefix, three times over (and
    for an empty local directory, twice): opening and creating the
    repository retry on a racing creator's conflict, so every process opens
    it and every fill lands. (Before, most trials had a process fail with
    "repo info object was updated after this session started".)"""
    n = 4
    bucket = new_bucket(s3_env)
    stores = [f"s3://{bucket}/race{k}" for k in range(3)]
    stores += [str(tmp_path / f"race{k}.icechunk") for k in range(2)]
    (tmp_path / "met").mkdir()
    cfgs: list[dict[str, Any]] = [
        {
            "stores": stores,
            "seed": i + 1,
            "i": i,
            "n": n,
            "met": str(tmp_path / "met"),
            "out": str(tmp_path / f"out{i}.json"),
        }
        for i in range(n)
    ]
    # the fixture's AWS_* variables; warnings as in _run_racers; faulthandler:
    # should a process crash, its threads' stacks are in its stderr
    warnings = "error,ignore:The 'generic' unit for NumPy timedelta is deprecated:DeprecationWarning"
    env = {
        **os.environ,
        "ICECHUNK_LOG": "error",
        "PYTHONWARNINGS": warnings,
        "PYTHONFAULTHANDLER": "1",
    }
    procs = []
    try:
        for c in cfgs:
            with Path(c["out"]).with_suffix(".err").open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", FIRST_USE, json.dumps(c)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        # the others would wait for a racer that failed: stop at the first failure
        deadline = time.monotonic() + 120
        while any(proc.poll() is None for proc in procs):
            for proc, c in zip(procs, cfgs, strict=True):
                if proc.poll():
                    log = Path(c["out"]).with_suffix(".err").read_text()
                    pytest.fail(f"racer {c['i']} failed:\n{log}")
            assert time.monotonic() < deadline, "racers never finished"
            time.sleep(0.05)
        assert all(proc.returncode == 0 for proc in procs)
    finally:
        for proc in procs:  # only the processes this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reports = [json.loads(Path(c["out"]).read_text()) for c in cfgs]
    for k, store in enumerate(stores):
        stored = dh.open(store, "h")
        expected = _eager(*(_uniform(c["seed"] * 100 + k, 1_000) for c in cfgs))
        assert_hist_equal(stored, expected)
        # one fill commit per process, each its own
        fills = [c.snapshot_id for c in stored.history() if c.inputs]
        assert sorted(fills) == sorted(r[k] for r in reports)


def test_four_processes_compute_and_grow_at_once(s3_url: str, tmp_path: Path) -> None:
    """Four OS processes, each with its own data, compute at once into the same
    chunks of one histogram and add a different new category each to a
    growing axis of another: no lock, only S3's conditional writes and the
    additive fix-up. Every commit lands, the sums are exact, and each process
    made exactly one fill commit."""
    seeds, labels = [501, 502, 503, 504], ["p", "q", "r", "s"]
    with dask.config.set({"dask_hizt.chunk-bytes": "1KiB"}):  # as the racers
        made = dh.Hist(*_axes(), storage=hist.storage.Int64(), store=s3_url, path="h")
        dh.compute(made)  # "h" exists; "g" is created by the racers, racing
    base = made.repository.lookup_branch("main")
    cfgs = [
        {
            "url": s3_url,
            "tests": str(Path(__file__).parent),
            "seed": seed,
            "label": label,
            "ready": str(tmp_path / f"ready{i}"),
            "go": str(tmp_path / "go"),
            "out": str(tmp_path / f"out{i}.json"),
        }
        for i, (seed, label) in enumerate(zip(seeds, labels, strict=True))
    ]
    reports = _run_racers(cfgs, tmp_path / "go")
    # they raced: every process planned on the same tip
    assert {r["base"] for r in reports} == {base}
    # one commit per process holds both of its histograms
    assert all(r["h"] == r["g"] for r in reports)

    h = dh.open(s3_url, "h")
    assert h.layout.n_chunks > 3  # the racers' commits overlap chunk by chunk
    assert_hist_equal(h, _expected(["p1"] * len(seeds), seeds))
    g = dh.open(s3_url, "g")
    assert sorted(g.axes[0]) == labels
    expected = hist.Hist(*_growing_axes(), storage=hist.storage.Int64())
    for seed, label in zip(seeds, labels, strict=True):
        expected.fill(d=label, x=_data(seed)[0])
    assert_hist_equal(g, expected, categories="any order")

    snapshots = sorted(r["h"] for r in reports)
    for stored in (h, g):
        fills = [c.snapshot_id for c in stored.history() if c.inputs]
        assert sorted(fills) == snapshots
    # on top of the base: the four fill commits and nothing else; one of
    # them created "g", the others added their labels to it
    ancestry = list(h.repository.ancestry(branch="main"))
    new = ancestry[: [s.id for s in ancestry].index(base)]
    assert sorted(s.id for s in new) == snapshots
    meta = [(s.metadata or {}).get("dask_hizt", {}) for s in new]
    assert sum("g" in m.get("created", ()) for m in meta) == 1
    grown = [
        label for m in meta for label in m.get("grown", {}).get("g", {}).get("d", [])
    ]
    created = next(
        s for s, m in zip(new, meta, strict=True) if "g" in m.get("created", ())
    )
    first = dh.open(s3_url, "g", snapshot_id=created.id)
    assert sorted([*first.axes[0], *grown]) == labels


def test_local_cluster_with_credentials_from_the_environment(s3_url: str) -> None:
    """Worker processes find the credentials in their own environment: the
    graph carries none."""
    from distributed import Client

    rng = np.random.default_rng(11)
    x, w = rng.uniform(0, 1, 30_000), rng.integers(1, 4, 30_000).astype(float)
    axes = (hist.axis.StrCategory(["a", "b"], name="c"), AXIS)
    h = dh.Hist(*axes, storage=hist.storage.Weight(), store=s3_url, path="w")
    h.fill(
        c="b", x=da.from_array(x, chunks=5_000), weight=da.from_array(w, chunks=5_000)
    )
    with local_cluster("2GiB") as cluster, Client(cluster) as client:
        assert all(
            v == S3_KEY_ID
            for v in client.run(lambda: os.environ.get("AWS_ACCESS_KEY_ID")).values()
        )
        stored = h.compute()
    expected = hist.Hist(*axes, storage=hist.storage.Weight()).fill(
        c="b", x=x, weight=w
    )
    assert_hist_equal(stored, expected)  # integer weights: exact
    assert_hist_equal(dh.open(s3_url, "w"), expected)


# ---------------------------------------------------------------- security ---


def test_secret_key_is_nowhere(
    s3_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials from the environment the secret key is in no commit,
    log record, error message or pickled graph."""
    secret = S3_SECRET.encode()
    x = _uniform(21)
    h = _int_hist(s3_url).fill(x=da.from_array(x, chunks=1_000))
    graph = dict(h.__dask_graph__())
    assert secret not in pickle.dumps(graph)
    assert secret not in cloudpickle.dumps(graph)
    assert secret not in pickle.dumps(h)
    assert secret not in cloudpickle.dumps(h)
    assert S3_SECRET not in repr(h.repository.storage)
    # everything at DEBUG level, the S3 server's request log included
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, "werkzeug"):
        stored = h.compute(scheduler="threads")
    assert any(r.name == "werkzeug" for r in caplog.records)
    assert caplog.records  # DEBUG logging really was on
    assert all(S3_SECRET not in r.getMessage() for r in caplog.records)
    assert S3_SECRET not in caplog.text
    assert_hist_equal(stored, _eager(x))
    assert secret not in pickle.dumps(stored.history())
    for snap in stored.repository.ancestry(branch="main"):
        assert S3_SECRET not in json.dumps(snap.metadata, default=str)
        assert S3_SECRET not in snap.message

    # errors name the URL, never the secret
    bucket = s3_url.split("/")[2]
    missing = s3_url.replace(bucket, bucket + "-missing")
    with pytest.raises(dh.StoreError) as info:
        _int_hist(missing)
    assert missing in str(info.value)
    assert S3_SECRET not in str(info.value)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    start = time.monotonic()
    with pytest.raises(dh.StoreError, match="cannot be opened") as info:
        _int_hist(s3_url.replace("/repo", "/elsewhere"))
    assert time.monotonic() - start < 30  # bounded retries, no hang
    assert "s3://" in str(info.value)
    assert S3_SECRET not in str(info.value)


# ---------------------------------------------------- endpoint going away ---


def _sleepy(block: np.ndarray, delay: float) -> np.ndarray:
    time.sleep(delay)
    return block


def test_endpoint_lost_mid_compute(
    s3_server: str, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint stops while the fills run: the compute fails with no
    credentials in the error, the branch is unchanged, and once the endpoint
    is back the same compute adds its data exactly once."""
    del s3_env
    proxy = TCPProxy(("127.0.0.1", int(s3_server.rsplit(":", 1)[1])))
    proxy.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        url = f"s3://{new_bucket(s3_server)}/repo"
        x0, x1 = _uniform(31), _uniform(32)
        before = _int_hist(url).fill(x=da.from_array(x0, chunks=1_000)).compute()
        h = _int_hist(url).fill(
            x=da.from_array(x1, chunks=1_000).map_blocks(_sleepy, 0.5, dtype=float)
        )
        dict(h.__dask_graph__())  # planned (its tasks read) while the endpoint is there
        stopper = threading.Timer(0.25, proxy.stop)
        stopper.start()
        start = time.monotonic()
        with pytest.raises(dh.StoreError) as info:
            h.compute(scheduler="threads", num_workers=2)
        stopper.join()
        assert time.monotonic() - start < 60
        err = info.value
        assert S3_SECRET not in str(err)
        proxy.start()  # back, on the same port, with the same objects
        assert h.repository.lookup_branch("main") == before.snapshot_id
        assert_hist_equal(dh.open(url, "h"), _eager(x0))
        again = h.compute(scheduler="threads", num_workers=2)
        assert_hist_equal(again, _eager(x0, x1))
        fills = [c for c in again.history() if c.inputs]
        assert [c.snapshot_id for c in fills] == [again.snapshot_id, before.snapshot_id]
    finally:
        proxy.stop()
    # a dask_hizt error that names the store (the lost endpoint, not a bug)
    assert isinstance(err, dh.StoreError), repr(err)
    assert url in str(err)
