"""The group attributes of stored histograms are those of format version 1.

The literals below were written by the dask_hizt of before axes and
storages became typed records (``git show 4dc38b5``); the on-disk format
(docs/format.md) must not move by a byte: key order, ints against floats
and every ``writer_info`` entry included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boost_histogram as bh
import hist
import icechunk
import numpy as np
import pytest
import zarr

import dask_hizt as dh
from dask_hizt.schema import (
    STORAGES,
    AxisKind,
    AxisSpec,
    Schema,
    StorageKind,
    Transform,
    TransformKind,
)

# path -> (axes, storage, fill arguments); every axis kind, flow option,
# transform, growth, boost-histogram metadata and storage appears once
HISTOGRAMS: dict[str, tuple[list[Any], Any, dict[str, Any]]] = {
    "dense": (
        [
            hist.axis.Regular(10, -1, 1, name="a", label="A [GeV]"),
            hist.axis.Regular(4, 0, 1, underflow=False, overflow=False, name="b"),
            hist.axis.Regular(6, 0, 3, circular=True, name="c"),
            hist.axis.Variable([0, 0.5, 2, 10], name="d", overflow=False),
            hist.axis.Integer(-2, 5, name="e"),
        ],
        bh.storage.Weight(),
        {"a": 0.5, "b": 0.5, "c": 4.0, "d": 1.0, "e": 3, "weight": 2.0},
    ),
    "categories": (
        [
            hist.axis.Boolean(name="f"),
            hist.axis.IntCategory([3, 1, 7], name="g"),
            hist.axis.StrCategory(["x", "y"], name="h", overflow=False),
            hist.axis.StrCategory([], growth=True, name="dataset", label="DS"),
            hist.axis.IntCategory([], growth=True, name="run"),
        ],
        bh.storage.Int64(),
        {"f": True, "g": 7, "h": "y", "dataset": "QCD", "run": 12},
    ),
    "transforms": (
        [
            hist.axis.Regular(5, 1, 100, transform=hist.axis.transform.log, name="i"),
            hist.axis.Regular(5, 0, 9, transform=hist.axis.transform.sqrt, name="j"),
            hist.axis.Regular(
                5, 0.5, 4, transform=hist.axis.transform.Pow(2.5), name="k"
            ),
        ],
        bh.storage.Mean(),
        {"i": 10.0, "j": 4.0, "k": 2.0, "sample": 1.5},
    ),
    "boost": (
        [
            bh.axis.StrCategory(["DY", "QCD"], metadata="dataset"),
            bh.axis.Integer(0, 3, metadata=7),
            bh.axis.IntCategory([3, 1], metadata=True),
            bh.axis.Regular(4, -1, 1, metadata=0.5),
            bh.axis.Variable([0, 0.5, 2]),
        ],
        bh.storage.WeightedMean(),
        {"args": ("DY", 1, 3, 0.0, 1.0), "weight": 2.0, "sample": 3.0},
    ),
    "plain": ([hist.axis.Regular(3, 0, 1)], None, {"args": (0.5,)}),
}

ATTRS = {
    "dense": '{"uhi_schema": 1, "axes": [{"type": "regular", "lower": -1.0, "upper": 1.0, "bins": 10, "underflow": true, "overflow": true, "circular": false, "metadata": {"name": "a", "label": "A [GeV]"}}, {"type": "regular", "lower": 0.0, "upper": 1.0, "bins": 4, "underflow": false, "overflow": false, "circular": false, "metadata": {"name": "b", "label": ""}}, {"type": "regular", "lower": 0.0, "upper": 3.0, "bins": 6, "underflow": false, "overflow": true, "circular": true, "metadata": {"name": "c", "label": ""}}, {"type": "variable", "edges": [0.0, 0.5, 2.0, 10.0], "underflow": true, "overflow": false, "circular": false, "metadata": {"name": "d", "label": ""}}, {"type": "regular", "lower": -2, "upper": 5, "bins": 7, "underflow": true, "overflow": true, "circular": false, "writer_info": {"dask_hizt": {"kind": "integer"}}, "metadata": {"name": "e", "label": ""}}], "storage": {"type": "weighted"}, "dask_hizt": {"format_version": 1, "fields": ["value", "variance"], "chunks": [12, 4, 7, 4, 9]}}',
    "categories": '{"uhi_schema": 1, "axes": [{"type": "boolean", "metadata": {"name": "f", "label": ""}}, {"type": "category_int", "categories": [3, 1, 7], "flow": true, "metadata": {"name": "g", "label": ""}}, {"type": "category_str", "categories": ["x", "y"], "flow": false, "metadata": {"name": "h", "label": ""}}, {"type": "category_str", "categories": ["QCD"], "flow": false, "writer_info": {"dask_hizt": {"growth": true}}, "metadata": {"name": "dataset", "label": "DS"}}, {"type": "category_int", "categories": [12], "flow": false, "writer_info": {"dask_hizt": {"growth": true}}, "metadata": {"name": "run", "label": ""}}], "storage": {"type": "int"}, "dask_hizt": {"format_version": 1, "fields": ["value"], "chunks": [2, 4, 2, 1, 1]}}',
    "transforms": '{"uhi_schema": 1, "axes": [{"type": "variable", "edges": [1.0, 2.5118864315095806, 6.309573444801934, 15.848931924611136, 39.810717055349755, 100.00000000000004], "underflow": true, "overflow": true, "circular": false, "writer_info": {"dask_hizt": {"kind": "regular", "transform": "log", "bins": 5}}, "metadata": {"name": "i", "label": ""}}, {"type": "variable", "edges": [0.0, 0.3600000000000001, 1.4400000000000004, 3.2399999999999993, 5.760000000000002, 9.0], "underflow": true, "overflow": true, "circular": false, "writer_info": {"dask_hizt": {"kind": "regular", "transform": "sqrt", "bins": 5}}, "metadata": {"name": "j", "label": ""}}, {"type": "variable", "edges": [0.5, 2.11967291169788, 2.781746516798203, 3.2655707130412366, 3.66046060057982, 4.0], "underflow": true, "overflow": true, "circular": false, "writer_info": {"dask_hizt": {"kind": "regular", "transform": "pow", "power": 2.5, "bins": 5}}, "metadata": {"name": "k", "label": ""}}], "storage": {"type": "mean"}, "dask_hizt": {"format_version": 1, "fields": ["count", "value", "_sum_of_deltas_squared"], "chunks": [7, 7, 7]}}',
    "boost": '{"uhi_schema": 1, "axes": [{"type": "category_str", "categories": ["DY", "QCD"], "flow": true, "metadata": {"name": "", "label": "", "metadata": "dataset"}}, {"type": "regular", "lower": 0, "upper": 3, "bins": 3, "underflow": true, "overflow": true, "circular": false, "writer_info": {"dask_hizt": {"kind": "integer"}}, "metadata": {"name": "", "label": "", "metadata": 7}}, {"type": "category_int", "categories": [3, 1], "flow": true, "metadata": {"name": "", "label": "", "metadata": true}}, {"type": "regular", "lower": -1.0, "upper": 1.0, "bins": 4, "underflow": true, "overflow": true, "circular": false, "metadata": {"name": "", "label": "", "metadata": 0.5}}, {"type": "variable", "edges": [0.0, 0.5, 2.0], "underflow": true, "overflow": true, "circular": false, "metadata": {"name": "", "label": ""}}], "storage": {"type": "weighted_mean"}, "dask_hizt": {"format_version": 1, "fields": ["sum_of_weights", "sum_of_weights_squared", "value", "_sum_of_weighted_deltas_squared"], "chunks": [3, 5, 3, 6, 4]}}',
    "plain": '{"uhi_schema": 1, "axes": [{"type": "regular", "lower": 0.0, "upper": 1.0, "bins": 3, "underflow": true, "overflow": true, "circular": false, "metadata": {"name": "", "label": ""}}], "storage": {"type": "double"}, "dask_hizt": {"format_version": 1, "fields": ["value"], "chunks": [5]}}',
}


def fill_all(repo: Path) -> None:
    """Create and fill every histogram of :data:`HISTOGRAMS` in ``repo``."""
    hists = []
    for path, (axes, storage, kwargs) in HISTOGRAMS.items():
        h = dh.Hist(*axes, storage=storage, store=repo, path=path)
        named = {k: v for k, v in kwargs.items() if k != "args"}
        hists.append(h.fill(*kwargs.get("args", ()), **named))
    dh.compute(*hists, scheduler="sync")


def test_group_attrs_are_those_of_format_version_1(tmp_path: Path) -> None:
    fill_all(tmp_path / "repo")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    store = icechunk.Repository.open(storage).readonly_session("main").store
    for path, literal in ATTRS.items():
        attrs = zarr.open_group(store, path=path, mode="r").attrs.asdict()
        assert json.dumps(attrs) == literal, path


@pytest.mark.parametrize("path", list(ATTRS))
def test_stored_json_reads_back_to_the_same_bytes(path: str) -> None:
    doc = json.loads(ATTRS[path])
    meta = doc.pop("dask_hizt")
    schema = Schema.from_json(doc)
    assert json.dumps(schema.to_json()) == json.dumps(doc)
    assert list(schema.spec.fields) == meta["fields"]
    # the same axes as the hist axes they were written from (growing axes
    # have the categories their fills met)
    axes, storage, _ = HISTOGRAMS[path]
    Schema.from_axes(axes, storage).check_same(schema, path)
    assert schema.shape == tuple(a.extent for a in schema.hist_axes())
    for spec in schema.axes:
        assert AxisSpec.from_json(spec.to_json()) == spec
        assert AxisSpec.from_axis(spec.hist_axis()) == spec


def test_axis_records_say_what_each_axis_is() -> None:
    def kinds(path: str) -> list[AxisKind]:
        axes, storage, _ = HISTOGRAMS[path]
        return [a.kind for a in Schema.from_axes(axes, storage).axes]

    dense = [AxisKind.REGULAR] * 3 + [AxisKind.VARIABLE, AxisKind.INTEGER]
    assert kinds("dense") == dense
    assert kinds("transforms") == [AxisKind.REGULAR] * 3
    assert kinds("boost") == [
        AxisKind.STR_CATEGORY,
        AxisKind.INTEGER,
        AxisKind.INT_CATEGORY,
        AxisKind.REGULAR,
        AxisKind.VARIABLE,
    ]
    axes = Schema.from_json(json.loads(ATTRS["categories"])).axes
    assert [a.kind for a in axes] == [
        AxisKind.BOOLEAN,
        AxisKind.INT_CATEGORY,
        AxisKind.STR_CATEGORY,
        AxisKind.STR_CATEGORY,
        AxisKind.INT_CATEGORY,
    ]
    assert [a.is_category for a in axes] == [False, True, True, True, True]
    assert not any(a.is_dense for a in axes)
    assert [a.growth for a in axes] == [False, False, False, True, True]
    assert [a.extent for a in axes] == [2, 4, 2, 1, 1]
    assert axes[3].categories == ("QCD",)
    assert (axes[3].name, axes[3].label) == ("dataset", "DS")
    log = Schema.from_json(json.loads(ATTRS["transforms"])).axes[0]
    assert (log.size, log.extent, log.transform) == (5, 7, Transform(TransformKind.LOG))
    boost = Schema.from_json(json.loads(ATTRS["boost"])).axes
    assert [a.metadata for a in boost] == ["dataset", 7, True, 0.5, None]
    assert [a.name for a in boost] == [""] * 5


def test_unknown_axis_types_and_transforms_are_refused() -> None:
    with pytest.raises(dh.SchemaMismatchError, match="unknown axis type 'polar'"):
        AxisSpec.from_json({"type": "polar", "metadata": {"name": "r"}})
    with pytest.raises(dh.SchemaMismatchError, match="unknown axis transform 'exp'"):
        AxisSpec.from_json(
            {
                "type": "variable",
                "edges": [1.0, 2.0],
                "underflow": True,
                "overflow": True,
                "circular": False,
                "writer_info": {"dask_hizt": {"kind": "regular", "transform": "exp"}},
            }
        )


# storage -> single_field, takes_weight, takes_sample
STORAGE_TRAITS = {
    bh.storage.Double: (True, True, False),
    bh.storage.Int64: (True, False, False),
    bh.storage.Weight: (False, True, False),
    bh.storage.Mean: (False, False, True),
    bh.storage.WeightedMean: (False, True, True),
}


@pytest.mark.parametrize("storage", list(STORAGE_TRAITS), ids=lambda s: s.__name__)
def test_storage_records_say_what_fills_take(storage: Any, repo_path: Path) -> None:
    spec = STORAGES[storage]
    single, weight, sample = STORAGE_TRAITS[storage]
    assert (spec.single_field, spec.takes_weight, spec.takes_sample) == (
        single,
        weight,
        sample,
    )
    assert spec.algebra.mean is sample
    assert StorageKind(spec.uhi_type) is spec.kind
    # a single field is a plain view, others a structured one
    view = bh.Histogram(bh.axis.Regular(2, 0, 1), storage=storage()).view()
    assert (np.asarray(view).dtype.names is None) is single
    assert [f.shape for f in spec.unpack(view)] == [(2,)] * len(spec.fields)
    # fills are refused weight= and sample= as the record says
    axis = hist.axis.Regular(2, 0, 1, name="x")
    h = dh.Hist(axis, storage=storage(), store=repo_path, path="h")
    samples: dict[str, Any] = {"sample": [1.0]} if sample else {}
    if weight:
        h.fill(x=[0.5], weight=[2.0], **samples)
    else:
        with pytest.raises(dh.FillError, match="weight= cannot be used"):
            h.fill(x=[0.5], weight=[2.0], **samples)
    if sample:
        with pytest.raises(dh.FillError, match="needs sample="):
            h.fill(x=[0.5])
    else:
        with pytest.raises(dh.FillError, match="sample= is only for"):
            h.fill(x=[0.5], sample=[1.0])
