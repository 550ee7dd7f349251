"""Side-by-side benchmark: dask_hizt vs dask-histogram vs eager boost-histogram.

Run ``uv run python benchmarks/run.py [--case a|b|all] [--quick] [--repeat N]``.
See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

os.environ.setdefault("ICECHUNK_LOG", "error")  # inherited by the worker processes

import boost_histogram as bh
import dask
import dask.array as da
import dask_histogram
import distributed
import hist
import numpy as np
import psutil
from dask.utils import key_split

import dask_hizt
import dask_hizt.collection

RESULTS = Path(__file__).with_name("results")
# Generous, so that dask-histogram is measured rather than paused or killed.
WORKER_MEMORY = "10GiB"
SAMPLE_SECONDS = 0.05
PRELOAD = (
    "numpy",
    "boost_histogram",
    "hist",
    "dask_histogram",
    "dask_hizt",
    "dask_hizt.collection",  # the package imports its modules on first use
    "zarr",
    "icechunk",
)
GiB = 2**30


# ------------------------------------------------------------------ cases ---


@dataclass(frozen=True)
class Case:
    """One benchmark: Regular(bins, 0, 1) axes, uniform entries, Double storage."""

    name: str
    title: str
    bins: tuple[int, ...]
    entries: int
    partitions: int
    # Target, as in the project's issue: dask_hizt's throughput over
    # dask-histogram's at least this, and its peak worker memory over
    # dask-histogram's at most this (None: no memory target).
    min_speed_ratio: float
    max_memory_ratio: float | None
    # A --quick variant: the targets are for the full sizes and only printed.
    quick: bool = False

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.bins))


CASES = {
    "a": Case(
        "a",
        "1e8 entries, Regular(100), 100 partitions",
        (100,),
        100_000_000,
        100,
        0.9,
        None,
    ),
    "b": Case(
        "b",
        "2e7 entries, Regular(1000) x Regular(1000) x Regular(20), 40 partitions",
        (1000, 1000, 20),
        20_000_000,
        40,
        5.0,
        0.25,
    ),
}
# --quick: 10x fewer entries (and ~10x fewer bins in case b), same partition counts.
QUICK = {
    "a": Case(
        "a",
        "1e7 entries, Regular(100), 100 partitions (quick)",
        (100,),
        10_000_000,
        100,
        0.9,
        None,
        quick=True,
    ),
    "b": Case(
        "b",
        "2e6 entries, Regular(300) x Regular(300) x Regular(20), 40 partitions (quick)",
        (300, 300, 20),
        2_000_000,
        40,
        5.0,
        0.25,
        quick=True,
    ),
}


def make_data(case: Case, seed: int = 42) -> list[da.Array]:
    """One lazy uniform array per axis. The values are generated inside the
    tasks, from seeds fixed in the graph, so every method sees the same data."""
    rng = da.random.default_rng(seed)
    chunk = -(-case.entries // case.partitions)
    return [rng.uniform(0.0, 1.0, size=case.entries, chunks=chunk) for _ in case.bins]


def bh_axes(case: Case) -> list[bh.axis.Regular]:
    return [bh.axis.Regular(n, 0.0, 1.0) for n in case.bins]


# ----------------------------------------------------------- measurement ---


class MemorySampler:
    """Peak RSS of some local processes, sampled from a background thread."""

    def __init__(self, pids: dict[str, int], interval: float = SAMPLE_SECONDS) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.start = dict.fromkeys(pids, 0)
        # Processes that died (e.g. a worker killed for memory).
        self.lost: set[str] = set()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, proc in self._procs.items():
            if name in self.lost:
                continue
            try:
                rss = int(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                self.lost.add(name)
                continue
            self.peak[name] = max(self.peak[name], rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> Self:
        self._sample()
        self.start = dict(self.peak)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class Run:
    """One timed run of one method."""

    method: str
    # From building the lazy object to having the result.
    wall_s: float
    entries_per_s: float
    # Building the lazy collection (dask_hizt: creating the arrays included).
    build_s: float = 0.0
    compute_s: float = 0.0
    # dask_hizt: StoredHist.to_hist(), not in wall_s.
    readback_s: float | None = None
    # From the distributed task stream.
    tasks_run: int | None = None
    # len() and pickled size of the collection's graph (before optimisation).
    graph_tasks: int | None = None
    graph_bytes: int | None = None
    # Per worker process, largest first.
    worker_peak_rss: list[int] = field(default_factory=list)
    worker_start_rss: list[int] = field(default_factory=list)
    client_peak_rss: int = 0
    client_start_rss: int = 0
    workers_lost: list[str] = field(default_factory=list)
    prefixes: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    repo_bytes: int | None = None
    # 1-minute load average when the run started (other work on the machine).
    load_before: float = 0.0
    # Summary rows only: the fastest of the repeats.
    best_wall_s: float | None = None

    @property
    def worker_peak(self) -> int:
        return max(self.worker_peak_rss, default=0)


def prefix_summary(stream: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task prefix: count, summed and max compute seconds, summed transfer seconds."""
    out: dict[str, dict[str, float]] = {}
    for rec in stream:
        row = out.setdefault(
            key_split(rec["key"]),
            {"count": 0, "compute_s": 0.0, "max_s": 0.0, "transfer_s": 0.0},
        )
        row["count"] += 1
        for ss in rec.get("startstops", ()):
            dt = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                row["compute_s"] += dt
                row["max_s"] = max(row["max_s"], dt)
            elif ss["action"] == "transfer":
                row["transfer_s"] += dt
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["compute_s"]))


def new_cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=WORKER_MEMORY,
        silence_logs=logging.CRITICAL,  # task errors still reach the client
    )


@contextlib.contextmanager
def measured(run: Run) -> Iterator[None]:
    """A fresh, warmed-up cluster; memory sampling and the task stream around the body.

    A new cluster per run (rather than ``Client.restart``, which timed out
    here under load) gives every method clean worker processes.
    """
    with new_cluster() as cluster, distributed.Client(cluster) as client:
        for module in PRELOAD:  # imports are not what we measure
            client.run(importlib.import_module, module)
        pids = {addr: int(pid) for addr, pid in client.run(os.getpid).items()}
        pids["client"] = os.getpid()
        run.load_before = os.getloadavg()[0]
        with (
            warnings.catch_warnings(record=True) as caught,
            distributed.get_task_stream(client=client) as stream,
            MemorySampler(pids) as mem,
        ):
            warnings.simplefilter("always")
            yield
    run.tasks_run = len(stream.data)
    run.prefixes = prefix_summary(stream.data)
    run.client_peak_rss = mem.peak.pop("client")
    run.client_start_rss = mem.start.pop("client")
    run.worker_peak_rss = sorted(mem.peak.values(), reverse=True)
    run.worker_start_rss = sorted(mem.start.values(), reverse=True)
    run.workers_lost = sorted(mem.lost)
    run.warnings = sorted(
        {
            f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
            for w in caught
        }
    )


def graph_size(collection: Any) -> tuple[int, int]:
    """Number of tasks and pickled bytes of a collection's graph."""
    import cloudpickle

    graph = dict(collection.__dask_graph__())
    return len(graph), len(cloudpickle.dumps(graph))


def dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------- methods ---


def run_data_only(case: Case) -> tuple[Run, None]:
    """Floor: generate the data in the tasks and reduce it to a number."""
    run = Run("data only (floor)", 0.0, 0.0)
    with measured(run):
        t0 = time.perf_counter()
        sums = [a.sum() for a in make_data(case)]
        run.build_s = time.perf_counter() - t0
        dask.compute(*sums)
        run.wall_s = time.perf_counter() - t0
    run.compute_s = run.wall_s - run.build_s
    run.entries_per_s = case.entries / run.wall_s
    return run, None


def run_dask_hizt(case: Case) -> tuple[Run, np.ndarray]:
    run = Run("dask_hizt", 0.0, 0.0)
    with tempfile.TemporaryDirectory(prefix="hizt-bench-") as tmp:
        with measured(run):
            t0 = time.perf_counter()
            h = dask_hizt.Hist(
                *(hist.axis.Regular(n, 0.0, 1.0) for n in case.bins),
                storage=hist.storage.Double(),
                store=tmp,
                path=case.name,
            )
            h.fill(*make_data(case))
            run.build_s = time.perf_counter() - t0
            (stored,) = dask.compute(h)
            run.wall_s = time.perf_counter() - t0
        run.compute_s = run.wall_s - run.build_s
        run.entries_per_s = case.entries / run.wall_s
        # Outside the timed region: the graph is rebuilt against the new tip,
        # with the same shape.
        run.graph_tasks, run.graph_bytes = graph_size(h)
        t0 = time.perf_counter()
        view = np.asarray(stored.to_hist().view(flow=True))
        run.readback_s = time.perf_counter() - t0
        run.repo_bytes = dir_bytes(tmp)
    return run, view


def run_dask_histogram(case: Case) -> tuple[Run, np.ndarray]:
    run = Run("dask-histogram", 0.0, 0.0)
    with measured(run):
        t0 = time.perf_counter()
        agg = dask_histogram.factory(
            *make_data(case), axes=bh_axes(case), storage=bh.storage.Double()
        )
        run.build_s = time.perf_counter() - t0
        (result,) = dask.compute(agg)
        run.wall_s = time.perf_counter() - t0
    run.compute_s = run.wall_s - run.build_s
    run.entries_per_s = case.entries / run.wall_s
    run.graph_tasks, run.graph_bytes = graph_size(agg)
    return run, np.asarray(result.view(flow=True))


def run_boost(case: Case) -> tuple[Run, np.ndarray]:
    """Eager, one thread, in the client, on the same values (made here, not timed)."""
    data = dask.compute(*make_data(case), scheduler="threads")
    run = Run("boost-histogram (eager)", 0.0, 0.0)
    pid = {"client": os.getpid()}
    with MemorySampler(pid) as mem:
        t0 = time.perf_counter()
        h = bh.Histogram(*bh_axes(case), storage=bh.storage.Double())
        h.fill(*data)
        run.wall_s = run.compute_s = time.perf_counter() - t0
    run.entries_per_s = case.entries / run.wall_s
    run.client_peak_rss, run.client_start_rss = mem.peak["client"], mem.start["client"]
    return run, np.asarray(h.view(flow=True))


# ---------------------------------------------------------------- report ---


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return (
                f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
            )
    return f"{n:.0f} B"


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:.1f} M/s"


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median wall time (the first of two middles); memory: the max over runs."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    mid = ordered[(len(ordered) - 1) // 2]
    out = Run(**asdict(mid))
    out.worker_peak_rss = [
        max(peaks) for peaks in zip(*(r.worker_peak_rss for r in runs), strict=True)
    ]
    out.client_peak_rss = max(r.client_peak_rss for r in runs)
    out.best_wall_s = ordered[0].wall_s
    return out


def print_table(case: Case, rows: Sequence[Run]) -> None:
    head = (
        f"{'method':<24} {'wall s':>8} {'best s':>7} {'build s':>8} {'entries/s':>11} {'tasks run':>9} "
        f"{'graph tasks':>11} {'graph size':>10} {'peak worker RSS':>16} {'peak client RSS':>16}"
    )
    print(
        f"\n== case {case.name}: {case.title}; {case.n_bins:,} bins, Double storage =="
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        workers = " / ".join(fmt_bytes(v) for v in r.worker_peak_rss) or "-"
        print(
            f"{r.method:<24} {r.wall_s:>8.2f} {r.best_wall_s or r.wall_s:>7.2f} {r.build_s:>8.2f} {fmt_rate(r.entries_per_s):>11} "
            f"{r.tasks_run if r.tasks_run is not None else '-':>9} "
            f"{r.graph_tasks if r.graph_tasks is not None else '-':>11} {fmt_bytes(r.graph_bytes):>10} "
            f"{workers:>16} {fmt_bytes(r.client_peak_rss):>16}"
        )
        if r.workers_lost:
            print(f"  !! worker process lost during the run: {r.workers_lost}")
        for w in r.warnings[:3]:
            print(f"  warning: {w}")


def print_prefixes(run: Run) -> None:
    print(
        f"\n{run.method}: task time per prefix (distributed task stream, summed over tasks)"
    )
    print(
        f"  {'prefix':<28} {'count':>6} {'compute s':>10} {'max s':>8} {'transfer s':>10}"
    )
    for name, row in run.prefixes.items():
        print(
            f"  {name:<28} {int(row['count']):>6} {row['compute_s']:>10.2f} "
            f"{row['max_s']:>8.3f} {row['transfer_s']:>10.2f}"
        )


def check(name: str, got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    equal = bool(np.array_equal(got, want))
    flat_g, flat_w = got.ravel(), want.ravel()
    probe = np.linspace(0, flat_g.size - 1, 5).astype(int)
    sums = [float(flat_g.sum()), float(flat_w.sum())]
    out: dict[str, Any] = {
        "pair": name,
        "array_equal": equal,
        "sum": sums,
        "probe_bins": probe.tolist(),
        "probe_values": [flat_g[probe].tolist(), flat_w[probe].tolist()],
    }
    status = "OK" if equal else "MISMATCH"
    print(
        f"check {name}: {status}  sums {sums[0]:.0f} / {sums[1]:.0f}, full view (flow) compared"
    )
    return out


def run_case(case: Case, repeat: int) -> dict[str, Any]:
    methods: list[tuple[str, Callable[[], tuple[Run, np.ndarray | None]]]] = [
        ("data", lambda: run_data_only(case)),
        ("dask_hizt", lambda: run_dask_hizt(case)),
        ("dask_histogram", lambda: run_dask_histogram(case)),
    ]
    runs: dict[str, list[Run]] = {}
    views: dict[str, np.ndarray] = {}
    # Repeats interleave the methods, so that other load on the machine
    # falls on all of them alike.
    for i in range(repeat):
        for key, fn in methods:
            print(f"[case {case.name}] {key} run {i + 1}/{repeat} ...", flush=True)
            run, view = fn()
            runs.setdefault(key, []).append(run)
            if view is not None:
                views[key] = view  # all repeats give the same histogram
            print(
                f"    wall {run.wall_s:.2f} s (load average before: {run.load_before:.2f})",
                flush=True,
            )
    # Boost last: its data lives in the client and would inflate earlier client peaks.
    print(f"[case {case.name}] boost-histogram (eager, single thread) ...", flush=True)
    for _ in range(repeat):
        run, views["boost"] = run_boost(case)
        runs.setdefault("boost", []).append(run)

    rows = {k: median_run(v) for k, v in runs.items()}
    print_table(
        case, [rows["dask_hizt"], rows["dask_histogram"], rows["boost"], rows["data"]]
    )

    hz, dh = rows["dask_hizt"], rows["dask_histogram"]
    # Throughput ratio = inverse wall-time ratio (same entries). The target is
    # judged on median walls; the best runs are the least disturbed by load.
    speed = dh.wall_s / hz.wall_s
    speed_best = (dh.best_wall_s or dh.wall_s) / (hz.best_wall_s or hz.wall_s)
    # Per round of the interleaved repeats: robust to load that comes and goes.
    speed_paired = statistics.median(
        b.wall_s / a.wall_s
        for a, b in zip(runs["dask_hizt"], runs["dask_histogram"], strict=True)
    )
    memory = hz.worker_peak / dh.worker_peak if dh.worker_peak else float("nan")
    print(
        f"\ndask_hizt vs dask-histogram: throughput ratio {speed:.2f}x "
        f"(median of per-round ratios: {speed_paired:.2f}x, best runs: {speed_best:.2f}x), "
        f"peak worker memory ratio {memory:.2f}"
    )
    print(
        f"dask_hizt vs eager boost-histogram: throughput ratio {hz.entries_per_s / rows['boost'].entries_per_s:.3f}x"
    )
    print(
        f"dask_hizt read back (to_hist, not in wall): {hz.readback_s:.2f} s; "
        f"repository on disk: {fmt_bytes(hz.repo_bytes)}"
    )
    targets: dict[str, Any] = {
        "speed": {
            "ratio": speed,
            "ratio_paired": speed_paired,
            "ratio_best": speed_best,
            "min": case.min_speed_ratio,
            "met": speed >= case.min_speed_ratio,
        }
    }
    verdict = {True: "MET", False: "NOT MET"}
    line = f"target throughput >= {case.min_speed_ratio}x: {verdict[targets['speed']['met']]}"
    if case.max_memory_ratio is not None:
        met = memory <= case.max_memory_ratio
        targets["memory"] = {"ratio": memory, "max": case.max_memory_ratio, "met": met}
        line += f"; target memory <= {case.max_memory_ratio}: {verdict[met]}"
    if case.quick:
        line += " (targets are set for the full sizes, not --quick)"
    print(line)
    checks = [
        check(
            "dask_hizt vs dask-histogram", views["dask_hizt"], views["dask_histogram"]
        ),
        check("dask_hizt vs boost-histogram", views["dask_hizt"], views["boost"]),
    ]
    print_prefixes(hz)
    print_prefixes(dh)
    return {
        "case": asdict(case),
        "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
        "ratios": {
            "throughput": speed,
            "throughput_paired": speed_paired,
            "throughput_best": speed_best,
            "peak_worker_memory": memory,
        },
        "targets": targets,
        "checks": checks,
    }


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def environment() -> dict[str, Any]:
    versions = {
        m: importlib.import_module(m).__version__
        for m in (
            "dask",
            "distributed",
            "dask_histogram",
            "boost_histogram",
            "hist",
            "numpy",
            "zarr",
            "icechunk",
        )
    }
    versions["dask_hizt"] = dask_hizt.__version__
    code = Path(dask_hizt.__file__).resolve().parent
    in_repo = code.is_relative_to(Path(__file__).resolve().parent.parent)
    return {
        "dask_hizt_code": str(code),  # may be a snapshot put first on PYTHONPATH
        "git_head": git("rev-parse", "HEAD"),
        # Uncommitted changes to src were measured (only known for the repo's own src).
        "src_dirty": bool(git("status", "--porcelain", "src")) if in_repo else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "versions": versions,
        "cluster": {
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": WORKER_MEMORY,
        },
        "dask_hizt_config": dask.config.get("dask_hizt"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["a", "b", "all"], default="all")
    parser.add_argument(
        "--quick", action="store_true", help="10x smaller sizes, for a smoke run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per method; the table shows the median",
    )
    args = parser.parse_args(argv)
    table = QUICK if args.quick else CASES
    names = ["a", "b"] if args.case == "all" else [args.case]

    env = environment()
    print(
        f"python {env['python']}, {env['cpus']} CPUs, {fmt_bytes(env['memory_bytes'])} RAM"
    )
    print(", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    dirty = " + uncommitted src changes" if env["src_dirty"] else ""
    print(
        f"dask_hizt from {env['dask_hizt_code']} (repository HEAD {env['git_head'][:12]}{dirty})"
    )
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "environment": env,
    }
    results["cases"] = {name: run_case(table[name], args.repeat) for name in names}

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-{'-'.join(names)}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
