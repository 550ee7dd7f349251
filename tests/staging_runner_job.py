"""A coffea ``processor.Runner`` job whose processor returns its histogram in
a ``dh.Staging``: imported by tests/test_staging_runner.py, and run as a
script for a re-run in a fresh process::

    python staging_runner_job.py '{"store": ..., "files": {...}, "executor": ...}'

prints one JSON line ``{"snapshots": {path: snapshot id}, "staged": n}``.
Needs coffea (stack B).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hist
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import dask_hizt as dh

PT = hist.axis.Regular(40, 5, 105, name="pt")
PATH = "muon/pt"


class Schema(NanoAODSchema):  # type: ignore[misc]
    """NanoAOD without the warnings about cross-reference branches that the
    small test files lack (in every process: loky's workers import this)."""

    warn_missing_crossrefs = False


class StagingProcessor(processor.ProcessorABC):  # type: ignore[misc]
    """A processor written for hist.Hist, with its histogram in a dh.Staging."""

    def __init__(self, store: str) -> None:
        self.store = store

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        out = dh.Staging(self.store, meta)
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        out.hist(grows, PT, storage=hist.storage.Weight(), path=PATH).fill(
            dataset=meta["dataset"], pt=events.Muon.pt, weight=events.genWeight
        )
        return {"histograms": out, "events": len(events)}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def executor(kind: str) -> Any:
    """``iterative`` or ``futures`` (two loky worker processes)."""
    if kind == "iterative":
        return processor.IterativeExecutor(status=False)
    if kind == "futures":
        return processor.FuturesExecutor(status=False, workers=2)
    msg = f"unknown executor {kind!r}"
    raise ValueError(msg)


def run(store: str, files: dict[str, str], kind: str) -> tuple[dh.Staging, int]:
    """Run the job (``files``: dataset -> ROOT file); its Staging and events."""
    runner = processor.Runner(executor=executor(kind), schema=Schema, chunksize=10_000)
    fileset = {name: {"files": {path: "Events"}} for name, path in files.items()}
    result = runner(fileset, processor_instance=StagingProcessor(store))
    return result["histograms"], int(result["events"])


def main(cfg: dict[str, Any]) -> None:
    staging, _ = run(cfg["store"], cfg["files"], cfg["executor"])
    stored = staging.commit()
    out = {"snapshots": {p: s.snapshot_id for p, s in stored.items()}}
    print(json.dumps({**out, "staged": len(staging)}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
