"""The job of ``test_resume.py``: coffea's ``processor.Runner`` filling a
``dh.Staging`` from NanoAOD-like files, as a user's fresh ``python job.py``::

    python tests/runner_job.py MODE STORE FILES EXECUTOR EVENTS LOG
                               [--fail DATASET:INDEX] [--checkpoint DIR]

``MODE`` is ``run`` (the whole fileset) or ``resume`` (only the chunks that
``Staging.pending`` gives). ``STORE`` is a directory or an ``s3://`` URL
(credentials from the environment). ``FILES`` is a JSON ``{dataset: path}``.
``EXECUTOR`` is ``iterative``, ``futures`` (two worker processes) or
``dask`` (a LocalCluster of two worker processes). ``EVENTS`` is
``virtual``, the Runner's own events, or ``eager``: the processor reads its
chunk with ``NanoEventsFactory.from_root(..., mode="eager")``.

Every chunk the processor finishes appends a line to ``LOG``. ``--fail``
makes the processor raise on chunk ``INDEX`` of ``DATASET``: the Runner
skips it (``skipbadfiles``), unless ``--checkpoint`` is given, which runs
with coffea's ``SimpleCheckpointer`` in ``DIR`` and without skipping (the
run raises). The staged fills are committed and the job prints one JSON
line: ``{"chunks", "todo", "staged", "snapshots", "pending", "buffers",
"blob_bytes", "secret_in_blob"}`` (``todo``: the chunks handed to the
Runner; ``pending``: what is left after the commit; ``buffers``: the kinds
of array the processor's muon pt had), or ``{"error"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

import awkward as ak
import hist
from coffea import processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

import dask_hizt as dh

PT = hist.axis.Regular(40, 5, 105, name="pt")
ETA = hist.axis.Regular(24, -2.4, 2.4, name="eta")
CHUNKSIZE = 10_000


class Schema(NanoAODSchema):  # type: ignore[misc]
    """NanoAOD without the warnings about cross-reference branches that the
    small test files lack (in every process: the workers unpickle this)."""

    warn_missing_crossrefs = False


class Processor(processor.ProcessorABC):  # type: ignore[misc]
    """Two histograms in a dh.Staging; logs each chunk it finishes."""

    def __init__(
        self, store: str, log: str, fail: tuple[str, int] | None, eager: bool
    ) -> None:
        self.store, self.log, self.fail, self.eager = store, log, fail, eager

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if self.fail == (meta["dataset"], meta["entrystart"]):
            raise RuntimeError("this chunk of events fails")
        if self.eager:
            events = NanoEventsFactory.from_root(
                {meta["filename"]: meta["treename"]},
                mode="eager",
                entry_start=meta["entrystart"],
                entry_stop=meta["entrystop"],
                schemaclass=Schema,
                metadata=dict(meta),
            ).events()
        # the line a hist.Hist processor has, with path= and out. in front
        out = dh.Staging(self.store, events.metadata)
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        w = hist.storage.Weight()
        out.hist(grows, PT, storage=w, path="muon/pt").fill(
            dataset=meta["dataset"], pt=events.Muon.pt, weight=events.genWeight
        )
        out.hist(grows, ETA, storage=w, path="muon/eta").fill(
            dataset=meta["dataset"], eta=events.Muon.eta, weight=events.genWeight
        )
        buffer = type(ak.to_layout(events.Muon.pt).content.data).__name__
        line = f"{meta['dataset']} {meta['entrystart']} {meta['entrystop']}\n"
        with Path(self.log).open("a") as fh:  # one write: lines never mix
            fh.write(line)
        return {"histograms": out, "buffers": {buffer}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _chunk(item: Any) -> list[Any]:
    return [item.dataset, item.entrystart, item.entrystop]


def _executor(kind: str) -> tuple[Any, Any]:
    """coffea's executor of that kind, and what must be closed after."""
    if kind == "iterative":
        return processor.IterativeExecutor(status=False), None
    if kind == "futures":
        return processor.FuturesExecutor(status=False, workers=2), None
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    )
    client = Client(cluster)
    executor = processor.DaskExecutor(client=client, status=False, retries=0)
    return executor, (client, cluster)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume"])
    parser.add_argument("store")
    parser.add_argument("files")
    parser.add_argument("executor", choices=["iterative", "futures", "dask"])
    parser.add_argument("events", choices=["virtual", "eager"])
    parser.add_argument("log")
    parser.add_argument("--fail")
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)
    fileset = {ds: {"files": {p: "Events"}} for ds, p in json.loads(args.files).items()}
    executor, to_close = _executor(args.executor)
    checkpointer = (
        processor.SimpleCheckpointer(args.checkpoint) if args.checkpoint else None
    )
    runner = processor.Runner(
        executor=executor,
        schema=Schema,
        chunksize=CHUNKSIZE,
        skipbadfiles=(RuntimeError,) if args.fail and not checkpointer else False,
        checkpointer=checkpointer,
    )
    try:
        # made on the client: a distributed worker never creates a repository
        staging = dh.Staging(args.store)
        chunks = list(runner.preprocess(fileset))
        fail = None
        if args.fail:
            dataset, index = args.fail.split(":")
            item = [c for c in chunks if c.dataset == dataset][int(index)]
            fail = (item.dataset, item.entrystart)
        todo = staging.pending(chunks) if args.mode == "resume" else chunks
        report: dict[str, Any] = {"chunks": len(chunks), "todo": len(todo)}
        if todo:
            eager = args.events == "eager"
            processor_instance = Processor(args.store, args.log, fail, eager)
            result = runner(todo, processor_instance=processor_instance)
            staged = result["histograms"]
            report["staged"] = len(staged)
            report["buffers"] = sorted(result["buffers"])
            blob = pickle.dumps(staged)  # what travels back to the client
            report["blob_bytes"] = len(blob)
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
            report["secret_in_blob"] = bool(secret) and secret.encode() in blob
            stored = staged.commit()
            report["snapshots"] = {p: s.snapshot_id for p, s in stored.items()}
        left = dh.Staging(args.store).pending(chunks)
        report["pending"] = [_chunk(c) for c in left]
    except Exception as err:  # noqa: BLE001 - reported to the test
        traceback.print_exc()
        report = {"error": f"{type(err).__name__}: {err}"}
    finally:
        if to_close is not None:
            for part in to_close:
                part.close()
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    os.environ.setdefault("ICECHUNK_LOG", "error")
    sys.exit(main(sys.argv[1:]))
