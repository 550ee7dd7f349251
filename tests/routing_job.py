"""The job of ``test_routing.py``: histograms filled from files on disk, and
what the graph that ``dask.compute`` runs routes and writes.

Run as a script, it is a user's ``python script.py``: a fresh process that
reads the files that ``inputs_job.write_data`` wrote under ``DATA``::

    python tests/routing_job.py CASE REPOS DATA [--add]

It prints one JSON line, ``{"kind": CASE, "fills", "routes", "writes"}`` (or
``{"kind", "error"}``): the fill and routing tasks of the optimized graph, and
per write (owner) task the repository, the histogram paths it writes and the
fill layers it takes partials from. Cases (:data:`CASES`):

- ``small``: one small histogram (``inputs_job.AXIS``) from the parquet
  directory, in ``REPOS/small.icechunk``;
- ``two_repos``: the parquet directory into ``REPOS/a.icechunk`` and the CSV
  blocks into ``REPOS/b.icechunk``, computed together;
- ``ids``: the ``.npy`` array (``np.load``) with ``partition_ids``, path ``x``
  of ``REPOS/ids.icechunk``; ``--add`` also fills path ``y`` there from the
  zarr array (``da.from_zarr``), with its own ``partition_ids``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import numpy as np
from dask.core import get_dependencies
from dask.utils import key_split
from inputs_job import ARRAY_CHUNK, AXIS, build, read_eager

import dask_hizt as dh
from dask_hizt._graph import Guarded
from dask_hizt._write import Owner

CASES = ("small", "two_repos", "ids")


def hists(case: str, repos: Path, data: Path, *, add: bool) -> dict[str, dh.Hist]:
    """The filled lazy histograms of a case, by ``repository/path``."""
    if case == "small":
        job = build("parquet_dir", data)
        h = dh.Hist(AXIS, storage=job.storage, store=repos / "small.icechunk", path="x")
        return {"small/x": h.fill(job.x, weight=job.weight)}
    if case == "two_repos":
        a, b = build("parquet_dir", data), build("csv_blocks", data)
        ha = dh.Hist(AXIS, storage=a.storage, store=repos / "a.icechunk", path="x")
        hb = dh.Hist(AXIS, storage=b.storage, store=repos / "b.icechunk", path="y")
        return {
            "a/x": ha.fill(a.x, weight=a.weight),
            "b/y": hb.fill(b.x, weight=b.weight),
        }
    if case == "ids":
        store = repos / "ids.icechunk"
        x = da.from_array(np.load(data / "pt.npy"), chunks=ARRAY_CHUNK)
        hx = dh.Hist(AXIS, storage=hist.storage.Int64(), store=store, path="x")
        out = {"ids/x": hx.fill(x, partition_ids=_ids("pt.npy", x))}
        if add:
            y = da.from_zarr(str(data / "arrays.zarr"), component="pt")
            hy = dh.Hist(AXIS, storage=hist.storage.Int64(), store=store, path="y")
            out["ids/y"] = hy.fill(y, partition_ids=_ids("arrays.zarr/pt", y))
        return out
    msg = f"unknown case {case!r}"
    raise ValueError(msg)


def _ids(name: str, x: da.Array) -> list[str]:
    return [f"{name}[{i}]" for i in range(x.npartitions)]


def eager(key: str, data: Path) -> hist.Hist[Any]:
    """The eager hist.Hist of one histogram of :func:`hists`."""
    kind = {
        "small/x": "parquet_dir",
        "a/x": "parquet_dir",
        "b/y": "csv_blocks",
        "ids/x": "npy_load",
        "ids/y": "zarr",
    }[key]
    x, w = read_eager(kind, data)
    storage = (
        hist.storage.Int64() if key.startswith("ids/") else build(kind, data).storage
    )
    h = hist.Hist(AXIS, storage=storage)
    return h.fill(x) if w is None or key.startswith("ids/") else h.fill(x, weight=w)


def optimized_graph(*objs: Any) -> Mapping[Any, Any]:
    """The graph that ``dask.compute(*objs)`` runs."""
    colls, _ = dask.base.unpack_collections(*objs)
    if hasattr(dask.base, "collections_to_dsk"):  # stack B's dask (2025.3)
        return dict(dask.base.collections_to_dsk(colls, optimize_graph=True))
    expr = dask.base.collections_to_expr(list(colls)).optimize()
    return dict(expr.__dask_graph__())


def _guarded(task: Any) -> Guarded | None:
    fn = getattr(task, "func", None)
    if fn is None and isinstance(task, tuple) and task:
        fn = task[0]
    return fn if isinstance(fn, Guarded) else None


def structure(graph: Mapping[Any, Any]) -> dict[str, Any]:
    """The fill, routing and write tasks of a graph (see the module docstring)."""
    seen: dict[Any, frozenset[str]] = {}

    def fill_layers(key: Any) -> frozenset[str]:
        if key not in seen:
            if key_split(key) == "hizt-fill":
                seen[key] = frozenset({str(key[0])})
            else:
                below = [fill_layers(d) for d in get_dependencies(graph, key)]
                seen[key] = frozenset().union(*below)
        return seen[key]

    writes = []
    for key, task in graph.items():
        g = _guarded(task)
        if g is not None and isinstance(g.fn, Owner):
            direct = get_dependencies(graph, key)
            writes.append(
                {
                    "store": Path(g.store).name,
                    "paths": sorted({s.path for s in g.fn.segments}),
                    "fill_layers": sorted(fill_layers(key)),
                    "direct_fills": sum(key_split(d) == "hizt-fill" for d in direct),
                }
            )
    return {
        "fills": sum(key_split(k) == "hizt-fill" for k in graph),
        "routes": sum(key_split(k) == "hizt-route" for k in graph),
        "writes": sorted(writes, key=lambda w: (w["store"], w["paths"])),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job; 1 if it failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=CASES)
    parser.add_argument("repos", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--add", action="store_true")
    args = parser.parse_args(argv)
    try:
        hs = hists(args.case, args.repos, args.data, add=args.add)
        report = {"kind": args.case, **structure(optimized_graph(*hs.values()))}
        dask.compute(*hs.values(), scheduler="threads", num_workers=2)
    except Exception as e:  # noqa: BLE001  # reported to the test
        traceback.print_exc()
        report = {"kind": args.case, "error": f"{type(e).__name__}: {e}"[:500]}
    print(json.dumps(report), flush=True)
    return int("error" in report)


if __name__ == "__main__":
    faulthandler.enable()
    sys.path.insert(0, str(Path(__file__).parent))
    import routing_job  # tokenize as in the tests' process

    sys.exit(routing_job.main())
