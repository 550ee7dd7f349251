"""The per-partition fill kernel against a plain boost-histogram fill.

For each case, one partition's data is filled (a) by boost-histogram into a
fresh histogram of the same axes (where it fits in memory), and (b) by
dask_hizt's fill task, which also splits the result into chunk-major keys
(the partial that is routed to the chunk owners). Single thread, in
process, median of several repeats.

    uv run python benchmarks/fill_kernel.py
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import boost_histogram as bh
import hist
import numpy as np

from dask_hizt._fill import Arg, FillSpec, FillTask, Target
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema

CASES: dict[str, tuple[tuple[Any, ...], Any, int, bool]] = {
    # name: (axes, storage, entries, weighted)
    "a: Regular(100), 1e6": (
        (hist.axis.Regular(100, 0, 1),),
        bh.storage.Double(),
        10**6,
        False,
    ),
    "b: 1000x1000x20 (2e7 bins), 5e5": (
        (
            hist.axis.Regular(1000, 0, 1),
            hist.axis.Regular(1000, 0, 1),
            hist.axis.Regular(20, 0, 1),
        ),
        bh.storage.Double(),
        5 * 10**5,
        False,
    ),
    "many: StrCategory x Regular(50), weighted, 1e6": (
        (
            hist.axis.StrCategory(["DY", "QCD", "TT"], name="c"),
            hist.axis.Regular(50, 0, 200, name="x"),
        ),
        bh.storage.Weight(),
        10**6,
        True,
    ),
    "1e9 bins: 1000^3, 1e6": (
        (hist.axis.Regular(1000, 0, 1),) * 3,
        bh.storage.Double(),
        10**6,
        False,
    ),
}


def _time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _boost_fill(axes: Any, storage: Any, data: list[Any], w: Any) -> None:
    h = bh.Histogram(*axes, storage=storage)
    h.fill(*data, weight=w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'case':48s} {'boost ms':>9s} {'hizt ms':>9s} {'ratio':>6s}")
    for name, (axes, storage, n, weighted) in CASES.items():
        schema = Schema.from_axes(axes, storage)
        layout = Layout.for_schema(schema)
        data: list[Any] = []
        for ax in axes:
            if isinstance(ax, bh.axis.StrCategory):
                data.append("DY")
            else:
                data.append(rng.uniform(0, ax.edges[-1], n))
        w = rng.uniform(0.5, 1.5, n) if weighted else None
        inputs = [d for d in data if isinstance(d, np.ndarray)] + (
            [w] if weighted else []
        )
        arg_of = iter(range(len(inputs)))
        spec_axes = tuple(
            Arg(index=next(arg_of)) if isinstance(d, np.ndarray) else Arg(value=d)
            for d in data
        )
        spec = FillSpec(spec_axes, Arg(index=next(arg_of)) if weighted else None)
        task = FillTask(
            (Target("h", schema, layout, 0, 0),), ((0, spec),), (layout.n_keys,)
        )
        hizt = _time(functools.partial(task, inputs), args.repeat)
        n_bins = int(np.prod([ax.extent for ax in axes]))
        if n_bins * 8 * (2 if weighted else 1) < 2 * 2**30:
            fill = functools.partial(_boost_fill, axes, storage, data, w)
            plain = _time(fill, args.repeat)
            ratio = f"{plain / hizt:6.2f}"
            plain_ms = f"{plain * 1e3:9.1f}"
        else:
            plain_ms, ratio = "  (8 GB)", "     -"
        print(f"{name:48s} {plain_ms} {hizt * 1e3:9.1f} {ratio}")


if __name__ == "__main__":
    main()
