"""The ``dask-hizt`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

DATASETS = ("DY", "QCD", "TT", "WJets")


def _demo_partition(i: int, n: int) -> object:
    """One partition of made-up events: a dataset label, pt, eta and a weight."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "dataset": rng.choice(DATASETS, n),
            "pt": rng.exponential(45.0, n),
            "eta": rng.normal(0.0, 1.8, n),
            "weight": rng.normal(1.0, 0.2, n),
        }
    )


def demo(args: argparse.Namespace) -> int:
    """Fill a 3-axis histogram on a LocalCluster into a local repository."""
    import dask.dataframe as dd
    import hist
    from distributed import Client, LocalCluster

    from .collection import Hist

    store = Path(args.store)
    h = Hist(
        hist.axis.StrCategory(list(DATASETS), name="dataset"),
        hist.axis.Regular(50, 0, 250, name="pt", label="p_T [GeV]"),
        hist.axis.Regular(20, -5, 5, name="eta"),
        storage=hist.storage.Weight(),
        store=store,
        path="demo/pt_eta",
    )
    print(f"repository: {store.resolve()}")
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        per = max(1, args.events // args.partitions)
        ddf = dd.from_map(_demo_partition, range(args.partitions), n=per)
        h.fill(dataset=ddf.dataset, pt=ddf.pt, eta=ddf.eta, weight=ddf.weight)
        print(
            f"filling {per * args.partitions:,} events from {args.partitions} partitions ..."
        )
        done = args.partitions - len(h.pending())
        if done:
            # exactly once: partitions committed by an earlier run are skipped
            print(f"{done} of them are in the histogram already (an earlier run)")
        stored = h.compute()

    result = stored.to_hist()
    print(result)
    print("\npt of DY, summed over eta:")
    print(_bars(result["DY", :: hist.rebin(2), sum]))
    print(f"\nhistory of {stored.path!r}:")
    for commit in stored.history():
        what = f"{len(commit.inputs)} input partitions" if commit.inputs else "created"
        print(
            f"  {commit.snapshot_id}  {commit.written_at:%Y-%m-%d %H:%M:%S}  {commit.message}  ({what})"
        )
    return 0


def _bars(h1: object, width: int = 50) -> str:
    """A one-dimensional histogram as rows of text bars."""
    import numpy as np

    values = np.asarray(h1.values())  # type: ignore[attr-defined]
    edges = h1.axes[0].edges  # type: ignore[attr-defined]
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    rows = []
    for lo, hi, v in zip(edges[:-1], edges[1:], values, strict=True):
        bar = "#" * round(width * max(float(v), 0.0) / top)
        rows.append(f"  [{lo:6.1f}, {hi:6.1f})  {v:12.1f}  {bar}")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-hizt",
        description="Dask-native histograms stored in icechunk repositories.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="fill a demo histogram on a LocalCluster and show it"
    )
    p.add_argument(
        "--store",
        default="hizt-demo.icechunk",
        help="local repository (default: %(default)s)",
    )
    p.add_argument(
        "--events",
        type=int,
        default=2_000_000,
        help="number of events (default: %(default)s)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=20,
        help="number of partitions (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="worker processes (default: %(default)s)"
    )
    p.set_defaults(func=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dask-hizt``."""
    args = _parser().parse_args(argv)
    import os

    import icechunk

    from .errors import HiztError

    # Commits on local repositories hold dask_hizt's file lock, which answers
    # icechunk's warning about concurrent local commits; keep real errors.
    icechunk.set_logs_filter(os.environ.get("ICECHUNK_LOG", "error"))

    try:
        return int(args.func(args))
    except HiztError as err:
        print(f"dask-hizt: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
