"""Systematics, cold and warm: dask_hizt vs hist.dask vs dask-histogram.

20 observables x 100 weight variations (issue 15): each observable a
``StrCategory(["DY"]) x StrCategory(syst) x Regular(50, 0, 1)`` histogram
with Weight storage, filled once per variation from the same columns, 10
partitions of 2e5 events generated in the tasks. Every method runs in a
fresh Python process per round (cold: imports, LocalCluster start-up and
first compute), then computes again on that cluster (warm).

    uv run python benchmarks/systematics.py [--quick] [--repeat N] [--methods ...]

See benchmarks/README.md ("Systematics, cold and warm").
"""

from __future__ import annotations

# First, before any import that takes time: the child's own start.
import time

T_TOP = time.clock_gettime(time.CLOCK_MONOTONIC)

import argparse
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
PARTITIONS = 10
EVENTS = 200_000  # per partition
BINS = 50
SEED_W = 1000

# Method keys, in table order, with what they compute through.
METHODS = {
    "hizt-dh": "dask_hizt, dh.compute(*hists)",
    "hizt-dask": "dask_hizt, dask.compute(*hists)",
    "hist.dask": "hist.dask.Hist, dask.compute",
    "dask-histogram": "dask_histogram.boost.Histogram, dask.compute",
    "floor": "floor: the weights and observables summed, dask.compute",
}
HIZT = ("hizt-dh", "hizt-dask")
REFERENCE = "hist.dask"
# Targets of issue 15, for dask_hizt (both ways) against hist.dask.
WARM_SPEEDUP = 5.0
COLD_SPEEDUP = 3.0
MEMORY_RATIO = 1.0


@dataclass(frozen=True)
class Size:
    observables: int
    variations: int
    partitions: int = PARTITIONS
    events: int = EVENTS

    @property
    def entries(self) -> int:
        return self.partitions * self.events


FULL = Size(20, 100)
QUICK = Size(4, 20)


# ------------------------------------------------------------------ child ---


def import_for(method: str) -> dict[str, Any]:
    """What a user's script of this method imports (timed as t_import)."""
    import dask
    import dask.array
    import distributed
    import hist
    import numpy as np

    mods: dict[str, Any] = {
        "dask": dask,
        "da": dask.array,
        "distributed": distributed,
        "hist": hist,
        "np": np,
    }
    if method in HIZT:
        import dask_hizt

        mods["dh"] = dask_hizt
    elif method == "hist.dask":
        import hist.dask

        mods["hist_dask"] = hist.dask
    elif method == "dask-histogram":
        import boost_histogram
        import dask_histogram.boost

        mods["bh"] = boost_histogram
        mods["dhb"] = dask_histogram.boost
    return mods


def inputs(mods: dict[str, Any], size: Size) -> tuple[list[Any], Any]:
    """One lazy array per observable and one for the event weight; values
    made inside the tasks, the same for every method."""
    da = mods["da"]
    n = size.entries
    obs = [
        da.random.default_rng(i).random(n, chunks=size.events)
        for i in range(size.observables)
    ]
    w = da.random.default_rng(SEED_W).random(n, chunks=size.events)
    return obs, w


def variation(w: Any, k: int) -> Any:
    return w * (1 + k / 1000)


Views = list[
    tuple[Any, Any]
]  # per observable: values and variances, flow bins included


def compute_once(
    method: str, mods: dict[str, Any], size: Size, tmp: Path
) -> tuple[float, float, Views]:
    """Build and compute; return (build+compute seconds, read-back seconds, views)."""
    hist, dask = mods["hist"], mods["dask"]
    np = mods["np"]
    syst = [f"v{k}" for k in range(size.variations)]
    t0 = cw.now()
    obs, w = inputs(mods, size)
    views: Views = []
    if method == "floor":
        sums = [variation(w, k).sum() for k in range(size.variations)]
        dask.compute(sums + [o.sum() for o in obs])
        return cw.now() - t0, 0.0, views
    if method == "dask-histogram":
        bh = mods["bh"]
        hists = []
        for x in obs:
            h = mods["dhb"].Histogram(
                bh.axis.StrCategory(["DY"]),
                bh.axis.StrCategory(syst),
                bh.axis.Regular(BINS, 0.0, 1.0),
                storage=bh.storage.Weight(),
            )
            for k, name in enumerate(syst):
                h.fill("DY", name, x, weight=variation(w, k))
            hists.append(h)
        out = dask.compute(*hists)
        wall = cw.now() - t0
        t1 = cw.now()
        results = list(out)
    else:
        axes = (
            hist.axis.StrCategory(["DY"], name="dataset"),
            hist.axis.StrCategory(syst, name="syst"),
            hist.axis.Regular(BINS, 0.0, 1.0, name="x"),
        )
        hists = []
        for i, x in enumerate(obs):
            if method == "hist.dask":
                h = mods["hist_dask"].Hist(*axes, storage=hist.storage.Weight())
            else:
                h = mods["dh"].Hist(
                    *axes, storage=hist.storage.Weight(), store=tmp, path=f"obs{i}"
                )
            for k, name in enumerate(syst):
                h.fill(dataset="DY", syst=name, x=x, weight=variation(w, k))
            hists.append(h)
        if method == "hizt-dh":
            out = mods["dh"].compute(*hists)
        else:
            out = dask.compute(*hists)
        wall = cw.now() - t0
        t1 = cw.now()
        results = [s.to_hist() for s in out] if method in HIZT else list(out)
    for h in results:
        view = np.asarray(h.view(flow=True))
        views.append((view["value"].copy(), view["variance"].copy()))
    return wall, cw.now() - t1, views


def child(args: argparse.Namespace) -> int:
    size = QUICK if args.quick else FULL
    mods = import_for(args.child)
    t_import = cw.now() - T_TOP
    distributed = mods["distributed"]
    t0 = cw.now()
    cluster = distributed.LocalCluster(**cw.cluster_kwargs())
    client = distributed.Client(cluster)
    t_cluster = cw.now() - t0
    pids = {str(k): int(v) for k, v in client.run(os.getpid).items()}
    pids["client"] = os.getpid()
    dumps: dict[str, Any] = {}
    phases: dict[str, dict[str, Any]] = {}
    try:
        for phase in ("cold", "warm"):
            tmp = Path(tempfile.mkdtemp(prefix=f"hizt-syst-{phase}-"))
            try:
                with cw.RssSampler(pids) as mem:
                    wall, read, views = compute_once(args.child, mods, size, tmp)
                t_done = cw.now()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            client_peak = mem.peak.pop("client")
            phases[phase] = {
                "compute_s": wall,
                "read_s": read,
                "worker_peak_rss": sorted(mem.peak.values(), reverse=True),
                "client_peak_rss": client_peak,
            }
            if phase == "cold":
                phases[phase]["since_spawn_s"] = t_done - args.spawned_at - read
                phases[phase]["since_top_s"] = t_done - T_TOP - read
            for i, (values, variances) in enumerate(views):
                dumps[f"{phase}.{i}.value"] = values
                dumps[f"{phase}.{i}.variance"] = variances
    finally:
        client.close()
        cluster.close()
    if args.dump and dumps:
        mods["np"].savez(args.dump, **dumps)
    cw.emit(
        {
            "method": args.child,
            "interpreter_s": T_TOP - args.spawned_at,
            "import_s": t_import,
            "cluster_s": t_cluster,
            **{f"{p}": v for p, v in phases.items()},
        }
    )
    return 0


# ----------------------------------------------------------------- parent ---


@dataclass(frozen=True)
class Row:
    """A method's medians over the rounds (memory: the max over the rounds)."""

    method: str
    runs: int
    failed: int
    cold_s: float
    cold_best_s: float
    interpreter_s: float
    import_s: float
    cluster_s: float
    first_s: float
    warm_s: float
    warm_best_s: float
    read_s: float
    cold_worker_peak: float
    warm_worker_peak: float
    client_peak: float

    @property
    def worker_peak(self) -> float:
        return max(self.cold_worker_peak, self.warm_worker_peak)


def summarise(method: str, outcomes: Sequence[cw.ChildOutcome]) -> Row | None:
    ok = [o.result for o in outcomes if o.result is not None]
    if not ok:
        return None

    def med(fn: Callable[[dict[str, Any]], float]) -> float:
        return cw.median([fn(r) for r in ok])

    return Row(
        method=method,
        runs=len(ok),
        failed=len(outcomes) - len(ok),
        cold_s=med(lambda r: r["cold"]["since_spawn_s"]),
        cold_best_s=min(r["cold"]["since_spawn_s"] for r in ok),
        interpreter_s=med(lambda r: r["interpreter_s"]),
        import_s=med(lambda r: r["import_s"]),
        cluster_s=med(lambda r: r["cluster_s"]),
        first_s=med(lambda r: r["cold"]["compute_s"]),
        warm_s=med(lambda r: r["warm"]["compute_s"]),
        warm_best_s=min(r["warm"]["compute_s"] for r in ok),
        read_s=med(lambda r: r["warm"]["read_s"]),
        cold_worker_peak=max(max(r["cold"]["worker_peak_rss"]) for r in ok),
        warm_worker_peak=max(max(r["warm"]["worker_peak_rss"]) for r in ok),
        client_peak=max(
            max(r["cold"]["client_peak_rss"], r["warm"]["client_peak_rss"]) for r in ok
        ),
    )


def compare(dumps: dict[str, Path], rtol: float = 1e-12) -> list[dict[str, Any]]:
    """Every method's histograms (cold and warm) against the reference's
    (hist.dask, else the first method with histograms), bin for bin."""
    import numpy as np

    if not dumps:
        return []
    ref_name = REFERENCE if REFERENCE in dumps else next(iter(dumps))
    with np.load(dumps[ref_name]) as f:
        ref = {k: f[k] for k in f.files if k.startswith("cold.")}
    checks = []
    for name, path in dumps.items():
        with np.load(path) as f:
            got = {k: f[k] for k in f.files}
        for phase in ("cold", "warm"):
            if name == ref_name and phase == "cold":
                continue
            worst = 0.0
            ok = True
            for key, want in ref.items():
                have = got.get(phase + key[len("cold") :])
                if have is None or have.shape != want.shape:
                    ok = False
                    worst = float("inf")
                    break
                scale = np.maximum(np.abs(have), np.abs(want))
                diff = np.abs(have - want)
                rel = float(
                    np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0))
                )
                worst = max(worst, rel)
                ok = ok and bool(np.all(diff <= rtol * scale))
            checks.append(
                {
                    "method": name,
                    "phase": phase,
                    "against": f"{ref_name} cold",
                    "arrays": len(ref),
                    "max_rel_diff": worst,
                    "equal": ok,
                }
            )
    return checks


def print_table(
    size: Size, rows: dict[str, Row], failures: list[cw.ChildOutcome]
) -> dict[str, Any]:
    ref = rows.get(REFERENCE)
    print(
        f"\n== systematics: {size.observables} observables x {size.variations} variations, "
        f"{size.partitions} x {size.events:,} events, Weight storage; medians of "
        f"{max((r.runs for r in rows.values()), default=0)} round(s) =="
    )
    head = (
        f"{'method':<16} {'cold s':>7} {'best':>6} {'python':>6} {'import':>6} {'cluster':>7} "
        f"{'first':>6} {'warm s':>7} {'best':>6} {'read s':>6} {'cold x':>6} {'warm x':>6} "
        f"{'worker GiB cold/warm':>20} {'mem x':>5} {'client GiB':>10}"
    )
    print(head)
    print("-" * len(head))
    for key in METHODS:
        r = rows.get(key)
        if r is None:
            print(f"{key:<16} failed in every round")
            continue
        cold_x = ref.cold_s / r.cold_s if ref else float("nan")
        warm_x = ref.warm_s / r.warm_s if ref else float("nan")
        mem_x = r.worker_peak / ref.worker_peak if ref else float("nan")
        print(
            f"{key:<16} {r.cold_s:>7.2f} {r.cold_best_s:>6.2f} {r.interpreter_s:>6.2f} "
            f"{r.import_s:>6.2f} {r.cluster_s:>7.2f} {r.first_s:>6.2f} {r.warm_s:>7.2f} "
            f"{r.warm_best_s:>6.2f} {r.read_s:>6.2f} {cold_x:>6.2f} {warm_x:>6.2f} "
            f"{cw.fmt_gib(r.cold_worker_peak) + ' / ' + cw.fmt_gib(r.warm_worker_peak):>20} "
            f"{mem_x:>5.2f} {cw.fmt_gib(r.client_peak):>10}"
            + (f"  ({r.failed} failed)" if r.failed else "")
        )
    for f in failures:
        print(f"  !! {f.method} round {f.round + 1}: {f.error}")
    print(
        "cold s: spawn of the process to the first result in the client (python start, "
        "imports, cluster, build + first compute); python/import/cluster/first: its parts; "
        "warm s: build + a later compute on the same cluster; read s: StoredHist.to_hist() "
        "of all histograms (dask_hizt; not in cold/warm); x: hist.dask's time over the "
        "method's (speed-up), mem x: larger worker peak over hist.dask's."
    )
    verdicts: dict[str, Any] = {}
    if ref is None:
        print("no hist.dask result: no verdicts")
        return verdicts
    for key in HIZT:
        r = rows.get(key)
        if r is None:
            verdicts[key] = None
            continue
        v = {
            "warm_speedup": ref.warm_s / r.warm_s,
            "warm_met": ref.warm_s / r.warm_s >= WARM_SPEEDUP,
            "cold_speedup": ref.cold_s / r.cold_s,
            "cold_met": ref.cold_s / r.cold_s >= COLD_SPEEDUP,
            "warm_speedup_with_read": ref.warm_s / (r.warm_s + r.read_s),
            "memory_ratio": r.worker_peak / ref.worker_peak,
            "memory_met": r.worker_peak <= MEMORY_RATIO * ref.worker_peak,
        }
        verdicts[key] = v
        print(
            f"{METHODS[key]}: warm {v['warm_speedup']:.2f}x (target >= {WARM_SPEEDUP}x: "
            f"{cw.verdict(v['warm_met'])}; {v['warm_speedup_with_read']:.2f}x with read back), "
            f"cold {v['cold_speedup']:.2f}x (target >= {COLD_SPEEDUP}x: {cw.verdict(v['cold_met'])}), "
            f"peak worker memory {v['memory_ratio']:.2f}x of hist.dask's "
            f"(target <= {MEMORY_RATIO}: {cw.verdict(v['memory_met'])})"
        )
    return verdicts


def parent(args: argparse.Namespace) -> int:
    size = QUICK if args.quick else FULL
    env = cw.environment()
    cw.print_environment(env)
    methods = args.methods
    extra = ["--quick"] if args.quick else []
    outcomes: dict[str, list[cw.ChildOutcome]] = {m: [] for m in methods}
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hizt-syst-dumps-") as dumpdir:
        for rnd in range(args.repeat):
            dumps: dict[str, Path] = {}
            for method in cw.rotated(methods, rnd):
                dump = Path(dumpdir) / f"{method}-{rnd}.npz"
                print(
                    f"[round {rnd + 1}/{args.repeat}] {method} ...", end=" ", flush=True
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
                    f"cold {r['cold']['since_spawn_s']:.2f} s, warm "
                    f"{r['warm']['compute_s']:.2f} s (load before {o.load_before:.2f})",
                    flush=True,
                )
                if dump.exists():
                    dumps[method] = dump
            # Hold every round to the same answer, bin for bin (flow bins included).
            round_checks = compare(dumps)
            for c in round_checks:
                c["round"] = rnd
                if not c["equal"]:
                    print(
                        f"  !! MISMATCH: {c['method']} {c['phase']} vs {c['against']} "
                        f"(max relative difference {c['max_rel_diff']:.3g})"
                    )
            checks += round_checks
    rows = {m: r for m in methods if (r := summarise(m, outcomes[m])) is not None}
    failures = [o for m in methods for o in outcomes[m] if o.result is None]
    verdicts = print_table(size, rows, failures)
    equal = all(c["equal"] for c in checks)
    print(
        f"checks: {len(checks)} comparisons (every method, cold and warm, every round, "
        f"against {REFERENCE}'s first result; values and variances, flow bins included, "
        f"within 1e-12 relative): {'all equal' if equal else 'MISMATCH'}"
    )
    if args.quick:
        print("(--quick: the targets are set for the full size)")
    loads = [o.load_before for m in methods for o in outcomes[m]]
    print(
        f"load average (1 min) before the runs: {min(loads):.2f}-{max(loads):.2f}; "
        f"now {os.getloadavg()[0]:.2f}"
    )
    out = cw.write_results(
        "systematics" + ("-quick" if args.quick else ""),
        {
            "size": asdict(size),
            "repeat": args.repeat,
            "environment": env,
            "methods": METHODS,
            "runs": {m: [asdict(o) for o in outcomes[m]] for m in methods},
            "summary": {m: asdict(r) for m, r in rows.items()},
            "verdicts": verdicts,
            "targets": {
                "warm_speedup": WARM_SPEEDUP,
                "cold_speedup": COLD_SPEEDUP,
                "memory_ratio": MEMORY_RATIO,
            },
            "checks": checks,
            "load_average_end": os.getloadavg(),
        },
    )
    print(f"results written to {out}")
    return 0 if equal and not failures else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="4 observables x 20 variations"
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds")
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
