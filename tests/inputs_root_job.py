"""The job of ``test_inputs_root.py``: NanoAOD-like ROOT files read through
uproot and coffea, filled into stored histograms, and the eager reference.

Run as a script, it is what a user's ``python script.py`` is: a fresh process
that builds the job from the files on disk and computes it::

    python tests/inputs_root_job.py KINDS REPOS DATA [--slow T] [--checkpoint K]
                                    [--concurrent] [--extra]

``KINDS`` is a comma-separated list of kinds (see :data:`KINDS`); each fills
histogram :data:`PATH` (muon pt, weighted by ``genWeight``, by dataset) in
its own repository ``REPOS/KIND.icechunk`` from the files that
:func:`write_data` wrote under ``DATA`` (``--extra``: with one more file in
the DYJets dataset). The kinds run one after another on the threaded
scheduler with 2 workers (``--concurrent``: each in a thread of its own, all
at once, with 1 worker each). Each prints one JSON line as it ends:
``{"kind", "snapshots", "sum"}`` (``snapshots``: of the histograms the
compute returned), or ``{"kind", "error"}`` if it raised. ``--slow T`` makes
the partitions of a kind sleep ``T`` seconds in all (:func:`pause`, applied
to the muon pt with ``dak.map_partitions``); ``--checkpoint K`` commits every
``K`` partitions.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import dask
import hist
import jobs
from coffea import processor

import dask_hizt as dh

#: What a job reads, and how it computes.
KINDS = (
    "uproot",  # uproot.dask(files, step_size=STEP): open_files=True
    "uproot_closed",  # uproot.dask(files with steps, open_files=False)
    "from_root",  # coffea's NanoEventsFactory.from_root(..., mode="dask")
    "apply",  # coffea preprocess + apply_to_fileset, dh.compute(out, report)
    "apply_dask",  # the same, computed with plain dask.compute(out, report)
    "runner",  # coffea processor.Runner + IterativeExecutor with dh.Staging
)

#: The histogram every kind fills, in its own repository.
PATH = "muon/pt"

#: Entries per partition (uproot's ``step_size``, the steps given to
#: ``open_files=False`` and ``from_root``, coffea's ``preprocess`` step_size and
#: the Runner's ``chunksize``).
STEP = 2_000

#: The files: dataset -> ((file name, events, seed), ...). Several files per
#: dataset and several partitions per file; 5,000 events end on a short step.
FILES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "DYJets": (("dy-0.root", 6_000, 11), ("dy-1.root", 5_000, 12)),
    "TTbar": (("tt-0.root", 5_000, 13),),
}
#: The file ``--extra`` adds to a dataset.
EXTRA: tuple[str, tuple[str, int, int]] = ("DYJets", ("dy-2.root", 4_000, 14))

DATASETS = tuple(FILES)
TREE = "Events"


def pt_axis() -> hist.axis.Regular:
    """nanoaod's muon pt axis: both of its flow bins are filled."""
    import nanoaod

    return nanoaod.default_pt_axis()


def axes() -> tuple[Any, ...]:
    """The axes of :data:`PATH`: a fixed dataset category (with its empty
    overflow bin) and muon pt, as in nanoaod's eager reference."""
    import nanoaod

    return tuple(nanoaod.muon_pt_hist(DATASETS, pt_axis()).axes)


def write_data(root: Path) -> None:
    """Write every file of :data:`FILES` and :data:`EXTRA` under ``root``."""
    import nanoaod

    root.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (*(f for fs in FILES.values() for f in fs), EXTRA[1]):
        nanoaod.write_nanoaod(root / name, n, seed, basket_size=STEP)


def files(data: Path, *, extra: bool = False) -> dict[str, list[str]]:
    """The paths of each dataset's files (``extra``: with :data:`EXTRA`)."""
    out = {ds: [str(data / name) for name, _, _ in fs] for ds, fs in FILES.items()}
    if extra:
        out[EXTRA[0]].append(str(data / EXTRA[1][0]))
    return out


def entries(path: str) -> int:
    """Events in a file, from the file."""
    import uproot

    with uproot.open(path) as f:
        return int(f[TREE].num_entries)


def steps(path: str) -> list[list[int]]:
    """The entry ranges of :data:`STEP` entries of a file, the last one shorter."""
    n = entries(path)
    return [[a, min(a + STEP, n)] for a in range(0, n, STEP)]


def pause(part: Any, seconds: float) -> Any:
    """Sleep, then return the partition unchanged (slows a job down).

    The typetracer of dask-awkward's column optimization passes through
    without sleeping.
    """
    import awkward as ak

    if seconds and ak.backend(part) != "typetracer":
        time.sleep(seconds)
    return part


def slowed(arr: Any, seconds: float) -> Any:
    """``arr``, each partition of which sleeps ``seconds`` when computed."""
    if not seconds:
        return arr
    import dask_awkward as dak

    return dak.map_partitions(pause, arr, seconds)


def schema() -> Any:
    """NanoAODSchema, without the warnings for the cross-references these
    small files lack."""
    from coffea.nanoevents import NanoAODSchema

    NanoAODSchema.warn_missing_crossrefs = False
    return NanoAODSchema


def new_hist(repo: Any) -> dh.Hist:
    return dh.Hist(*axes(), storage=hist.storage.Weight(), store=repo, path=PATH)


def process(events: Any, *, repo: str, seconds: float) -> dict[str, Any]:
    """The coffea processor of the ``apply`` kinds (for ``apply_to_fileset``):
    one dh.Hist per dataset call, all of them at :data:`PATH`."""
    h = new_hist(repo)
    h.fill(
        dataset=events.metadata["dataset"],
        pt=slowed(events.Muon.pt, seconds),
        weight=events.genWeight,
    )
    return {"muon_pt": h}


class StagingProcessor(processor.ProcessorABC):  # type: ignore[misc]
    """The eager coffea processor of the ``runner`` kind, for
    ``processor.Runner``: its histogram in a dh.Staging."""

    def __init__(self, repo: str) -> None:
        self.repo = repo

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        out = dh.Staging(self.repo, meta)
        out.hist(*axes(), storage=hist.storage.Weight(), path=PATH).fill(
            dataset=meta["dataset"], pt=events.Muon.pt, weight=events.genWeight
        )
        return {"histograms": out}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def npartitions(kind: str, data: Path, *, extra: bool = False) -> int:
    """Partitions of a kind's job, counted as :data:`STEP` entries per file."""
    del kind  # every kind cuts the files alike
    return sum(len(steps(p)) for ps in files(data, extra=extra).values() for p in ps)


def run_kind(
    kind: str,
    repo: Path,
    data: Path,
    *,
    seconds: float = 0.0,
    checkpoint: int | None = None,
    workers: int = 2,
    extra: bool = False,
) -> list[Any]:
    """Build and compute one kind's job (each partition sleeping ``seconds``);
    the StoredHist objects it returned (none: nothing committed)."""
    on: dict[str, Any] = {"scheduler": "threads", "num_workers": workers}
    paths = files(data, extra=extra)
    if kind in {"uproot", "uproot_closed", "from_root"}:
        h = new_hist(repo)
        for dataset, ps in paths.items():
            spec = {p: {"object_path": TREE, "steps": steps(p)} for p in ps}
            if kind == "uproot":
                import uproot

                arr = uproot.dask(dict.fromkeys(ps, TREE), step_size=STEP)
                pt, weight = arr.Muon_pt, arr.genWeight
            elif kind == "uproot_closed":
                import uproot

                arr = uproot.dask(spec, open_files=False)
                pt, weight = arr.Muon_pt, arr.genWeight
            else:
                from coffea.nanoevents import NanoEventsFactory

                events = NanoEventsFactory.from_root(
                    spec, mode="dask", schemaclass=schema()
                ).events()
                pt, weight = events.Muon.pt, events.genWeight
            h.fill(dataset=dataset, pt=slowed(pt, seconds), weight=weight)
        return [h.compute(checkpoint=checkpoint, **on)]
    if kind in {"apply", "apply_dask"}:
        import nanoaod
        from coffea.dataset_tools import apply_to_fileset, preprocess

        available, _ = preprocess(nanoaod.fileset(paths), step_size=STEP)
        out, report = apply_to_fileset(
            functools.partial(process, repo=str(repo), seconds=seconds),
            available,
            schemaclass=schema(),
            uproot_options={"allow_read_errors_with_report": True},
        )
        if kind == "apply":
            out, report = dh.compute(out, report, checkpoint=checkpoint, **on)
        else:
            with dask.config.set({"dask_hizt.checkpoint": checkpoint}):
                out, report = dask.compute(out, report, **on)
        missing = [ds for ds in paths if report[ds] is None or len(report[ds]) == 0]
        if missing:
            msg = f"no report of the reads of {missing}"
            raise RuntimeError(msg)
        return [o["muon_pt"] for o in out.values()]
    if kind == "runner":
        if seconds or checkpoint:
            msg = "the runner kind is neither slowed nor checkpointed"
            raise ValueError(msg)
        runner = processor.Runner(
            executor=processor.IterativeExecutor(),
            schema=schema(),
            chunksize=STEP,
        )
        fileset = {ds: {"files": dict.fromkeys(ps, TREE)} for ds, ps in paths.items()}
        result = runner(fileset, processor_instance=StagingProcessor(str(repo)))
        return list(result["histograms"].commit().values())
    msg = f"unknown kind {kind!r}"
    raise ValueError(msg)


# ---------------------------------------------------------------- eager ---


def eager(data: Path, *, extra: bool = False) -> hist.Hist[Any]:
    """The eager uproot + hist reference of every kind's job."""
    import nanoaod

    return nanoaod.eager_reference(files(data, extra=extra), pt_axis())


def total(h: Any) -> float:
    """A histogram's sum of weights, flow bins included."""
    s = h.sum(flow=True)
    return float(getattr(s, "value", s))


# ------------------------------------------------------------------ run ---


def run(
    kind: str,
    repos: Path,
    data: Path,
    *,
    slow: float = 0.0,
    checkpoint: int | None = None,
    workers: int = 2,
    extra: bool = False,
) -> dict[str, Any]:
    """Compute one kind's job; its JSON report."""
    try:
        seconds = slow / npartitions(kind, data, extra=extra) if slow else 0.0
        repo = repos / f"{kind}.icechunk"
        stored = run_kind(
            kind,
            repo,
            data,
            seconds=seconds,
            checkpoint=checkpoint,
            workers=workers,
            extra=extra,
        )
        return {
            "kind": kind,
            "snapshots": sorted({s.snapshot_id for s in stored}),
            "sum": total(dh.open(repo, PATH).to_hist()),
        }
    except Exception as e:  # noqa: BLE001  # reported, the other kinds go on
        traceback.print_exc()
        return {"kind": kind, "error": f"{type(e).__name__}: {e}"[:500]}


def main(argv: list[str] | None = None) -> int:
    """Run the job; the number of kinds that failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", help="comma-separated kinds")
    parser.add_argument("repos", type=Path, help="directory of the repositories")
    parser.add_argument("data", type=Path, help="directory of the input files")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds per kind")
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--extra", action="store_true", help="one more file")
    args = parser.parse_args(argv)

    def one(kind: str) -> dict[str, Any]:
        return run(
            kind,
            args.repos,
            args.data,
            slow=args.slow,
            checkpoint=args.checkpoint,
            # all kinds at once share the cores: one thread each, so that the
            # partitions of a kind (and its checkpoints) come one by one
            workers=1 if args.concurrent else 2,
            extra=args.extra,
        )

    return jobs.run_each(args.kinds.split(","), one, concurrent=args.concurrent)


if __name__ == "__main__":
    faulthandler.enable()
    sys.path.insert(0, str(Path(__file__).parent))
    # through the module's own name, so that pause and process are
    # inputs_root_job.pause / inputs_root_job.process, as in the tests' process
    import inputs_root_job

    failures = inputs_root_job.main()
    sys.stdout.flush()
    sys.stderr.flush()
    # icechunk's runtime threads can crash in interpreter finalization
    os._exit(1 if failures else 0)
