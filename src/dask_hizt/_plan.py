"""What a compute does: targets, key spaces, owners, forks and commits.

One plan covers every histogram computed together. Histograms are grouped by
repository (one commit each) and, inside a repository, by storage kind into
key spaces; the queued fills of all histograms are grouped by partitioning
into shared fill tasks, so each input partition is read once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
from dask.core import flatten
from dask.delayed import delayed
from dask.highlevelgraph import HighLevelGraph
from dask.utils import parse_bytes

from . import __version__
from ._fill import Arg, FillSpec, FillTask, Target
from ._graph import (
    Checkpoint,
    Commit,
    StoreLayer,
    compute_graph,
    fill_layer,
    is_awkward,
)
from ._ledger import committed
from ._stage import StagedLoad, read_header
from ._writer import Owner, Segment
from .errors import FillError
from .schema import ATTR_KEY, Schema, growing
from .transaction import (
    RepoRef,
    prepare_histograms,
    read_histogram_meta,
)

if TYPE_CHECKING:
    from .collection import Hist, _Fill, _Source

__all__ = ["Plan", "plan", "prepare"]

Key = Hashable


@dataclass(frozen=True)
class Plan:
    """A compute's graph, its output keys (one per repository) and, per
    histogram, the index of the output holding its snapshot id."""

    graph: HighLevelGraph
    keys: list[Key]
    output_of: list[int]


def _repo_id(ref: RepoRef, branch: str) -> tuple[Any, str]:
    return (ref.local_path or id(ref.repo), branch)


def plan(
    hists: Sequence[Hist], name: str, token: str, checkpoint: Checkpoint | None = None
) -> Plan:
    """Build the graph that fills, writes and commits ``hists`` together
    (in batches, with a ``checkpoint``)."""
    # --- targets: one per histogram path per repository ------------------
    repos: dict[tuple[Any, str], int] = {}
    refs: list[tuple[RepoRef, str]] = []
    target_of: dict[tuple[int, str], int] = {}
    target_hists: list[Hist] = []
    for h in hists:
        r = repos.setdefault(_repo_id(h._ref, h._branch), len(repos))
        if r == len(refs):
            refs.append((h._ref, h._branch))
        if (r, h._path) not in target_of:
            target_of[(r, h._path)] = len(target_hists)
            target_hists.append(h)

    sessions = [ref.repo.writable_session(branch) for ref, branch in refs]
    targets: list[Target] = []
    spaces: list[tuple[int, type[Any]]] = []  # (repository, storage) of each key space
    space_size: list[int] = []
    for (r, path), _ in sorted(target_of.items(), key=lambda kv: kv[1]):
        h = target_hists[target_of[(r, path)]]
        stored, layout = read_histogram_meta(sessions[r].store, path)
        h._schema.check_same(stored, f"histogram {path!r}")
        kind = (r, stored.storage)
        if kind not in spaces:
            spaces.append(kind)
            space_size.append(0)
        s = spaces.index(kind)
        targets.append(Target(path, stored, layout, s, space_size[s]))
        space_size[s] += layout.n_keys

    # --- fills: shared fill tasks, one per partition index ----------------
    # Partitions whose identities are in a histogram already are skipped;
    # a fill left with some of its partitions reads just those.
    done = [
        committed(
            refs[r][0].repo,
            str(sessions[r].snapshot_id),
            [p for (rr, p) in target_of if rr == r],
        )
        for r in range(len(refs))
    ]
    # (target, fill, identities, partitions taken: None for all)
    queued: list[tuple[int, _Fill, list[str], tuple[int, ...] | None]] = []
    for h in hists:
        r = repos[_repo_id(h._ref, h._branch)]
        t = target_of[(r, h._path)]
        for f in h._fills:
            ids = f.ids()
            pending = [i for i, x in enumerate(ids) if x not in done[r][h._path]]
            if len(pending) == len(ids):
                queued.append((t, f, ids, None))
            elif pending:
                sub = [ids[i] for i in pending]
                queued.append((t, f.partitions(pending), sub, tuple(pending)))
    sources = [(s.collection, taken) for _, f, _, taken in queued for s in f.sources()]
    located = _inputs(sources)
    keys_of = iter(located)
    collection_of: dict[tuple[Key, ...], Any] = {}

    groups: dict[int, list[tuple[int, FillSpec, list[list[Key]], list[str]]]] = {}
    for t, fill, ids, _ in queued:
        keys_per_arg: list[list[Key]] = []

        def arg(
            s: _Source | None, keys_per_arg: list[list[Key]] = keys_per_arg
        ) -> Arg | None:
            if s is None:
                return None
            if not s.partitioned:
                return Arg(value=s.value)
            keys, column, coll = next(keys_of)
            collection_of[tuple(keys)] = coll
            keys_per_arg.append(keys)
            return Arg(index=len(keys_per_arg) - 1, column=column)

        axes = tuple(arg(s) for s in fill.axes)
        spec = FillSpec(
            tuple(a for a in axes if a is not None), arg(fill.weight), arg(fill.sample)
        )
        groups.setdefault(len(ids), []).append((t, spec, keys_per_arg, ids))

    fill_keys: list[Key] = []
    fill_graphs: list[HighLevelGraph] = []
    # per fill task: per target, the identities of the partitions it adds
    key_inputs: list[dict[int, list[str]]] = []
    for g, (n, members) in enumerate(groups.items()):
        # Each distinct input (its keys over the partitions) is one slot of the
        # fill task, however many fills and histograms read it.
        slots: dict[tuple[Key, ...], int] = {}
        fills = []
        for t, spec, per_arg, _ in members:
            remap = [slots.setdefault(tuple(k), len(slots)) for k in per_arg]
            fills.append((t, _remap(spec, remap)))
        task = FillTask(tuple(targets), tuple(fills), tuple(space_size))
        slot_keys = list(slots)
        layer_name = f"hizt-fill-{token}-{g}"
        fill_graphs.append(
            fill_layer(
                layer_name, task, slot_keys, n, [collection_of[k] for k in slot_keys]
            )
        )
        fill_keys.extend((layer_name, i) for i in range(n))
        for i in range(n):
            per_target: dict[int, list[str]] = {}
            for t, _, _, ids in members:
                per_target.setdefault(t, []).append(ids[i])
            key_inputs.append(per_target)

    # --- staged fills (dask_hizt.runner): one load task per group of files --
    staged = [(h, f) for h in hists for f in h._staged]
    if staged:
        load = StagedLoad(
            tuple(targets),
            {t.path: i for i, t in enumerate(targets)},
            tuple(space_size),
        )
        per_task = max(1, int(dask.config.get("dask_hizt.staged-per-task")))
        groups_of = [staged[i : i + per_task] for i in range(0, len(staged), per_task)]
        layer_name = f"hizt-fill-{token}-staged"
        fill_graphs.append(
            HighLevelGraph.from_collections(
                layer_name,
                {
                    (layer_name, i): (load, [f.file for _, f in group])
                    for i, group in enumerate(groups_of)
                },
                dependencies=[],
            )
        )
        fill_keys.extend((layer_name, i) for i in range(len(groups_of)))
        for group in groups_of:
            per_target = {}
            for h, sf in group:
                t = target_of[(repos[_repo_id(h._ref, h._branch)], h._path)]
                per_target.setdefault(t, []).append(f"staged:{sf.item}")
            key_inputs.append(per_target)

    # --- owners and commits ------------------------------------------------
    owners = [
        _owners([t for t in targets if t.space == s], sessions[spaces[s][0]])
        for s in range(len(spaces))
    ]
    commits = []
    for r, (ref, branch) in enumerate(refs):
        mine = [i for i, t in enumerate(targets) if spaces[t.space][0] == r]
        commits.append(
            Commit(
                ref,
                branch,
                str(sessions[r].snapshot_id),
                tuple(s for s in range(len(spaces)) if spaces[s][0] == r),
                tuple(targets[i].path for i in mine),
                {ATTR_KEY: {"version": __version__}},
                tuple(
                    {targets[t].path: ids for t, ids in per.items() if t in set(mine)}
                    for per in key_inputs
                ),
            )
        )
    dsk = compute_graph(name, token, fill_keys, owners, commits, checkpoint)
    layers: dict[str, Any] = {}
    dependencies: dict[str, set[str]] = {}
    for fg in fill_graphs:
        layers.update(fg.layers)
        dependencies.update(fg.dependencies)
    fill_names = [
        n for fg in fill_graphs for n in fg.layers if n.startswith("hizt-fill-")
    ]
    outputs = [(name, i) for i in range(len(refs))]
    layers[name] = StoreLayer(dsk, fill_names, outputs)
    dependencies[name] = set(fill_names)
    graph = HighLevelGraph(layers, dependencies)
    output_of = [repos[_repo_id(h._ref, h._branch)] for h in hists]
    return Plan(graph, [(name, i) for i in range(len(refs))], output_of)


def prepare(hists: Sequence[Hist]) -> None:
    """Create the missing histograms and add to growing category axes every
    value the queued fills will meet: one commit per repository, if anything
    changes.

    Scalars are known; values from partitioned inputs are found by a pass
    over those inputs alone (``unique``), before the fill graph is built, so
    each histogram's chunk grid is final when partials are keyed.
    """
    per_repo: dict[tuple[Any, str], tuple[Hist, dict[str, tuple[Schema, Any]]]] = {}
    grow: dict[tuple[Any, str], dict[str, dict[int, set[Any]]]] = {}
    lazy: list[tuple[set[Any], Any]] = []
    for h in hists:
        rid = _repo_id(h._ref, h._branch)
        per_repo.setdefault(rid, (h, {}))[1].setdefault(
            h._path, (h._schema, h._chunk_bytes)
        )
        axes = [i for i, a in enumerate(h._schema.axes) if growing(a)]
        if not axes:
            continue
        per_axis = grow.setdefault(rid, {}).setdefault(
            h._path, {i: set() for i in axes}
        )
        for f in h._staged:
            for i, values in read_header(f.file)["categories"].items():
                per_axis[int(i)].update(values)
        for i in axes:
            for fill in h._fills:
                src = fill.axes[i]
                if src.partitioned:
                    lazy.append((per_axis[i], src.collection))
                else:
                    per_axis[i].add(src.value)
    if lazy:
        found = dask.base.compute(*[_unique(c) for _, c in lazy])
        for (into, _), values in zip(lazy, found, strict=True):
            into.update(np.asarray(values).tolist())
    for rid, (h, wanted) in per_repo.items():
        for path, per_axis in grow.get(rid, {}).items():
            for i, values in per_axis.items():
                _check_category_values(wanted[path][0].axes[i], values)
        prepare_histograms(h._ref, h._branch, wanted, grow.get(rid, {}))


def _inputs(
    sources: Sequence[tuple[Any, tuple[int, ...] | None]],
) -> list[tuple[list[Key], str | None, Any]]:
    """Per source (a collection, and which partitions of the original it
    holds: ``None`` for all), its partitions' keys, for dataframe columns the column to take
    from them, and the collection that computes them.

    dask.dataframe Series of the same partitions are gathered as the columns
    of one optimised DataFrame, so each partition is read (or made) once
    however many fills and histograms use it; dask.optimize() of separate
    dask-expr collections fuses the read into every column instead. The
    partitions are taken from the gathered frame: dask-expr assigns Series
    that were cut to some partitions from the wrong partitions (dask 2025.3
    and 2026.x).
    """
    located: list[tuple[list[Key], str | None, Any] | None] = [None] * len(sources)
    frames: dict[tuple[int, tuple[int, ...] | None], list[int]] = {}
    for i, (c, taken) in enumerate(sources):
        if isinstance(c, da.Array) or is_awkward(c):
            located[i] = (list(flatten(c.__dask_keys__())), None, c)
        else:
            # Columns of different partitions (e.g. of fills that skip
            # different ones) must not be zipped into one frame.
            frames.setdefault((c.npartitions, taken), []).append(i)
    colls = [c for c, _ in sources]
    for (_, members_taken), members in frames.items():
        # The same column used by many fills becomes one column of the frame.
        column_of: dict[str, str] = {}
        for i in members:
            column_of.setdefault(colls[i]._name, f"c{len(column_of)}")
        columns = {column_of[colls[i]._name]: colls[i] for i in members}
        try:
            first, *rest = columns.items()
            frame = first[1].to_frame(name=first[0]).assign(**dict(rest))
        except (ValueError, NotImplementedError, TypeError):
            # Not co-aligned (e.g. unknown divisions of unrelated frames): one by one.
            for i in members:
                one = _take(colls[i], sources[i][1]).optimize()
                located[i] = (list(flatten(one.__dask_keys__())), None, one)
            continue
        frame = _take(frame, members_taken).optimize()
        keys = list(flatten(frame.__dask_keys__()))
        for i in members:
            located[i] = (keys, column_of[colls[i]._name], frame)
    return [loc for loc in located if loc is not None]


def _take(frame: Any, taken: tuple[int, ...] | None) -> Any:
    return frame if taken is None else frame.partitions[list(taken)]


def _unique(coll: Any) -> Any:
    if isinstance(coll, da.Array):
        return da.unique(coll)
    if is_awkward(coll):
        parts = [delayed(_unique_awkward)(p) for p in coll.to_delayed()]
        return delayed(np.unique)(delayed(np.concatenate)(parts))
    return coll.unique()


def _unique_awkward(part: Any) -> Any:
    import awkward as ak  # noqa: PLC0415 - optional dependency

    return np.unique(ak.to_numpy(ak.flatten(part, axis=None)))


def _check_category_values(axis: Mapping[str, Any], values: set[Any]) -> None:
    """Refuse values of the wrong type before they become categories."""
    want = str if axis["type"] == "category_str" else int
    bad = [
        v
        for v in values
        if not isinstance(v, want) or (isinstance(v, bool) and want is int)
    ]
    if bad:
        name = axis["metadata"]["name"] or "<unnamed>"
        msg = f"axis {name!r} takes {want.__name__} categories, got {bad[:3]!r}"
        raise FillError(msg)


def _remap(spec: FillSpec, slots: Sequence[int]) -> FillSpec:
    """A fill's arguments pointed at the fill task's input slots."""

    def move(a: Arg | None) -> Arg | None:
        if a is None or a.index is None:
            return a
        return Arg(index=slots[a.index], column=a.column)

    axes = tuple(move(a) for a in spec.axes)
    return FillSpec(
        tuple(a for a in axes if a is not None), move(spec.weight), move(spec.sample)
    )


def _cluster_threads() -> int:
    """Threads that run tasks: the distributed Client's cluster, else the
    local scheduler's."""
    try:
        from distributed import default_client  # noqa: PLC0415 - optional

        return max(1, int(sum(default_client().nthreads().values())))
    except (ImportError, ValueError):
        return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _owners(targets: Sequence[Target], session: Any) -> list[Owner]:
    """Cut a key space's chunks into owners of about ``dask_hizt.owner-bytes`` each.

    ``dask_hizt.owners`` fixes the count instead. Owners take consecutive
    chunks, so an owner of small histograms may span several of them.
    """
    bin_bytes = [t.schema.dtype.itemsize * len(t.schema.spec.fields) for t in targets]
    chunk_bytes = np.array(
        [t.layout.chunk_size * b for t, b in zip(targets, bin_bytes, strict=True)]
    )
    n_chunks = np.array([t.layout.n_chunks for t in targets])
    total_chunks = int(n_chunks.sum())
    byte_start = np.r_[0, np.cumsum(n_chunks * chunk_bytes)]
    chunk_start = np.r_[0, np.cumsum(n_chunks)]
    setting = dask.config.get("dask_hizt.owners")
    if setting == "auto":
        per_owner = parse_bytes(dask.config.get("dask_hizt.owner-bytes"))
        least = int(dask.config.get("dask_hizt.owner-min-chunks"))
        # Per-chunk I/O costs milliseconds: many small chunks need owners
        # too, and every thread of the cluster can write.
        wanted = max(
            math.ceil(byte_start[-1] / per_owner),
            math.ceil(total_chunks / int(dask.config.get("dask_hizt.owner-chunks"))),
            min(_cluster_threads(), total_chunks // max(1, least)),
        )
    else:
        wanted = int(setting)
    wanted = max(1, min(wanted, total_chunks))
    # Global chunk positions where owners start, at even shares of the bytes.
    cuts = {0, total_chunks}
    for k in range(1, wanted):
        b = byte_start[-1] * k / wanted
        j = int(np.searchsorted(byte_start, b, side="right")) - 1
        c = math.ceil((b - byte_start[j]) / chunk_bytes[j])
        cuts.add(int(chunk_start[j] + min(c, n_chunks[j])))
    bounds = sorted(cuts)
    owners = []
    for g0, g1 in pairwise(bounds):
        segments = []
        for i, t in enumerate(targets):
            a = max(g0, int(chunk_start[i]))
            b = min(g1, int(chunk_start[i + 1]))
            if a < b:
                segments.append(
                    Segment(
                        t.path,
                        t.schema.spec.fields,
                        t.layout,
                        t.offset,
                        a - int(chunk_start[i]),
                        b - int(chunk_start[i]),
                    )
                )
        owners.append(Owner(tuple(segments), session.fork()))
    return owners
