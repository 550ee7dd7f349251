"""Shared machinery of the cold/warm benchmarks (systematics.py, fixed.py, cases.py).

A *cold* run is what a user's script pays: a fresh Python process that
imports the libraries, starts a LocalCluster and computes once. A *warm*
run is a later compute on that same, already used cluster. The parent runs
one child process per method and round (``<script> --child METHOD ...``);
the child prints one ``RESULT {json}`` line on stdout.

This module imports only the standard library and psutil, so that
importing it in a child costs (almost) nothing before the clock starts.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

import psutil

RESULTS = Path(__file__).with_name("results")
SAMPLE_SECONDS = 0.05
MARK = "RESULT "
GiB = 2**30
VERSIONS = (
    "dask_hizt",
    "dask",
    "distributed",
    "dask-histogram",
    "hist",
    "boost-histogram",
    "numpy",
    "zarr",
    "icechunk",
    "numba",
)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for all processes of the machine, so a
    child can measure from the moment its parent spawned it."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def cluster_kwargs() -> dict[str, Any]:
    """The cluster of every cold/warm benchmark."""
    return {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
    }


class RssSampler:
    """Peak RSS of local processes, sampled every 50 ms from a thread (as
    run.py's MemorySampler)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, proc in self._procs.items():
            try:
                rss = int(proc.memory_info().rss)
            except psutil.NoSuchProcess:  # a worker killed for memory: keep its peak
                continue
            self.peak[name] = max(self.peak[name], rss)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> Self:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def emit(payload: Mapping[str, Any]) -> None:
    """The child's one result line."""
    print(MARK + json.dumps(payload), flush=True)


@dataclass(frozen=True)
class ChildOutcome:
    """What one child process gave: its result line, or why there is none."""

    method: str
    round: int
    load_before: float
    # Parent's wall of the subprocess, spawn to exit (cluster shutdown included).
    process_s: float
    result: dict[str, Any] | None
    error: str | None


def run_child(
    script: Path,
    method: str,
    extra: Sequence[str],
    *,
    round_no: int,
    timeout: float,
) -> ChildOutcome:
    """Run ``script --child METHOD --spawned-at T extra...`` and parse its line."""
    load = os.getloadavg()[0]
    env = dict(os.environ)
    env.setdefault("ICECHUNK_LOG", "error")
    # A user's interpreter caches compiled modules (.pyc); without the cache
    # (this machine sets PYTHONDONTWRITEBYTECODE=1, and uv installs no .pyc)
    # every cold process and worker compiles its imports from source, seconds
    # that no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    spawned = now()
    cmd = [
        sys.executable,
        str(script),
        "--child",
        method,
        "--spawned-at",
        repr(spawned),
        *extra,
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return ChildOutcome(
            method, round_no, load, now() - spawned, None, f"timeout after {timeout} s"
        )
    elapsed = now() - spawned
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-6:])
        return ChildOutcome(
            method, round_no, load, elapsed, None, f"exit {done.returncode}: {tail}"
        )
    return ChildOutcome(
        method, round_no, load, elapsed, json.loads(lines[-1][len(MARK) :]), None
    )


def rotated[T](items: Sequence[T], k: int) -> list[T]:
    """Round k's order: the methods interleaved, each starting in turn, so
    slow drift of the machine falls on all of them alike."""
    k %= max(len(items), 1)
    return [*items[k:], *items[:k]]


def lower_median(values: Sequence[float]) -> float:
    """The median, or the lower middle for an even count (a measured value)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


#: What the methods' children and workers import: compiled once by
#: :func:`environment` so that no child pays for compiling them.
IMPORTS = (
    "numpy",
    "dask.array",
    "dask.dataframe",
    "distributed",
    "hist.dask",
    "dask_histogram",
    "dask_hizt.runner",
    "dask_hizt.collection",
    "dask_hizt._shared_fill",
    "coffea.processor",
    "coffea.nanoevents",
)


def _compile_imports() -> None:
    """Import :data:`IMPORTS` once in a subprocess that writes the .pyc caches."""
    code = (
        "import importlib\n"
        f"for m in {IMPORTS!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except ImportError: pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], env=env, check=False, timeout=600)


def environment() -> dict[str, Any]:
    """Commit, versions and machine (no library imported here); compiles the
    libraries' modules first (:func:`_compile_imports`)."""
    _compile_imports()
    versions: dict[str, str | None] = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_head": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "load_average_start": os.getloadavg(),
        "versions": versions,
        "cluster": cluster_kwargs(),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }


def print_environment(env: Mapping[str, Any]) -> None:
    dirty = " + uncommitted src changes" if env["src_dirty"] else ""
    print(
        f"python {env['python']}, {env['cpus']} CPUs, "
        f"{env['memory_bytes'] / GiB:.1f} GiB RAM; commit {env['git_head'][:12]}{dirty}; "
        f"load average {' / '.join(f'{x:.2f}' for x in env['load_average_start'])}"
    )
    print(", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))


def write_results(stem: str, payload: Mapping[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-{stem}.json"
    out.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return out


def fmt_gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def verdict(met: bool | None) -> str:
    return {True: "MET", False: "NOT MET", None: "n/a"}[met]
