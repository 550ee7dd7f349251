"""Where dask_hizt's time goes: one compute on dask's synchronous scheduler.

Run ``uv run python benchmarks/profile_hizt.py [--case a|b] [--quick] [--top N]``.
Prints the time per task prefix (uniform, hizt-fill, hizt-route, hizt-write,
hizt-commit) and the functions with the most own time under cProfile. One
process, one thread: no scheduler or transfer costs, just the task bodies.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("ICECHUNK_LOG", "error")

import dask
import hist
from dask.callbacks import Callback
from dask.utils import key_split

# run.py sits next to this script, so it is on sys.path when the script runs.
from run import CASES, QUICK, make_data

import dask_hizt


class PrefixTimer(Callback):
    """Wall time per task prefix, from dask's scheduler callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[Any, float] = {}
        self.totals: dict[str, list[float]] = {}

    def _pretask(self, key: Any, *_: Any) -> None:
        self.started[key] = time.perf_counter()

    def _posttask(self, key: Any, *_: Any) -> None:
        dt = time.perf_counter() - self.started.pop(key)
        self.totals.setdefault(key_split(key), []).append(dt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["a", "b"], default="b")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    case = (QUICK if args.quick else CASES)[args.case]

    with tempfile.TemporaryDirectory(prefix="hizt-profile-") as tmp:
        h = dask_hizt.Hist(
            *(hist.axis.Regular(n, 0.0, 1.0) for n in case.bins),
            storage=hist.storage.Double(),
            store=tmp,
            path=case.name,
        )
        h.fill(*make_data(case))
        timer = PrefixTimer()
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        with timer, dask.config.set(scheduler="sync"):
            profile.enable()
            dask.compute(h)
            profile.disable()
        wall = time.perf_counter() - t0

    print(
        f"case {case.name}: {case.title}; sync scheduler, wall {wall:.2f} s (under cProfile)"
    )
    print(f"  {'prefix':<28} {'count':>6} {'total s':>9} {'mean ms':>9} {'max ms':>9}")
    for name, times in sorted(timer.totals.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"  {name:<28} {len(times):>6} {sum(times):>9.2f} "
            f"{1e3 * sum(times) / len(times):>9.2f} {1e3 * max(times):>9.2f}"
        )
    print()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
