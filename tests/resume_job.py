"""The job of ``test_resume.py``: coffea's ``processor.Runner`` filling a
``dh.Staging`` from NanoAOD-like files, as a user's fresh ``python job.py``::

    python tests/resume_job.py MODE REPO FILES EXECUTOR LOG
                               [--fail DATASET:INDEX] [--checkpoint DIR]

``MODE`` is ``run`` (the whole fileset) or ``resume`` (only the chunks that
``Staging.pending`` gives). ``FILES`` is a JSON ``{dataset: path}``;
``EXECUTOR`` is ``iterative`` or ``dask`` (a LocalCluster of two worker
processes). Every chunk the processor finishes appends a line to ``LOG``.
``--fail`` makes the processor raise on chunk ``INDEX`` of ``DATASET``: the
Runner skips it (``skipbadfiles``), unless ``--checkpoint`` is given, which
runs with coffea's ``SimpleCheckpointer`` in ``DIR`` and without skipping
(the run raises). The staged fills are committed and the job prints one JSON
line: ``{"chunks", "todo", "staged", "snapshots", "pending"}`` (``todo``:
the chunks handed to the Runner; ``pending``: what is left after the
commit), or ``{"error"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hist
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import dask_hizt as dh

PT = hist.axis.Regular(40, 5, 105, name="pt")
ETA = hist.axis.Regular(24, -2.4, 2.4, name="eta")
CHUNKSIZE = 10_000


class Processor(processor.ProcessorABC):  # type: ignore[misc]
    """Two histograms in a dh.Staging; logs each chunk it finishes."""

    def __init__(self, repo: str, log: str, fail: tuple[str, int] | None) -> None:
        self.repo, self.log, self.fail = repo, log, fail

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if self.fail == (meta["dataset"], meta["entrystart"]):
            raise RuntimeError("this chunk of events fails")
        out = dh.Staging(self.repo, meta)
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        w = hist.storage.Weight()
        out.hist(grows, PT, storage=w, path="muon/pt").fill(
            dataset=meta["dataset"], pt=events.Muon.pt, weight=events.genWeight
        )
        out.hist(grows, ETA, storage=w, path="muon/eta").fill(
            dataset=meta["dataset"], eta=events.Muon.eta, weight=events.genWeight
        )
        line = f"{meta['dataset']} {meta['entrystart']} {meta['entrystop']}\n"
        with Path(self.log).open("a") as fh:  # one write: lines never mix
            fh.write(line)
        return {"histograms": out}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _chunk(item: Any) -> list[Any]:
    return [item.dataset, item.entrystart, item.entrystop]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume"])
    parser.add_argument("repo")
    parser.add_argument("files")
    parser.add_argument("executor", choices=["iterative", "dask"])
    parser.add_argument("log")
    parser.add_argument("--fail")
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)
    NanoAODSchema.warn_missing_crossrefs = False  # the files hold no cross-references
    fileset = {ds: {"files": {p: "Events"}} for ds, p in json.loads(args.files).items()}
    client = None
    if args.executor == "dask":
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
        executor: Any = processor.DaskExecutor(client=client, status=False, retries=0)
    else:
        executor = processor.IterativeExecutor(status=False)
    checkpointer = (
        processor.SimpleCheckpointer(args.checkpoint) if args.checkpoint else None
    )
    runner = processor.Runner(
        executor=executor,
        schema=NanoAODSchema,
        chunksize=CHUNKSIZE,
        skipbadfiles=(RuntimeError,) if args.fail and not checkpointer else False,
        checkpointer=checkpointer,
    )
    try:
        # made on the client: a distributed worker never creates a repository
        staging = dh.Staging(args.repo)
        chunks = list(runner.preprocess(fileset))
        fail = None
        if args.fail:
            dataset, index = args.fail.split(":")
            item = [c for c in chunks if c.dataset == dataset][int(index)]
            fail = (item.dataset, item.entrystart)
        todo = staging.pending(chunks) if args.mode == "resume" else chunks
        report: dict[str, Any] = {"chunks": len(chunks), "todo": len(todo)}
        if todo:
            processor_instance = Processor(args.repo, args.log, fail)
            result = runner(todo, processor_instance=processor_instance)
            staged = result["histograms"]
            report["staged"] = len(staged)
            stored = staged.commit()
            report["snapshots"] = {p: s.snapshot_id for p, s in stored.items()}
        report["pending"] = [_chunk(c) for c in dh.Staging(args.repo).pending(chunks)]
    except Exception as err:  # noqa: BLE001 - reported to the test
        traceback.print_exc()
        report = {"error": f"{type(err).__name__}: {err}"}
    finally:
        if client is not None:
            client.close()
            cluster.close()
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    os.environ.setdefault("ICECHUNK_LOG", "error")
    sys.exit(main(sys.argv[1:]))
