"""The coffea acceptance run: apply_to_fileset on NanoAOD-like files, on a
LocalCluster with processes, next to hist.dask and a dask-awkward scalar.

Needs coffea with dask-awkward >= 2025.9 (stack B, see the README); skipped
on stack A.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import hist
import icechunk
import numpy as np
import numpy.typing as npt
import pytest
from nanoaod import (  # noqa: F401 - fixtures
    ReadLog,
    eager_reference,
    fileset,
    muon_pt_hist,
    nanoaod_files,
    nanoaod_schema,
    steps_of,
)

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

pytest.importorskip("dask_awkward", minversion="2025.9")
pytest.importorskip("coffea")
ak = pytest.importorskip("awkward")
uproot = pytest.importorskip("uproot")

PT = hist.axis.Regular(40, 5, 105, name="pt")
ETA = hist.axis.Regular(24, -2.4, 2.4, name="eta")


def lazy_processor(repo: Path) -> Any:
    """What a coffea user writes, with dask_hizt histograms in the output."""

    def process(events: Any) -> dict[str, Any]:
        import dask_awkward as dak
        import hist.dask

        dataset = events.metadata["dataset"]
        muons, weight = events.Muon, events.genWeight
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        kw: dict[str, Any] = {"storage": hist.storage.Weight(), "store": repo}
        pt = dh.Hist(grows, PT, path="muon/pt", **kw)
        pt.fill(dataset=dataset, pt=muons.pt, weight=weight)  # jagged, weight broadcast
        eta = dh.Hist(grows, ETA, path="muon/eta", **kw)
        eta.fill(dataset=dataset, eta=muons.eta, weight=weight)
        count = dh.Hist(
            hist.axis.Integer(0, 5, name="n"),
            storage=hist.storage.Int64(),
            store=repo,
            path=f"nmuon/{dataset}",
        ).fill(n=dak.num(muons.pt, axis=1))
        # the same muon pt with hist.dask, for comparison
        hd = hist.dask.Hist(
            hist.axis.StrCategory(["DYJets", "TTbar"], name="dataset"),
            PT,
            storage=hist.storage.Weight(),
        )
        w = dak.broadcast_arrays(weight, muons.pt)[0]
        hd.fill(dataset=dataset, pt=dak.flatten(muons.pt), weight=dak.flatten(w))
        return {
            "pt": pt,
            "eta": eta,
            "nmuon": count,
            "hist_dask": hd,
            "sumw": dak.sum(weight),
        }

    return process


def _eager(files: dict[str, Path]) -> dict[str, Any]:
    """The same histograms filled eagerly from the files with uproot and hist."""
    eta = hist.Hist(
        hist.axis.StrCategory(list(files), name="dataset"),
        ETA,
        storage=hist.storage.Weight(),
    )
    counts, sumw = {}, {}
    for name, path in files.items():
        with uproot.open(path) as f:
            arr = f["Events"].arrays(["Muon_eta", "Muon_pt", "genWeight"])
        e, w = ak.broadcast_arrays(arr.Muon_eta, arr.genWeight)
        eta.fill(dataset=name, eta=ak.flatten(e), weight=ak.flatten(w))
        counts[name] = hist.Hist(
            hist.axis.Integer(0, 5, name="n"), storage=hist.storage.Int64()
        ).fill(n=ak.num(arr.Muon_pt))
        sumw[name] = float(ak.sum(arr.genWeight))
    return {"pt": eager_reference(files, PT), "eta": eta, "nmuon": counts, "sumw": sumw}


def _growing(expected: hist.Hist[Any]) -> hist.Hist[Any]:
    """``expected`` with its fixed dataset axis made a growing one (no
    overflow bin), as dask_hizt's histograms have it; its overflow bin must
    be empty."""
    dataset = expected.axes[0]
    view: npt.NDArray[Any] = np.asarray(expected.view(flow=True))
    for field in view.dtype.names or ():
        assert not view[field][-1].any(), field
    out = hist.Hist(
        hist.axis.StrCategory(list(dataset), growth=True, name=dataset.name),
        *expected.axes[1:],
        storage=expected.storage_type(),
    )
    out.view(flow=True)[...] = view[:-1]
    return out


@pytest.mark.parametrize("compute", [dh.compute, dask.compute], ids=["dh", "dask"])
def test_apply_to_fileset_one_read_one_commit_exact(
    client: Any,
    tmp_path: Path,
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
    nanoaod_schema: Any,  # noqa: F811 - the fixture
    compute: Any,
) -> None:
    """``dh.compute(out, report)``, or plain ``dask.compute`` as coffea's
    documentation has it: the same one read, one commit."""
    from coffea.dataset_tools import apply_to_fileset, preprocess

    repo = tmp_path / "repo.icechunk"
    available, _ = preprocess(fileset(nanoaod_files), step_size=10_000)
    out, report = apply_to_fileset(
        lazy_processor(repo),
        available,
        schemaclass=nanoaod_schema,
        uproot_options={"allow_read_errors_with_report": True},
    )
    log = ReadLog(tmp_path / "reads.jsonl")
    with log.on(client):
        out, report = compute(out, report)

    # every partition read once, and only the branches the outputs use
    assert log.counts() == dict.fromkeys(steps_of(available), 1)
    assert log.branches() == {"nMuon", "Muon_pt", "Muon_eta", "genWeight"}
    assert all(
        r["performance_counters"] is not None
        for rep in report.values()
        for r in rep.to_list()
    )

    # all dask_hizt histograms of the run: ONE fill commit (after the one creating them)
    stored = [o[k] for o in out.values() for k in ("pt", "eta", "nmuon")]
    assert len({s.snapshot_id for s in stored}) == 1
    history = [
        s.message
        for s in icechunk.Repository.open(
            icechunk.local_filesystem_storage(str(repo))
        ).ancestry(branch="main")
    ]
    # one commit, which also created the 4 histograms
    assert len(history) == 2
    assert history[0].startswith("dask_hizt: fill 4 histograms")

    # bin for bin equal to the eager uproot + hist reference, flow bins included
    expected = _eager(nanoaod_files)
    for name in nanoaod_files:
        # both datasets' calls built their own Hist("muon/pt"): one histogram
        assert_hist_equal(out[name]["pt"], _growing(expected["pt"]))
        assert_hist_equal(out[name]["eta"], _growing(expected["eta"]))
        assert out[name]["nmuon"].to_hist() == expected["nmuon"][name]
        assert out[name]["sumw"] == expected["sumw"][name]
    summed = out["DYJets"]["hist_dask"] + out["TTbar"]["hist_dask"]
    assert summed == expected["pt"]
    reference = muon_pt_hist(nanoaod_files, PT)
    assert reference.axes == summed.axes


# ------------------------------------------- processor.Runner + DaskExecutor ---

from coffea import processor

PT_ETA = (PT, hist.axis.Regular(400, -2.4, 2.4, name="eta"))


class StagingProcessor(processor.ProcessorABC):  # type: ignore[misc]
    """An eager coffea processor returning its histograms in a dh.Staging."""

    def __init__(self, repo: str, fail_at: int | None = None) -> None:
        self.repo = repo
        self.fail_at = fail_at

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if meta["dataset"] == "TTbar" and meta["entrystart"] == self.fail_at:
            raise RuntimeError("this chunk of events fails")
        out = dh.Staging(self.repo, meta)
        grows = hist.axis.StrCategory([], growth=True, name="dataset")
        w = hist.storage.Weight()
        out.hist(grows, PT, storage=w, path="muon/pt").fill(
            dataset=meta["dataset"], pt=events.Muon.pt, weight=events.genWeight
        )
        # 16,000 bins of two fields: far larger than what travels between futures
        out.hist(grows, *PT_ETA, storage=w, path="muon/pt_eta").fill(
            dataset=meta["dataset"],
            pt=events.Muon.pt,
            eta=events.Muon.eta,
            weight=events.genWeight,
        )
        return {"histograms": out, "events": len(events)}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _runner(client: Any, schema: Any) -> Any:
    return processor.Runner(
        executor=processor.DaskExecutor(client=client, status=False, retries=0),
        schema=schema,
        chunksize=10_000,
    )


def test_runner_with_dask_executor_one_commit_and_no_double_counts(
    client: Any,
    tmp_path: Path,
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
    nanoaod_schema: Any,  # noqa: F811 - the fixture
) -> None:
    import pickle

    repo = tmp_path / "repo.icechunk"
    files = {name: {"files": {str(p): "Events"}} for name, p in nanoaod_files.items()}
    runner = _runner(client, nanoaod_schema)
    # made on the client (and its marker): workers never create a repository
    dh.Staging(str(repo))

    # a first run dies on one chunk of events after others were staged
    with pytest.raises(Exception, match="this chunk of events fails"):
        runner(files, processor_instance=StagingProcessor(str(repo), fail_at=12_000))

    # the re-run finishes and commits once
    result = runner(files, processor_instance=StagingProcessor(str(repo)))
    staged = result["histograms"]
    # coffea cuts 30k + 24k events into 3 + 2 chunks: two fills per chunk
    assert len(staged) == 2 * 5
    assert len(pickle.dumps(staged)) < 20_000  # file names, not histograms
    stored = staged.commit()
    history = [
        s.message
        for s in icechunk.Repository.open(
            icechunk.local_filesystem_storage(str(repo))
        ).ancestry(branch="main")
    ]
    assert history[0].startswith("dask_hizt: fill 2 histograms")
    assert history[1:] == ["Repository initialized"]  # created by the fill commit
    expected = eager_reference(nanoaod_files, PT)
    # a futures executor stages chunks in the order they finish
    assert_hist_equal(stored["muon/pt"], _growing(expected), categories="any order")

    # running the whole job again leaves the histograms as they are
    again = runner(files, processor_instance=StagingProcessor(str(repo)))
    same = again["histograms"].commit()
    assert {p: s.snapshot_id for p, s in same.items()} == {
        p: s.snapshot_id for p, s in stored.items()
    }
    assert_hist_equal(
        dh.open(repo, "muon/pt"), _growing(expected), categories="any order"
    )
    pt_eta = hist.Hist(
        hist.axis.StrCategory(list(nanoaod_files), name="dataset"),
        *PT_ETA,
        storage=hist.storage.Weight(),
    )
    for name, path in nanoaod_files.items():
        with uproot.open(path) as f:
            arr = f["Events"].arrays(["Muon_pt", "Muon_eta", "genWeight"])
        pt, eta, w = ak.broadcast_arrays(arr.Muon_pt, arr.Muon_eta, arr.genWeight)
        pt_eta.fill(
            dataset=name, pt=ak.flatten(pt), eta=ak.flatten(eta), weight=ak.flatten(w)
        )
    assert_hist_equal(
        dh.open(repo, "muon/pt_eta"), _growing(pt_eta), categories="any order"
    )
