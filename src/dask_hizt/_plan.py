"""What a compute does: targets, creations, pending partitions, fill tasks,
owners and commits.

One plan covers every histogram computed together (one :class:`Request`
each). Histograms are grouped by repository (one commit each) and, inside a
repository, by storage kind into key spaces. The queued fills are grouped by
the partitions they read (:func:`dask_hizt._inputs.group_sources`) into
shared fill tasks, so each input partition is read once for all of them and
unrelated collections are never zipped together.

The steps, in order: :func:`_growth` (values met by growing axes),
:func:`_targets` (a session per repository, the creation fork, the layout of
each histogram), :func:`_fill_groups` (the fill tasks with each partition's
identity information), :func:`_staged_loads` (``dh.Staging`` files),
:func:`_owners` and the commits.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import dask
import dask.array as da
import dask.base
import icechunk
import numpy as np
import pandas as pd
from dask.delayed import Delayed, delayed
from dask.highlevelgraph import HighLevelGraph
from dask.utils import parse_bytes

from . import __version__
from ._arrays import Creation, prepare, read_histogram_meta
from ._commit import Commit
from ._fill import Arg, FillSpec, FillTask, Target
from ._graph import (
    Checkpoint,
    GraphSettings,
    StoreLayer,
    compute_graph,
    fill_layer,
)
from ._identity import PartitionInfo, positions, where_prefix
from ._inputs import (
    group_sources,
    is_awkward,
    is_frame,
    keys_of,
    npartitions,
    pack_frames,
    take,
    where_of,
)
from ._ledger import committed
from ._repo import RepoRef
from ._request import Fill, Request
from ._stage import StagedLoad, read_header
from ._writer import Owner, Segment
from .errors import FillError
from .schema import growing

__all__ = ["Plan", "plan"]

Key = Hashable


@dataclass(frozen=True)
class Plan:
    """A compute's graph, its output keys (one per repository) and, per
    request, the index of the output holding its snapshot id."""

    graph: HighLevelGraph
    keys: list[Key]
    output_of: list[int]


@dataclass
class _Repository:
    """One repository (and branch) of a compute: one commit."""

    ref: RepoRef
    branch: str
    base: str = ""
    writer: Any = None  # the session or creation fork that owners fork from
    creation: Creation | None = None
    targets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Queued:
    """A fill of a target (of ``request``), and how many identical fills of
    that target were queued before it."""

    target: int
    fill: Fill
    occurrence: int
    request: int


def plan(
    requests: Sequence[Request],
    name: str,
    token: str,
    checkpoint: Checkpoint | None = None,
) -> Plan:
    """Build the graph that fills, writes and commits ``requests`` together
    (in batches, with a ``checkpoint``)."""
    settings = GraphSettings.from_config()
    repos, target_of = _repositories(requests)
    targets = _targets(requests, repos, target_of, _growth(requests))
    done = [
        committed(repo.ref.repo, repo.base, [targets[t].path for t in repo.targets])
        for repo in repos
    ]
    repo_of = {t: r for r, repo in enumerate(repos) for t in repo.targets}
    known = [done[repo_of[t]][target.path] for t, target in enumerate(targets)]
    queued = _queue(requests, target_of)
    space_sizes = _space_sizes(targets)
    fill_keys: list[Key] = []
    graphs: list[HighLevelGraph] = []
    for g, group in enumerate(_fill_groups(queued, known)):
        task = FillTask(tuple(targets), tuple(group.fills), space_sizes, settings.dense)
        layer_name = f"hizt-fill-{token}-{g}"
        graphs.append(
            fill_layer(layer_name, task, group.slot_keys, group.infos, group.inputs)
        )
        fill_keys.extend((layer_name, i) for i in range(len(group.infos)))
    layer_name = f"hizt-fill-{token}-staged"
    staged: Mapping[Any, Any] | None = _staged_loads(
        layer_name, requests, target_of, targets, space_sizes, settings, known
    )
    if staged is not None:
        graphs.append(
            HighLevelGraph.from_collections(layer_name, staged, dependencies=[])
        )
        fill_keys.extend(staged)

    n_spaces = len(space_sizes)
    owners = [
        _owners(
            [t for t in targets if t.space == s],
            repos[_space_repo(targets, repo_of, s)].writer,
            settings,
        )
        for s in range(n_spaces)
    ]
    commits = [
        Commit(
            repo.ref,
            repo.branch,
            repo.base,
            tuple(sorted({targets[t].space for t in repo.targets})),
            {t: targets[t].path for t in repo.targets},
            __version__,
            settings.commit_retries,
            repo.creation,
        )
        for repo in repos
    ]
    dsk = compute_graph(name, token, fill_keys, owners, commits, settings, checkpoint)
    layers: dict[str, Any] = {}
    dependencies: dict[str, set[str]] = {}
    for fg in graphs:
        layers.update(fg.layers)
        dependencies.update(fg.dependencies)
    fill_names = [n for fg in graphs for n in fg.layers if n.startswith("hizt-fill-")]
    outputs: list[Key] = [(name, i) for i in range(len(repos))]
    layers[name] = StoreLayer(dsk, fill_names, outputs)
    dependencies[name] = set(fill_names)
    output_of = [repo_of[target_of[i]] for i in range(len(requests))]
    return Plan(HighLevelGraph(layers, dependencies), outputs, output_of)


def pending(requests: Sequence[Request]) -> list[list[str]]:
    """Per request, the identities of its fills' partitions not yet in its
    histogram (``Hist.pending``).

    Partitions known by the user's identities are answered without reading;
    groups with fills identified by content are read (fill tasks that only
    digest: nothing is filled, written or committed).
    """
    repos, target_of = _repositories(requests)
    targets = _targets(requests, repos, target_of, {})
    repo_of = {t: r for r, repo in enumerate(repos) for t in repo.targets}
    done = [
        committed(repo.ref.repo, repo.base, [targets[t].path for t in repo.targets])
        for repo in repos
    ]
    known = [done[repo_of[t]][target.path] for t, target in enumerate(targets)]
    out: list[list[str]] = [[] for _ in requests]
    dense = GraphSettings.from_config().dense
    graphs: list[HighLevelGraph] = []
    lookups: list[tuple[_Group, Key]] = []
    space_sizes = _space_sizes(targets)
    for g, group in enumerate(_fill_groups(_queue(requests, target_of), known)):
        if all(q.fill.given is not None for q in group.members):
            for info in group.infos:
                for j, q in enumerate(group.members):
                    if j not in info.skip:
                        given = info.given[j]
                        assert given is not None
                        out[q.request].append(given)
            continue
        task = FillTask(
            tuple(targets), tuple(group.fills), space_sizes, dense, dry=True
        )
        name = f"hizt-pending-{g}-{uuid.uuid4().hex}"  # never cached by dask
        graphs.append(
            fill_layer(name, task, group.slot_keys, group.infos, group.inputs)
        )
        lookups.extend((group, (name, i)) for i in range(len(group.infos)))
    if lookups:
        layers: dict[str, Any] = {}
        dependencies: dict[str, set[str]] = {}
        for fg in graphs:
            layers.update(fg.layers)
            dependencies.update(fg.dependencies)
        graph = HighLevelGraph(layers, dependencies)
        found = dask.base.compute(
            *[Delayed(k, graph, layer=k[0]) for _, k in lookups]  # type: ignore[index]
        )
        for (group, _), (pairs,) in zip(lookups, found, strict=True):
            for j, identity in pairs:
                out[group.members[j].request].append(identity)
    return out


def _repositories(
    requests: Sequence[Request],
) -> tuple[list[_Repository], list[int]]:
    """The repositories of a compute, and the target (one per histogram path
    per repository) of each request."""
    repos: list[_Repository] = []
    index: dict[tuple[Any, str], int] = {}
    targets: dict[tuple[int, str], int] = {}
    target_of = []
    for req in requests:
        r = index.setdefault(req.repository, len(repos))
        if r == len(repos):
            repos.append(_Repository(req.ref, req.branch))
        t = targets.setdefault((r, req.path), len(targets))
        if t not in repos[r].targets:
            repos[r].targets.append(t)
        target_of.append(t)
    return repos, target_of


def _targets(
    requests: Sequence[Request],
    repos: list[_Repository],
    target_of: Sequence[int],
    growth: Mapping[int, Mapping[int, list[Any]]],
) -> list[Target]:
    """Open a session per repository, make its :class:`Creation` (histograms
    to create, categories to append), and lay the targets out in key spaces."""
    first: dict[int, Request] = {}
    for i, t in enumerate(target_of):
        first.setdefault(t, requests[i])
    for repo in repos:
        wanted = {
            first[t].path: (first[t].schema, first[t].chunk_bytes) for t in repo.targets
        }
        grow = {first[t].path: growth[t] for t in repo.targets if t in growth}
        session, creation = prepare(repo.ref, repo.branch, wanted, grow)
        repo.base = str(session.snapshot_id)
        repo.creation = creation
        repo.writer = session if creation is None else creation.parent
    targets: list[Target] = []
    spaces: list[tuple[int, type[Any]]] = []
    size: list[int] = []
    located = sorted((t, r) for r, repo in enumerate(repos) for t in repo.targets)
    for t, r in located:
        req = first[t]
        stored, layout = read_histogram_meta(repos[r].writer.store, req.path)
        req.schema.check_same(stored, f"histogram {req.path!r}")
        kind = (r, stored.storage)
        if kind not in spaces:
            spaces.append(kind)
            size.append(0)
        s = spaces.index(kind)
        targets.append(Target(req.path, stored, layout, s, size[s]))
        size[s] += layout.n_keys
    return targets


def _space_sizes(targets: Sequence[Target]) -> tuple[int, ...]:
    n = 1 + max((t.space for t in targets), default=-1)
    return tuple(
        sum(t.layout.n_keys for t in targets if t.space == s) for s in range(n)
    )


def _space_repo(targets: Sequence[Target], repo_of: Mapping[int, int], s: int) -> int:
    return next(repo_of[i] for i, t in enumerate(targets) if t.space == s)


# ------------------------------------------------------------- growth ---


def _growth(requests: Sequence[Request]) -> dict[int, dict[int, list[Any]]]:
    """Per target index (of the request order) and growing axis, the values
    the fills meet, in order of first appearance (as ``hist`` adds them).

    Scalars are known; values from partitioned inputs are found by a pass
    over those inputs alone, before the fill graph is built, so each
    histogram's chunk grid is final when partials are keyed.
    """
    _, target_of = _repositories(requests)
    pieces: dict[int, dict[int, list[Any]]] = {}
    lazy: list[Any] = []
    for req, t in zip(requests, target_of, strict=True):
        axes = [i for i, a in enumerate(req.schema.axes) if growing(a)]
        if not axes:
            continue
        per_axis = pieces.setdefault(t, {i: [] for i in axes})
        for f in req.staged:
            for i, met in read_header(f.file)["categories"].items():
                per_axis[int(i)].append(list(met))
        for fill in req.fills:
            for i in axes:
                src = fill.axes[i]
                if src.partitioned:
                    per_axis[i].append(len(lazy))
                    lazy.append(_first_seen(src.collection))
                else:
                    per_axis[i].append([src.value])
    found = dask.base.compute(*lazy) if lazy else ()
    out: dict[int, dict[int, list[Any]]] = {}
    for t, per_axis in pieces.items():
        req = requests[target_of.index(t)]
        out[t] = {}
        for i, parts in per_axis.items():
            values: list[Any] = []
            for p in parts:
                values.extend(p if isinstance(p, list) else list(found[p]))
            ordered = list(dict.fromkeys(values))
            _check_category_values(req.schema.axes[i], ordered)
            out[t][i] = ordered
    return out


def _first_seen(coll: Any) -> Any:
    """The distinct values of a collection, in order of first appearance."""
    parts = coll.to_delayed()
    if isinstance(coll, da.Array):
        parts = parts.ravel().tolist()
    each = [delayed(_unique_in_order)(p) for p in parts]
    return delayed(_merge_in_order)(each)


def _unique_in_order(part: Any) -> list[Any]:
    if type(part).__module__.startswith("awkward"):
        import awkward as ak  # noqa: PLC0415 - optional dependency

        part = ak.to_numpy(ak.flatten(part, axis=None))
    return pd.unique(np.asarray(part)).tolist()  # type: ignore[no-any-return]


def _merge_in_order(parts: Sequence[list[Any]]) -> list[Any]:
    return list(dict.fromkeys(v for p in parts for v in p))


def _check_category_values(axis: Mapping[str, Any], values: Sequence[Any]) -> None:
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


# -------------------------------------------------------------- fills ---


def _queue(requests: Sequence[Request], target_of: Sequence[int]) -> list[_Queued]:
    """Every fill, with how many identical fills of its target came before."""
    seen: dict[tuple[int, str], int] = {}
    out = []
    for r, (req, t) in enumerate(zip(requests, target_of, strict=True)):
        for f in req.fills:
            key = (t, f.token())
            out.append(_Queued(t, f, seen.get(key, 0), r))
            seen[key] = seen.get(key, 0) + 1
    return out


@dataclass
class _Group:
    """The fill tasks of fills that read the same partitions."""

    members: list[_Queued]
    fills: list[tuple[int, FillSpec]]
    slot_keys: list[list[Key]]
    inputs: list[Any]
    infos: list[PartitionInfo]


def _fill_groups(
    queued: Sequence[_Queued], known: Sequence[frozenset[str]]
) -> list[_Group]:
    """The fill tasks: per group of fills reading the same partitions, the
    inputs of each partition and what is known of their identities.

    Partitions whose every fill is known (by the user's identities) to be in
    its histogram are not read at all; the others are, and their content
    decides (:class:`~dask_hizt._identity.PartitionInfo`).
    """
    by_where = [_by_where(ids) for ids in known]
    scalars = [q for q in queued if not q.fill.sources()]
    lazy = [q for q in queued if q.fill.sources()]
    groups = group_sources([[s.collection for s in q.fill.sources()] for q in lazy])
    out = []
    for members in groups:
        fills = sorted({f for f, _ in members})
        out.extend(_group([lazy[f] for f in fills], known, by_where))
    if scalars:
        out.extend(_group(scalars, known, by_where))
    return out


def _by_where(ids: frozenset[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for x in ids:
        out.setdefault(where_prefix(x), set()).add(x)
    return out


def _group(
    members: Sequence[_Queued],
    known: Sequence[frozenset[str]],
    by_where: Sequence[Mapping[str, set[str]]],
) -> list[_Group]:
    """The fill tasks of one group (none if nothing in it is pending)."""
    # Each distinct input is one slot, however many fills read it; the
    # dataframe columns of the group are packed into one slot.
    slots: dict[Any, int] = {}
    colls: list[Any] = []
    frames: dict[str, int] = {}
    frame_list: list[Any] = []
    specs = []
    for q in members:

        def arg(s: Any) -> Arg | None:
            if s is None:
                return None
            if not s.partitioned:
                return Arg(value=s.value)
            c = s.collection
            if is_frame(c):
                part = frames.setdefault(c._name, len(frame_list))
                if part == len(frame_list):
                    frame_list.append(c)
                return Arg(index=-1, part=part)  # the packed slot, placed below
            key = tuple(keys_of(c))
            slot = slots.setdefault(key, len(colls))
            if slot == len(colls):
                colls.append(c)
            return Arg(index=slot)

        axes = tuple(arg(s) for s in q.fill.axes)
        spec = FillSpec(
            tuple(a for a in axes if a is not None),
            arg(q.fill.weight),
            arg(q.fill.sample),
        )
        specs.append((q.target, spec))
    packed = pack_frames(frame_list) if frame_list else None
    lowered = None
    if packed is not None:
        lowered, frame_coll = packed.optimized()
        frame_slot = len(colls)
        colls.append(frame_coll)
        specs = [(t, _placed(spec, frame_slot)) for t, spec in specs]
    n = npartitions(colls[0]) if colls else 1
    for c in colls:
        if npartitions(c) != n:
            msg = f"fill arguments are partitioned differently: {n} and {npartitions(c)} partitions"
            raise FillError(msg)
    where = _where(colls, lowered, n)
    for q in members:
        if q.fill.given is not None and len(q.fill.given) != n:
            msg = f"partition_ids has {len(q.fill.given)} identities for {n} partitions"
            raise FillError(msg)
    infos = []
    needed = []
    targets = {q.target for q in members}
    for i in range(n):
        given = tuple(
            None if q.fill.given is None else _occurrence(q.fill.given[i], q)
            for q in members
        )
        skip = frozenset(
            j
            for j, (q, g) in enumerate(zip(members, given, strict=True))
            if g is not None and g in known[q.target]
        )
        if len(skip) == len(members):
            continue  # every fill of this partition is in already: not read
        w = where[i]
        near = frozenset((t, x) for t in targets for x in by_where[t].get(w, ()))
        infos.append(PartitionInfo(w, given, skip, near))
        needed.append(i)
    if not needed:
        return []
    if len(needed) < n:
        colls = [
            packed.optimized(needed)[1]
            if packed is not None and j == len(colls) - 1
            else take(c, needed)
            for j, c in enumerate(colls)
        ]
    return [_Group(list(members), specs, [keys_of(c) for c in colls], colls, infos)]


def _occurrence(given: str, q: _Queued) -> str:
    """The user's identity of a fill queued again on the same histogram."""
    return f"{given}~{q.occurrence}" if q.occurrence else given


def _placed(spec: FillSpec, slot: int) -> FillSpec:
    """A fill's dataframe arguments pointed at the packed slot."""

    def move(a: Arg | None) -> Arg | None:
        if a is None or a.index != -1:
            return a
        return Arg(index=slot, part=a.part)

    axes = tuple(move(a) for a in spec.axes)
    return FillSpec(
        tuple(a for a in axes if a is not None), move(spec.weight), move(spec.sample)
    )


def _where(colls: Sequence[Any], lowered: Any, n: int) -> list[str]:
    """The ``where`` of each partition of a group (provenance where an input
    tells it, else positions)."""
    found = []
    for c in colls:
        if is_awkward(c):
            found.append(where_of(c))
    if lowered is not None:
        found.append(where_of(colls[-1], lowered))
    known = [w for w in found if w != positions(n)]
    if not known:
        return positions(n)
    return ["|".join(dict.fromkeys(w[i] for w in known)) for i in range(n)]


# -------------------------------------------------------------- staged ---


def _staged_loads(
    name: str,
    requests: Sequence[Request],
    target_of: Sequence[int],
    targets: Sequence[Target],
    space_sizes: tuple[int, ...],
    settings: GraphSettings,
    known: Sequence[frozenset[str]],
) -> dict[Key, Any] | None:
    """Load tasks of staged fills (:mod:`dask_hizt.runner`), a group of files each."""
    from ._stage import staged_id  # noqa: PLC0415

    files = [
        f.file
        for req, t in zip(requests, target_of, strict=True)
        for f in req.staged
        if staged_id(f.item) not in known[t]
    ]
    if not files:
        return None
    load = StagedLoad(
        tuple(targets),
        {t.path: i for i, t in enumerate(targets)},
        space_sizes,
        settings.dense,
    )
    per_task = max(1, int(dask.config.get("dask_hizt.staged-per-task")))
    return {
        (name, i // per_task): (load, files[i : i + per_task])
        for i in range(0, len(files), per_task)
    }


# -------------------------------------------------------------- owners ---


def _cluster_threads() -> int:
    """Threads that run tasks: the distributed Client's cluster, else the
    local scheduler's."""
    try:
        from distributed import default_client  # noqa: PLC0415 - optional

        return max(1, int(sum(default_client().nthreads().values())))
    except (ImportError, ValueError):
        return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _owners(
    targets: Sequence[Target], writer: icechunk.Session, settings: GraphSettings
) -> list[Owner]:
    """Cut a key space's chunks into owners of about ``dask_hizt.owner-bytes`` each.

    ``dask_hizt.owners`` fixes the count instead. Owners take consecutive
    chunks, so an owner of small histograms may span several of them. Each
    gets a fork of ``writer`` (the session, or the creation fork).
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
    concurrency = int(dask.config.get("dask_hizt.write-concurrency"))
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
        owners.append(
            Owner(tuple(segments), writer.fork(), settings.dense, concurrency)
        )
    return owners
