"""Provenance identities of dask-awkward partitions (``_awkward_where``).

Every recognised input (uproot both ways, coffea both ways, parquet both
ways) is built here and in a fresh Python process by the same function,
:func:`build`, and must give the same strings there, although dask names
its layers differently in each process. Needs dask-awkward >= 2025.9 and
coffea (stack B, see the README); skipped on stack A.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask.blockwise import BlockIndex
from nanoaod import (  # noqa: F401 - fixtures
    ReadLog,
    fileset,
    nanoaod_files,
    write_nanoaod,
)

from dask_hizt._awkward_where import awkward_where

dak = pytest.importorskip("dask_awkward", minversion="2025.9")
pytest.importorskip("coffea")
ak = pytest.importorskip("awkward")
uproot = pytest.importorskip("uproot")

TESTS = Path(__file__).parent


def build(
    root_files: dict[str, Path], parquet_dir: Path, schema: Any
) -> tuple[dict[str, Any], Any]:
    """Every recognised kind of input, and collections derived from them.

    Returns ``({kind: collection}, preprocessed fileset)``. The uproot and
    coffea reads all use the entry ranges coffea's ``preprocess`` chose, so
    the same partitions are read four ways.
    """
    from coffea.dataset_tools import apply_to_fileset, preprocess
    from coffea.nanoevents import NanoEventsFactory

    available, _ = preprocess(fileset(root_files), step_size=10_000)
    spec = {
        str(path): {
            "object_path": "Events",
            "steps": available[name].files[str(path)].steps,
        }
        for name, path in root_files.items()
    }
    events = NanoEventsFactory.from_root(spec, mode="dask", schemaclass=schema).events()
    by_dataset = apply_to_fileset(
        lambda ev: {"events": ev}, available, schemaclass=schema
    )
    out = {
        "uproot open_files=True": uproot.dask(spec),
        "uproot step_size": uproot.dask(
            {str(p): "Events" for p in root_files.values()}, step_size=7_000
        ),
        "uproot open_files=False": uproot.dask(spec, open_files=False),
        "uproot steps_per_file": uproot.dask(
            {str(p): "Events" for p in root_files.values()},
            open_files=False,
            steps_per_file=2,
        ),
        "coffea from_root": events,
        "parquet files": dak.from_parquet(str(parquet_dir)),
        # one file: of a directory without _metadata, dask-awkward 2026.2's
        # row-group-wise read makes partitions of the first file's row groups only
        "parquet row groups": dak.from_parquet(
            str(parquet_dir / "part0.parquet"), split_row_groups=True
        ),
        "muon pt": events.Muon.pt,
        "muon pt > 20": events.Muon[events.Muon.pt > 20].pt,
        "ak.num": ak.num(events.Muon),
        "partitions [1, 3]": events.partitions[[1, 3]],
    }
    for name, o in by_dataset.items():
        out[f"apply_to_fileset {name}"] = o["events"]
    return out, available


def write_parquet(directory: Path, n_files: int = 3, seed: int = 0) -> Path:
    """``n_files`` parquet files of 10 events in row groups of 4."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        counts = rng.integers(0, 3, 10)
        data = ak.Array(
            {
                "x": np.arange(10 * i, 10 * i + 10),
                "pt": ak.unflatten(rng.exponential(20, int(counts.sum())), counts),
            }
        )
        ak.to_parquet(data, directory / f"part{i}.parquet", row_group_size=4)
    return directory


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("parquet"))


@pytest.fixture(scope="module")
def built(
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
    parquet_dir: Path,
) -> tuple[dict[str, Any], Any]:
    """:func:`build` once for the module (it runs coffea's preprocess). As the
    ``nanoaod_schema`` fixture, but for the module: the schema warns (an
    error here) about the cross-references these files lack, while it builds
    the events only."""
    from coffea.nanoevents import NanoAODSchema

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NanoAODSchema, "warn_missing_crossrefs", False)
        return build(nanoaod_files, parquet_dir, NanoAODSchema)


def where_in_fresh_process(code: str, **env: str) -> Any:
    """Run ``code`` in a new interpreter; it prints one JSON value, returned here."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=TESTS,
        env={**os.environ, "PYTHONPATH": str(TESTS), **env},
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_same_strings_in_a_fresh_process(
    built: tuple[dict[str, Any], Any],
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
    parquet_dir: Path,
) -> None:
    colls, _ = built
    here = {kind: awkward_where(c) for kind, c in colls.items()}
    for kind, ids in here.items():
        assert ids is not None, kind
        assert len(ids) == colls[kind].npartitions, kind
        assert len(set(ids)) == len(ids), kind
    code = f"""
import json, sys, warnings
import dask_hizt._awkward_where as where
# the module imports without dask-awkward or uproot
assert "dask_awkward" not in sys.modules and "uproot" not in sys.modules
from coffea.nanoevents import NanoAODSchema
from test_awkward_where import build
from pathlib import Path
NanoAODSchema.warn_missing_crossrefs = False
files = {{k: Path(v) for k, v in {json.dumps({k: str(v) for k, v in nanoaod_files.items()})}.items()}}
colls, _ = build(files, Path({str(parquet_dir)!r}), NanoAODSchema)
print(json.dumps({{
    "ids": {{k: where.awkward_where(c) for k, c in colls.items()}},
    "names": {{k: c.name for k, c in colls.items()}},
}}))
"""
    there = where_in_fresh_process(code, PYTHONHASHSEED="12345")
    assert there["ids"] == here
    # what makes the test worth running: the dask names are not the same
    assert there["names"] != {kind: c.name for kind, c in colls.items()}


def test_the_format_of_each_kind(
    built: tuple[dict[str, Any], Any],
    nanoaod_files: dict[str, Path],  # noqa: F811 - the fixture
    parquet_dir: Path,
) -> None:
    colls, available = built
    expected = {
        name: [
            f'root:file="{p.name}",tree="Events",entries={start}-{stop}'
            for start, stop in available[name].files[str(p)].steps
        ]
        for name, p in nanoaod_files.items()
    }
    everything = [s for name in nanoaod_files for s in expected[name]]
    assert awkward_where(colls["uproot open_files=True"]) == everything
    assert awkward_where(colls["uproot open_files=False"]) == everything
    assert awkward_where(colls["coffea from_root"]) == everything
    for name in nanoaod_files:
        assert awkward_where(colls[f"apply_to_fileset {name}"]) == expected[name]

    f = {name: p.name for name, p in nanoaod_files.items()}
    assert awkward_where(colls["uproot step_size"]) == [
        f'root:file="{f[name]}",tree="Events",entries={a}-{b}'
        for name, stops in [
            ("DYJets", [0, 7000, 14000, 21000, 28000, 30000]),
            ("TTbar", [0, 7000, 14000, 21000, 24000]),
        ]
        for a, b in itertools.pairwise(stops)
    ]
    assert awkward_where(colls["uproot steps_per_file"]) == [
        f'root:file="{f[name]}",tree="Events",step={i}/2'
        for name in nanoaod_files
        for i in range(2)
    ]
    assert awkward_where(colls["parquet files"]) == [
        f'parquet:file="part{i}.parquet",row_groups=all' for i in range(3)
    ]
    assert awkward_where(colls["parquet row groups"]) == [
        f'parquet:file="part0.parquet",row_groups=[{i}]' for i in range(3)
    ]
    del parquet_dir


def test_derived_collections_keep_their_partitions_strings(
    built: tuple[dict[str, Any], Any],
) -> None:
    colls, _ = built
    events = awkward_where(colls["coffea from_root"])
    assert events is not None
    assert awkward_where(colls["muon pt"]) == events
    assert awkward_where(colls["muon pt > 20"]) == events
    assert awkward_where(colls["ak.num"]) == events
    assert awkward_where(colls["partitions [1, 3]"]) == [events[1], events[3]]
    ev = colls["coffea from_root"]
    assert awkward_where(ev.partitions[2:4].Muon.pt * 2) == events[2:4]
    assert awkward_where(dak.sum(ev.Muon.pt, axis=1)) == events
    assert awkward_where(ev.Muon.pt / ev.genWeight) == events
    meta = ev.genWeight._meta
    # a constant from the client in each partition's task, a dask.delayed
    # value, the partition's number
    assert (
        awkward_where(ev.genWeight.map_partitions(lambda w, f: w * f, 2.0, meta=meta))
        == events
    )
    factor = dask.delayed(float)("2")
    assert (
        awkward_where(
            dak.map_partitions(lambda w, f: w * f, ev.genWeight, factor, meta=meta)
        )
        == events
    )
    number = BlockIndex((ev.npartitions,))
    assert (
        awkward_where(
            dak.map_partitions(lambda w, i: w + i[0], ev.genWeight, number, meta=meta)
        )
        == events
    )


def test_several_input_layers_are_combined(
    built: tuple[dict[str, Any], Any],
) -> None:
    colls, _ = built
    events = colls["coffea from_root"]
    plain = colls["uproot open_files=True"]
    pq = colls["parquet files"]
    ids_e = awkward_where(events)
    ids_pq = awkward_where(pq)
    assert ids_e is not None
    assert ids_pq is not None
    # two reads of the same entries (coffea and plain uproot): one component
    both = dak.zip({"a": events.Muon.pt, "b": plain.Muon_pt}, depth_limit=1)
    assert awkward_where(both) == ids_e
    # two different inputs: a sorted JSON array of both strings
    three = events.partitions[:3]
    zipped = dak.zip({"pt": three.Muon.pt, "x": pq.x}, depth_limit=1)
    combined = awkward_where(zipped)
    assert combined == [
        json.dumps(sorted([ids_pq[i], ids_e[i]]), separators=(",", ":"))
        for i in range(3)
    ]
    assert [json.loads(s) for s in combined] == [
        [ids_pq[i], ids_e[i]] for i in range(3)
    ]
    # partitions put one after another keep theirs
    cat = dak.concatenate([three.Muon.pt, events.partitions[4:].Muon.pt])
    assert awkward_where(cat) == ids_e[:3] + ids_e[4:]


NOT_PARTITIONWISE: dict[str, Callable[[Any], Any]] = {
    "repartition n_to_one": lambda ev: ev.repartition(n_to_one=2),
    "repartition npartitions": lambda ev: ev.repartition(npartitions=2),
    "slice along events": lambda ev: ev[100:20_000],
    "one event": lambda ev: ev[5],
    "reduction": lambda ev: dak.sum(ev.genWeight),
    "reduction of a column": lambda ev: dak.sum(ev.Muon.pt, axis=0),
    "a global maximum in each partition": lambda ev: ev.Muon.pt / dak.max(ev.Muon.pt),
    "the same partitions twice": lambda ev: dak.concatenate([ev, ev]),
    "one partition twice": lambda ev: ev.partitions[[0, 0]],
    "zip with shifted partitions": lambda ev: dak.zip(
        {
            "a": ev.partitions[[0, 1]].genWeight,
            "b": ev.partitions[[1, 2]].genWeight,
        }
    ),
    "a dask array in each partition": lambda ev: dak.map_partitions(
        lambda w, _x: w,
        ev.genWeight,
        da.ones(54_000, chunks=((10_000,) * 3 + (12_000,) * 2,)),
        meta=ev.genWeight._meta,
    ),
    "zip with from_awkward": lambda ev: dak.zip(
        {
            "a": ev.genWeight,
            "b": dak.from_awkward(ak.Array(np.ones(54_000)), npartitions=5),
        }
    ),
}


@pytest.mark.parametrize("derive", NOT_PARTITIONWISE.values(), ids=NOT_PARTITIONWISE)
def test_not_partitionwise_gives_none(
    built: tuple[dict[str, Any], Any],
    derive: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = built[0]["coffea from_root"]
    assert events.npartitions == 5
    coll = derive(events)
    with caplog.at_level(logging.DEBUG, logger="dask_hizt._awkward_where"):
        assert awkward_where(coll) is None
    assert_refused_not_failed(caplog)


def assert_refused_not_failed(caplog: pytest.LogCaptureFixture) -> None:
    """None came from a check of the walk, not from an exception it swallowed."""
    assert caplog.records
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def _unknown_read(i: int) -> Any:
    return ak.Array([i, i + 1])


@pytest.mark.parametrize(
    "coll",
    [
        pytest.param(
            lambda: dak.from_awkward(ak.Array([1, 2, 3]), npartitions=2), id="awkward"
        ),
        pytest.param(lambda: dak.from_map(_unknown_read, [1, 2, 3]), id="from_map"),
        pytest.param(lambda: dak.from_lists([[1, 2], [3]]), id="from_lists"),
        pytest.param(lambda: np.arange(3), id="numpy"),
        pytest.param(lambda: "events", id="str"),
        pytest.param(lambda: None, id="None"),
    ],
)
def test_unrecognised_inputs_give_none(
    coll: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    c = coll()
    with caplog.at_level(logging.DEBUG, logger="dask_hizt._awkward_where"):
        assert awkward_where(c) is None
    assert_refused_not_failed(caplog)


def test_what_reads_the_same_data_again_keeps_its_strings(tmp_path: Path) -> None:
    """The strings only tell apart partitions of equal content (the content
    digest is the rest of an identity): a file written again, copied or read
    from another directory keeps them; other entries change them."""
    root = write_nanoaod(tmp_path / "a.root", 3_000, 7, basket_size=1_000)
    pq_dir = write_parquet(tmp_path / "pq", n_files=1)
    pq = pq_dir / "part0.parquet"

    def reads(root: Path, pq: Path) -> list[list[str] | None]:
        return [
            awkward_where(uproot.dask({str(root): "Events"}, step_size=1_000)),
            awkward_where(uproot.dask({str(root): "Events"}, open_files=False)),
            awkward_where(dak.from_parquet(str(pq))),
            awkward_where(dak.from_parquet(str(pq), split_row_groups=True)),
        ]

    before = reads(root, pq)
    assert all(ids is not None for ids in before)
    other = awkward_where(uproot.dask({str(root): "Events"}, step_size=1_500))
    assert other is not None
    assert set(other).isdisjoint(before[0] or [])
    # written again (a new ROOT UUID, a new mtime), and copied elsewhere
    write_nanoaod(root, 3_000, 7, basket_size=1_000)
    write_parquet(pq_dir, n_files=1)
    assert reads(root, pq) == before
    copies = tmp_path / "copy"
    (copies / "pq").mkdir(parents=True)
    shutil.copy(root, copies / "a.root")
    shutil.copy(pq, copies / "pq" / "part0.parquet")
    assert reads(copies / "a.root", copies / "pq" / "part0.parquet") == before
    # and a fresh process says the same
    code = f"""
import json, dask_awkward as dak, uproot
from dask_hizt._awkward_where import awkward_where
root, pq = {str(root)!r}, {str(pq)!r}
print(json.dumps([
    awkward_where(uproot.dask({{root: "Events"}}, step_size=1_000)),
    awkward_where(uproot.dask({{root: "Events"}}, open_files=False)),
    awkward_where(dak.from_parquet(pq)),
    awkward_where(dak.from_parquet(pq, split_row_groups=True)),
]))
"""
    assert where_in_fresh_process(code) == before


def test_file_names_of_urls() -> None:
    from dask_hizt._awkward_where import _file_name

    assert _file_name("root://eos.cern.ch//store/mc/a.root") == "a.root"
    assert _file_name("file:///data/x/b.root") == "b.root"
    assert _file_name("/data/x/c.parquet") == "c.parquet"
    assert _file_name("s3://bucket/dir/") is None
    assert _file_name(None) is None


def test_no_file_is_opened(
    built: tuple[dict[str, Any], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uproot.reading import ReadOnlyFile

    colls, _ = built
    opened: list[str] = []
    original = ReadOnlyFile.__init__

    def init(self: Any, file_path: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(str(file_path))
        original(self, file_path, *args, **kwargs)

    monkeypatch.setattr(ReadOnlyFile, "__init__", init)
    log = ReadLog(tmp_path / "reads.jsonl")
    with log.local():
        for kind, coll in colls.items():
            assert awkward_where(coll) is not None, kind
    assert log.records() == []
    assert opened == []


def test_dask_aliases_are_followed() -> None:
    from dask._task_spec import Alias

    from dask_hizt._awkward_where import _alias_target

    assert _alias_target(Alias(("new", 0), ("old", 3))) == ("old", 3)
    assert _alias_target(("old", 3)) == ("old", 3)
    assert _alias_target((len, ("old", 3))) is None
