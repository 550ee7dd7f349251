"""Many histograms in one pass: dask_hizt vs hist.dask, side by side in one run.

300 histograms (StrCategory dataset x Regular(50)) filled from 10 partitions
of 1e6 entries, each histogram with its own dataset label and its own weight
(a systematic variation of the event weight, as in an analysis), on
LocalCluster(n_workers=2, threads_per_worker=1). Prints wall time, graph size
and peak worker memory, and checks both give the same histograms.

    uv run python benchmarks/many.py [--histograms 300] [--partitions 10] [--entries 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import dask
import dask.array as da
import hist
import hist.dask
import numpy as np
import psutil
from distributed import Client, LocalCluster

import dask_hizt as dh
import dask_hizt.collection  # imported lazily otherwise: not in the build time

DATASETS = ["DY", "QCD", "TT"]


class PeakRSS:
    """Peak resident memory of the cluster's worker processes, sampled every 50 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak[i] = max(self.peak[i], p.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def graph_size(colls: list[Any]) -> int:
    return len(
        dask.base.collections_to_expr(colls, optimize_graph=False).__dask_graph__()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histograms", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--entries", type=int, default=1_000_000, help="per partition")
    args = parser.parse_args()

    axes = (
        hist.axis.StrCategory(DATASETS, name="dataset"),
        hist.axis.Regular(50, 0, 200, name="pt"),
    )
    results: dict[str, dict[str, Any]] = {}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="10GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())

        def run(method: str) -> list[hist.Hist]:
            # dask arrays: hist.dask cannot take dask.dataframe columns (KeyError in
            # its optimisation), so both get the same arrays, made inside the tasks
            size = args.partitions * args.entries
            pt = da.random.default_rng(1).exponential(
                40.0, size=size, chunks=args.entries
            )
            w = da.random.default_rng(2).uniform(
                0.5, 1.5, size=size, chunks=args.entries
            )
            tmp = Path(tempfile.mkdtemp())
            try:
                t0 = time.perf_counter()
                if method == "dask_hizt":
                    lazy = [
                        dh.Hist(
                            *axes,
                            storage=hist.storage.Weight(),
                            store=tmp / "repo",
                            path=f"h{i}",
                        ).fill(
                            dataset=DATASETS[i % 3], pt=pt, weight=w * (1 + i / 1000)
                        )
                        for i in range(args.histograms)
                    ]
                    hs = dh.HistSet(lazy)
                    tasks = len(hs.__dask_graph__())
                else:
                    lazy = []
                    for i in range(args.histograms):
                        h = hist.dask.Hist(*axes, storage=hist.storage.Weight())
                        h.fill(
                            dataset=DATASETS[i % 3], pt=pt, weight=w * (1 + i / 1000)
                        )
                        lazy.append(h)
                    tasks = graph_size(lazy)
                build = time.perf_counter() - t0
                with PeakRSS(pids) as mem:
                    t1 = time.perf_counter()
                    if method == "dask_hizt":
                        (stored,) = dask.compute(hs)
                        out = [s.to_hist() for s in stored]
                    else:
                        out = list(dask.compute(*lazy))
                    wall = time.perf_counter() - t1
                results[method] = {
                    "build_s": build,
                    "compute_s": wall,
                    "total_s": build + wall,
                    "tasks": tasks,
                    "peak_worker_rss_gb": max(mem.peak) / 1e9,
                }
                return out
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        outputs = {}
        for method in ("dask_hizt", "hist.dask"):
            try:
                outputs[method] = run(method)
            except Exception as err:  # noqa: BLE001 - an anchor that dies is a result
                results[method] = {"failed": f"{type(err).__name__}: {str(err)[:200]}"}
                client.restart()
            print(method, results[method], flush=True)

    same = len(outputs) == 2 and all(
        np.allclose(a.values(flow=True), b.values(flow=True), rtol=1e-12)
        and np.allclose(a.variances(flow=True), b.variances(flow=True), rtol=1e-12)
        for a, b in zip(outputs["dask_hizt"], outputs["hist.dask"], strict=True)
    )
    total = args.histograms * args.partitions * args.entries
    print(
        f"{args.histograms} histograms x {args.partitions} partitions x {args.entries:,} entries ({total:,} fills)"
    )
    print(
        f"{'method':12s} {'build s':>8s} {'compute s':>10s} {'total s':>8s} {'tasks':>7s} {'peak worker GB':>15s}"
    )
    for m, r in results.items():
        if "failed" in r:
            print(f"{m:12s} failed: {r['failed']}")
            continue
        print(
            f"{m:12s} {r['build_s']:8.2f} {r['compute_s']:10.2f} {r['total_s']:8.2f}"
            f" {r['tasks']:7d} {r['peak_worker_rss_gb']:15.2f}"
        )
    if len(outputs) == 2:
        speed = results["hist.dask"]["total_s"] / results["dask_hizt"]["total_s"]
        print(
            f"speed-up of dask_hizt over hist.dask: {speed:.1f}x (target >= 5x); equal: {same}"
        )


if __name__ == "__main__":
    main()
