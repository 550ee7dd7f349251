"""The job of ``test_inputs.py``: input files read with dask's own readers and
filled into stored histograms, and the eager reference of each.

Run as a script, it is what a user's ``python script.py`` is: a fresh process
that builds the job from the files on disk and computes it::

    python tests/inputs_job.py KINDS REPOS DATA [--slow T] [--checkpoint K] [--concurrent]

``KINDS`` is a comma-separated list of input kinds (see :data:`KINDS`); each
fills histogram ``KIND`` in its own repository ``REPOS/KIND.icechunk``, from
the files that :func:`write_data` wrote under ``DATA``. The kinds run one after
another, on the threaded scheduler with 2 workers (``--concurrent``: each
in a thread of its own, all at once, with 1 worker each). Each
prints one JSON line as it ends: ``{"kind", "snapshot", "sum"}``, or
``{"kind", "error"}`` if it raised. ``--slow T`` makes every partition of a
kind sleep ``T / npartitions`` seconds (:func:`pause`, applied through
``map_partitions`` / ``map_blocks``), so that a kind takes about ``T``
seconds; ``--checkpoint K`` commits every ``K`` partitions.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import hist
import jobs
import numpy as np
import pandas as pd
import zarr

import dask_hizt as dh

#: Every input kind: what a job reads, and how.
KINDS = (
    "parquet",  # one file of several row groups, dd.read_parquet's defaults
    "parquet_row_groups",  # the same file, split_row_groups=True
    "parquet_dir",  # a directory of files, columns=["pt", "w"]
    "parquet_dir_column",  # one column of the directory: dask-expr fuses partitions
    "parquet_filters",  # filters=[...] on row-group statistics
    "parquet_filtered_series",  # ddf[ddf.ds == "B"].pt, filtered in dask
    "csv",  # a glob of CSV files, one partition per file
    "csv_blocks",  # the same glob, several partitions per file (blocksize)
    "zarr",  # a zarr v3 array, da.from_zarr
    "zarr_map_blocks",  # derived from it by map_blocks, with weights from a second array
    "npy_stack",  # da.from_npy_stack of a da.to_npy_stack directory
    "npy_load",  # da.from_array(np.load(...)), with weights
    "from_pandas",  # dd.from_pandas of a frame made in the script
    "from_array",  # da.from_array of an array made in the script
    "map_partitions",  # derived from a parquet column by map_partitions
)

AXIS = hist.axis.Regular(30, 0.0, 150.0, name="x")

# Sizes of the files (rows). pt ~ N(60, 50) puts entries in both flow bins;
# weights are 0.5, 1 or 2, so their sums (and sums of squares) are exact in
# any order.
FILE_ROWS = 32_000
ROW_GROUP = 2_000  # 16 row groups
FILTER_RUN = 8  # parquet_filters keeps the row groups of runs 8..15
DIR_FILES = 10
DIR_ROWS = 4_000
CSV_FILES = 4
CSV_ROWS = 5_000
CSV_BLOCKSIZE = 50_000  # bytes: several partitions per CSV file
ARRAY_ROWS = 40_000
ARRAY_CHUNK = 5_000
MADE_ROWS = 40_000  # from_pandas, from_array
MADE_PARTS = 8
# Two unrelated files with the same number of partitions (row groups) and
# different numbers of rows.
UNRELATED = {"a": (20_000, 5_000), "b": (10_000, 2_500)}


def frame(n: int, seed: int) -> pd.DataFrame:
    """Events: ``pt`` (float), ``w`` (0.5, 1 or 2), ``ds`` ("A"/"B"), ``run``
    (the row group of ``ROW_GROUP`` rows that a row is in)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pt": rng.normal(60.0, 50.0, n),
            "w": rng.choice([0.5, 1.0, 2.0], n),
            "ds": rng.choice(["A", "B"], n),
            "run": np.arange(n) // ROW_GROUP,
        }
    )


def made_frame() -> pd.DataFrame:
    """The frame that the from_pandas and from_array jobs make themselves."""
    return frame(MADE_ROWS, 5)


def write_data(root: Path) -> None:
    """Write every input file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    frame(FILE_ROWS, 1).to_parquet(root / "events.parquet", row_group_size=ROW_GROUP)
    (root / "dir").mkdir()
    for i in range(DIR_FILES):
        part = frame(DIR_ROWS, 10 + i)
        part.to_parquet(root / "dir" / f"part-{i:02d}.parquet")
    (root / "csv").mkdir()
    for i in range(CSV_FILES):
        part = frame(CSV_ROWS, 30 + i)
        part.to_csv(root / "csv" / f"part-{i}.csv", index=False)
    arrays = frame(ARRAY_ROWS, 2)
    group = zarr.open_group(root / "arrays.zarr", mode="w", zarr_format=3)
    for name in ("pt", "w"):
        a = group.create_array(
            name, shape=(ARRAY_ROWS,), chunks=(ARRAY_CHUNK,), dtype="float64"
        )
        a[:] = arrays[name].to_numpy()
    np.save(root / "pt.npy", arrays["pt"].to_numpy())
    np.save(root / "w.npy", arrays["w"].to_numpy())
    stack = da.from_array(arrays["pt"].to_numpy(), chunks=ARRAY_CHUNK)
    da.to_npy_stack(root / "stack", stack)
    for name, (rows, group_rows) in UNRELATED.items():
        frame(rows, 40 + len(name) + rows).to_parquet(
            root / f"{name}.parquet", row_group_size=group_rows
        )


def pause(part: Any, seconds: float) -> Any:
    """Sleep, then return the partition unchanged (slows a job down)."""
    time.sleep(seconds)
    return part


def transform(x: Any) -> Any:
    """The derivation of the map_partitions and map_blocks inputs."""
    return 2.0 * x - 40.0


@dataclass(frozen=True)
class Job:
    """What one kind fills: ``x``, an optional ``weight``, into ``storage``."""

    x: Any
    weight: Any
    storage: Any


def _slowed(coll: Any, seconds: float) -> Any:
    if not seconds:
        return coll
    if isinstance(coll, da.Array):
        return da.map_blocks(pause, coll, seconds, dtype=coll.dtype, meta=coll._meta)
    return coll.map_partitions(pause, seconds, meta=coll._meta)


def build(kind: str, data: Path, slow: float = 0.0) -> Job:
    """The dask collections of a kind's job; each partition sleeps ``slow`` s.

    The sleep is applied after the columns are chosen, so that dask-expr
    still reads (and fuses) as it would without it.
    """
    one = str(data / "events.parquet")
    directory = str(data / "dir")
    csv = str(data / "csv" / "*.csv")
    weight, counts = hist.storage.Weight(), hist.storage.Int64()

    def frame_job(ddf: Any, storage: Any, *, weighted: bool = True) -> Job:
        ddf = _slowed(ddf[["pt", "w"] if weighted else ["pt"]], slow)
        return Job(ddf.pt, ddf.w if weighted else None, storage)

    if kind == "parquet":
        return frame_job(dd.read_parquet(one), weight)
    if kind == "parquet_row_groups":
        return frame_job(dd.read_parquet(one, split_row_groups=True), weight)
    if kind == "parquet_dir":
        return frame_job(dd.read_parquet(directory, columns=["pt", "w"]), weight)
    if kind == "parquet_dir_column":
        ddf = dd.read_parquet(directory, columns=["pt"])
        return frame_job(ddf, counts, weighted=False)
    if kind == "parquet_filters":
        ddf = dd.read_parquet(
            one, split_row_groups=True, filters=[("run", ">=", FILTER_RUN)]
        )
        return frame_job(ddf, hist.storage.Double())
    if kind == "parquet_filtered_series":
        ddf = _slowed(dd.read_parquet(directory)[["pt", "w", "ds"]], slow)
        selected = ddf[ddf.ds == "B"]
        return Job(selected.pt, selected.w, weight)
    if kind == "csv":
        return frame_job(dd.read_csv(csv), counts, weighted=False)
    if kind == "csv_blocks":
        return frame_job(dd.read_csv(csv, blocksize=CSV_BLOCKSIZE), weight)
    arrays = str(data / "arrays.zarr")
    if kind == "zarr":
        return Job(_slowed(da.from_zarr(arrays, component="pt"), slow), None, counts)
    if kind == "zarr_map_blocks":
        x = _slowed(da.from_zarr(arrays, component="pt"), slow)
        x = x.map_blocks(transform, dtype=x.dtype)
        return Job(x, da.from_zarr(arrays, component="w"), hist.storage.Double())
    if kind == "npy_stack":
        return Job(_slowed(da.from_npy_stack(data / "stack"), slow), None, counts)
    if kind == "npy_load":
        x = da.from_array(np.load(data / "pt.npy"), chunks=ARRAY_CHUNK)
        w = da.from_array(np.load(data / "w.npy"), chunks=ARRAY_CHUNK)
        return Job(_slowed(x, slow), w, weight)
    if kind == "from_pandas":
        return frame_job(dd.from_pandas(made_frame(), npartitions=MADE_PARTS), weight)
    if kind == "from_array":
        x = da.from_array(made_frame().pt.to_numpy(), chunks=MADE_ROWS // MADE_PARTS)
        return Job(_slowed(x, slow), None, counts)
    if kind == "map_partitions":
        ddf = _slowed(dd.read_parquet(directory)[["pt", "w"]], slow)
        x = ddf.pt.map_partitions(transform, meta=ddf.pt._meta)
        return Job(x, ddf.w, hist.storage.Double())
    msg = f"unknown input kind {kind!r}"
    raise ValueError(msg)


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    return arr


def read_eager(kind: str, data: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The same data as :func:`build`'s, read with pandas / numpy / zarr."""
    one = data / "events.parquet"
    directory = sorted((data / "dir").glob("*.parquet"))
    csv = sorted((data / "csv").glob("*.csv"))
    whole = pd.concat([pd.read_parquet(p) for p in directory])
    csvs = pd.concat([pd.read_csv(p) for p in csv])
    group = zarr.open_group(data / "arrays.zarr", mode="r")
    frames: dict[str, Callable[[], pd.DataFrame]] = {
        "parquet": lambda: pd.read_parquet(one),
        "parquet_row_groups": lambda: pd.read_parquet(one),
        "parquet_dir": lambda: whole,
        "parquet_filters": lambda: pd.read_parquet(
            one, filters=[("run", ">=", FILTER_RUN)]
        ),
        "parquet_filtered_series": lambda: whole[whole.ds == "B"],
        "csv_blocks": lambda: csvs,
        "from_pandas": made_frame,
    }
    if kind in frames:
        df = frames[kind]()
        return df.pt.to_numpy(), df.w.to_numpy()
    if kind == "parquet_dir_column":
        return whole.pt.to_numpy(), None
    if kind == "csv":
        return csvs.pt.to_numpy(), None
    if kind == "zarr":
        return np.asarray(_array(group, "pt")[:]), None
    if kind == "zarr_map_blocks":
        pt, w = _array(group, "pt"), _array(group, "w")
        return transform(np.asarray(pt[:])), np.asarray(w[:])
    if kind == "npy_stack":
        files = sorted((data / "stack").glob("*.npy"), key=lambda p: int(p.stem))
        return np.concatenate([np.load(p) for p in files]), None
    if kind == "npy_load":
        return np.load(data / "pt.npy"), np.load(data / "w.npy")
    if kind == "from_array":
        return made_frame().pt.to_numpy(), None
    if kind == "map_partitions":
        return transform(whole.pt.to_numpy()), whole.w.to_numpy()
    msg = f"unknown input kind {kind!r}"
    raise ValueError(msg)


def eager(kind: str, data: Path) -> hist.Hist[Any]:
    """The eager hist.Hist of a kind's job."""
    x, w = read_eager(kind, data)
    h = hist.Hist(AXIS, storage=build(kind, data).storage)
    return h.fill(x) if w is None else h.fill(x, weight=w)


def npartitions(coll: Any) -> int:
    """Partitions of a collection as it will run (dask-expr optimized)."""
    if isinstance(coll, da.Array):
        return len(coll.chunks[0])
    return int(coll.optimize().npartitions)


def make_hist(kind: str, data: Path, store: Any, slow: float = 0.0) -> dh.Hist:
    """The lazy histogram of a kind's job, filled; each partition sleeps ``slow`` s."""
    job = build(kind, data, slow)
    h = dh.Hist(AXIS, storage=job.storage, store=store, path=kind)
    if job.weight is None:
        return h.fill(x=job.x)
    return h.fill(x=job.x, weight=job.weight)


def total(h: Any) -> float:
    """A histogram's sum of values, flow bins included."""
    s = h.sum(flow=True)
    return float(getattr(s, "value", s))


def run(
    kind: str,
    repos: Path,
    data: Path,
    *,
    slow: float,
    checkpoint: int | None,
    workers: int,
) -> dict[str, Any]:
    """Compute one kind's job; its JSON report."""
    try:
        # partitions counted as they will run: with the pause applied
        seconds = slow / npartitions(build(kind, data, 1.0).x) if slow else 0.0
        h = make_hist(kind, data, repos / f"{kind}.icechunk", seconds)
        stored = h.compute(
            checkpoint=checkpoint, scheduler="threads", num_workers=workers
        )
        return {
            "kind": kind,
            "snapshot": stored.snapshot_id,
            "sum": total(stored.to_hist()),
        }
    except Exception as e:  # noqa: BLE001  # reported, the other kinds go on
        traceback.print_exc()
        return {"kind": kind, "error": f"{type(e).__name__}: {e}"[:500]}


def main(argv: list[str] | None = None) -> int:
    """Run the job; the number of kinds that failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", help="comma-separated input kinds")
    parser.add_argument("repos", type=Path, help="directory of the repositories")
    parser.add_argument("data", type=Path, help="directory of the input files")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds per kind")
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--concurrent", action="store_true")
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
        )

    return jobs.run_each(args.kinds.split(","), one, concurrent=args.concurrent)


if __name__ == "__main__":
    faulthandler.enable()
    sys.path.insert(0, str(Path(__file__).parent))
    # through the module's own name, so that pause and transform tokenize as
    # inputs_job.pause / inputs_job.transform, as in the tests' process
    import inputs_job

    failures = inputs_job.main()
    sys.stdout.flush()
    sys.stderr.flush()
    # icechunk's runtime threads can crash in interpreter finalization
    os._exit(1 if failures else 0)
