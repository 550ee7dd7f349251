"""The job of ``test_dask_compute.py``: a processor's output (a nested dict of
stored histograms in two repositories, with weight variations) next to a
report of plain dask collections, computed with plain ``dask.compute``.

Run as a script, it is a user's ``python script.py``: a fresh process that
builds the job from the input files of ``inputs_job.write_data`` and
computes it::

    python tests/compute_job.py KINDS REPOS DATA [--slow T] [--checkpoint K] [--concurrent] [--no-report]

Each kind writes repositories ``REPOS/KIND-a.icechunk`` and
``REPOS/KIND-b.icechunk`` and prints one JSON line as it ends: ``{"kind",
"snapshots": {"a", "b"}, "sums": {name: sum}, "report"}``, or ``{"kind",
"error"}``. ``--checkpoint K`` sets ``dask_hizt.checkpoint`` (plain
``dask.compute`` takes no ``checkpoint=``); ``--slow`` and ``--concurrent``
are as for ``inputs_job.py``; ``--no-report`` computes the output alone
(the report's reduction over every partition lets dask's ordering run the
fills of some inputs all before the first checkpoint commit).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import dask
import hist
import jobs
import numpy as np
from inputs_job import AXIS, build, npartitions, read_eager, total

import dask_hizt as dh

#: The input kinds of the job (of ``inputs_job.KINDS``): parquet files and
#: directories, a filtered Series, CSV blocks, zarr and in-memory arrays.
KINDS = (
    "parquet_row_groups",
    "parquet_dir",
    "parquet_filtered_series",
    "csv_blocks",
    "zarr_map_blocks",
    "npy_load",
)
#: The weight variations: factors exact in binary, so sums are exact in any order.
SYSTS = {"nominal": 1.0, "up": 1.5, "down": 0.5}
SYST = hist.axis.StrCategory(list(SYSTS), name="syst")
HALF = hist.axis.Regular(30, 0.0, 75.0, name="x")
#: Histogram paths: in repository a, and in repository b.
IN_A = ("x", "syst")
IN_B = ("half",)


def processor(
    kind: str, data: Path, repos: Path, slow: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A processor's output and report for one kind: ``x`` (the kind's storage),
    ``syst`` (one fill per weight variation) in repository a, ``half`` (``x / 2``)
    in repository b; the report is the sum of ``x``."""
    job = build(kind, data, slow)
    a, b = repos / f"{kind}-a.icechunk", repos / f"{kind}-b.icechunk"
    x = dh.Hist(AXIS, storage=job.storage, store=a, path="x")
    x.fill(x=job.x, weight=job.weight)
    syst = dh.Hist(SYST, AXIS, storage=hist.storage.Weight(), store=a, path="syst")
    for name, factor in SYSTS.items():
        w = factor if job.weight is None else job.weight * factor
        syst.fill(syst=name, x=job.x, weight=w)
    half = dh.Hist(HALF, storage=hist.storage.Weight(), store=b, path="half")
    half.fill(x=job.x / 2)
    out = {"x": x, "systematics": {"syst": [syst]}, "other": (half,)}
    return out, {"sum": job.x.sum()}


def stored(out: dict[str, Any]) -> dict[str, Any]:
    """The computed histograms of an output, by path."""
    return {
        "x": out["x"],
        "syst": out["systematics"]["syst"][0],
        "half": out["other"][0],
    }


def eager(kind: str, data: Path) -> dict[str, hist.Hist[Any]]:
    """The eager histograms of a kind, by path."""
    x, w = read_eager(kind, data)
    storage = build(kind, data).storage
    out = {"x": hist.Hist(AXIS, storage=storage).fill(x, weight=w)}
    syst = hist.Hist(SYST, AXIS, storage=hist.storage.Weight())
    for name, factor in SYSTS.items():
        syst.fill(syst=name, x=x, weight=factor if w is None else w * factor)
    out["syst"] = syst
    out["half"] = hist.Hist(HALF, storage=hist.storage.Weight()).fill(x / 2)
    return out


def run(
    kind: str, repos: Path, data: Path, *, slow: float, workers: int, report: bool
) -> dict[str, Any]:
    """Compute one kind's job; its JSON report."""
    try:
        seconds = slow / npartitions(build(kind, data, 1.0).x) if slow else 0.0
        out, summed = processor(kind, data, repos, seconds)
        todo = (out, summed) if report else (out,)
        out, *rest = dask.compute(*todo, scheduler="threads", num_workers=workers)
        hists = stored(out)
        return {
            "kind": kind,
            "snapshots": {"a": hists["x"].snapshot_id, "b": hists["half"].snapshot_id},
            "sums": {name: total(h.to_hist()) for name, h in hists.items()},
            "report": float(np.asarray(rest[0]["sum"])) if rest else None,
        }
    except Exception as e:  # noqa: BLE001  # reported, the other kinds go on
        traceback.print_exc()
        return {"kind": kind, "error": f"{type(e).__name__}: {e}"[:500]}


def main(argv: list[str] | None = None) -> int:
    """Run the job; the number of kinds that failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", help="comma-separated input kinds")
    parser.add_argument("repos", type=Path, help="directory of the repositories")
    parser.add_argument("data", type=Path, help="directory of the input files")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds per kind")
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    dask.config.set({"dask_hizt.checkpoint": args.checkpoint})

    def one(kind: str) -> dict[str, Any]:
        workers = 1 if args.concurrent else 2
        return run(
            kind,
            args.repos,
            args.data,
            slow=args.slow,
            workers=workers,
            report=not args.no_report,
        )

    return jobs.run_each(args.kinds.split(","), one, concurrent=args.concurrent)


if __name__ == "__main__":
    faulthandler.enable()
    sys.path.insert(0, str(Path(__file__).parent))
    # through the module's own name, as in the tests' process (tokens of
    # inputs_job.pause and inputs_job.transform)
    import compute_job

    failures = compute_job.main()
    sys.stdout.flush()
    sys.stderr.flush()
    # icechunk's runtime threads can crash in interpreter finalization
    os._exit(1 if failures else 0)
