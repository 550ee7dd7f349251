"""coffea's ``processor.Runner`` with ``DaskExecutor``: ``dh.Staging`` against
plain ``hist.Hist`` accumulation (coffea's default), cold and warm.

Runs on stack B (coffea; ``bash .ci/stack-b --version`` builds
``.venv-stack-b``)::

    .venv-stack-b/bin/python benchmarks/runner.py                # both cases, 1 round
    .venv-stack-b/bin/python benchmarks/runner.py --case small --rounds 3
    .venv-stack-b/bin/python benchmarks/runner.py --quick        # a check, ~1 min

Cases (issue 16's benchmark): ``small``, 20 histograms x 50 systematic
variations (``StrCategory(dataset) x StrCategory(syst) x Regular(50)``, Weight
storage, one fill per variation); ``large``, one histogram of 20M bins
(``StrCategory(dataset) x Regular(20_000_000)``, Weight storage). Inputs:
NanoAOD-like ROOT files (``tests/nanoaod.py``), written once by the parent.

Each method and round is a fresh Python process (``coldwarm.py``): imports,
a LocalCluster of 2 worker processes x 1 thread, the Runner run once
(**cold**), then again into a fresh repository (**warm**). Measured: wall
time (dask_hizt: the run and ``Staging.commit()``; reading the result back
is not counted), peak RSS of each worker and of the client, and the pickled size of what the Runner returns to the
client (the accumulator). Histograms of both methods are compared bin for
bin, flow bins included (values and variances within 1e-12 relative).
Targets: client memory does not grow with histogram size (20M bins: client
under 0.5 GB); wall time within 1.2x of hist.Hist accumulation for the small
case, faster for the large one.
"""

from __future__ import annotations

# First, before any import that takes time: the child's own start.
import time

T_TOP = time.clock_gettime(time.CLOCK_MONOTONIC)

import argparse
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coldwarm as cw

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
METHODS = ("hist", "staging")
CASES = ("small", "large")
OBSERVABLES = 20
VARIATIONS = 50
BINS = 50
LARGE_BINS = 20_000_000
DATASETS = ("DY", "TT")


@dataclass(frozen=True)
class Size:
    """Files per dataset, events per file and per chunk."""

    files: int
    events: int
    chunk: int


FULL = Size(files=2, events=200_000, chunk=100_000)
QUICK = Size(files=1, events=20_000, chunk=10_000)


def make_processor(case: str, method: str, repo: str | None, quick: bool) -> Any:
    """The processor of a case: the same fills into ``hist.Hist`` or a
    ``dh.Staging``."""
    import awkward as ak
    import hist
    from coffea import processor

    variations = 5 if quick else VARIATIONS
    observables = 4 if quick else OBSERVABLES
    syst = [f"v{k}" for k in range(variations)]

    class Processor(processor.ProcessorABC):  # type: ignore[misc]
        def process(self, events: Any) -> Any:
            ds = events.metadata["dataset"]
            pt = ak.flatten(events.Muon.pt)
            w = ak.flatten(ak.broadcast_arrays(events.genWeight, events.Muon.pt)[0])
            pt, w = ak.to_numpy(pt).astype("f8"), ak.to_numpy(w).astype("f8")
            out: dict[str, Any] = {}
            staging = None
            if method == "staging":
                import dask_hizt as dh

                staging = dh.Staging(repo, events.metadata)
                out["histograms"] = staging
            if case == "small":
                for i in range(observables):
                    axes = (
                        hist.axis.StrCategory(list(DATASETS), name="dataset"),
                        hist.axis.StrCategory(syst, name="syst"),
                        hist.axis.Regular(BINS, 0.0, 200.0, name="x"),
                    )
                    h = _new(staging, axes, f"obs{i}")
                    x = pt * (1 + i / 20)
                    for k, name in enumerate(syst):
                        h.fill(dataset=ds, syst=name, x=x, weight=w * (1 + k / 1000))
                    if staging is None:
                        out[f"obs{i}"] = h
            else:
                axes = (
                    hist.axis.StrCategory(list(DATASETS), name="dataset"),
                    hist.axis.Regular(LARGE_BINS, 0.0, 200.0, name="x"),
                )
                h = _new(staging, axes, "large")
                h.fill(dataset=ds, x=pt, weight=w)
                if staging is None:
                    out["large"] = h
            return out

        def postprocess(self, accumulator: Any) -> Any:
            return accumulator

    return Processor()


def _new(staging: Any, axes: Any, path: str) -> Any:
    import hist

    if staging is None:
        return hist.Hist(*axes, storage=hist.storage.Weight())
    return staging.hist(*axes, storage=hist.storage.Weight(), path=path)


def fileset(data: Path, size: Size) -> dict[str, Any]:
    return {
        ds: {
            "files": {str(data / f"{ds}-{j}.root"): "Events" for j in range(size.files)}
        }
        for ds in DATASETS
    }


def write_files(data: Path, size: Size) -> None:
    sys.path.insert(0, str(TESTS))
    import nanoaod

    data.mkdir(parents=True, exist_ok=True)
    for d, ds in enumerate(DATASETS):
        for j in range(size.files):
            nanoaod.write_nanoaod(
                data / f"{ds}-{j}.root",
                size.events,
                seed=10 * d + j,
                basket_size=10_000,
            )


def views(result: Any) -> dict[str, Any]:
    """Values and variances of every histogram, flow bins included."""
    import numpy as np

    out = {}
    for path, h in sorted(result.items()):
        v = np.asarray(h.view(flow=True))
        out[f"{path}.value"] = np.ascontiguousarray(v["value"])
        out[f"{path}.variance"] = np.ascontiguousarray(v["variance"])
    return out


def child(args: argparse.Namespace) -> int:
    import distributed
    import numpy as np
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    if args.child == "staging":
        import dask_hizt  # what a user's script imports
    t_import = cw.now() - T_TOP
    size = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="hizt-runner-"))
    try:
        t0 = cw.now()
        cluster = distributed.LocalCluster(**cw.cluster_kwargs())
        client = distributed.Client(cluster)
        t_cluster = cw.now() - t0
        pids = {str(k): int(v) for k, v in client.run(os.getpid).items()}
        pids["client"] = os.getpid()
        runs = []
        try:
            for n in range(2):
                repo = str(root / f"run{n}.icechunk")
                runner = processor.Runner(
                    executor=processor.DaskExecutor(client=client, status=False),
                    schema=NanoAODSchema,
                    chunksize=size.chunk,
                )
                proc = make_processor(args.case, args.child, repo, args.quick)
                if args.child == "staging":
                    # made on the client: a worker never creates a repository
                    dask_hizt.Staging(repo)
                with cw.RssSampler(pids) as mem:
                    t1 = cw.now()
                    result = runner(fileset(args.data, size), processor_instance=proc)
                    travelled = len(pickle.dumps(result))
                    t2 = cw.now()
                    if args.child == "staging":
                        result = result["histograms"].commit()
                    wall = cw.now() - t1
                runs.append(
                    {
                        "wall_s": wall,
                        "commit_s": t1 + wall - t2,
                        "travelled_bytes": travelled,
                        "client_peak": mem.peak.pop("client"),
                        "worker_peaks": sorted(mem.peak.values(), reverse=True),
                        "done_at": cw.now(),
                    }
                )
                if n == 0:  # read back (dask_hizt) after the clock and the sampler
                    if args.child == "staging":
                        result = {p: h.to_hist() for p, h in result.items()}
                    np.savez(args.dump, **views(result))
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cw.emit(
        {
            "method": args.child,
            "case": args.case,
            "import_s": t_import,
            "cluster_s": t_cluster,
            "cold_s": runs[0]["done_at"] - args.spawned_at,
            "runs": runs,
        }
    )
    return 0


def compare(a: Path, b: Path, rtol: float = 1e-12) -> str | None:
    """``None`` if the dumps agree, else what differs."""
    import numpy as np

    with np.load(a) as x, np.load(b) as y:
        if sorted(x.files) != sorted(y.files):
            return f"histograms {sorted(x.files)} vs {sorted(y.files)}"
        for k in x.files:
            if x[k].shape != y[k].shape or not np.allclose(
                x[k], y[k], rtol=rtol, atol=0
            ):
                return f"{k} differs"
    return None


def parent(args: argparse.Namespace) -> int:
    env = cw.environment()
    cw.print_environment(env)
    size = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="hizt-runner-data-"))
    failed = False
    payload: dict[str, Any] = {"environment": env, "size": size.__dict__, "cases": {}}
    try:
        write_files(work / "data", size)
        for case in args.case:
            outcomes: list[cw.ChildOutcome] = []
            dumps: dict[str, Path] = {}
            for r in range(args.rounds):
                for method in cw.rotated(METHODS, r):
                    dump = work / f"{case}-{method}-{r}.npz"
                    extra = ["--case", case, "--data", str(work / "data")]
                    extra += ["--dump", str(dump)] + (["--quick"] if args.quick else [])
                    o = cw.run_child(
                        Path(__file__), method, extra, round_no=r, timeout=args.timeout
                    )
                    outcomes.append(o)
                    if o.error:
                        failed = True
                        print(f"{case} {method} round {r}: {o.error}")
                    else:
                        dumps[method] = dump
            diff = (
                compare(dumps["hist"], dumps["staging"])
                if len(dumps) == 2
                else "missing"
            )
            failed |= diff is not None
            payload["cases"][case] = {
                "outcomes": [o.__dict__ for o in outcomes],
                "equal": diff is None,
                "difference": diff,
            }
            print_case(case, outcomes, diff)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {cw.write_results('runner', payload)}")
    return int(failed)


def print_case(
    case: str, outcomes: Sequence[cw.ChildOutcome], diff: str | None
) -> None:
    ok = [o for o in outcomes if o.result is not None]
    rows: dict[str, dict[str, float]] = {}
    for method in METHODS:
        mine = [o.result for o in ok if o.method == method and o.result]
        if not mine:
            continue
        rows[method] = {
            "cold": cw.median([m["cold_s"] for m in mine]),
            "first": cw.median([m["runs"][0]["wall_s"] for m in mine]),
            "warm": cw.median([m["runs"][1]["wall_s"] for m in mine]),
            "commit": cw.median([m["runs"][1]["commit_s"] for m in mine]),
            "worker": max(
                max(m["runs"][i]["worker_peaks"]) for m in mine for i in (0, 1)
            ),
            # the first run's: the child reads the first result back (20M bins
            # in the large case) before the warm run, whose client peak then
            # starts from there
            "client": max(m["runs"][0]["client_peak"] for m in mine),
            "travelled": max(m["runs"][0]["travelled_bytes"] for m in mine),
        }
    print(f"\n{case}: equal: {'yes' if diff is None else diff}")
    print(
        "| method | cold s | first run s | warm run s | of it commit s | warm x hist | "
        "worker GiB | client GiB (first run) | returned MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = rows.get("hist", {}).get("warm")
    for method, r in rows.items():
        ratio = f"{base / r['warm']:.2f}" if base else "-"
        print(
            f"| {method} | {r['cold']:.2f} | {r['first']:.2f} | {r['warm']:.2f} | "
            f"{r['commit']:.2f} | {ratio} | "
            f"{cw.fmt_gib(r['worker'])} | {cw.fmt_gib(r['client'])} | "
            f"{r['travelled'] / 2**20:.2f} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=METHODS)
    p.add_argument("--spawned-at", type=float)
    p.add_argument("--data", type=Path)
    p.add_argument("--dump", type=Path)
    p.add_argument("--case", default=None)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    args.case = list(CASES) if args.case in (None, "all") else [args.case]
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
