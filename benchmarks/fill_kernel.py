"""The per-partition fill kernel against plain boost-histogram fills.

Two parts, single thread, in process:

- **cases**: one partition's data filled (a) by boost-histogram into a
  fresh histogram of the same axes (where it fits in memory) and (b) by
  dask_hizt's fill task, which also splits the result into chunk-major keys
  (the partial that is routed to the chunk owners);
- **variations** (issue 15, "the fill kernel"): K weight variations of one
  observable, 1e6 entries, StrCategory(syst) x Regular(50), Weight storage,
  filled as a coffea processor fills them (``h.fill(syst=name, pt=pt,
  weight=w_k)``): K boost-histogram weighted fills against one dask_hizt fill
  task of the K fills, computed fill by fill (the shared fill work turned
  off), with shared keys and the NumPy accumulation, and with shared keys
  and the compiled (numba) accumulation. Content identities (the default:
  every weight array is digested) unless ``ids`` says the fills were given
  ``partition_ids``.

Every measurement is repeated (``--repeat``, rounds interleaved between the
methods) and reported as the minimum and the median. ``--numba-start``
measures, in fresh processes, the import of numba and of the compiled
loops with an empty and with a filled on-disk cache.

    uv run python benchmarks/fill_kernel.py
    uv run python benchmarks/fill_kernel.py --part variations --repeat 9
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import boost_histogram as bh
import hist
import numpy as np

from dask_hizt import _shared_fill
from dask_hizt._fill import Arg, FillSpec, FillTask, Target
from dask_hizt._identity import PartitionInfo
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema

DENSE = 0.25  # the default dask_hizt.dense-fraction

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

VARIATIONS = (1, 5, 20, 50, 100)


def _times(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, rounds interleaved (so a burst of
    load on the shared machine hits every method alike)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm: first-call allocations, numba's dispatch
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def _ms(ts: list[float]) -> str:
    return f"{min(ts) * 1e3:.1f} / {statistics.median(ts) * 1e3:.1f}"


def _boost_fill(axes: Any, storage: Any, data: list[Any], w: Any) -> None:
    h = bh.Histogram(*axes, storage=storage)
    h.fill(*data, weight=w)


def _boost_variations(
    axes: tuple[Any, ...], x: Any, names: list[str], weights: list[Any]
) -> None:
    """K weighted fills of one histogram, one per variation, as users fill it."""
    h = bh.Histogram(*axes, storage=bh.storage.Weight())
    for n, wk in zip(names, weights, strict=True):
        h.fill(n, x, weight=wk)


def _info(n_fills: int, ids: bool = False) -> PartitionInfo:
    given = tuple(f"p#{j}" if ids else None for j in range(n_fills))
    return PartitionInfo("0", given)


def cases(repeat: int) -> None:
    """The single-fill cases: boost-histogram against the fill task."""
    rng = np.random.default_rng(0)
    print(f"{'case':48s} {'boost ms':>16s} {'hizt ms':>16s} {'ratio':>6s}")
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
            (Target("h", schema, layout, 0, 0),),
            ((0, spec),),
            (layout.n_keys,),
            DENSE,
        )
        fns: dict[str, Callable[[], Any]] = {
            "hizt": functools.partial(task, inputs, _info(1))
        }
        n_bins = int(np.prod([ax.extent for ax in axes]))
        if n_bins * 8 * (2 if weighted else 1) < 2 * 2**30:
            fns["boost"] = functools.partial(_boost_fill, axes, storage, data, w)
        ts = _times(fns, repeat)
        if "boost" in ts:
            ratio = (
                f"{statistics.median(ts['boost']) / statistics.median(ts['hizt']):6.2f}"
            )
            plain = _ms(ts["boost"])
        else:
            plain, ratio = "(8 GB)", "-"
        print(f"{name:48s} {plain:>16s} {_ms(ts['hizt']):>16s} {ratio:>6s}")


@contextlib.contextmanager
def _per_fill() -> Iterator[None]:
    """The fill task with its shared fill work turned off: every fill is
    filled on its own, as before issue 15."""
    plan = _shared_fill.Sharing.plan
    _shared_fill.Sharing.plan = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls, targets, fills: cls({}, (), {}, {})  # noqa: ARG005
    )
    try:
        yield
    finally:
        _shared_fill.Sharing.plan = plan  # type: ignore[method-assign]


@contextlib.contextmanager
def _numba(on: bool) -> Iterator[None]:
    before = _shared_fill.use_numba
    _shared_fill.use_numba = on
    try:
        yield
    finally:
        _shared_fill.use_numba = before


def _run(task: FillTask, inputs: list[Any], info: PartitionInfo, mode: str) -> Any:
    if mode == "per-fill":
        with _per_fill():
            # a copy: the task keeps the sharing it planned on its first call
            return dataclasses.replace(task)(inputs, info)
    with _numba(mode == "numba"):
        return task(inputs, info)


def variations(repeat: int, entries: int) -> list[dict[str, Any]]:
    """K weight variations of one observable: boost-histogram against the fill task."""
    rng = np.random.default_rng(1)
    x = rng.exponential(60, entries)
    w = rng.uniform(0.5, 1.5, entries)
    pt = hist.axis.Regular(50, 0, 200, name="pt")
    compiled = _shared_fill.numba_kernel() is not None
    modes = ["per-fill", "numpy", *(["numba", "numba, ids"] if compiled else [])]
    rows = []
    ratios = [m for m in modes if m != "per-fill"]
    head = [
        "K",
        "boost K fills",
        "boost index",
        *modes,
        *(f"{m} / boost" for m in ratios),
    ]
    print("ms, min / median of", repeat, "rounds;", entries, "entries")
    print(" | ".join(head))
    for k in VARIATIONS:
        names = ["nominal", *(f"v{i}" for i in range(1, k))]
        syst = hist.axis.StrCategory(names, name="syst")
        weights = [w * (1 + 0.001 * i) for i in range(k)]
        schema = Schema.from_axes((syst, pt), bh.storage.Weight())
        layout = Layout.for_schema(schema)
        fills = tuple(
            (0, FillSpec((Arg(value=n), Arg(index=0)), Arg(index=1 + i)))
            for i, n in enumerate(names)
        )
        task = FillTask(
            (Target("h", schema, layout, 0, 0),), fills, (layout.n_keys,), DENSE
        )
        inputs = [x, *weights]

        boost = functools.partial(_boost_variations, (syst, pt), x, names, weights)

        fns: dict[str, Callable[[], Any]] = {
            "boost K fills": boost,
            "boost index": functools.partial(pt.index, x),
        }
        for mode in modes:
            info = _info(k, ids=mode.endswith("ids"))
            fns[mode] = functools.partial(_run, task, inputs, info, mode.split(",")[0])
        ts = _times(fns, repeat)
        results = {m: _run(task, inputs, _info(k), m) for m in modes[:-1]}
        ref = results["per-fill"][0].to_dense()
        for m, parts in results.items():
            for a, b in zip(parts[0].to_dense(), ref, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=m)
        boost = statistics.median(ts["boost K fills"])
        ratio = {m: statistics.median(ts[m]) / boost for m in ratios}
        cells = [
            str(k),
            *(_ms(ts[c]) for c in ["boost K fills", "boost index", *modes]),
            *(f"{ratio[m]:.2f}" for m in ratios),
        ]
        print(" | ".join(cells), flush=True)
        rows.append({"k": k, "times": ts, "ratio": ratio})
    return rows


def accumulators(repeat: int, entries: int) -> None:
    """Ways to add one weight variation (sum of w and of w**2 per key) at
    shared keys, 52 keys (Regular(50) with flow), keys computed once."""
    rng = np.random.default_rng(2)
    pt = bh.axis.Regular(50, 0, 200)
    x = rng.exponential(60, entries)
    keys = np.asarray(pt.index(x), dtype=np.int64) + 1
    w = rng.uniform(0.5, 1.5, entries)
    n_keys = pt.extent
    order = np.argsort(keys.astype(np.uint8), kind="stable")  # radix sort, once
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])

    def add_at() -> None:
        a, b = np.zeros(n_keys), np.zeros(n_keys)
        np.add.at(a, keys, w)
        np.add.at(b, keys, w * w)

    def bincount() -> None:
        np.bincount(keys, w, n_keys)
        np.bincount(keys, w * w, n_keys)

    def reduceat() -> None:
        ws = w[order]
        np.add.reduceat(ws, starts)
        np.add.reduceat(ws * ws, starts)

    fns: dict[str, Callable[[], Any]] = {
        "np.add.at x2 (the fallback)": add_at,
        "np.bincount x2": bincount,
        "sorted once, gather + np.add.reduceat x2": reduceat,
        "boost Weight fill (index included)": functools.partial(
            _boost_fill, (pt,), bh.storage.Weight(), [x], w
        ),
    }
    kernel = _shared_fill.numba_kernel()
    if kernel is not None:

        def compiled() -> None:
            kernel.add_weights_squares(keys, 0, w, np.zeros(n_keys), np.zeros(n_keys))

        fns["numba, one pass (add_weights_squares)"] = compiled
    ts = _times(fns, repeat)
    sort = _times(
        {"sort": lambda: np.argsort(keys.astype(np.uint8), kind="stable")}, repeat
    )
    print(f"one variation at shared keys, {entries} entries; ms min / median")
    for name, t in ts.items():
        print(f"  {name:44s} {_ms(t)}")
    print(f"  {'(the sort, once per set of keys)':44s} {_ms(sort['sort'])}")


_START = """
import time
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import dask_hizt._numba_kernel
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def numba_start(repeat: int) -> None:
    """Fresh processes: numba's import, then the compiled loops' import
    with an empty on-disk cache (they compile) and with a filled one."""
    if _shared_fill.numba_kernel() is None:
        print("numba is not installed: no compiled loops")
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        rows = []
        for i in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", _START],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            numba_s, loops_s = (float(v) for v in out.stdout.split())
            rows.append((numba_s, loops_s))
            what = "compile (empty cache)" if i == 0 else "cached"
            print(
                f"fresh process {i}: import numba {numba_s:.3f} s, loops {loops_s:.3f} s ({what})"
            )
        cached = [r[1] for r in rows[1:]]
        if cached:
            print(
                f"cached loops: min {min(cached):.3f} s, median {statistics.median(cached):.3f} s; "
                f"import numba: median {statistics.median(r[0] for r in rows):.3f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parts = ["cases", "accumulators", "variations", "all"]
    parser.add_argument("--part", choices=parts, default="all")
    parser.add_argument("--entries", type=int, default=10**6)
    parser.add_argument(
        "--numba-start", action="store_true", help="measure numba's start-up cost"
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    if args.part in ("cases", "all"):
        cases(args.repeat)
    if args.part in ("accumulators", "all"):
        accumulators(args.repeat, args.entries)
    if args.part in ("variations", "all"):
        variations(args.repeat, args.entries)
    if args.numba_start:
        numba_start(args.repeat)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
