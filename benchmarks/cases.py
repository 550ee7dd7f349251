"""Cases a and b of run.py, cold and warm: dask_hizt vs dask-histogram.

Case a: 1e8 entries into Regular(100), 100 partitions. Case b: 2e7 entries
into Regular(1000) x Regular(1000) x Regular(20) (20M bins), 40 partitions.
Double storage, uniform values generated inside the tasks as run.py makes
them. Every method runs in a fresh Python process per case and round
(cold: imports, LocalCluster start-up and the first compute), then computes
again on that cluster (warm). Floors: eager boost-histogram in one thread
(data made first, not timed) and the data alone (generated in the tasks and
summed).

    uv run python benchmarks/cases.py [--case a|b|all] [--rounds N] [--quick]

See benchmarks/README.md ("Cases a and b, cold and warm").
"""

from __future__ import annotations

# First, before any import that takes time: the child's own start.
import time

T_TOP = time.clock_gettime(time.CLOCK_MONOTONIC)

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import coldwarm as cw

HERE = Path(__file__).resolve()
METHODS = {
    "dask_hizt": "dask_hizt.Hist(*axes, storage=Double(), store=<fresh repo>).fill(*xs), dask.compute",
    "dask-histogram": "dask_histogram.factory(*xs, axes=..., storage=Double()), dask.compute",
    "boost": "floor: boost_histogram.Histogram.fill(*xs) in the process, one thread",
    "data": "floor: the same arrays generated in the tasks and summed, dask.compute",
}
HIZT, REFERENCE = "dask_hizt", "dask-histogram"
CLUSTERED = ("dask_hizt", "dask-histogram", "data")
SEED = 42  # run.py's make_data


@dataclass(frozen=True)
class Case:
    """Regular(bins, 0, 1) axes, uniform entries, Double storage (run.py's Case)."""

    name: str
    title: str
    bins: tuple[int, ...]
    entries: int
    partitions: int
    # Issue 15's targets for dask_hizt against dask-histogram: throughput
    # ratio (its time over dask_hizt's) at least this on the first compute
    # of a fresh cluster (cold) and on a later one (warm; None: no target),
    # larger worker peak over dask-histogram's at most this.
    min_cold_speedup: float
    min_warm_speedup: float | None
    max_memory_ratio: float | None
    quick: bool = False

    @property
    def n_bins(self) -> int:
        return math.prod(self.bins)


# The sizes of run.py's CASES and QUICK (run.py imports the libraries at its
# top, so a child cannot import it without spoiling its cold import time).
CASES = {
    "a": Case(
        "a",
        "1e8 entries, Regular(100), 100 partitions",
        (100,),
        10**8,
        100,
        1.0,
        1.0,
        None,
    ),
    "b": Case(
        "b",
        "2e7 entries, Regular(1000) x Regular(1000) x Regular(20), 40 partitions",
        (1000, 1000, 20),
        2 * 10**7,
        40,
        5.0,
        None,
        0.25,
    ),
}
QUICK = {
    "a": Case(
        "a",
        "1e7 entries, Regular(100), 100 partitions (quick)",
        (100,),
        10**7,
        100,
        1.0,
        1.0,
        None,
        quick=True,
    ),
    "b": Case(
        "b",
        "2e6 entries, Regular(300) x Regular(300) x Regular(20), 40 partitions (quick)",
        (300, 300, 20),
        2 * 10**6,
        40,
        5.0,
        None,
        0.25,
        quick=True,
    ),
}


# ------------------------------------------------------------------ child ---


def import_for(method: str) -> dict[str, Any]:
    """What a user's script of this method imports (timed as import)."""
    import numpy as np

    mods: dict[str, Any] = {"np": np}
    if method == "boost":
        import boost_histogram

        mods["bh"] = boost_histogram
        return mods
    import dask
    import dask.array
    import distributed

    mods.update(dask=dask, da=dask.array, distributed=distributed)
    if method == HIZT:
        import hist

        import dask_hizt

        mods.update(hist=hist, dh=dask_hizt)
    elif method == REFERENCE:
        import boost_histogram
        import dask_histogram

        mods.update(bh=boost_histogram, dhist=dask_histogram)
    return mods


def make_data(da: Any, case: Case) -> list[Any]:
    """run.py's make_data: one lazy uniform array per axis, from one
    generator seeded in the graph, so every method sees the same values."""
    rng = da.random.default_rng(SEED)
    chunk = -(-case.entries // case.partitions)
    return [rng.uniform(0.0, 1.0, size=case.entries, chunks=chunk) for _ in case.bins]


class Computer:
    """One method's build + compute of the case: seconds to the result in
    the client, and a function that gives its view (flow bins included;
    dask_hizt: read back from the repository, not timed)."""

    def __init__(
        self, method: str, mods: dict[str, Any], case: Case, root: Path
    ) -> None:
        self.method, self.mods, self.case, self.root = method, mods, case, root
        self.count = 0

    def __call__(self) -> tuple[float, Callable[[], Any] | None]:
        m, case = self.mods, self.case
        t0 = cw.now()
        xs = make_data(m["da"], case)
        if self.method == "data":
            m["dask"].compute(*(x.sum() for x in xs))
            return cw.now() - t0, None
        if self.method == HIZT:
            # A fresh repository every compute, as run.py: the same data into
            # the same histogram would add nothing (content identities).
            self.count += 1
            h = m["dh"].Hist(
                *(m["hist"].axis.Regular(n, 0.0, 1.0) for n in case.bins),
                storage=m["hist"].storage.Double(),
                store=self.root / f"repo{self.count}",
                path=case.name,
            )
            h.fill(*xs)
            (stored,) = m["dask"].compute(h)
            return cw.now() - t0, lambda: stored.to_hist().view(flow=True)
        bh = m["bh"]
        agg = m["dhist"].factory(
            *xs,
            axes=[bh.axis.Regular(n, 0.0, 1.0) for n in case.bins],
            storage=bh.storage.Double(),
        )
        (result,) = m["dask"].compute(agg)
        return cw.now() - t0, lambda: result.view(flow=True)


def child_boost(args: argparse.Namespace, case: Case, mods: dict[str, Any]) -> int:
    """The eager floor: the values made in this process first (dask's
    threaded scheduler, run.py's way, not timed), then one fill each."""
    t_import = cw.now() - T_TOP
    import dask
    import dask.array

    np, bh = mods["np"], mods["bh"]
    t0 = cw.now()
    data = dask.compute(*make_data(dask.array, case), scheduler="threads")
    data_s = cw.now() - t0
    pid = {"client": os.getpid()}
    walls: list[float] = []
    peaks: list[int] = []
    view = None
    warm_equal = True
    for _ in range(1 + args.warm_runs):
        with cw.RssSampler(pid) as mem:
            t0 = cw.now()
            h = bh.Histogram(
                *(bh.axis.Regular(n, 0.0, 1.0) for n in case.bins),
                storage=bh.storage.Double(),
            )
            h.fill(*data)
            walls.append(cw.now() - t0)
        peaks.append(mem.peak["client"])
        if view is None:
            view = np.asarray(h.view(flow=True))
            np.save(args.dump, view)
        else:
            warm_equal &= bool(np.array_equal(view, h.view(flow=True)))
    interpreter = T_TOP - args.spawned_at
    cw.emit(
        {
            "method": args.child,
            "interpreter_s": interpreter,
            "import_s": t_import,
            "cluster_s": 0.0,
            "data_s": data_s,
            "first_s": walls[0],
            # The process's own start, imports and first fill: generating the
            # values is not counted.
            "cold_s": interpreter + t_import + walls[0],
            "read_s": 0.0,
            "warm_s": walls[1:],
            "warm_equal": warm_equal,
            "worker_peak_rss_cold": [],
            "worker_peak_rss_warm": [],
            "client_peak_rss": max(peaks),
        }
    )
    return 0


def child(args: argparse.Namespace) -> int:
    case = (QUICK if args.quick else CASES)[args.case]
    mods = import_for(args.child)
    if args.child == "boost":
        return child_boost(args, case, mods)
    t_import = cw.now() - T_TOP
    distributed, np = mods["distributed"], mods["np"]
    root = Path(tempfile.mkdtemp(prefix=f"hizt-cases-{case.name}-"))
    try:
        t0 = cw.now()
        cluster = distributed.LocalCluster(**cw.cluster_kwargs())
        client = distributed.Client(cluster)
        t_cluster = cw.now() - t0
        pids = {str(k): int(v) for k, v in client.run(os.getpid).items()}
        pids["client"] = os.getpid()
        run = Computer(args.child, mods, case, root)
        try:
            with cw.RssSampler(pids) as cold_mem:
                first, get_view = run()
            t_first_done = cw.now()
            t0 = cw.now()
            view = None if get_view is None else np.asarray(get_view())
            read_s = cw.now() - t0
            if view is not None:
                np.save(args.dump, view)
            warm: list[float] = []
            warm_equal = True
            with cw.RssSampler(pids) as warm_mem:
                for _ in range(args.warm_runs):
                    wall, get_view = run()
                    warm.append(wall)
                    if get_view is not None:  # the same answer every time
                        warm_equal &= bool(np.array_equal(view, get_view()))
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    client_peak = max(cold_mem.peak.pop("client"), warm_mem.peak.pop("client"))
    cw.emit(
        {
            "method": args.child,
            "interpreter_s": T_TOP - args.spawned_at,
            "import_s": t_import,
            "cluster_s": t_cluster,
            "first_s": first,
            "cold_s": t_first_done - args.spawned_at,
            "read_s": read_s,
            "warm_s": warm,
            "warm_equal": warm_equal,
            "worker_peak_rss_cold": sorted(cold_mem.peak.values(), reverse=True),
            # Over all warm computes (read backs between them included).
            "worker_peak_rss_warm": sorted(warm_mem.peak.values(), reverse=True),
            "client_peak_rss": client_peak,
        }
    )
    return 0


# ----------------------------------------------------------------- parent ---


@dataclass(frozen=True)
class Row:
    """A method's medians over the rounds (warm: over all warm computes;
    memory: the max over the rounds, per worker, largest first)."""

    method: str
    runs: int
    failed: int
    cold_s: float
    cold_best_s: float
    interpreter_s: float
    import_s: float
    cluster_s: float
    first_s: float
    first_best_s: float
    warm_s: float
    warm_best_s: float
    read_s: float
    worker_peak_cold: list[int]
    worker_peak_warm: list[int]
    client_peak: int

    @property
    def worker_peak(self) -> int:
        return max([*self.worker_peak_cold, *self.worker_peak_warm], default=0)


def summarise(method: str, outcomes: Sequence[cw.ChildOutcome]) -> Row | None:
    ok = [o.result for o in outcomes if o.result is not None]
    if not ok:
        return None

    def med(key: str) -> float:
        return cw.median([r[key] for r in ok])

    def peaks(key: str) -> list[int]:
        return [max(p) for p in zip(*(r[key] for r in ok), strict=True)]

    warm = [w for r in ok for w in r["warm_s"]]
    return Row(
        method=method,
        runs=len(ok),
        failed=len(outcomes) - len(ok),
        cold_s=med("cold_s"),
        cold_best_s=min(r["cold_s"] for r in ok),
        interpreter_s=med("interpreter_s"),
        import_s=med("import_s"),
        cluster_s=med("cluster_s"),
        first_s=med("first_s"),
        first_best_s=min(r["first_s"] for r in ok),
        warm_s=cw.median(warm),
        warm_best_s=min(warm, default=float("nan")),
        read_s=med("read_s"),
        worker_peak_cold=peaks("worker_peak_rss_cold"),
        worker_peak_warm=peaks("worker_peak_rss_warm"),
        client_peak=max(r["client_peak_rss"] for r in ok),
    )


def compare(dumps: dict[str, Path]) -> list[dict[str, Any]]:
    """Every method's first histogram against dask-histogram's (else the
    first there is), exactly, flow bins included."""
    import numpy as np

    if not dumps:
        return []
    ref_name = REFERENCE if REFERENCE in dumps else next(iter(dumps))
    want = np.load(dumps[ref_name])
    checks = []
    for name, path in dumps.items():
        if name == ref_name:
            continue
        got = np.load(path)
        equal = bool(got.shape == want.shape and np.array_equal(got, want))
        checks.append(
            {
                "method": name,
                "against": ref_name,
                "equal": equal,
                "bins": int(want.size),
                "sum": [float(got.sum()), float(want.sum())],
            }
        )
    return checks


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paired(
    outcomes: dict[str, list[cw.ChildOutcome]], key: Callable[[dict[str, Any]], float]
) -> float:
    """Median over the rounds of dask-histogram's time over dask_hizt's in
    that round: robust to load that comes and goes."""
    pairs = [
        ratio(key(b.result), key(a.result))
        for a, b in zip(outcomes[HIZT], outcomes[REFERENCE], strict=True)
        if a.result is not None and b.result is not None
    ]
    return cw.median(pairs)


def report(
    case: Case,
    rows: dict[str, Row],
    outcomes: dict[str, list[cw.ChildOutcome]],
    warm_runs: int,
) -> dict[str, Any]:
    ref = rows.get(REFERENCE)
    print(
        f"\n== case {case.name}: {case.title}; {case.n_bins:,} bins, Double storage; "
        f"medians of {max((r.runs for r in rows.values()), default=0)} round(s), "
        f"{warm_runs} warm compute(s) each =="
    )
    head = (
        f"{'method':<15} {'cold s':>7} {'best':>6} {'python':>6} {'import':>6} "
        f"{'cluster':>7} {'first':>6} {'warm s':>7} {'best':>6} {'read s':>6} "
        f"{'cold M/s':>8} {'warm M/s':>8} {'cold x':>6} {'first x':>7} {'warm x':>6} "
        f"{'worker GiB cold':>15} {'worker GiB warm':>15} {'mem x':>5} {'client':>6}"
    )
    print(head)
    print("-" * len(head))
    for key in METHODS:
        r = rows.get(key)
        if r is None:
            if key in outcomes:
                print(f"{key:<15} failed in every round")
            continue
        nan = float("nan")
        cold_x = ratio(ref.cold_s, r.cold_s) if ref else nan
        first_x = ratio(ref.first_s, r.first_s) if ref else nan
        warm_x = ratio(ref.warm_s, r.warm_s) if ref else nan
        mem_x = ratio(r.worker_peak, ref.worker_peak) if ref and r.worker_peak else nan
        cold_gib = " / ".join(cw.fmt_gib(p) for p in r.worker_peak_cold) or "-"
        warm_gib = " / ".join(cw.fmt_gib(p) for p in r.worker_peak_warm) or "-"
        print(
            f"{key:<15} {r.cold_s:>7.2f} {r.cold_best_s:>6.2f} {r.interpreter_s:>6.2f} "
            f"{r.import_s:>6.2f} {r.cluster_s:>7.2f} {r.first_s:>6.2f} {r.warm_s:>7.2f} "
            f"{r.warm_best_s:>6.2f} {r.read_s:>6.2f} {case.entries / r.first_s / 1e6:>8.1f} "
            f"{case.entries / r.warm_s / 1e6:>8.1f} {cold_x:>6.2f} {first_x:>7.2f} "
            f"{warm_x:>6.2f} {cold_gib:>15} {warm_gib:>15} {mem_x:>5.2f} "
            f"{cw.fmt_gib(r.client_peak):>6}"
            + (f"  ({r.failed} failed)" if r.failed else "")
        )
    for key, outs in outcomes.items():
        for o in outs:
            if o.result is None:
                print(f"  !! {key} round {o.round + 1}: {o.error}")
    print(
        "cold s: spawn of the process to the first result in the client (python start, "
        "imports, cluster, build + first compute; boost: python, imports, first fill); "
        "first: build + first compute on the fresh cluster; warm s: build + a later "
        "compute on it; read s: StoredHist.to_hist() (dask_hizt; in no time); M/s: "
        "entries per second of first and warm; x: dask-histogram's time over the "
        "method's (throughput ratio); mem x: larger worker peak over dask-histogram's"
    )
    hz = rows.get(HIZT)
    if ref is None or hz is None:
        print("verdicts need both dask_hizt and dask-histogram results: none")
        return {}
    v: dict[str, Any] = {
        "first_speedup": ratio(ref.first_s, hz.first_s),
        "first_speedup_paired": paired(outcomes, lambda r: r["first_s"]),
        "cold_speedup": ratio(ref.cold_s, hz.cold_s),
        "cold_speedup_paired": paired(outcomes, lambda r: r["cold_s"]),
        "warm_speedup": ratio(ref.warm_s, hz.warm_s),
        "warm_speedup_paired": paired(outcomes, lambda r: cw.median(r["warm_s"])),
        "memory_ratio_cold": ratio(max(hz.worker_peak_cold), max(ref.worker_peak_cold)),
        "memory_ratio_warm": ratio(
            max(hz.worker_peak_warm, default=0), max(ref.worker_peak_warm, default=0)
        ),
        "memory_ratio": ratio(hz.worker_peak, ref.worker_peak),
    }
    # The cold target is on the first compute's throughput: the whole cold
    # wall also holds the ~4 s of python, imports and cluster that both pay.
    v["cold_met"] = v["first_speedup"] >= case.min_cold_speedup
    v["warm_met"] = (
        None
        if case.min_warm_speedup is None
        else v["warm_speedup"] >= case.min_warm_speedup
    )
    v["memory_met"] = (
        None
        if case.max_memory_ratio is None
        else v["memory_ratio"] <= case.max_memory_ratio
    )
    print(
        f"dask_hizt vs dask-histogram: first compute on a fresh cluster "
        f"{v['first_speedup']:.2f}x (per round {v['first_speedup_paired']:.2f}x; target >= "
        f"{case.min_cold_speedup}x: {cw.verdict(v['cold_met'])}), whole cold "
        f"{v['cold_speedup']:.2f}x (per round {v['cold_speedup_paired']:.2f}x), warm "
        f"{v['warm_speedup']:.2f}x (per round {v['warm_speedup_paired']:.2f}x"
        + (
            f"; target >= {case.min_warm_speedup}x: {cw.verdict(v['warm_met'])})"
            if case.min_warm_speedup is not None
            else ")"
        )
    )
    print(
        f"peak worker memory {v['memory_ratio']:.2f}x of dask-histogram's (cold "
        f"{v['memory_ratio_cold']:.2f}x, warm {v['memory_ratio_warm']:.2f}x"
        + (
            f"; target <= {case.max_memory_ratio}: {cw.verdict(v['memory_met'])})"
            if case.max_memory_ratio is not None
            else ")"
        )
    )
    if (boost := rows.get("boost")) is not None:
        v["boost_warm_ratio"] = ratio(boost.warm_s, hz.warm_s)
        print(
            f"dask_hizt's warm throughput over eager boost-histogram's (one thread): "
            f"{v['boost_warm_ratio']:.2f}x"
        )
    if case.quick:
        print("(--quick: the targets are set for the full sizes)")
    return v


def run_case(
    case: Case, args: argparse.Namespace, dumpdir: Path
) -> tuple[dict[str, Any], bool]:
    methods = args.methods
    extra = ["--case", case.name, "--warm-runs", str(args.warm_runs)]
    if args.quick:
        extra.append("--quick")
    outcomes: dict[str, list[cw.ChildOutcome]] = {m: [] for m in methods}
    checks: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        dumps: dict[str, Path] = {}
        for method in cw.rotated(methods, rnd):
            dump = dumpdir / f"{case.name}-{method}-{rnd}.npy"
            print(
                f"[case {case.name}, round {rnd + 1}/{args.rounds}] {method} ...",
                end=" ",
                flush=True,
            )
            o = cw.run_child(
                HERE,
                method,
                [*extra, "--dump", str(dump)],
                round_no=rnd,
                timeout=args.timeout,
            )
            outcomes[method].append(o)
            if o.result is None:
                print(f"FAILED ({o.error})", flush=True)
                continue
            r = o.result
            print(
                f"cold {r['cold_s']:.2f} s (first compute {r['first_s']:.2f} s), warm "
                f"{cw.median(r['warm_s']):.2f} s (load before {o.load_before:.2f})",
                flush=True,
            )
            if not r["warm_equal"]:
                print(f"  !! MISMATCH: {method}'s warm result differs from its first")
            if dump.exists():
                dumps[method] = dump
        for c in compare(dumps):
            c["round"] = rnd
            checks.append(c)
            if not c["equal"]:
                print(
                    f"  !! MISMATCH: {c['method']} vs {c['against']}, round {rnd + 1}"
                )
        for path in dumps.values():  # case b: 177 MB each
            path.unlink()
    rows = {m: row for m in methods if (row := summarise(m, outcomes[m])) is not None}
    verdicts = report(case, rows, outcomes, args.warm_runs)
    warm_equal = all(
        o.result["warm_equal"] for m in methods for o in outcomes[m] if o.result
    )
    equal = warm_equal and all(c["equal"] for c in checks)
    print(
        f"checks: {len(checks)} comparisons (each method's first result against "
        f"{checks[0]['against'] if checks else REFERENCE}'s, every round, flow bins included, exact), every warm result "
        f"against its process's first: {'all equal' if equal else 'MISMATCH'}"
    )
    failed = any(o.result is None for m in methods for o in outcomes[m])
    return {
        "case": asdict(case),
        "runs": {m: [asdict(o) for o in outcomes[m]] for m in methods},
        "summary": {m: asdict(r) for m, r in rows.items()},
        "verdicts": verdicts,
        "checks": checks,
        "warm_equal": warm_equal,
    }, equal and not failed


def parent(args: argparse.Namespace) -> int:
    names = ["a", "b"] if args.case == "all" else [args.case]
    table = QUICK if args.quick else CASES
    env = cw.environment()
    cw.print_environment(env)
    results: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="hizt-cases-dumps-") as dumpdir:
        for name in names:
            results[name], case_ok = run_case(table[name], args, Path(dumpdir))
            ok &= case_ok
    print(f"\nload average (1 min) now {os.getloadavg()[0]:.2f}")
    out = cw.write_results(
        "cases-" + "-".join(names) + ("-quick" if args.quick else ""),
        {
            "rounds": args.rounds,
            "warm_runs": args.warm_runs,
            "quick": args.quick,
            "environment": env,
            "methods": {m: METHODS[m] for m in args.methods},
            "cases": results,
            "load_average_end": os.getloadavg(),
        },
    )
    print(f"results written to {out}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["a", "b", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run.py's --quick sizes (10x fewer entries; case b 1.8M bins)",
    )
    parser.add_argument(
        "--warm-runs", type=int, default=3, help="computes after the first, per process"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS)
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per child process"
    )
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.spawned_at is None:
            args.spawned_at = T_TOP
        return child(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
