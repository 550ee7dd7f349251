"""Per-chunk cost of the owners' read-add-write, path by path.

Run ``uv run python benchmarks/chunk_io.py [--quick] [--repeat N]
[--storage local|memory]``. See benchmarks/README.md ("Chunk I/O").

For each chunk size (raw bytes of one float64 chunk) and density, an
owner's write (``dask_hizt._write._write``) of N touched chunks of a 1-D
Double histogram is timed in a fresh fork of a local icechunk repository
(``--storage memory``: icechunk's in-memory storage, the in-process part
only), by each path:

* ``zarr``: chunks read and written through zarr's async API
  (``_write(..., raw=False)``, the path before issue 6);
* ``raw``: the store's own ``get``/``set``/``delete`` of the chunk keys, with
  the array's codecs (from its metadata) applied by hand (the default);
* ``fused``: the zarr path with zarr's ``FusedCodecPipeline``;
* ``zarrs``: the zarr path with ``zarrs.ZarrsCodecPipeline`` configured, if
  the ``zarrs`` package is installed (it refuses icechunk's store; zarr then
  falls back to its default pipeline, which the output records).

Reading the whole array back (what ``to_hist`` does) is timed too, through
zarr and through the raw path of ``dask_hizt._read``.

``codec`` is the codecs' own time per chunk (zstd decode of the stored
bytes, encode of the new chunk, measured alone in one thread), and the
overhead is a path's time per chunk minus it. Chunk writes run one at a
time (``write-concurrency`` 1: the cost of one chunk) and
``write-concurrency`` 16 (the default: time per chunk of a busy owner).
Methods run interleaved, round by round; the table shows medians.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("ICECHUNK_LOG", "error")

import dask.config
import hist
import icechunk
import numpy as np
import zarr
from zarr.core.sync import sync

import dask_hizt
from dask_hizt._arrays import create_arrays
from dask_hizt._chunkio import delete_or_set, fetch, open_format
from dask_hizt._partial import Partial
from dask_hizt._read import _Field
from dask_hizt._write import Segment, _write
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema

RESULTS = Path(__file__).with_name("results")
KiB = 1024
SIZES = (1 * KiB, 8 * KiB, 64 * KiB, 256 * KiB, 1024 * KiB)
DENSITIES = ("absent", "sparse", "dense")
CONCURRENCIES = (1, 16)
READS = ("zarr", "raw")
PIPELINES = {
    "fused": "zarr.core.codec_pipeline.FusedCodecPipeline",
    "zarrs": "zarrs.ZarrsCodecPipeline",
}
TARGET_MS = 0.5  # the bound on the overhead per chunk
PATH = "h"
FOLDERS: list[str] = []  # the repositories made, removed at the end


@dataclass
class Case:
    """One chunk size and density, with its repository and data."""

    size: int
    density: str
    n_chunks: int
    repo: icechunk.Repository
    segment: Segment
    delta: Partial
    base: np.ndarray
    codec_ms: list[float]
    store_ms: list[float]

    @property
    def name(self) -> str:
        return f"{fmt_size(self.size)} {self.density}"

    @property
    def jobs(self) -> list[tuple[Segment, Partial, np.ndarray]]:
        return [(self.segment, self.delta, np.arange(self.n_chunks, dtype=np.int64))]


def fmt_size(n: int) -> str:
    return f"{n // KiB} KiB" if n < 1024 * KiB else f"{n // (1024 * KiB)} MiB"


def n_chunks_for(size: int, quick: bool) -> int:
    """Chunks per run: enough to amortise the owner's fixed costs."""
    budget = (4 if quick else 16) * 1024 * KiB
    return max(16 if quick else 32, min(128 if quick else 512, budget // size))


def fill(rng: np.random.Generator, n_bins: int, n: int, density: str) -> np.ndarray:
    """Integer-valued float64 counts (sums stay exact in any order)."""
    if density == "dense":
        return rng.poisson(100, n_bins * n).astype(np.float64) + 1
    out = np.zeros(n_bins * n)
    per_chunk = max(1, n_bins // 100)  # 1% of each chunk, at least one bin
    for c in range(n):
        where = rng.choice(n_bins, per_chunk, replace=False) + c * n_bins
        out[where] = rng.integers(1, 6, per_chunk)
    return out


def make_case(size: int, density: str, storage: str, quick: bool, seed: int) -> Case:
    """A repository holding a 1-D Double histogram of N chunks of ``size`` bytes,
    committed with its base data, and the delta an owner adds to every chunk."""
    rng = np.random.default_rng(seed)
    n_bins = size // 8
    n = n_chunks_for(size, quick)
    axis = hist.axis.Integer(0, n_bins * n, underflow=False, overflow=False)
    schema = Schema.from_axes([axis], hist.storage.Double())
    layout = Layout((n_bins * n,), (n_bins,))
    if storage == "memory":
        st = icechunk.in_memory_storage()
    else:
        folder = tempfile.mkdtemp(prefix="chunk-io-")
        FOLDERS.append(folder)
        st = icechunk.local_filesystem_storage(folder)
    repo = icechunk.Repository.create(st)
    session = repo.writable_session("main")
    create_arrays(session.store, {PATH: (schema, layout)})
    base = np.zeros(n_bins * n)
    if density != "absent":
        base = fill(rng, n_bins, n, density)
        zarr.open_array(session.store, path=f"{PATH}/value")[...] = base
    session.commit("base")
    values = fill(rng, n_bins, n, "sparse" if density == "absent" else density)
    if density == "dense":
        delta = Partial(0, n_bins * n, None, (values,))
    else:
        keys = np.flatnonzero(values).astype(np.int64)
        delta = Partial(0, n_bins * n, keys, (values[keys],))
    segment = Segment(PATH, ("value",), layout, 0, 0, n)
    return Case(size, density, n, repo, segment, delta, base, [], [])


def floors(case: Case) -> tuple[float, float]:
    """Milliseconds per chunk of the codecs alone (decode the stored chunk,
    encode the new one, in this thread) and of the store alone (``get`` of
    the chunk, ``set`` of its new bytes, one chunk after the other, in a
    fresh fork)."""
    fork = case.repo.writable_session("main").fork()
    fmt, _ = sync(open_format(fork.store, f"{PATH}/value"))
    assert fmt is not None
    n_bins = case.size // 8
    total = case.base + case.delta.to_dense()[0]
    old = [case.base[i * n_bins : (i + 1) * n_bins] for i in range(case.n_chunks)]
    new = [total[i * n_bins : (i + 1) * n_bins] for i in range(case.n_chunks)]
    stored = [None if case.density == "absent" else fmt.encode(o) for o in old]
    start = time.perf_counter()
    for data, chunk in zip(stored, new, strict=True):
        fmt.decode(data)
        fmt.encode(chunk)
    codec = time.perf_counter() - start
    encoded = [fmt.encode(chunk) for chunk in new]

    async def get_set() -> None:
        for i, data in enumerate(encoded):
            key = fmt.key((i,))
            await fetch(fork.store, key)
            await delete_or_set(fork.store, key, data)

    start = time.perf_counter()
    sync(get_set())
    store = time.perf_counter() - start
    return codec * 1e3 / case.n_chunks, store * 1e3 / case.n_chunks


def run_path(case: Case, method: str, concurrency: int) -> tuple[float, Any]:
    """Milliseconds per chunk of one owner write; the fork it wrote into."""
    fork = case.repo.writable_session("main").fork()
    pipeline = PIPELINES.get(method)
    config = {"codec_pipeline.path": pipeline} if pipeline else {}
    with (
        zarr.config.set(config),
        dask.config.set({"dask_hizt.write-concurrency": concurrency}),
    ):
        start = time.perf_counter()
        sync(_write(fork, case.jobs, 16, raw=method == "raw"))
        elapsed = time.perf_counter() - start
    return elapsed * 1e3 / case.n_chunks, fork


def run_read(case: Case, method: str) -> float:
    """Milliseconds per chunk of reading the whole array (as ``to_hist`` does)."""
    store = case.repo.readonly_session(branch="main").store
    start = time.perf_counter()
    if method == "raw":
        got = _Field.open(store, PATH, "value").read(...)
    else:
        got = zarr.open_array(store, path=f"{PATH}/value", mode="r")[...]
    elapsed = time.perf_counter() - start
    if not np.array_equal(got, case.base):
        msg = f"{case.name}: the {method} read gave wrong counts"
        raise AssertionError(msg)
    return elapsed * 1e3 / case.n_chunks


def stored_chunks(fork: Any, n: int) -> list[bytes | None]:
    """The stored bytes of every chunk of the histogram's array."""
    proto = zarr.core.buffer.default_buffer_prototype()

    async def get_all() -> list[Any]:
        return [await fork.store.get(f"{PATH}/value/c/{i}", proto) for i in range(n)]

    return [None if b is None else b.to_bytes() for b in sync(get_all())]


def check(
    case: Case, method: str, fork: Any, reference: list[bytes | None] | None
) -> list[bytes | None]:
    """Read the written array back with plain zarr; compare the stored bytes
    with the zarr path's."""
    got = zarr.open_array(fork.store, path=f"{PATH}/value", mode="r")[...]
    want = case.base + case.delta.to_dense()[0]
    if not np.array_equal(got, want):
        msg = f"{case.name}: {method} wrote wrong counts"
        raise AssertionError(msg)
    chunks = stored_chunks(fork, case.n_chunks)
    if reference is not None and chunks != reference:
        msg = f"{case.name}: {method} stored other bytes than the zarr path"
        raise AssertionError(msg)
    return chunks


def zarrs_status() -> dict[str, Any]:
    """Whether zarrs is installed, and what it does with an icechunk store."""
    try:
        zarrs = importlib.import_module("zarrs")
    except ImportError:
        return {"installed": False}
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    session = repo.writable_session("main")
    with zarr.config.set({"codec_pipeline.path": PIPELINES["zarrs"]}):
        array = zarr.create_array(
            session.store, name="x", shape=(8,), chunks=(4,), dtype="f8"
        )
        used = type(array.async_array.codec_pipeline).__name__
    try:
        zarrs.ZarrsCodecPipeline.from_array_metadata_and_store(
            array.metadata, session.store
        )
        refused = None
    except NotImplementedError as err:
        refused = str(err)
    return {
        "installed": True,
        "version": getattr(zarrs, "__version__", None) or _dist_version("zarrs"),
        "pipeline_used_on_icechunk": used,
        "refusal": refused,
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def run(args: argparse.Namespace, methods: Sequence[str]) -> list[dict[str, Any]]:
    sizes = [
        s for s in SIZES if not args.sizes or fmt_size(s).replace(" ", "") in args.sizes
    ]
    cases = [
        make_case(size, density, args.storage, args.quick, seed)
        for seed, (size, density) in enumerate((s, d) for s in sizes for d in DENSITIES)
    ]
    times: dict[tuple[str, str, int], list[float]] = {}
    reads: dict[tuple[str, str], list[float]] = {}
    loads: list[float] = []
    for round_ in range(args.repeat):
        loads.append(os.getloadavg()[0])
        print(
            f"round {round_ + 1}/{args.repeat} (load average {loads[-1]:.2f})",
            flush=True,
        )
        for case in cases:
            codec, store = floors(case)
            case.codec_ms.append(codec)
            case.store_ms.append(store)
            reference = None
            for conc in CONCURRENCIES:
                for method in methods:
                    ms, fork = run_path(case, method, conc)
                    times.setdefault((case.name, method, conc), []).append(ms)
                    if round_ == 0 and conc == CONCURRENCIES[0]:
                        chunks = check(case, method, fork, reference)
                        reference = chunks if method == "zarr" else reference
            for method in READS:
                reads.setdefault((case.name, method), []).append(run_read(case, method))
    rows = []
    for case in cases:
        codec = median(case.codec_ms)
        store = median(case.store_ms)
        for method in methods:
            row: dict[str, Any] = {
                "size": case.size,
                "density": case.density,
                "chunks": case.n_chunks,
                "method": method,
                "codec_ms": codec,
                "store_ms": store,
            }
            for conc in CONCURRENCIES:
                per = times[(case.name, method, conc)]
                row[f"ms_c{conc}"] = median(per)
                row[f"ms_c{conc}_all"] = per
                row[f"overhead_ms_c{conc}"] = median(per) - codec
            # what is left of one chunk's time beyond the codecs and the store
            row["own_ms_c1"] = row["ms_c1"] - codec - store
            if method in READS:
                row["read_ms"] = median(reads[(case.name, method)])
                row["read_ms_all"] = reads[(case.name, method)]
            rows.append(row)
    print_table(rows, methods)
    print(f"load average before the rounds: {', '.join(f'{x:.2f}' for x in loads)}")
    return rows


def print_table(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> None:
    by_case: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault((r["size"], r["density"]), {})[r["method"]] = r
    cols = [f"{m} c{c}" for c in CONCURRENCIES for m in methods]
    head = f"{'chunk':>8} {'density':>8} {'codec':>6} {'store':>6} | " + " ".join(
        f"{c:>9}" for c in cols
    )
    print("\nms per chunk: c1 one chunk at a time, c16 16 at once (the default)")
    print(head)
    print("-" * len(head))
    for (size, density), per in by_case.items():
        first = next(iter(per.values()))
        cells = [per[m][f"ms_c{c}"] for c in CONCURRENCIES for m in methods]
        print(
            f"{fmt_size(size):>8} {density:>8} {first['codec_ms']:6.3f} "
            f"{first['store_ms']:6.3f} | " + " ".join(f"{x:9.3f}" for x in cells)
        )
    head = (
        f"{'chunk':>8} {'density':>8} | {'zarr c1':>8} {'raw c1':>8} {'store':>6} "
        f"{'own':>6} | {'zarr c16':>8} {'raw c16':>8}"
    )
    print("\noverhead (ms per chunk beyond the codecs' own time); own = raw - store")
    print(head)
    print("-" * len(head))
    for (size, density), per in by_case.items():
        z, r = per["zarr"], per["raw"]

        def cell(x: float, width: int = 8) -> str:
            return f"{x:{width - 1}.3f}" + ("*" if x > TARGET_MS else " ")

        print(
            f"{fmt_size(size):>8} {density:>8} | {cell(z['overhead_ms_c1'])} "
            f"{cell(r['overhead_ms_c1'])} {r['store_ms']:6.3f} {r['own_ms_c1']:6.3f} | "
            f"{cell(z['overhead_ms_c16'])} {cell(r['overhead_ms_c16'])}"
        )
    print(f"(* above the {TARGET_MS} ms target)")
    print("\nreading the whole array (to_hist), ms per chunk")
    print(f"{'chunk':>8} {'density':>8} | {'zarr':>7} {'raw':>7}")
    for (size, density), per in by_case.items():
        print(
            f"{fmt_size(size):>8} {density:>8} | {per['zarr']['read_ms']:7.3f} "
            f"{per['raw']['read_ms']:7.3f}"
        )


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def environment(zarrs: dict[str, Any]) -> dict[str, Any]:
    versions = {
        m: importlib.import_module(m).__version__
        for m in ("zarr", "icechunk", "numcodecs", "numpy")
    }
    versions["dask_hizt"] = dask_hizt.__version__
    return {
        "git_head": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "zarrs": zarrs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer chunks per run, a smoke run"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="interleaved rounds; medians shown"
    )
    parser.add_argument("--storage", choices=["local", "memory"], default="local")
    parser.add_argument("--sizes", nargs="*", help="chunk sizes to run, e.g. 8KiB 1MiB")
    args = parser.parse_args(argv)

    zarrs = zarrs_status()
    methods = ["zarr", "raw", "fused"] + (["zarrs"] if zarrs["installed"] else [])
    env = environment(zarrs)
    print(
        ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"({env['cpus']} CPUs)",
    )
    if zarrs["installed"]:
        print(
            f"zarrs {zarrs['version']}: on an icechunk store zarr uses "
            f"{zarrs['pipeline_used_on_icechunk']} ({zarrs['refusal']})"
        )
    else:
        print("zarrs is not installed: not measured")
    started = datetime.now(UTC)
    try:
        rows = run(args, methods)
    finally:
        for folder in FOLDERS:
            shutil.rmtree(folder, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = (
        RESULTS
        / f"{stamp}-chunk-io-{args.storage}{'-quick' if args.quick else ''}.json"
    )
    results = {
        "started": started.isoformat(),
        "args": vars(args),
        "environment": env,
        "target_overhead_ms": TARGET_MS,
        "rows": rows,
    }
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
