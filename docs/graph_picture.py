"""Draw docs/_static/graph.svg: the task graph of a real (small) compute.

Run from the repository's root after changing how graphs are built:

    uv run python docs/graph_picture.py

It builds the graph of a 1-D histogram filled from 16 input partitions with
4 owners and a fan-in of 4 (``dask_hizt.owners``, ``dask_hizt.split-every``),
without computing it, and draws every task as a dot, one column per step:
inputs, fill, each routing level, owners (write), commit. The picture is
committed, so building the docs needs neither this script nor graphviz.
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import matplotlib as mpl
import numpy as np
from dask.core import get_dependencies

import dask_hizt as dh

mpl.use("Agg")
from matplotlib.figure import Figure

OUT = Path(__file__).with_name("_static") / "graph.svg"
STEPS = {
    "array": ("input partitions", "#7f7f7f"),
    "hizt-fill": ("fill\n(partials)", "#1f77b4"),
    "hizt-route": ("route", "#ff7f0e"),
    "hizt-write": ("owners\n(read-add-write)", "#2ca02c"),
    "hizt-commit": ("ONE commit", "#d62728"),
}


def _graph(repo: Path) -> dict[Any, Any]:
    x = da.from_array(np.random.default_rng(0).normal(size=16_000), chunks=1_000)
    with dask.config.set({"dask_hizt.owners": 4, "dask_hizt.split-every": 4}):
        h = dh.Hist(
            hist.axis.Regular(400_000, -4, 4, name="x"), store=repo, path="x"
        ).fill(x=x)
        return dict(h.__dask_graph__())


def _column(key: Any, levels: int) -> tuple[int, str]:
    """Column and step of a task: inputs, fill, one column per routing
    level, owners, commit."""
    name = key[0] if isinstance(key, tuple) else key
    step = next((p for p in STEPS if name.startswith(p)), None)
    if step is None:
        msg = f"unexpected task {key!r}"
        raise ValueError(msg)
    column = {
        "array": 0,
        "hizt-fill": 1,
        "hizt-route": 1 + (int(key[1]) if step == "hizt-route" else 0),
        "hizt-write": 2 + levels,
        "hizt-commit": 3 + levels,
    }[step]
    return column, step


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dsk = _graph(Path(tmp) / "repo.icechunk")
    routes = [k for k in dsk if isinstance(k, tuple) and k[0].startswith("hizt-route")]
    levels = max((int(k[1]) for k in routes), default=0)
    columns: dict[int, list[Any]] = defaultdict(list)
    step_of: dict[Any, str] = {}
    for key in sorted(dsk, key=str):
        column, step = _column(key, levels)
        columns[column].append(key)
        step_of[key] = step
    where: dict[Any, tuple[float, float]] = {}
    for column, keys in columns.items():
        for i, key in enumerate(keys):
            where[key] = (column, 1 - (i + 0.5) / len(keys))

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for key in dsk:
        for dep in get_dependencies(dsk, key):
            (x0, y0), (x1, y1) = where[dep], where[key]
            ax.plot([x0, x1], [y0, y1], color="#bbbbbb", lw=0.6, zorder=1)
    for key, (x, y) in where.items():
        ax.scatter([x], [y], s=28, color=STEPS[step_of[key]][1], zorder=2)
    labelled: set[int] = set()
    for key, (x, _) in where.items():
        column = int(x)
        if column in labelled:
            continue
        labelled.add(column)
        step = step_of[key]
        label = STEPS[step][0]
        if step == "hizt-route":
            label = f"route\nlevel {column - 1}"
        ax.text(x, 1.04, label, ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.5, max(columns) + 0.5)
    ax.set_ylim(-0.02, 1.2)
    ax.axis("off")
    n_tasks = len(dsk)
    ax.set_title(
        f"16 partitions, 4 owners, fan-in 4: {n_tasks} tasks", fontsize=9, loc="left"
    )
    OUT.parent.mkdir(exist_ok=True)
    mpl.rcParams["svg.hashsalt"] = "dask-hizt"  # the same file on every run
    fig.savefig(OUT, format="svg", metadata={"Date": None})
    print(f"wrote {OUT} ({n_tasks} tasks)", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
