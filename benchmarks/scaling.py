"""Scaling to a billion bins: dask_hizt vs dask-histogram vs eager boost-histogram.

One command measures time and peak worker memory against histogram size
(Regular(n)^3, 1e5 to 1e9 bins, Double storage, 1e8 uniform entries in 100
partitions), then, on the largest size, the cost of adding 1% more data to
the stored histogram, and writes benchmarks/RESULTS.md and
benchmarks/scaling.png (raw figures: JSON in benchmarks/results/).

    uv run python benchmarks/scaling.py              # the full run (~30 min)
    uv run python benchmarks/scaling.py --quick      # 1e6 entries, sizes 1e5-1e7
    uv run python benchmarks/scaling.py --plot-only  # redraw from the last JSON

See benchmarks/README.md, "Scaling and billion bins".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
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
from dask.utils import parse_bytes

# run.py sits next to this script, so it is on sys.path when the script runs.
from run import PRELOAD, dir_bytes, environment, fmt_bytes, prefix_summary

import dask_hizt
import dask_hizt.collection

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
REPORT = HERE / "RESULTS.md"
PLOT = HERE / "scaling.png"

# The cluster: a worker may hold half of what the histogram needs dense
# at 1e9 bins; the nanny kills a worker that goes above 95% of this.
WORKER_MEMORY = "4GiB"
N_WORKERS = 2
# Regular(n)^3 for about 1e5 .. 1e9 bins.
SIZES: dict[str, int] = {"1e5": 46, "1e6": 100, "1e7": 215, "1e8": 464, "1e9": 1000}
# Targets from the issue (dask_hizt, at 1e9 bins).
TARGET_PEAK = 2e9
TARGET_INCREMENT = 0.05
# Eager boost-histogram holds the dense histogram in the client: only up to this.
BOOST_MAX_BINS = 10**8
# Rows where other processes used this many cores on average during the run
# (of the 2) are marked: their wall times are longer than on a quiet machine.
LOADED = 0.5
# Before each timed run, wait until other processes use fewer cores than this.
QUIET_CORES = 0.3
SAMPLE_SECONDS = 0.05
METHODS = ("dask_hizt", "dask-histogram", "boost-histogram")
GB = 1e9


# ----------------------------------------------------------- measurement ---


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class ProcessSampler:
    """Peak RSS and CPU time of the cluster's worker processes and of the client.

    Unlike run.py's sampler, it follows the client's child processes, so a
    worker that the nanny restarted (after being killed for memory) is
    measured too: its peak is often the one that matters. ``held(pid)``, if
    given, describes what the scheduler sees on that worker; it is called at
    each new peak, so the report can say what a worker held at its peak.
    It also counts the CPU time of all other processes on the machine
    (``others_cpu``): the load that the benchmark did not make.
    """

    def __init__(
        self,
        interval: float = SAMPLE_SECONDS,
        held: Callable[[int], dict[str, Any] | None] | None = None,
    ) -> None:
        self._me = psutil.Process()
        self._interval = interval
        self._held = held
        self._procs: dict[int, psutil.Process] = {}
        self.peak: dict[int, int] = {}
        self.at_peak: dict[int, dict[str, Any]] = {}
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.client_start = 0
        self.client_peak = 0
        self.others_cpu = 0.0
        self._t0 = 0.0
        self._client_cpu0 = 0.0
        self._busy0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _discover(self) -> None:
        for proc in self._me.children(recursive=True):
            if proc.pid in self._procs:
                continue
            with contextlib.suppress(psutil.Error):
                # Workers are multiprocessing "spawn" children; skip the
                # resource tracker.
                if any("spawn_main" in part for part in proc.cmdline()):
                    self._procs[proc.pid] = proc
                    self.peak[proc.pid] = 0

    def _sample(self) -> None:
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    rss = int(proc.memory_info().rss)
                    times = proc.cpu_times()
            except psutil.Error:
                del self._procs[pid]  # died: its last samples stay
                continue
            cpu = times.user + times.system
            # A snapshot at a new peak 1% above the last snapshot: they cost a little.
            last = self.at_peak.get(pid, {}).get("rss", 0)
            if self._held is not None and rss > self.peak[pid] and rss > 1.01 * last:
                snap = self._held(pid)
                if snap is not None:
                    snap["rss"] = rss
                    snap["at_s"] = time.perf_counter() - self._t0
                    self.at_peak[pid] = snap
            self.peak[pid] = max(self.peak[pid], rss)
            self.cpu_start.setdefault(pid, cpu)
            self.cpu_last[pid] = cpu
        self.client_peak = max(self.client_peak, int(self._me.memory_info().rss))

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self._interval):
            # Scanning /proc costs more than sampling: look for new workers
            # once a second.
            if ticks % 20 == 0:
                self._discover()
            self._sample()
            ticks += 1

    @property
    def workers_seen(self) -> int:
        return len(self.peak)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_start[p] for p in self.cpu_last)

    def __enter__(self) -> Self:
        self._t0 = time.perf_counter()
        self._discover()
        self._sample()
        self.client_start = self.client_peak
        t = self._me.cpu_times()
        self._client_cpu0 = t.user + t.system
        self._busy0 = busy_cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        t = self._me.cpu_times()
        ours = self.cpu_seconds + t.user + t.system - self._client_cpu0
        self.others_cpu = max(0.0, busy_cpu_seconds() - self._busy0 - ours)


def held_on_workers(
    cluster: distributed.LocalCluster,
) -> Callable[[int], dict[str, Any] | None]:
    """What the scheduler (in this process) sees on a worker, by pid.

    Results held in the worker's memory, per task prefix (count and the
    bytes dask's sizeof gives them), and the tasks it was running. Workers
    are found by pid, so a restarted worker is found too.
    """

    def held(pid: int) -> dict[str, Any] | None:
        try:  # read from another thread: a set changed meanwhile just skips
            ws = next(
                (w for w in list(cluster.scheduler.workers.values()) if w.pid == pid),
                None,
            )
            if ws is None:
                return None
            keys: dict[str, list[float]] = {}
            for ts in list(ws.has_what):
                row = keys.setdefault(ts.prefix.name, [0, 0.0])
                row[0] += 1
                row[1] += ts.nbytes / 1e6
            running = sorted({ts.prefix.name for ts in list(ws.processing)})
        except RuntimeError:
            return None
        return {
            "held_MB": {k: [v[0], round(v[1], 1)] for k, v in keys.items()},
            "managed_MB": round(ws.nbytes / 1e6, 1),
            "running": running,
        }

    return held


@dataclass
class Result:
    """One run of one method on one histogram size."""

    size: str
    axis_bins: int
    n_bins: int
    method: str
    entries: int
    partitions: int
    # "ok", "skipped", "timeout", or the exception's class (KilledWorker, ...).
    status: str = "ok"
    error: str | None = None
    # Building the lazy object to having the result (until the failure, if it failed).
    wall_s: float = 0.0
    build_s: float = 0.0
    entries_per_s: float | None = None
    tasks_run: int | None = None
    # Per worker process seen during the run (restarted ones included), largest first.
    worker_peak_rss: list[int] = field(default_factory=list)
    worker_restarts: int = 0
    # CPU seconds of the workers during the run: less sensitive to load than wall.
    worker_cpu_s: float | None = None
    client_start_rss: int = 0
    client_peak_rss: int = 0
    load_before: float = 0.0
    load_after: float = 0.0
    prefixes: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # dask_hizt: chunk grid and on-disk size; StoredHist.to_hist() time (not in wall).
    layout: dict[str, Any] | None = None
    repo_bytes: int | None = None
    readback_s: float | None = None
    # Incremental rows: chunks changed by the commit, against the array's total.
    chunks_updated: int | None = None
    chunks_total: int | None = None
    repeat: int | None = None
    # Workers killed by their nanny for memory; workers alive when a run was stopped.
    memory_kills: int = 0
    workers_at_end: int | None = None
    cluster_events: list[str] = field(default_factory=list)
    # CPU seconds used by other processes on the machine during the run.
    others_cpu_s: float | None = None
    # The largest worker at its peak: what the scheduler saw it hold and run.
    at_peak: dict[str, Any] | None = None
    note: str = ""

    @property
    def worker_peak(self) -> int:
        return max(self.worker_peak_rss, default=0)


def new_cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=WORKER_MEMORY,
        silence_logs=logging.CRITICAL,  # task errors still reach the client
    )


# A compute waiting this long with no worker at all is stopped: after a few
# memory kills the nanny may stop restarting its worker (seen with
# dask-histogram at 1e9 bins), and the compute would wait forever.
NO_WORKERS_GRACE = 90.0


def _wait(
    thread: threading.Thread, client: distributed.Client, t0: float, timeout: float
) -> str:
    """Wait for the compute thread; a reason ("timeout: ...") if it had to be stopped."""
    alone_since: float | None = None
    while thread.is_alive():
        thread.join(5.0)
        now = time.perf_counter()
        if not thread.is_alive():
            break
        if now - t0 > timeout:
            return f"timeout: stopped after {timeout:.0f} s"
        if client.nthreads():
            alone_since = None
        elif alone_since is None:
            alone_since = now
        elif now - alone_since > NO_WORKERS_GRACE:
            return (
                f"no workers: none left for {NO_WORKERS_GRACE:.0f} s "
                f"(the nannies stopped restarting them), stopped after {now - t0:.0f} s"
            )
    return ""


class ClusterLog(logging.Handler):
    """Warnings of the nannies and the scheduler (they run in this process).

    Counts the workers the nannies killed for memory, and keeps the first
    few distinct messages, addresses stripped, as a record of how a run failed.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.memory_kills = 0
        self.events: list[str] = []
        self._logger = logging.getLogger("distributed")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "exceeded 95% memory budget" in message:
            self.memory_kills += 1
        text = re.sub(r"'?tcp://[\d.:]+'?", "<worker>", message.splitlines()[0])
        text = re.sub(r"\s*\(pid=\d+\)|:?\s*\{.*", "", text)[:200]
        if len(self.events) < 20 and text not in self.events:
            self.events.append(text)

    def __enter__(self) -> Self:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)


def settle(quiet: float = QUIET_CORES, longest: float = 60.0) -> None:
    """Wait (up to ``longest`` s) until other processes use under ``quiet``
    cores, e.g. the last run's workers shutting down."""
    end = time.monotonic() + longest
    while time.monotonic() < end:
        busy0, t0 = busy_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        if (busy_cpu_seconds() - busy0) / (time.monotonic() - t0) < quiet:
            return


def measured(
    res: Result,
    body: Callable[[Result], Any],
    timeout: float,
    warm: Callable[[], Any] | None = None,
) -> Any:
    """Run ``body`` on a fresh, warmed-up cluster with sampling; return its result.

    ``warm`` runs first, untimed: a tiny compute of the same method, so that
    the workers' first use of a library (icechunk and zarr set-up, codec
    registries, first task deserialisation) is not in the timed run, just as
    it is not in a second compute on a running cluster.

    The body runs in a thread so that a run past ``timeout`` can be stopped:
    closing the cluster makes its compute raise, and the thread ends. A
    failure is recorded in ``res.status``/``res.error`` and gives ``None``.
    """
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = body(res)
        except Exception as exc:  # noqa: BLE001 (any failure is a result here)
            outcome["error"] = exc
        outcome["end"] = time.perf_counter()

    thread = threading.Thread(target=call, daemon=True)
    stopped = ""
    with (
        new_cluster() as cluster,
        distributed.Client(cluster) as client,
        ClusterLog() as log,
    ):
        for module in PRELOAD:  # imports are not what we measure
            client.run(importlib.import_module, module)
        if warm is not None:
            warm()
        settle()
        res.load_before = os.getloadavg()[0]
        with (
            warnings.catch_warnings(record=True) as caught,
            distributed.get_task_stream(client=client) as stream,
            ProcessSampler(held=held_on_workers(cluster)) as mem,
        ):
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            thread.start()
            stopped = _wait(thread, client, t0, timeout)
            res.wall_s = outcome.get("end", time.perf_counter()) - t0
            if stopped:
                res.workers_at_end = len(client.nthreads())
        res.load_after = os.getloadavg()[0]
    # Leaving the cluster's context stopped the workers under a stopped compute.
    thread.join(60)
    res.tasks_run = len(stream.data)
    res.prefixes = prefix_summary(stream.data)
    res.worker_peak_rss = sorted(mem.peak.values(), reverse=True)
    res.worker_restarts = max(0, mem.workers_seen - N_WORKERS, log.memory_kills)
    res.memory_kills = log.memory_kills
    res.cluster_events = log.events
    res.worker_cpu_s = mem.cpu_seconds
    res.others_cpu_s = mem.others_cpu
    res.client_start_rss, res.client_peak_rss = mem.client_start, mem.client_peak
    top = max(mem.peak, key=lambda pid: mem.peak[pid], default=None)
    res.at_peak = mem.at_peak.get(top) if top is not None else None
    res.warnings = sorted(
        {
            f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
            for w in caught
        }
    )
    if stopped:
        res.status, res.error = stopped.split(":", 1)[0], stopped
        return None
    if "error" in outcome:
        exc = outcome["error"]
        res.status = type(exc).__name__
        res.error = "".join(traceback.format_exception_only(exc)).strip()[-600:]
        return None
    res.entries_per_s = res.entries / res.wall_s
    return outcome["value"]


# ------------------------------------------------------------------ data ---


def make_data(
    entries: int, partitions: int, seed: int, x_high: float = 1.0
) -> list[da.Array]:
    """x, y, z uniform in [0, 1) (x in [0, x_high)), generated inside the tasks.

    Seeds are fixed in the graph, so every method histograms the same values
    and :func:`client_data` can make them again in the client.
    """
    rng = da.random.default_rng(seed)
    chunk = -(-entries // partitions)
    highs = (x_high, 1.0, 1.0)
    return [rng.uniform(0.0, hi, size=entries, chunks=chunk) for hi in highs]


def client_data(
    entries: int, partitions: int, seed: int, x_high: float = 1.0
) -> list[np.ndarray]:
    """The same values in the client (for boost-histogram and the checks)."""
    arrays = make_data(entries, partitions, seed, x_high)
    return [np.asarray(a) for a in dask.compute(*arrays, scheduler="threads")]


def regular_axes(n: int) -> list[hist.axis.Regular]:
    return [hist.axis.Regular(n, 0.0, 1.0) for _ in range(3)]


# ---------------------------------------------------------------- methods ---


def _warm_dask_hizt() -> None:
    with tempfile.TemporaryDirectory(prefix="hizt-warm-") as store:
        h = dask_hizt.Hist(
            *regular_axes(10), storage=hist.storage.Double(), store=store, path="h"
        )
        h.fill(*make_data(10_000, 4, seed=0)).compute()


def _warm_dask_histogram() -> None:
    ref = (
        tuple(bh.axis.Regular(10, 0.0, 1.0) for _ in range(3)),
        bh.storage.Double(),
        None,
    )
    dask.compute(dask_histogram.factory(*make_data(10_000, 4, seed=0), histref=ref))


def run_dask_hizt(
    res: Result,
    store: str,
    seed: int,
    timeout: float,
    x_high: float = 1.0,
    checkpoint: int | None = None,
) -> dask_hizt.StoredHist | None:
    """Fill into ``store`` (created, or added to when the histogram is there).

    ``checkpoint``: commit every that many partitions (default: one commit).
    """
    n = res.axis_bins

    def body(r: Result) -> dask_hizt.StoredHist:
        t0 = time.perf_counter()
        h = dask_hizt.Hist(
            *regular_axes(n), storage=hist.storage.Double(), store=store, path="h"
        )
        h.fill(*make_data(r.entries, r.partitions, seed, x_high))
        r.build_s = time.perf_counter() - t0
        return h.compute(checkpoint=checkpoint)

    stored = measured(res, body, timeout, warm=_warm_dask_hizt)
    if stored is not None:
        res.layout = {
            "chunks": list(stored.layout.chunks),
            "grid": list(stored.layout.grid),
            "n_chunks": stored.layout.n_chunks,
        }
        res.repo_bytes = dir_bytes(store)
    return stored


def run_dask_histogram(res: Result, seed: int, timeout: float) -> np.ndarray | None:
    """dask_histogram.factory, given its histogram as a (axes, storage, metadata) tuple.

    The tuple is how hist.dask calls it: with ``axes=``, factory builds the
    empty dense histogram in the client and pickles it into the graph
    (8 GB at 1e9 bins), which would measure the client, not the fill.
    """
    n = res.axis_bins

    def body(r: Result) -> Any:
        t0 = time.perf_counter()
        ref = (
            tuple(bh.axis.Regular(n, 0.0, 1.0) for _ in range(3)),
            bh.storage.Double(),
            None,
        )
        agg = dask_histogram.factory(
            *make_data(r.entries, r.partitions, seed), histref=ref
        )
        r.build_s = time.perf_counter() - t0
        (out,) = dask.compute(agg)
        return out

    out = measured(res, body, timeout, warm=_warm_dask_histogram)
    return None if out is None else np.asarray(out.view(flow=True))


def run_boost(res: Result, data: Sequence[np.ndarray]) -> np.ndarray:
    """Eager, one thread, in the client, on the same values (made before, not timed)."""
    n = res.axis_bins
    res.load_before = os.getloadavg()[0]
    me = psutil.Process()
    res.client_start_rss = int(me.memory_info().rss)
    cpu0 = time.process_time()
    busy0 = busy_cpu_seconds()
    t0 = time.perf_counter()
    h = bh.Histogram(
        *(bh.axis.Regular(n, 0.0, 1.0) for _ in range(3)), storage=bh.storage.Double()
    )
    h.fill(*data)
    res.wall_s = time.perf_counter() - t0
    res.worker_cpu_s = time.process_time() - cpu0
    res.others_cpu_s = max(0.0, busy_cpu_seconds() - busy0 - res.worker_cpu_s)
    # The dense histogram is the only allocation here; it stays until the end.
    res.client_peak_rss = int(me.memory_info().rss)
    res.load_after = os.getloadavg()[0]
    res.entries_per_s = res.entries / res.wall_s
    res.note = "in the client; memory: client RSS growth"
    return np.asarray(h.view(flow=True))


# ----------------------------------------------------------------- checks ---


def check_equal(name: str, got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    equal = bool(np.array_equal(got, want))
    out = {
        "pair": name,
        "equal": equal,
        "sums": [float(got.sum()), float(want.sum())],
        "how": "whole view, flow bins included",
    }
    print(
        f"  check {name}: {'OK' if equal else 'MISMATCH'} (sums {out['sums'][0]:.0f} / {out['sums'][1]:.0f})",
        flush=True,
    )
    return out


def check_stored(
    name: str,
    stored: dask_hizt.StoredHist,
    data: Sequence[Sequence[np.ndarray]],
    n: int,
) -> list[dict[str, Any]]:
    """Check a stored histogram too large to read whole against its input values.

    ``stored.project(0)`` (streamed over every chunk) must equal an eager
    fill of all x values: every entry in the right x slab, none lost or
    doubled. A few ``stored[i, :, :]`` slices (which read only their chunks)
    must equal eager 2-D fills of the entries whose x falls in bin i.
    """
    axis = bh.axis.Regular(n, 0.0, 1.0)
    out = []
    t0 = time.perf_counter()
    projected = np.asarray(stored.project(0).view(flow=True))
    read_s = time.perf_counter() - t0
    eager = bh.Histogram(axis, storage=bh.storage.Double())
    for x, _, _ in data:
        eager.fill(x)
    want = np.asarray(eager.view(flow=True))
    equal = bool(np.array_equal(projected, want))
    out.append(
        {
            "pair": f"{name}: project(0) vs eager x",
            "equal": equal,
            "sums": [float(projected.sum()), float(want.sum())],
            "how": f"project(0) streamed over all chunks in {read_s:.1f} s",
        }
    )
    for i in (0, n // 2, n - 1):
        t0 = time.perf_counter()
        got = np.asarray(stored[i, :, :].view(flow=True))
        read_s = time.perf_counter() - t0
        eager2 = bh.Histogram(axis, axis, storage=bh.storage.Double())
        for x, y, z in data:
            sel = np.asarray(axis.index(x)) == i
            eager2.fill(y[sel], z[sel])
        want2 = np.asarray(eager2.view(flow=True))
        out.append(
            {
                "pair": f"{name}: [{i}, :, :] vs eager",
                "equal": bool(np.array_equal(got, want2)),
                "sums": [float(got.sum()), float(want2.sum())],
                "how": f"slice read in {read_s:.2f} s",
            }
        )
    for c in out:
        print(
            f"  check {c['pair']}: {'OK' if c['equal'] else 'MISMATCH'} (sums {c['sums'][0]:.0f} / {c['sums'][1]:.0f}; {c['how']})",
            flush=True,
        )
    return out


# ------------------------------------------------------------------- run ---


def memory_available() -> int:
    return int(psutil.virtual_memory().available)


def describe(res: Result) -> str:
    peak = f"{res.worker_peak / GB:.2f} GB" if res.worker_peak_rss else "-"
    rate = f"{res.entries_per_s / 1e6:.1f} M/s" if res.entries_per_s else "-"
    extra = f", {res.worker_restarts} worker restarts" if res.worker_restarts else ""
    return (
        f"{res.status}: wall {res.wall_s:.1f} s, {rate}, peak worker {peak}, "
        f"tasks {res.tasks_run}, others {_others(asdict(res))} cores{extra}"
    )


def run_size(
    label: str,
    args: argparse.Namespace,
    data: Callable[[], list[np.ndarray]],
    results: dict[str, Any],
    save: Callable[[], None],
) -> tuple[dask_hizt.StoredHist | None, str | None]:
    """Every method on one size; returns dask_hizt's result and its repository."""
    n = SIZES[label]
    base = {
        "size": label,
        "axis_bins": n,
        "n_bins": n**3,
        "entries": args.entries,
        "partitions": args.partitions,
    }
    limit = int(parse_bytes(WORKER_MEMORY))
    views: dict[str, np.ndarray] = {}
    stored = store = None

    if "dask_hizt" in args.methods:
        res = Result(method="dask_hizt", **base)
        print(f"[{label} bins, Regular({n})^3] dask_hizt ...", flush=True)
        store = tempfile.mkdtemp(prefix="hizt-scaling-", dir=args.tmp)
        stored = run_dask_hizt(
            res, store, seed=42, timeout=args.hizt_timeout, checkpoint=args.checkpoint
        )
        if args.checkpoint:
            res.note = f"checkpoint={args.checkpoint}"
        if stored is not None and n**3 <= BOOST_MAX_BINS:
            t0 = time.perf_counter()
            views["dask_hizt"] = np.asarray(stored.to_hist().view(flow=True))
            res.readback_s = time.perf_counter() - t0
        print(f"    {describe(res)}", flush=True)
        results["runs"].append(asdict(res))
        save()

    if "dask-histogram" in args.methods:
        res = Result(method="dask-histogram", **base)
        hist_bytes = 8 * (n + 2) ** 3
        # The client only ever receives a result that a worker could hold, so
        # it needs at most twice (deserialising) the smaller of the two.
        need = 2 * min(hist_bytes, limit) + N_WORKERS * limit + 2**30
        if need > memory_available():
            res.status = "skipped"
            res.error = f"needs ~{need / GB:.1f} GB free, {memory_available() / GB:.1f} GB available"
        else:
            print(
                f"[{label} bins] dask-histogram (timeout {args.timeout:.0f} s) ...",
                flush=True,
            )
            view = run_dask_histogram(res, seed=42, timeout=args.timeout)
            if view is not None:
                views["dask-histogram"] = view
        print(f"    {describe(res)}", flush=True)
        results["runs"].append(asdict(res))
        save()

    if "boost-histogram" in args.methods and n**3 <= BOOST_MAX_BINS:
        res = Result(method="boost-histogram", **base)
        need = 8 * (n + 2) ** 3 + 2**30
        if need > memory_available():
            res.status, res.error = "skipped", "not enough memory free"
        else:
            print(
                f"[{label} bins] boost-histogram (eager, single thread) ...", flush=True
            )
            views["boost-histogram"] = run_boost(res, data())
        print(f"    {describe(res)}", flush=True)
        results["runs"].append(asdict(res))
        save()

    if "dask_hizt" in views:
        for other in ("dask-histogram", "boost-histogram"):
            if other in views:
                c = check_equal(
                    f"{label}: dask_hizt vs {other}", views["dask_hizt"], views[other]
                )
                results["checks"].append(c)
    elif "dask-histogram" in views and "boost-histogram" in views:
        c = check_equal(
            f"{label}: dask-histogram vs boost-histogram",
            views["dask-histogram"],
            views["boost-histogram"],
        )
        results["checks"].append(c)
    save()
    return stored, store


def updated_chunks(stored_from: Any, stored_to: Any) -> int:
    """Chunks of the histogram's arrays changed between two snapshots."""
    diff = stored_to.repository.diff(
        from_snapshot_id=stored_from.snapshot_id, to_snapshot_id=stored_to.snapshot_id
    )
    return sum(
        len(v) for k, v in diff.updated_chunks.items() if k.strip("/").startswith("h/")
    )


# The increments: where in x the 1% more entries fall, so that they touch
# about 1%, 10% and 100% of the chunks.
INCREMENTS = (
    ("x < 0.01", 0.01, "x in [0, 0.01): 1% of the x slabs"),
    ("x < 0.1", 0.1, "x in [0, 0.1): 10% of the x slabs"),
    ("uniform", 1.0, "uniform like the first fill: touches every chunk"),
)


def run_increments(
    label: str,
    first: dask_hizt.StoredHist,
    store: str,
    args: argparse.Namespace,
    data: Callable[[], list[np.ndarray]],
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """Add 1% more entries to the stored histogram, ``args.increment_repeats``
    times for each of :data:`INCREMENTS` (each time new values)."""
    n = SIZES[label]
    extra = max(1, args.entries // 100)
    first_run = next(
        r for r in results["runs"] if r["method"] == "dask_hizt" and r["size"] == label
    )
    prev = first
    inputs = [data()]
    for k, (where, x_high, note) in enumerate(INCREMENTS):
        method = f"dask_hizt +1% ({where})"
        for repeat in range(args.increment_repeats):
            seed = 100 + 10 * k + repeat
            res = Result(
                size=label,
                axis_bins=n,
                n_bins=n**3,
                method=method,
                entries=extra,
                partitions=args.increment_partitions,
                note=note,
                repeat=repeat,
            )
            print(
                f"[{label} bins] {method} #{repeat + 1}: {extra:,} entries in "
                f"{args.increment_partitions} partitions ...",
                flush=True,
            )
            stored = run_dask_hizt(
                res, store, seed=seed, timeout=args.hizt_timeout, x_high=x_high
            )
            if stored is not None:
                res.chunks_updated = updated_chunks(prev, stored)
                res.chunks_total = stored.layout.n_chunks
                ratio = res.wall_s / first_run["wall_s"]
                res.note += f"; {ratio:.3f} of the first compute's wall time"
            print(
                f"    {describe(res)}; chunks updated {res.chunks_updated} of {res.chunks_total}",
                flush=True,
            )
            results["runs"].append(asdict(res))
            save()
            if stored is None:
                return
            inputs.append(client_data(extra, args.increment_partitions, seed, x_high))
            prev = stored
        # One check per kind, of everything added so far.
        results["checks"].extend(check_stored(f"{label} {method}", prev, inputs, n))
        save()


def warm_up(tmp: str | None) -> None:
    """One tiny compute of each library in the client, so that one-time
    costs there (imports, first use of icechunk and zarr) stay out of the
    first measured run."""
    with tempfile.TemporaryDirectory(prefix="hizt-warm-", dir=tmp) as store:
        data = make_data(1000, 2, seed=0)
        h = dask_hizt.Hist(
            *regular_axes(10), storage=hist.storage.Double(), store=store, path="h"
        )
        h.fill(*data).compute(scheduler="sync")
        ref = (
            tuple(bh.axis.Regular(10, 0.0, 1.0) for _ in range(3)),
            bh.storage.Double(),
            None,
        )
        dask.compute(dask_histogram.factory(*data, histref=ref), scheduler="sync")


def run_all(args: argparse.Namespace, full: bool) -> dict[str, Any]:
    env = environment()
    env["cluster"] = {
        "n_workers": N_WORKERS,
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": WORKER_MEMORY,
    }
    env["memory_available_bytes"] = memory_available()
    # A snapshot of src (see benchmarks/README.md) names its commit in a
    # COMMIT file beside src/; the repository's HEAD may have moved on.
    stamp_file = Path(env["dask_hizt_code"]).parents[1] / "COMMIT"
    if stamp_file.is_file():
        env["measured_commit"] = stamp_file.read_text(encoding="utf-8").strip()
    elif not env["dask_hizt_code"].startswith(str(HERE.parent)):
        env["measured_commit"] = "unknown (a copy of src without a COMMIT file)"
    else:
        env["measured_commit"] = env["git_head"] + (
            " + uncommitted src changes" if env["src_dirty"] else ""
        )
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "command": " ".join(["uv run python benchmarks/scaling.py", *sys.argv[1:]]),
        "quick": args.quick,
        # All sizes and methods at the sizes: the committed report.
        "full": full,
        "entries": args.entries,
        "partitions": args.partitions,
        "environment": env,
        "load_at_start": os.getloadavg(),
        "runs": [],
        "checks": [],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "" if full else "-quick" if args.quick else "-partial"
    out = RESULTS_DIR / f"{stamp}-scaling{kind}.json"

    def save() -> None:
        out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")

    print(
        f"dask_hizt from {env['dask_hizt_code']} (commit {env['measured_commit']}); results -> {out}",
        flush=True,
    )
    print(
        f"load average {os.getloadavg()}, {memory_available() / GB:.1f} GB available",
        flush=True,
    )
    warm_up(args.tmp)
    cache: list[list[np.ndarray]] = []

    def data() -> list[np.ndarray]:
        # The first fill's values in the client, made once (3 x 8 B x entries).
        if not cache:
            cache.append(client_data(args.entries, args.partitions, seed=42))
        return cache[0]

    largest = max(args.sizes, key=lambda s: SIZES[s])
    for label in sorted(args.sizes, key=lambda s: SIZES[s]):
        stored, store = run_size(label, args, data, results, save)
        if label == largest and stored is not None and store is not None:
            if SIZES[label] ** 3 > BOOST_MAX_BINS:
                results["checks"].extend(
                    check_stored(f"{label} dask_hizt", stored, [data()], SIZES[label])
                )
                save()
            if args.increment:
                run_increments(label, stored, store, args, data, results, save)
        if store is not None:
            # The repositories are large (up to ~1 GB at 1e9 bins); keep none.
            shutil.rmtree(store, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat()
    save()
    print(f"\nresults written to {out}", flush=True)
    return results


# ---------------------------------------------------------------- report ---


def _fmt_status(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return "ok"
    text = r["status"]
    kills = r.get("memory_kills", 0)
    if kills:
        text += f" ({kills} workers killed for memory)"
    elif r["worker_restarts"]:
        text += f" ({r['worker_restarts']} worker restarts)"
    return text


def _peak(r: dict[str, Any]) -> float | None:
    if r["method"] == "boost-histogram":
        return (r["client_peak_rss"] - r["client_start_rss"]) / GB
    return max(r["worker_peak_rss"], default=0) / GB or None


def _others(r: dict[str, Any]) -> str:
    """Cores used by other processes during the run (the machine has 2)."""
    if r.get("others_cpu_s") is None or not r["wall_s"]:
        return "-"
    cores = r["others_cpu_s"] / r["wall_s"]
    return f"{cores:.2f}" + (" †" if cores >= LOADED else "")


def _table_row(r: dict[str, Any]) -> str:
    def num(value: float | None, form: str, suffix: str = "") -> str:
        return "-" if value is None else f"{value:{form}}{suffix}"

    peak = _peak(r)
    rate = r["entries_per_s"] / 1e6 if r["entries_per_s"] else None
    cells = [
        f"{r['n_bins']:.2e} ({r['axis_bins']}^3)",
        r["method"] + (f" #{r['repeat'] + 1}" if r.get("repeat") is not None else ""),
        num(None if r["status"] == "skipped" else r["wall_s"], ".1f"),
        num(rate, ".3g", " M/s"),
        num(peak, ".2f", " (client)" if r["method"] == "boost-histogram" else ""),
        num(r["worker_cpu_s"], ".0f"),
        num(r["tasks_run"], "d"),
        _fmt_status(r),
        _others(r),
    ]
    return "| " + " | ".join(cells) + " |"


def write_report(results: dict[str, Any], report: Path, plot: Path) -> None:
    env = results["environment"]
    runs = results["runs"]
    lines = [
        "# Scaling and billion bins",
        "",
        (
            f"Generated by `{results['command']}` "
            f"(`--plot-only` redraws this file and `{plot.name}` from the JSON). "
            'See benchmarks/README.md, "Scaling and billion bins", for the method.'
        ),
        "",
        (
            f"- date: {results['started'][:19]} UTC; entries {results['entries']:,} in "
            f"{results['partitions']} partitions, uniform in [0, 1)^3; Regular(n)^3, Double storage"
        ),
        (
            f"- machine: {env['cpus']} CPUs, {env['memory_bytes'] / 2**30:.0f} GiB RAM, Python {env['python']}; "
            f"LocalCluster({env['cluster']['n_workers']} workers x 1 thread, processes, "
            f"memory_limit={env['cluster']['memory_limit']}), a fresh cluster per run"
        ),
        (
            f"- dask_hizt measured at commit {env.get('measured_commit', env['git_head'])}"
            f"; {', '.join(f'{k} {v}' for k, v in env['versions'].items() if k != 'dask_hizt')}"
        ),
        (
            f"- load average (1, 5, 15 min) at the start: "
            f"{', '.join(f'{v:.2f}' for v in results['load_at_start'])}. Other work ran on the machine "
            "meanwhile: *others* is the CPU time of all other processes during the run over its wall "
            f"time, in cores (of {env['cpus']}); rows from {LOADED} up are marked †, their wall times "
            "are longer than on a quiet machine (worker CPU s is less affected)."
        ),
        "",
        "| bins | method | wall s | entries/s | peak worker GB | worker CPU s | tasks | status | others |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in runs:
        lines.append(_table_row(r))
    lines += [
        "",
        "Entries/s is entries over wall time; for the incremental rows, the entries added.",
        "",
    ]

    hz = {r["size"]: r for r in runs if r["method"] == "dask_hizt"}
    incs = [r for r in runs if r["method"].startswith("dask_hizt +")]
    verdicts = []
    big = hz.get("1e9")
    if big is not None and big["status"] == "ok":
        peak = max(big["worker_peak_rss"]) / GB
        verdicts.append(
            f"- Peak worker memory at 1e9 bins: {peak:.2f} GB, target < {TARGET_PEAK / GB:.0f} GB: "
            + ("**met**" if peak < TARGET_PEAK / GB else "**not met**")
        )
    elif big is not None:
        verdicts.append(
            f"- dask_hizt at 1e9 bins did not complete: {big['status']} {big['error'] or ''}"
        )
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in incs:
        kinds.setdefault(r["method"], []).append(r)
    for method, rows in kinds.items():
        first = hz[rows[0]["size"]]
        if bad := [r for r in rows if r["status"] != "ok"]:
            verdicts.append(f"- {method}: {bad[0]['status']} {bad[0]['error'] or ''}")
            continue
        wall = statistics.median(r["wall_s"] for r in rows)
        cpu = statistics.median(r["worker_cpu_s"] for r in rows)
        updated = statistics.median(r["chunks_updated"] for r in rows)
        ratio = wall / first["wall_s"]
        verdicts.append(
            f"- Incremental, {method}: {rows[0]['entries']:,} entries, {len(rows)} computes "
            f"({', '.join(f'{r["wall_s"]:.2f}' for r in rows)} s): median {wall:.2f} s = "
            f"**{100 * ratio:.1f}%** of the first compute's {first['wall_s']:.1f} s "
            f"(worker CPU {100 * cpu / first['worker_cpu_s']:.1f}%); "
            f"{updated:,.0f} of {rows[0]['chunks_total']:,} chunks updated "
            f"({100 * updated / rows[0]['chunks_total']:.1f}%), "
            f"{1000 * cpu / max(updated, 1):.1f} worker-ms per updated chunk; "
            f"target < {100 * TARGET_INCREMENT:.0f}%: "
            + ("**met**" if ratio < TARGET_INCREMENT else "**not met**")
        )
    if verdicts:
        lines += ["## Targets", "", *verdicts, ""]

    dhist = [r for r in runs if r["method"] == "dask-histogram" and r["status"] != "ok"]
    if dhist:
        lines += ["## dask-histogram failures", ""]
        for r in dhist:
            peak = _peak(r)
            lines.append(
                f"- {r['n_bins']:.0e} bins: {r['status']} after {r['wall_s']:.0f} s, "
                f"peak worker {peak or 0:.2f} GB, {r.get('memory_kills', 0)} workers "
                f"killed by their nanny for memory"
                + (
                    f", {r['workers_at_end']} workers alive when stopped"
                    if r.get("workers_at_end") is not None
                    else ""
                )
                + f": `{(r['error'] or '').splitlines()[-1].split('. ')[0][:300]}`"
            )
            events = r.get("cluster_events") or []
            if events:
                lines.append(
                    "  - cluster log (first distinct warnings): "
                    + "; ".join(f"`{e.strip()}`" for e in events[:6])
                )
        lines.append("")

    lines += ["## Checks", ""]
    for c in results["checks"]:
        lines.append(
            f"- {c['pair']}: {'equal' if c['equal'] else '**DIFFERENT**'} "
            f"(sums {c['sums'][0]:,.0f} / {c['sums'][1]:,.0f}; {c['how']})"
        )
    lines.append("")

    lines += [
        "## Where dask_hizt's time goes",
        "",
        (
            "Task stream, summed over tasks (worker seconds; two workers, so up to 2x the wall time). "
            "`transfer` is time fetching inputs from the other worker."
        ),
        "",
        "| run | prefix | tasks | compute s | max s | transfer s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r["method"].startswith("dask_hizt") or r["status"] != "ok":
            continue
        if r["method"] == "dask_hizt" and r["size"] != max(
            hz, key=lambda s: hz[s]["n_bins"]
        ):
            continue
        for name, row in r["prefixes"].items():
            lines.append(
                f"| {r['size']} {r['method']} | {name} | {int(row['count'])} | {row['compute_s']:.1f} | "
                f"{row['max_s']:.2f} | {row['transfer_s']:.1f} |"
            )
    lines.append("")
    # A snapshot counts only if taken at the run's largest peak (not, say, on
    # a worker that was killed and restarted before the peak was reached).
    peaks = [
        r
        for r in runs
        if r.get("at_peak") and r["at_peak"]["rss"] >= 0.95 * max(r["worker_peak_rss"])
    ]
    if peaks:
        lines += [
            (
                "At the largest worker's peak RSS: the results it held (by task prefix: count, "
                "MB by dask's sizeof) and the tasks it ran, as the scheduler saw them:"
            ),
            "",
        ]
        for r in peaks:
            p = r["at_peak"]
            held = ", ".join(
                f"{k} {n} ({mb:.0f} MB)"
                for k, (n, mb) in sorted(p["held_MB"].items(), key=lambda kv: -kv[1][1])
            )
            lines.append(
                f"- {r['size']} {r['method']}: {p['rss'] / GB:.2f} GB at {p['at_s']:.0f} s; "
                f"held {p['managed_MB']:.0f} MB: {held or 'nothing'}; "
                f"running {', '.join(p['running']) or 'nothing'}"
            )
        lines.append("")
    layouts = [
        f"{r['size']}: chunks {tuple(r['layout']['chunks'])}, {r['layout']['n_chunks']:,} chunks, "
        f"repository {fmt_bytes(r['repo_bytes'])}"
        for r in runs
        if r["method"] == "dask_hizt" and r.get("layout")
    ]
    if layouts:
        lines += [
            "dask_hizt's automatic chunking (flow bins included) and repository size on disk:",
            "",
        ]
        lines += [f"- {s}" for s in layouts]
        lines.append("")
    lines += [f"![time and peak worker memory against histogram size]({plot.name})", ""]
    report.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {report}")


def write_plot(results: dict[str, Any], plot: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    colors = {"dask_hizt": "C0", "dask-histogram": "C1", "boost-histogram": "C2"}
    labels = {
        "boost-histogram": "boost-histogram (eager, 1 thread; memory: client RSS growth)"
    }
    runs = [r for r in results["runs"] if r["status"] != "skipped"]
    for method in METHODS:
        rows = sorted(
            (r for r in runs if r["method"] == method), key=lambda r: r["n_bins"]
        )
        if not rows:
            continue
        ok = [r for r in rows if r["status"] == "ok"]
        bad = [r for r in rows if r["status"] != "ok"]
        for ax, value in ((ax_t, lambda r: r["wall_s"]), (ax_m, _peak)):
            ax.plot(
                [r["n_bins"] for r in ok],
                [value(r) for r in ok],
                "o-",
                color=colors[method],
                label=labels.get(method, method),
            )
            for r in bad:
                v = value(r)
                if not v:
                    continue
                ax.plot(
                    [r["n_bins"]],
                    [v],
                    "x",
                    color=colors[method],
                    markersize=11,
                    mew=2.5,
                )
                kills = r.get("memory_kills", 0)
                why = f"killed x{kills}" if kills else r["status"]
                ax.annotate(
                    f"{why}\n(stopped {r['wall_s']:.0f} s)",
                    (r["n_bins"], v),
                    textcoords="offset points",
                    xytext=(-9, 0),
                    ha="right",
                    va="center",
                    fontsize=7,
                    color=colors[method],
                )
    # The increments: one marker per kind, at the median of its computes.
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["method"].startswith("dask_hizt +") and r["status"] == "ok":
            kinds.setdefault(r["method"], []).append(r)
    for k, (method, rows) in enumerate(kinds.items()):
        wall = statistics.median(r["wall_s"] for r in rows)
        peak = statistics.median(_peak(r) or 0.0 for r in rows)
        for ax, v in ((ax_t, wall), (ax_m, peak)):
            ax.plot(
                [rows[0]["n_bins"]],
                [v],
                "*^s"[k % 3],
                color=f"C{3 + k}",
                markersize=11,
                label=f"{method}, median of {len(rows)}" if ax is ax_m else None,
            )
    limit = parse_bytes(WORKER_MEMORY) / GB
    ax_m.axhline(limit, color="grey", ls="--", lw=1)
    ax_m.text(
        1.1e5,
        limit * 1.05,
        f"worker memory_limit {WORKER_MEMORY}",
        fontsize=8,
        color="grey",
    )
    ax_m.axhline(TARGET_PEAK / GB, color="C0", ls=":", lw=1)
    ax_m.text(
        1.1e5,
        TARGET_PEAK / GB * 0.85,
        "target at 1e9 bins: 2 GB",
        fontsize=8,
        color="C0",
    )
    for ax, title, ylabel in (
        (ax_t, "wall time", "seconds"),
        (ax_m, "peak memory per worker (RSS)", "GB"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("histogram bins (Regular(n)^3)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    for ax in (ax_t, ax_m):
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 4)  # room for the failure labels
    ax_m.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{results['entries']:.0e} entries in {results['partitions']} partitions, "
        f"2 workers x 1 thread, {WORKER_MEMORY} each ({results['started'][:10]})",
        fontsize=10,
    )
    fig.savefig(plot, dpi=110)
    print(f"wrote {plot}")


def last_json(quick: bool) -> Path:
    pattern = "*-scaling-quick.json" if quick else "*-scaling.json"
    found = sorted(RESULTS_DIR.glob(pattern))
    if not found:
        raise SystemExit(f"no {pattern} in {RESULTS_DIR}")
    return found[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries",
        type=lambda s: int(float(s)),
        default=10**8,
        help="entries of the first fill (default 1e8)",
    )
    parser.add_argument("--partitions", type=int, default=100, help="default 100")
    parser.add_argument(
        "--sizes",
        default=",".join(SIZES),
        help=f"comma-separated, of {', '.join(SIZES)}",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1e6 entries, sizes 1e5-1e7: a smoke run"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="per dask-histogram run, s"
    )
    parser.add_argument(
        "--hizt-timeout", type=float, default=1800.0, help="per dask_hizt run, s"
    )
    parser.add_argument(
        "--increment-partitions",
        type=int,
        default=10,
        help="partitions of each 1%% increment (default 10)",
    )
    parser.add_argument(
        "--increment-repeats",
        type=int,
        default=3,
        help="computes of each kind of increment (default 3; the report takes the median)",
    )
    parser.add_argument(
        "--checkpoint",
        type=int,
        default=None,
        help="dask_hizt's first fill commits every N partitions (default: one commit)",
    )
    parser.add_argument(
        "--no-increment",
        dest="increment",
        action="store_false",
        help="skip the incremental computes on the largest size",
    )
    parser.add_argument(
        "--tmp",
        default=None,
        help="where the repositories go (default: the system temp dir)",
    )
    parser.add_argument(
        "--plot-only",
        nargs="?",
        const="",
        default=None,
        metavar="JSON",
        help="redraw the report and plot from a JSON (default: the last one)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.entries = min(args.entries, 10**6)
        if args.sizes == ",".join(SIZES):
            args.sizes = "1e5,1e6,1e7"
    args.sizes = [s.strip() for s in args.sizes.split(",")]
    args.methods = [m.strip() for m in args.methods.split(",")]
    if bad := [s for s in args.sizes if s not in SIZES] + [
        m for m in args.methods if m not in METHODS
    ]:
        parser.error(f"unknown sizes/methods: {bad}")
    # Quick and partial runs report into results/, so the committed report
    # only ever shows a full run.
    full = (
        not args.quick
        and args.entries == 10**8
        and len(args.sizes) == len(SIZES)
        and len(args.methods) == len(METHODS)
        and not args.checkpoint
    )
    if args.plot_only is not None:
        path = Path(args.plot_only) if args.plot_only else last_json(args.quick)
        results = json.loads(path.read_text(encoding="utf-8"))
        full = results.get("full", False)
    else:
        results = run_all(args, full)
    report, plot = (
        (REPORT, PLOT)
        if full
        else (RESULTS_DIR / "RESULTS-partial.md", RESULTS_DIR / "scaling-partial.png")
    )
    write_plot(results, plot)
    write_report(results, report, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
