"""The ``dask-hizt`` command line.

Every command that reads a repository takes ``REPO``, a local directory or an
``s3://bucket/prefix`` URL (credentials, region and endpoint from the usual
``AWS_*`` environment variables), and most take ``--snapshot``, ``--tag`` or
``--branch`` to read another committed state than the tip of ``main``.

Exit codes: 0 done, 1 the command failed (one line on stderr,
``dask-hizt: error: ...``), 2 the command line is wrong (with the usage).
Modules beyond the standard library are imported by the commands that need
them, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import these when they run: --help stays quick
    import icechunk
    from icechunk.store import IcechunkStore

    from ._history import CommitRecord
    from ._repo import RepoRef
    from .layout import Layout
    from .schema import Schema

__all__ = ["main", "run"]

DATASETS = ("DY", "QCD", "TT", "WJets")

SELECTION_HELP = """\
selection: words AXIS=SPEC, one per axis (AXIS is a name, or a number from 0);
axes not named are kept whole. SPEC is:
  sum                 sum over the axis (flow bins included); the axis goes
  DY                  category axes: that category (the axis goes)
  DY,QCD              category axes: those categories
  45                  numeric axes: the bin holding 45 (the axis goes)
  20:80               numeric axes: bins from the one holding 20 to the one
                      holding 80 (hist.loc); either end may be left out
  20:80:rebin2        the same, merging every 2 bins
  20:80:sum           the same range, summed (the axis goes)
  #3, #2:#10          bin numbers instead of values
  true, false         Boolean axes
Only the chunks the selection needs are read.
example: dataset=DY pt=20:200:rebin2 eta=sum"""


class CommandError(Exception):
    """A command that cannot be done; reported as one line, exit code 1."""


class UsageError(Exception):
    """A command line that is wrong; reported with the usage, exit code 2."""


# ------------------------------------------------------------------ demo ---


def _demo_partition(i: int, n: int) -> object:
    """One partition of made-up events: a dataset label, pt, eta and a weight."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "dataset": rng.choice(DATASETS, n),
            "pt": rng.exponential(45.0, n),
            "eta": rng.normal(0.0, 1.8, n),
            "weight": rng.normal(1.0, 0.2, n),
        }
    )


def demo(args: argparse.Namespace) -> int:
    """Fill a 3-axis histogram on a LocalCluster into a local repository."""
    import dask.dataframe as dd
    import hist
    from distributed import Client, LocalCluster

    from .collection import Hist

    store = Path(args.store)
    h = Hist(
        hist.axis.StrCategory(list(DATASETS), name="dataset"),
        hist.axis.Regular(50, 0, 250, name="pt", label="p_T [GeV]"),
        hist.axis.Regular(20, -5, 5, name="eta"),
        storage=hist.storage.Weight(),
        store=store,
        path="demo/pt_eta",
    )
    print(f"repository: {store.resolve()}")
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        per = max(1, args.events // args.partitions)
        ddf = dd.from_map(_demo_partition, range(args.partitions), n=per)
        h.fill(dataset=ddf.dataset, pt=ddf.pt, eta=ddf.eta, weight=ddf.weight)
        print(
            f"filling {per * args.partitions:,} events from {args.partitions} partitions ..."
        )
        done = args.partitions - len(h.pending())
        if done:
            # exactly once: partitions committed by an earlier run are skipped
            print(f"{done} of them are in the histogram already (an earlier run)")
        sys.stdout.flush()
        # the progress bar goes to stderr, the results to stdout
        with contextlib.redirect_stdout(sys.stderr):
            stored = h.compute(progress=args.progress)

    result = stored.to_hist()
    print(result)
    print("\npt of DY, summed over eta:")
    print(_bars(result["DY", :: hist.rebin(2), sum]))
    print(f"\nhistory of {stored.path!r}:")
    for commit in stored.history():
        what = ", ".join(
            [f"{len(commit.inputs)} input partitions"] * bool(commit.inputs)
            + ["created"] * commit.created
        )
        print(
            f"  {commit.snapshot_id}  {commit.written_at:%Y-%m-%d %H:%M:%S}  {commit.message}  ({what})"
        )
    return 0


def _bars(h1: object, width: int = 50) -> str:
    """A one-dimensional histogram as rows of text bars."""
    import numpy as np

    values = np.asarray(h1.values())  # type: ignore[attr-defined]
    edges = h1.axes[0].edges  # type: ignore[attr-defined]
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    rows = []
    for lo, hi, v in zip(edges[:-1], edges[1:], values, strict=True):
        bar = "#" * round(width * max(float(v), 0.0) / top)
        rows.append(f"  [{lo:6.1f}, {hi:6.1f})  {v:12.1f}  {bar}")
    return "\n".join(rows)


# ---------------------------------------------------------- repositories ---


def _ref(args: argparse.Namespace) -> RepoRef:
    """The repository named by ``REPO`` (it must exist)."""
    from ._repo import RepoRef

    return RepoRef.from_store(args.repo, create=False)


def _snapshot_of(repo: icechunk.Repository, text: str) -> str:
    """A snapshot id from a branch name, a tag name or a snapshot id."""
    import icechunk

    for lookup in (repo.lookup_branch, repo.lookup_tag):
        with contextlib.suppress(icechunk.IcechunkError, ValueError):
            return str(lookup(text))
    try:
        return str(repo.lookup_snapshot(text).id)
    except (icechunk.IcechunkError, ValueError):
        msg = f"{text!r} is no branch, tag or snapshot id of the repository"
        raise CommandError(msg) from None


def _chosen_snapshot(repo: icechunk.Repository, args: argparse.Namespace) -> str:
    """The snapshot picked by ``--snapshot``/``--tag``/``--branch`` (default main)."""
    import icechunk

    try:
        if args.snapshot is not None:
            return str(repo.lookup_snapshot(args.snapshot).id)
        if args.tag is not None:
            return str(repo.lookup_tag(args.tag))
        return str(repo.lookup_branch(args.branch or "main"))
    except (icechunk.IcechunkError, ValueError):
        what = (
            f"snapshot {args.snapshot!r}"
            if args.snapshot is not None
            else f"tag {args.tag!r}"
            if args.tag is not None
            else f"branch {args.branch or 'main'!r}"
        )
        msg = f"{what} not found in the repository"
        raise CommandError(msg) from None


def _open(args: argparse.Namespace) -> Any:
    """The histogram ``PATH`` of ``REPO`` at the chosen snapshot."""
    from .stored import open as open_hist

    return open_hist(
        args.repo,
        args.path,
        snapshot_id=args.snapshot,
        tag=args.tag,
        branch=args.branch,
    )


def _select(args: argparse.Namespace, stored: Any) -> Any:
    """``stored`` indexed by the selection words (the whole histogram if none)."""
    from ._selection import SelectionError, parse

    try:
        index = parse(args.selection, list(stored.axes))
    except SelectionError as err:
        raise UsageError(str(err)) from None
    if not index:
        return stored.to_hist()
    try:
        return stored[index]
    except (KeyError, IndexError, ValueError, TypeError) as err:
        msg = f"selection {' '.join(args.selection)!r}: {_one_line(err)}"
        raise UsageError(msg) from None


def _histograms(store: IcechunkStore) -> Iterator[tuple[str, Schema, Layout]]:
    """``(path, schema, layout)`` of every histogram in a session's store."""
    import zarr

    from ._arrays import find_histogram
    from .schema import ATTR_KEY

    root = zarr.open_group(store, mode="r", zarr_format=3, use_consolidated=False)
    groups = [
        name
        for name, node in root.members(max_depth=None)
        if isinstance(node, zarr.Group) and ATTR_KEY in node.attrs
    ]
    for path in sorted(groups):
        found = find_histogram(store, path)
        if found is not None:
            yield path, *found


# ------------------------------------------------------------ commands ---


def ls(args: argparse.Namespace) -> int:
    """List the histograms of a repository with their axes and sizes."""
    import zarr

    from ._display import axis_kind, describe_axis

    ref = _ref(args)
    snapshot = _chosen_snapshot(ref.repo, args)
    store = ref.repo.readonly_session(snapshot_id=snapshot).store
    print(f"snapshot {snapshot}")
    count = 0
    for path, schema, layout in _histograms(store):
        count += 1
        fields = schema.spec.fields
        stored_chunks = sum(
            zarr.open_array(store, path=f"{path}/{f}", mode="r").nchunks_initialized
            for f in fields
        )
        dense = schema.n_bins * len(fields) * schema.dtype.itemsize
        print(
            f"{path}  {schema.storage.__name__}  {schema.n_bins:,} bins "
            f"({_size(dense)} dense), {stored_chunks} of "
            f"{layout.n_chunks * len(fields)} chunks stored"
        )
        for i, axis in enumerate(schema.hist_axes()):
            name = axis.name or f"#{i}"
            label = (
                f"  {axis.label!r}" if axis.label and axis.label != axis.name else ""
            )
            print(f"    {name}  {axis_kind(axis)}  {describe_axis(axis)}{label}")
    if not count:
        print("no histograms")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def show(args: argparse.Namespace) -> int:
    """Print a histogram, or a selection of it, as a text table."""
    from ._display import text

    stored = _open(args)
    h = _select(args, stored)
    what = (
        f"{stored.path} [{' '.join(args.selection)}]" if args.selection else stored.path
    )
    print(
        f"{what}  snapshot {stored.snapshot_id}  {stored.storage_type.__name__} storage"
    )
    print(text(h, flow=args.flow, max_rows=args.max_rows))
    return 0


def plot(args: argparse.Namespace) -> int:
    """Draw a histogram (or selection) of one or two axes into an image file."""
    import hist

    from ._display import draw, missing_extra

    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise missing_extra("matplotlib", "plot", "dask-hizt plot") from err
    try:
        import mplhep
    except ImportError:
        mplhep = None
    stored = _open(args)
    h = _select(args, stored)
    if not isinstance(h, hist.Hist) or h.ndim not in (1, 2):
        ndim = h.ndim if isinstance(h, hist.Hist) else 0
        msg = (
            f"plot draws 1 or 2 axes; the selection leaves {ndim}: "
            "sum or pick axes, e.g. eta=sum"
        )
        raise UsageError(msg)
    title = (
        f"{stored.path} [{' '.join(args.selection)}]" if args.selection else stored.path
    )
    style: Any = (
        getattr(mplhep.style, args.style)
        if mplhep is not None and args.style != "none"
        else {}
    )
    with plt.style.context(style):
        fig, ax = plt.subplots()
        try:
            if mplhep is not None:
                h.plot(ax=ax)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend()
            else:
                draw(h, ax)
            ax.set_title(title, fontsize="medium")
            fig.savefig(args.output)
        finally:
            plt.close(fig)
    print(f"wrote {args.output}")
    return 0


def log(args: argparse.Namespace) -> int:
    """List the commits of a branch, newest first, with what went in."""
    from ._history import ancestry

    ref = _ref(args)
    start = _chosen_snapshot(ref.repo, args)
    shown = 0
    for snap, record in ancestry(ref.repo, snapshot_id=start):
        lines = [] if record is None else _commit_lines(record)
        if args.path is not None and not any(args.path == p for p, _ in lines):
            continue
        if args.max_count is not None and shown >= args.max_count:
            break
        shown += 1
        print(f"{snap.id}  {snap.written_at:%Y-%m-%d %H:%M:%S} UTC  {snap.message}")
        for path, what in lines:
            if args.path is None or path == args.path:
                print(f"    {path}: {what}")
    return 0


def _commit_lines(record: CommitRecord) -> list[tuple[str, str]]:
    """``(histogram path, what the commit did to it)`` from its record."""
    out = [(path, "created") for path in record.created]
    out.extend((path, "deleted") for path in record.deleted)
    for path, axes in record.grown.items():
        grown = ", ".join(f"{axis} +{len(new)}" for axis, new in axes.items())
        out.append((path, f"categories added: {grown}"))
    for path, ids in record.inputs.items():
        n = len(ids)
        out.append((path, f"{n} input partition{'s' if n != 1 else ''}"))
    return out


def diff(args: argparse.Namespace) -> int:
    """Histograms changed between two snapshots, with their change of sum."""
    import icechunk

    from .stored import StoredHist

    ref = _ref(args)
    repo = ref.repo
    old, new = _snapshot_of(repo, args.old), _snapshot_of(repo, args.new)
    if old == new:  # icechunk's diff refuses a snapshot with itself
        print(f"{old} -> {new}")
        print("no histogram changed (the same snapshot)")
        return 0
    if _descends(repo, new, old):
        first, last, back = old, new, ""
    elif _descends(repo, old, new):
        # icechunk diffs forward only: diff NEW -> OLD and show it backwards
        first, last, back = new, old, " (back in history: NEW is an ancestor of OLD)"
    else:
        msg = (
            f"cannot diff {args.old!r} and {args.new!r}: neither is an ancestor "
            "of the other (branches that diverged)"
        )
        raise CommandError(msg)
    try:
        changes = repo.diff(from_snapshot_id=first, to_snapshot_id=last)
    except icechunk.IcechunkError as err:
        msg = f"cannot diff {args.old!r} and {args.new!r} ({_one_line(err)})"
        raise CommandError(msg) from None
    changed: dict[str, set[str]] = {}
    for array, coords in changes.updated_chunks.items():
        group, _, field = array.strip("/").rpartition("/")
        n = len(coords)
        changed.setdefault(group, set()).add(
            f"{field}: {n} chunk{'s' if n != 1 else ''}"
        )
    for array in (*changes.new_arrays, *changes.deleted_arrays):
        group, _, _ = array.strip("/").rpartition("/")
        changed.setdefault(group, set())
    print(f"{old} -> {new}{back}")
    at_old, at_new = (
        {path for path, _, _ in _histograms(repo.readonly_session(snapshot_id=s).store)}
        for s in (old, new)
    )
    paths = sorted(p for p in changed if p in at_old | at_new)
    if not paths:
        print("no histogram changed")
    for path in paths:
        before = _sum(StoredHist(ref, path, old)) if path in at_old else None
        after = _sum(StoredHist(ref, path, new)) if path in at_new else None
        was = "new" if before is None else f"{before:.10g}"
        now = "deleted" if after is None else f"{after:.10g}"
        delta = (after or 0.0) - (before or 0.0)
        chunks = "; ".join(sorted(changed[path])) or (
            "deleted" if after is None else "created, no chunks"
        )
        print(f"{path}  sum {was} -> {now} ({delta:+.10g})  [{chunks}]")
    return 0


def _descends(repo: icechunk.Repository, child: str, ancestor: str) -> bool:
    """Whether snapshot ``ancestor`` is in the history of ``child``."""
    return any(s.id == ancestor for s in repo.ancestry(snapshot_id=child))


def _sum(stored: Any) -> float:
    """Total of a stored histogram, flow bins included, read chunk by chunk.

    The sum of weights (or counts) for the sum storages; the number of
    entries (or sum of weights) for the mean storages.
    """
    import boost_histogram as bh

    s = stored.project().sum(flow=True)
    if isinstance(s, bh.accumulators.WeightedSum):
        return float(s.value)
    if isinstance(s, bh.accumulators.Mean):
        return float(s.count)
    if isinstance(s, bh.accumulators.WeightedMean):
        return float(s.sum_of_weights)
    return float(s)


def export(args: argparse.Namespace) -> int:
    """Write a histogram (or selection) to a ROOT, HDF5 or pickle file."""
    import hist

    output = Path(args.output)
    suffix = output.suffix.lower()
    writers: dict[str, Callable[[Any, Path, str, bool], None]] = {
        ".root": _write_root,
        ".h5": _write_hdf5,
        ".hdf5": _write_hdf5,
        ".pkl": _write_pickle,
        ".pickle": _write_pickle,
    }
    if suffix not in writers:
        msg = (
            f"{output.name!r}: the output's suffix picks the format: .root, .h5 or .pkl"
        )
        raise UsageError(msg)
    stored = _open(args)
    h = _select(args, stored)
    if not isinstance(h, hist.Hist):
        msg = "the selection leaves no axis: keep at least one to export"
        raise UsageError(msg)
    name = args.name or stored.path
    writers[suffix](h, output, name, args.update)
    print(f"wrote {name!r} to {output}")
    return 0


def _write_root(h: Any, output: Path, name: str, update: bool) -> None:
    from ._display import missing_extra

    try:
        import uproot
    except ImportError as err:
        raise missing_extra("uproot", "export", "writing .root files") from err
    if h.ndim > 3:
        msg = f"ROOT histograms have at most 3 axes; this one has {h.ndim}: sum or pick some"
        raise CommandError(msg)
    with (uproot.update if update and output.exists() else uproot.recreate)(
        output
    ) as f:
        try:
            f[name] = h
        except (TypeError, ValueError, NotImplementedError) as err:
            msg = f"uproot cannot write this histogram: {_one_line(err)}"
            raise CommandError(msg) from None


def _write_hdf5(h: Any, output: Path, name: str, update: bool) -> None:
    from ._display import missing_extra

    try:
        import h5py
    except ImportError as err:
        raise missing_extra("h5py", "export", "writing .h5 files") from err
    try:
        from uhi.io import hdf5
    except ImportError as err:  # pragma: no cover - uhi >= 1.0 has it
        msg = "writing .h5 files needs uhi.io.hdf5 (uhi >= 1.0): pip install -U uhi"
        raise CommandError(msg) from err
    with h5py.File(output, "a" if update else "w") as f:
        if name in f:
            msg = f"{output} already holds {name!r}"
            raise CommandError(msg)
        hdf5.write(f.create_group(name), h)


def _write_pickle(h: Any, output: Path, name: str, update: bool) -> None:
    import pickle

    del name
    if update:
        msg = "--update is for .root and .h5 files; a pickle holds one histogram"
        raise UsageError(msg)
    with output.open("wb") as f:
        pickle.dump(h, f, protocol=pickle.HIGHEST_PROTOCOL)


def tag(args: argparse.Namespace) -> int:
    """Create a tag, or list the tags."""
    repo = _ref(args).repo
    if args.list:
        if args.name is not None:
            msg = "give a tag NAME or --list, not both"
            raise UsageError(msg)
        for name in sorted(repo.list_tags()):
            snap = repo.lookup_snapshot(str(repo.lookup_tag(name)))
            print(
                f"{name}  {snap.id}  {snap.written_at:%Y-%m-%d %H:%M:%S} UTC  {snap.message}"
            )
        return 0
    if args.name is None:
        msg = "give a tag NAME (or --list)"
        raise UsageError(msg)
    target = (
        _snapshot_of(repo, args.target)
        if args.target is not None
        else _snapshot_of(repo, args.branch or "main")
    )
    repo.create_tag(args.name, target)
    print(f"tagged {target} as {args.name!r}")
    return 0


def gc(args: argparse.Namespace) -> int:
    """Delete objects no branch or tag refers to (failed computes' chunks)."""
    import datetime as dt

    from dask.utils import parse_timedelta

    from .maintenance import gc as run_gc

    try:
        older = dt.timedelta(seconds=float(parse_timedelta(args.older_than)))
    except (ValueError, KeyError, TypeError):
        msg = f"--older-than {args.older_than!r}: give a duration such as 1d, 12h, 30m"
        raise UsageError(msg) from None
    try:
        report = run_gc(
            args.repo, older_than=older, dry_run=args.dry_run, idle=args.idle
        )
    except ValueError as err:  # a cutoff that could delete running computes' chunks
        raise CommandError(_one_line(err)) from None
    verb = "would delete" if report.dry_run else "deleted"
    print(f"objects written before {report.cutoff:%Y-%m-%d %H:%M:%S} UTC:")
    print(
        f"  {verb} {report.chunks_deleted} chunks, {report.manifests_deleted} manifests, "
        f"{report.snapshots_deleted} snapshots, {report.transaction_logs_deleted} "
        f"transaction logs, {report.attributes_deleted} attribute files "
        f"({_size(report.bytes_freed)})"
    )
    if report.staged_deleted:
        print(f"  {verb} {report.staged_deleted} staged fills of dh.Staging runs")
    if report.failed_deletes:
        print(f"  {report.failed_deletes} objects could not be deleted (run gc again)")
    return 0


def rm(args: argparse.Namespace) -> int:
    """Delete a histogram (one commit)."""
    from .maintenance import delete

    snapshot = delete(args.repo, args.path, branch=args.branch or "main")
    print(f"deleted {args.path} in {snapshot}")
    return 0


# --------------------------------------------------------------- parser ---


def _hizt_error() -> type[Exception]:
    from .errors import HiztError

    return HiztError


def _one_line(err: BaseException) -> str:
    """An error's message on one line, without icechunk's context trace."""
    text = str(err).split("\n\ncontext:", 1)[0].strip()
    if isinstance(err, KeyError) and len(err.args) == 1 and text == repr(err.args[0]):
        text = str(err.args[0])
    return " ".join(text.split()) or type(err).__name__


def _add_repo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "repo", metavar="REPO", help="a local repository or s3://bucket/prefix"
    )


def _add_version(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", metavar="ID", help="read this snapshot")
    which.add_argument("--tag", help="read the snapshot of this tag")
    which.add_argument("--branch", help="read the tip of this branch (default: main)")


def _add_path(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", metavar="PATH", help="the histogram's path in the repository"
    )


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog="dask-hizt",
        description=(
            "Dask-native histograms stored in icechunk repositories. REPO is a "
            "local directory or s3://bucket/prefix (AWS_* variables give "
            "credentials, region and endpoint)."
        ),
        epilog=(
            "exit codes: 0 done, 1 the command failed, 2 wrong command line. "
            "'dask-hizt COMMAND --help' tells more."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('dask-hizt')}"
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on errors, print the full traceback instead of one line",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "demo",
        help="fill a demo histogram on a LocalCluster and show it",
        description="Fill a 3-axis histogram (dataset, pt, eta; Weight storage) "
        "from made-up events on a LocalCluster, into a local repository, and show "
        "it. Running it again adds nothing: its partitions are in already.",
    )
    p.add_argument(
        "--store",
        default="hizt-demo.icechunk",
        help="local repository (default: %(default)s)",
    )
    p.add_argument(
        "--events",
        type=int,
        default=2_000_000,
        help="number of events (default: %(default)s)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=20,
        help="number of partitions (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="worker processes (default: %(default)s)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the compute's progress on stderr (default: on)",
    )
    p.set_defaults(func=demo, parser=p)

    p = sub.add_parser(
        "ls",
        help="list the histograms: axes, storage, sizes",
        description="List the histograms of a repository: path, storage, number "
        "of bins (flow included), dense size, stored chunks, and each axis.",
    )
    _add_repo(p)
    _add_version(p)
    p.set_defaults(func=ls, parser=p)

    p = sub.add_parser(
        "show",
        help="print a histogram (or a selection) in the terminal",
        description="Print a histogram, or a selection of it, as a table: one "
        "row per bin (with a bar for one axis), value and error (the square "
        "root of the variance, for storages with variances).",
        epilog=SELECTION_HELP,
        formatter_class=raw,
    )
    _add_repo(p)
    _add_path(p)
    p.add_argument("selection", nargs="*", metavar="AXIS=SPEC", help="see below")
    _add_version(p)
    p.add_argument("--flow", action="store_true", help="show the flow bins too")
    p.add_argument(
        "--max-rows",
        type=int,
        default=200,
        help="print at most this many bins (default: %(default)s)",
    )
    p.set_defaults(func=show, parser=p)

    p = sub.add_parser(
        "plot",
        help="draw a histogram (or a selection) into an image file",
        description="Draw a histogram of one or two axes (after the selection) "
        "with matplotlib, in HEP style when mplhep is installed "
        "(pip install 'dask-hizt[plot]'). The format follows the output's "
        "suffix (.png, .pdf, .svg, ...).",
        epilog=SELECTION_HELP,
        formatter_class=raw,
    )
    _add_repo(p)
    _add_path(p)
    p.add_argument("selection", nargs="*", metavar="AXIS=SPEC", help="see below")
    p.add_argument("-o", "--output", required=True, help="the image file to write")
    p.add_argument(
        "--style",
        default="ROOT",
        help="mplhep style (ROOT, CMS, ATLAS, LHCb2, ALICE, or none; default: %(default)s)",
    )
    _add_version(p)
    p.set_defaults(func=plot, parser=p)

    p = sub.add_parser(
        "log",
        help="list the commits, newest first, with what went in",
        description="List the commits from the tip of a branch (or a tag or "
        "snapshot) back, newest first: snapshot id, time, message and, for "
        "each histogram, the number of input partitions added, or that it "
        "was created or got new categories.",
    )
    _add_repo(p)
    _add_version(p)
    p.add_argument("--path", help="only the commits that changed this histogram")
    p.add_argument(
        "-n", "--max-count", type=int, metavar="N", help="show at most N commits"
    )
    p.set_defaults(func=log, parser=p)

    p = sub.add_parser(
        "diff",
        help="histograms changed between two snapshots, with their sums",
        description="List the histograms whose chunks changed from OLD to NEW "
        "(each a snapshot id, tag or branch; one must be an ancestor of the "
        "other, in either order, or both the same snapshot), with the total sum "
        "(flow bins included) at both and the chunks changed.",
    )
    _add_repo(p)
    p.add_argument("old", metavar="OLD", help="snapshot id, tag or branch")
    p.add_argument("new", metavar="NEW", help="snapshot id, tag or branch")
    p.set_defaults(func=diff, parser=p)

    p = sub.add_parser(
        "export",
        help="write a histogram to .root (uproot), .h5 (UHI HDF5) or .pkl",
        description="Write a histogram, or a selection of it, to a file whose "
        "suffix picks the format: .root (uproot; at most 3 axes), .h5 (the UHI "
        "HDF5 layout of uhi.io.hdf5: read back with "
        "hist.Hist(uhi.io.hdf5.read(h5py.File(OUTPUT)[NAME]))) or .pkl (a pickled "
        "hist.Hist). .root and .h5 need pip install 'dask-hizt[export]'.",
        epilog=SELECTION_HELP,
        formatter_class=raw,
    )
    _add_repo(p)
    _add_path(p)
    p.add_argument("output", metavar="OUTPUT", help="the file to write")
    p.add_argument("selection", nargs="*", metavar="AXIS=SPEC", help="see below")
    p.add_argument("--name", help="name in the file (default: PATH)")
    p.add_argument(
        "--update",
        action="store_true",
        help="add to an existing .root or .h5 file instead of replacing it",
    )
    _add_version(p)
    p.set_defaults(func=export, parser=p)

    p = sub.add_parser(
        "tag",
        help="tag a snapshot, or list the tags",
        description="Create tag NAME at SNAPSHOT (a snapshot id, tag or branch; "
        "default: the tip of --branch, main), or list the tags.",
    )
    _add_repo(p)
    p.add_argument("name", metavar="NAME", nargs="?", help="the new tag")
    p.add_argument("target", metavar="SNAPSHOT", nargs="?", help="what to tag")
    p.add_argument("--branch", help="tag the tip of this branch (default: main)")
    p.add_argument("--list", action="store_true", help="list the tags")
    p.set_defaults(func=tag, parser=p)

    p = sub.add_parser(
        "gc",
        help="delete objects of failed computes (dh.gc)",
        description="Delete the objects no branch or tag refers to, mainly "
        "chunks written by computes that failed before their commit "
        "(docs/maintenance.md). Only objects older than --older-than go: "
        "chunks of computes still running look the same, so that age must "
        "exceed your longest compute.",
    )
    _add_repo(p)
    p.add_argument(
        "--older-than",
        default="1d",
        metavar="AGE",
        help="only objects written longer ago than this (default: %(default)s; "
        "e.g. 12h, 30m, 2w)",
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument(
        "--idle",
        action="store_true",
        help="promise nothing writes meanwhile (allows --older-than 0)",
    )
    p.set_defaults(func=gc, parser=p)

    p = sub.add_parser(
        "rm",
        help="delete a histogram (dh.delete)",
        description="Delete the histogram at PATH in one commit. Earlier "
        "snapshots keep it; a histogram made again at PATH starts empty.",
    )
    _add_repo(p)
    _add_path(p)
    p.add_argument("--branch", help="commit to this branch (default: main)")
    p.set_defaults(func=rm, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dask-hizt``.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 done, 1 the command failed, 2 wrong command line.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        import icechunk

        # Commits on local repositories hold dask_hizt's file lock, which answers
        # icechunk's warning about concurrent local commits; keep real errors.
        icechunk.set_logs_filter(os.environ.get("ICECHUNK_LOG", "error"))
        return int(args.func(args))
    except UsageError as err:
        args.parser.print_usage(sys.stderr)
        print(f"dask-hizt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dask-hizt: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.traceback:
            raise
        print(f"dask-hizt: error: {_describe(err)}", file=sys.stderr)
        return 1


def _describe(err: Exception) -> str:
    """One line for an error: the message of our own errors and the expected
    kinds (files, icechunk, missing extras), the type too for anything else."""
    import icechunk

    text = _one_line(err)
    if isinstance(err, CommandError | ImportError | _hizt_error()):
        return text
    if isinstance(err, OSError):
        return text
    if isinstance(err, icechunk.IcechunkError):
        return f"icechunk: {text}"
    return f"{type(err).__name__}: {text} (--traceback shows where)"


def run() -> None:
    """The console script: :func:`main`, then exit without finalizing the
    interpreter.

    Output is flushed and files are closed by then. Skipping the
    interpreter's teardown avoids a rare segmentation fault at exit (a few
    runs in a hundred of commands that read chunks, more on a busy machine),
    in the teardown of zarr's event-loop thread and icechunk's native
    threads, which turned a finished command's exit code 0 into -11.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
