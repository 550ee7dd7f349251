"""dask-awkward inputs: jagged fills, column projection, no writes in the mock pass.

dask-awkward >= 2025.9 needs dask < 2025.4, so these run on stack B (see the
README); on stack A they are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import hist
import icechunk
import numpy as np
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

ak = pytest.importorskip("awkward")
dak = pytest.importorskip("dask_awkward", minversion="2025.9")

AXES = (
    hist.axis.StrCategory(["DY", "TT"], name="dataset"),
    hist.axis.Regular(20, 0, 100, name="pt"),
)


def _events(tmp_path: Path, n: int = 4_000, seed: int = 1) -> tuple[Any, Any]:
    """A parquet file of events with jagged muons, and the same data in memory."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, n)
    total = int(counts.sum())
    data = ak.Array(
        {
            "Muon": ak.zip(
                {
                    "pt": ak.unflatten(rng.exponential(30, total), counts),
                    "eta": ak.unflatten(rng.normal(0, 2, total), counts),
                }
            ),
            # weights exact in binary: sums are exact in any order
            "w": rng.choice([0.5, 1.0, 2.0], n),
            "unused": rng.normal(0, 1, n),
        }
    )
    path = tmp_path / "events.parquet"
    ak.to_parquet(data, path, row_group_size=n // 4)
    return dak.from_parquet(str(path), split_row_groups=True), data


def _messages(repo_path: Path) -> list[str]:
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    return [s.message for s in repo.ancestry(branch="main")]


def test_jagged_fill_flattens_and_broadcasts_weights(
    tmp_path: Path, repo_path: Path
) -> None:
    events, data = _events(tmp_path)
    assert events.npartitions == 4
    h = dh.Hist(*AXES, storage=hist.storage.Weight(), store=repo_path, path="pt")
    h.fill(dataset="DY", pt=events.Muon.pt, weight=events.w)
    h.fill(dataset="TT", pt=events.Muon.pt[:, :1])  # leading muon, unweighted
    stored = h.compute()
    pt = data.Muon.pt
    expected = hist.Hist(*AXES, storage=hist.storage.Weight())
    expected.fill(
        dataset="DY",
        pt=ak.flatten(pt),
        weight=ak.flatten(ak.broadcast_arrays(data.w, pt)[0]),
    )
    expected.fill(dataset="TT", pt=ak.flatten(pt[:, :1]))
    assert_hist_equal(stored, expected)


def test_flat_and_growing_fill_from_awkward(tmp_path: Path, repo_path: Path) -> None:
    events, data = _events(tmp_path, seed=2)
    axes = (
        hist.axis.IntCategory([], growth=True, name="nmu"),
        hist.axis.Regular(10, -5, 5, name="eta"),
    )
    nmu = dak.num(events.Muon.pt, axis=1)
    lead_eta = ak.fill_none(ak.firsts(events.Muon.eta), -9.0)
    h = dh.Hist(*axes, storage=hist.storage.Int64(), store=repo_path, path="eta")
    stored = h.fill(nmu=nmu, eta=lead_eta).compute()
    # categories in order of first appearance, as hist grows them
    expected = hist.Hist(*axes, storage=hist.storage.Int64())
    expected.fill(
        nmu=ak.num(data.Muon.pt), eta=ak.fill_none(ak.firsts(data.Muon.eta), -9.0)
    )
    got = stored.to_hist()
    assert list(got.axes[0]) == list(expected.axes[0])
    assert list(got.axes[0]) != sorted(got.axes[0])  # not sorted: as met
    assert np.array_equal(got.view(flow=True), expected.view(flow=True))


def test_only_the_columns_filled_are_read(tmp_path: Path, repo_path: Path) -> None:
    events, _ = _events(tmp_path)
    h = dh.Hist(*AXES, storage=hist.storage.Weight(), store=repo_path, path="pt")
    h.fill(dataset="DY", pt=events.Muon.pt, weight=events.w)
    (columns,) = dak.report_necessary_columns(h).values()
    assert columns == frozenset({"Muon.pt", "w"})


def test_the_mock_pass_writes_nothing(tmp_path: Path, repo_path: Path) -> None:
    """dask-awkward's optimizer runs partition 0 of the graph on typetracers."""
    events, _ = _events(tmp_path)
    h = dh.Hist(*AXES, storage=hist.storage.Weight(), store=repo_path, path="pt")
    h.fill(dataset="DY", pt=events.Muon.pt, weight=events.w)
    h.__dask_graph__()  # plans the compute (nothing is committed)
    before = _messages(repo_path)
    dak.report_necessary_columns(h)
    dask.optimize(h)
    assert _messages(repo_path) == before
    with pytest.raises(dh.NotAHistogramError):
        dh.open(repo_path, "pt")


def test_computed_with_other_awkward_outputs_reads_each_partition_once(
    tmp_path: Path, repo_path: Path
) -> None:
    events, data = _events(tmp_path, seed=3)
    h = dh.Hist(*AXES, storage=hist.storage.Weight(), store=repo_path, path="pt")
    h.fill(dataset="DY", pt=events.Muon.pt, weight=events.w)
    n_muons = ak.sum(dak.num(events.Muon.eta, axis=1))
    # one optimizer for both: one graph, one read task per partition
    assert h.__dask_optimize__ is n_muons.__dask_optimize__
    graph = dask.base.collections_to_dsk(  # type: ignore[attr-defined]  # stack B's dask (2025.3) has it
        [h, n_muons], optimize_graph=True
    )
    reads = [
        k
        for k in graph
        if str(k[0] if isinstance(k, tuple) else k).startswith("from-parquet")
    ]
    assert len(reads) == events.npartitions
    stored, total = dask.compute(h, n_muons)
    assert total == ak.sum(ak.num(data.Muon.eta))
    expected = hist.Hist(*AXES, storage=hist.storage.Weight()).fill(
        dataset="DY",
        pt=ak.flatten(data.Muon.pt),
        weight=ak.flatten(ak.broadcast_arrays(data.w, data.Muon.pt)[0]),
    )
    assert_hist_equal(stored, expected)


def test_jagged_arguments_that_do_not_line_up(tmp_path: Path, repo_path: Path) -> None:
    events, _ = _events(tmp_path)
    h = dh.Hist(*AXES, store=repo_path, path="pt")
    bad = events.Muon.pt[:, :1]
    h.fill(dataset="DY", pt=events.Muon.pt, weight=bad)
    before = _messages(repo_path)
    with pytest.raises(dh.FillError, match="do not broadcast"):
        h.compute()
    assert _messages(repo_path)[-len(before) :] == before


def test_a_rerun_reads_only_the_partitions_not_yet_in(
    tmp_path: Path, repo_path: Path
) -> None:
    events, data = _events(tmp_path, seed=4)
    ids = [f"events.parquet:row-group-{i}" for i in range(4)]

    def job(parts: Any, taken: list[str]) -> dh.Hist:
        h = dh.Hist(*AXES, storage=hist.storage.Weight(), store=repo_path, path="pt")
        return h.fill(
            dataset="DY", pt=parts.Muon.pt, weight=parts.w, partition_ids=taken
        )

    job(events.partitions[[0, 1]], ids[:2]).compute()
    h = job(events, ids)
    assert h.pending() == ids[2:]
    # only the two missing row groups are read, and only the filled columns
    graph = dask.base.collections_to_dsk(  # type: ignore[attr-defined]  # stack B's dask (2025.3) has it
        [h], optimize_graph=True
    )
    reads = [
        k
        for k in graph
        if str(k[0] if isinstance(k, tuple) else k).startswith("from-parquet")
    ]
    assert len(reads) == 2
    (columns,) = dak.report_necessary_columns(h).values()
    assert columns == frozenset({"Muon.pt", "w"})
    expected = hist.Hist(*AXES, storage=hist.storage.Weight()).fill(
        dataset="DY",
        pt=ak.flatten(data.Muon.pt),
        weight=ak.flatten(ak.broadcast_arrays(data.w, data.Muon.pt)[0]),
    )
    assert_hist_equal(h.compute(), expected)


def test_plain_dask_compute_of_several_hists_one_read_one_commit(
    tmp_path: Path, repo_path: Path
) -> None:
    """``dask.compute`` of two histograms, a ``hist.dask`` histogram and a
    dask-awkward scalar: one optimizer for all (so columns are projected over
    all of them), one fill task and one read per partition, ONE commit."""
    import hist.dask

    events, data = _events(tmp_path, seed=4)
    weight = hist.storage.Weight()
    pt = dh.Hist(*AXES, storage=weight, store=repo_path, path="pt")
    pt.fill(dataset="DY", pt=events.Muon.pt, weight=events.w)
    eta_axis = hist.axis.Regular(10, -5, 5, name="eta")
    eta = dh.Hist(eta_axis, storage=weight, store=repo_path, path="eta")
    eta.fill(eta=events.Muon.eta)
    hd: Any = hist.dask.Hist(hist.axis.Regular(20, 0, 100, name="pt"))
    hd.fill(pt=dak.flatten(events.Muon.pt))
    n_muons = ak.sum(dak.num(events.Muon.eta, axis=1))
    optimizers = {c.__dask_optimize__ for c in (pt, eta, hd, n_muons)}
    assert len(optimizers) == 1
    graph = dask.base.collections_to_dsk(  # type: ignore[attr-defined]  # stack B's dask (2025.3) has it
        [pt, eta, hd, n_muons], optimize_graph=True
    )

    def named(prefix: str) -> list[Any]:
        return [
            k
            for k in graph
            if str(k[0] if isinstance(k, tuple) else k).startswith(prefix)
        ]

    assert len(named("from-parquet")) == events.npartitions
    assert len(named("hizt-fill")) == events.npartitions
    s_pt, s_eta, h_pt, total = dask.compute(pt, eta, hd, n_muons)
    assert s_pt.snapshot_id == s_eta.snapshot_id
    assert _messages(repo_path) == [
        f"dask_hizt: fill 2 histograms from {2 * events.npartitions} input partitions",
        "Repository initialized",
    ]
    flat_pt = ak.flatten(data.Muon.pt)
    expected = hist.Hist(*AXES, storage=weight).fill(
        dataset="DY",
        pt=flat_pt,
        weight=ak.flatten(ak.broadcast_arrays(data.w, data.Muon.pt)[0]),
    )
    assert_hist_equal(s_pt, expected)
    eager_eta = hist.Hist(eta_axis, storage=weight).fill(ak.flatten(data.Muon.eta))
    assert_hist_equal(s_eta, eager_eta)
    assert h_pt == hist.Hist(hist.axis.Regular(20, 0, 100, name="pt")).fill(flat_pt)
    assert total == ak.sum(ak.num(data.Muon.eta))
