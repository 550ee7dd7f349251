"""dh.Staging without a shared filesystem: worker processes stage their fills
as objects under the repository's own S3 prefix (moto's server on 127.0.0.1),
``commit()`` folds them in one commit and removes them, and ``dh.gc``
removes those of a run that died. The same on a local repository.

Credentials come from each process's environment (``s3_env``); the tests
check that the secret key never travels with a Staging.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import hist
import icechunk
import numpy as np
import pytest
from conftest import S3_KEY_ID, S3_SECRET, local_cluster, new_bucket, s3_user

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

TESTS = Path(__file__).resolve().parent
STAGING = ".dask_hizt-staging"

AXES = (
    hist.axis.StrCategory([], growth=True, name="d"),
    hist.axis.Regular(30, 0, 1, name="x"),
)

#: One chunk of events: its item, dataset label, x values and weights (0.5,
#: 1, 2: every sum is exact in any order).
type Chunk = tuple[str, str, np.ndarray[Any, Any], np.ndarray[Any, Any]]


def chunks(n: int = 8, seed: int = 5, file: str = "events.root") -> list[Chunk]:
    rng = np.random.default_rng(seed)
    return [
        (
            f"{file}#Events[{k * 500}:{(k + 1) * 500}]",
            "abc"[k % 3],
            # a few entries outside [0, 1): both flow bins are filled
            rng.uniform(-0.05, 1.05, 500),
            rng.choice([0.5, 1.0, 2.0], 500),
        )
        for k in range(n)
    ]


def stage(store: Any, chunk: Chunk) -> dh.Staging:
    """What a processor does for one chunk of events (runs on a worker)."""
    item, label, x, w = chunk
    out = dh.Staging(store, item)
    out.hist(*AXES, storage=hist.storage.Weight(), path="h").fill(
        d=label, x=x, weight=w
    )
    out.hist(AXES[1], storage=hist.storage.Int64(), path="n").fill(x)
    # as it leaves the processor (coffea's futures pickle it): staged
    staged: dh.Staging = pickle.loads(pickle.dumps(out))
    return staged


def expected(cs: list[Chunk]) -> tuple[hist.Hist[Any], hist.Hist[Any]]:
    h = hist.Hist(*AXES, storage=hist.storage.Weight())
    n = hist.Hist(AXES[1], storage=hist.storage.Int64())
    for _, label, x, w in cs:
        h.fill(d=label, x=x, weight=w)
        n.fill(x)
    return h, n


def staged_objects(store: str) -> list[str]:
    """The names in the repository's staging area (directory or S3 prefix)."""
    if store.startswith("s3://"):
        import boto3

        bucket, prefix = store[len("s3://") :].split("/", 1)
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        start = f"{prefix}/{STAGING}/"
        page = s3.list_objects_v2(Bucket=bucket, Prefix=start)
        return sorted(o["Key"][len(start) :] for o in page.get("Contents", ()))
    area = Path(store, STAGING)
    return sorted(p.name for p in area.iterdir()) if area.is_dir() else []


def fill_commits(store: str) -> int:
    repo = dh.open(store, "h").repository
    return sum(s.message.startswith("dask_hizt:") for s in repo.ancestry(branch="main"))


@pytest.fixture(scope="module")
def s3_cluster(
    s3_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A LocalCluster whose worker processes have the S3 user's environment
    (as ``s3_env`` sets it), started once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        s3_user(mp, s3_server, tmp_path_factory.mktemp("aws"))
        cluster = local_cluster("2GiB")
    with cluster:
        yield cluster


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path, s3_env: str) -> str:
    """A ``store=`` string: a local directory, or an ``s3://`` URL."""
    if request.param == "local":
        store = str(tmp_path / "repo.icechunk")
        dh.Staging(store)  # made on the client: workers never create it
        return store
    return f"s3://{new_bucket(s3_env)}/analysis/repo"


# ------------------------------------------------- workers stage, client folds ---


@pytest.mark.parametrize("store_url", ["s3", "local"], indirect=True)
def test_workers_stage_client_commits_once_then_a_rerun_adds_nothing(
    s3_cluster: Any, store_url: str
) -> None:
    from distributed import Client

    cs = chunks()
    with Client(s3_cluster) as client:
        parts = client.gather([client.submit(stage, store_url, c) for c in cs])
        total = functools.reduce(operator.add, parts)
        assert len(total) == 2 * len(cs)
        assert len(staged_objects(store_url)) == 2 * len(cs)
        # names of staged objects travel, not histograms, and no secret
        blob = pickle.dumps(total)
        assert len(blob) < 20_000
        assert S3_SECRET.encode() not in blob
        assert S3_SECRET.encode() not in cloudpickle.dumps(parts[0])

        stored = total.commit()
        want_h, want_n = expected(cs)
        assert_hist_equal(stored["h"], want_h)  # flow bins included
        assert_hist_equal(stored["n"], want_n)
        assert stored["h"].snapshot_id == stored["n"].snapshot_id
        assert staged_objects(store_url) == []
        assert fill_commits(store_url) == 1
        first = stored["h"].snapshot_id

        # the same chunks again: staged anew (same names), nothing committed
        again = functools.reduce(
            operator.add,
            client.gather([client.submit(stage, store_url, c) for c in cs]),
        )
        assert len(staged_objects(store_url)) == 2 * len(cs)
        same = again.commit()
    assert {s.snapshot_id for s in same.values()} == {first}
    assert fill_commits(store_url) == 1
    assert staged_objects(store_url) == []
    assert_hist_equal(dh.open(store_url, "h"), want_h)


@pytest.mark.parametrize("store_url", ["s3"], indirect=True)
def test_commit_skips_chunks_already_in_and_takes_the_rest(store_url: str) -> None:
    cs = chunks()
    functools.reduce(operator.add, [stage(store_url, c) for c in cs[:3]]).commit(
        scheduler="sync"
    )
    out = functools.reduce(operator.add, [stage(store_url, c) for c in cs]).commit(
        scheduler="threads"
    )
    assert_hist_equal(out["h"], expected(cs)[0])
    assert [len(c.inputs) for c in out["h"].history()] == [5, 3]
    assert staged_objects(store_url) == []


def test_staging_on_an_s3_repository_object(s3_env: str) -> None:
    """An icechunk.Repository on S3 (credentials from the environment)
    stages under its own prefix, as its URL would."""
    bucket = new_bucket(s3_env)
    storage = icechunk.s3_storage(
        bucket=bucket,
        prefix="by/object",
        endpoint_url=s3_env,
        allow_http=True,
        force_path_style=True,
        region="us-east-1",
        from_env=True,
    )
    repo = icechunk.Repository.create(storage)
    cs = chunks(3)
    parts = [stage(repo, c) for c in cs]
    url = f"s3://{bucket}/by/object"
    assert len(staged_objects(url)) == 6
    stored = functools.reduce(operator.add, parts).commit(scheduler="sync")
    assert_hist_equal(stored["h"], expected(cs)[0])
    assert staged_objects(url) == []


# ------------------------------------------------------------------ bad input ---


def test_bad_stores_are_refused_before_anything_is_written(
    s3_env: str, tmp_path: Path
) -> None:
    with pytest.raises(dh.StoreError, match="no bucket"):
        dh.Staging("s3:///prefix", "c")
    with pytest.raises(dh.StoreError, match="give a prefix"):
        dh.Staging("s3://bucket", "c")
    with pytest.raises(dh.StoreError, match="'gs' scheme"):
        dh.Staging("gs://bucket/prefix", "c")
    bucket = new_bucket(s3_env)
    keys = {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}
    with pytest.raises(dh.StoreError, match="does not take") as info:
        dh.Staging(f"s3://{bucket}/repo", "c", storage_options=keys)
    assert S3_SECRET not in str(info.value)
    with pytest.raises(dh.StoreError, match="unknown storage_options"):
        dh.Staging(f"s3://{bucket}/repo", "c", storage_options={"endpoint": "x"})
    with pytest.raises(dh.StoreError, match="only for stores given as s3://"):
        dh.Staging(tmp_path / "r", "c", storage_options={"region": "x"})
    import boto3

    listed = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket=bucket)
    assert listed["KeyCount"] == 0  # no repository was created
    assert not (tmp_path / "r").exists()
    # storage with no place for staged fills (in memory)
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    with pytest.raises(dh.StoreError, match="neither"):
        dh.Staging(repo, "c")


def test_staging_with_endpoint_from_storage_options(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    url = f"s3://{new_bucket(s3_env)}/repo"
    opts = {"endpoint_url": s3_env}
    cs = chunks(2)
    parts = []
    for item, label, x, w in cs:
        s = dh.Staging(url, item, storage_options=opts)
        s.hist(*AXES, storage=hist.storage.Weight(), path="h").fill(
            d=label, x=x, weight=w
        )
        parts.append(s)
    stored = (parts[0] + parts[1]).commit(scheduler="sync")
    assert_hist_equal(stored["h"], expected(cs)[0])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    assert staged_objects(url) == []


# -------------------------------------------------------- a run that dies ---

#: A run that stages its chunks one after the other, saying so after each,
#: and then waits to be killed, never committing.
DYING = textwrap.dedent(
    """
    import json, sys, time
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["tests"])
    from test_staging_s3 import chunks, stage
    for c in chunks(cfg["n"], cfg["seed"], "dead.root"):
        stage(cfg["store"], c)
        print("staged", flush=True)
    time.sleep(600)
    """
)


def _run_and_kill(store: str, n: int) -> None:
    cfg = {"tests": str(TESTS), "store": store, "n": n, "seed": 9}
    with subprocess.Popen(
        [sys.executable, "-c", DYING, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as proc:
        try:
            assert proc.stdout is not None
            for _ in range(n):
                assert proc.stdout.readline().strip() == "staged"
        finally:
            proc.kill()


@pytest.mark.parametrize("store_url", ["s3", "local"], indirect=True)
def test_gc_removes_staged_fills_of_a_dead_run_past_the_cutoff(store_url: str) -> None:
    _run_and_kill(store_url, 3)
    dead = staged_objects(store_url)
    assert len(dead) == 2 * 3
    # default cutoff (a day): too young to go
    report = dh.gc(store_url)
    assert report.staged_deleted == 0
    assert staged_objects(store_url) == dead

    # a run still staging, started well after the dead one (S3 times are
    # whole seconds, hence the wait)
    died = time.time()
    time.sleep(3.5)
    cs = chunks(2, seed=10)
    running = [stage(store_url, c) for c in cs]
    young = sorted(set(staged_objects(store_url)) - set(dead))
    assert len(young) == 4

    def between() -> dt.timedelta:
        """An age that puts gc's cutoff a second after the dead run."""
        return dt.timedelta(seconds=time.time() - (died + 1.0))

    report = dh.gc(store_url, older_than=between(), dry_run=True)
    assert (report.staged_deleted, report.dry_run) == (6, True)
    assert staged_objects(store_url) == sorted(dead + young)
    report = dh.gc(store_url, older_than=between())
    assert report.staged_deleted == 6
    assert staged_objects(store_url) == young

    # the running one commits as if nothing happened
    stored = functools.reduce(operator.add, running).commit(scheduler="sync")
    assert_hist_equal(stored["h"], expected(cs)[0])
    assert staged_objects(store_url) == []


def test_a_staged_object_removed_before_the_commit_is_named(s3_env: str) -> None:
    url = f"s3://{new_bucket(s3_env)}/repo"
    staged = stage(url, chunks(1)[0])
    dh.gc(url, older_than=dt.timedelta(0), idle=True)
    with pytest.raises(dh.StoreError, match="is missing from s3://"):
        staged.commit(scheduler="sync")
    with pytest.raises(dh.NotAHistogramError):
        dh.open(url, "h")  # nothing committed: not even created


def test_gc_takes_static_keys_which_never_leave_the_process(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dask_hizt._repo import RepoRef
    from dask_hizt._staging_area import staging_area

    url = f"s3://{new_bucket(s3_env)}/repo"
    stage(url, chunks(1)[0])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    opts = {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}
    report = dh.gc(url, older_than=dt.timedelta(0), idle=True, storage_options=opts)
    assert report.staged_deleted == 2
    area = staging_area(RepoRef.from_store(url, storage_options=opts), opts)
    with pytest.raises(TypeError, match="stays in its process"):
        pickle.dumps(area)
    assert S3_SECRET not in repr(area)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    assert staged_objects(url) == []
