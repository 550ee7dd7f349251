"""The only module that builds dask graphs: a :class:`~dask_hizt._plan.Plan`
becomes the graph of a compute (:func:`build`)::

    fill(partition 0..P-1)          one partial per key space (fill layers,
                                    blockwise on the inputs)
      -> route                      the tree of :func:`dask_hizt._route.route`
      -> write(owner 0..O-1)        read-merge-write of the owner's chunks
                                    in its fork
      -> commit (one per repository) merge the forks, ONE commit

or, with a checkpoint, batches of that chain (:mod:`dask_hizt._checkpoint`).

When several dask_hizt collections are computed together (``dask.compute(h1,
h2, report)``), dask hands their merged graph to the optimizer they share
once; :func:`merge` then plans their requests as one compute, so the inputs
are read by one fill task per partition for all of them and each repository
gets ONE commit, as with :func:`dask_hizt.compute`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask.array as da
import dask.config
import icechunk
from dask.base import tokenize
from dask.blockwise import (
    BlockwiseDepDict,
    blockwise,
    fuse_roots,
    optimize_blockwise,
)
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, Layer, MaterializedLayer
from dask.typing import Key as DaskKey

from ._checkpoint import (
    BatchCommit,
    ChainState,
    Checkpoint,
    Gate,
    pick_fork,
    snapshot_of,
    write_batch,
)
from ._commit import CommitPlan, CommitTask
from ._fill import FillTask
from ._fill_groups import FillGroup
from ._inputs import is_awkward
from ._lazy import FillBlock, make_lazy
from ._plan import KeySpace, Plan, plan
from ._repo import RepoRef
from ._request import Request
from ._route import route
from ._visible import Marker, marker_of
from .config import Settings
from .errors import StoreError
from .storage import redact

__all__ = [
    "Built",
    "Planned",
    "StoreLayer",
    "Unplanned",
    "awkward_optimize",
    "build",
    "join_awkward_optimizer",
    "merge",
    "optimize",
    "pending_outputs",
]

Key = Hashable


@dataclass(frozen=True)
class Built:
    """A compute's graph and its output keys, one per repository: the
    snapshot id of its (last) commit."""

    graph: HighLevelGraph
    keys: list[Key]


@dataclass(frozen=True)
class Planned:
    """What a :class:`StoreLayer` was planned from, so that :func:`merge` can
    plan it again together with others.

    ``repositories`` gives, per output, the repository and branch
    (:attr:`Request.repository`) whose commit it is.
    """

    requests: tuple[Request, ...]
    checkpoint: Checkpoint | None
    repositories: tuple[tuple[Any, str], ...]


def build(
    plan: Plan,
    requests: Sequence[Request],
    name: str,
    token: str,
    checkpoint: Checkpoint | None = None,
) -> Built:
    """The graph of ``plan`` (planned from ``requests``): its fill layers
    (``hizt-fill-{token}-...``), and one :class:`StoreLayer` ``name`` of
    routing, owners and commits, whose outputs are ``(name, i)`` for
    ``plan.commits[i]``."""
    layers: dict[str, Any] = {}
    dependencies: dict[str, set[str]] = {}
    fill_keys: list[Key] = []
    touches: list[frozenset[int] | None] = []
    for g, group in enumerate(plan.groups):
        layer_name = f"hizt-fill-{token}-{g}"
        fg = fill_layer(layer_name, plan.fill_task(group), group)
        layers.update(fg.layers)
        dependencies.update(fg.dependencies)
        fill_keys.extend((layer_name, i) for i in range(len(group.infos)))
        spaces = frozenset(plan.targets[t].space for t, _ in group.specs)
        touches.extend([spaces] * len(group.infos))
    fill_names = [f"hizt-fill-{token}-{g}" for g in range(len(plan.groups))]
    if plan.staged is not None:
        layer_name = f"hizt-fill-{token}-staged"
        # staged files live in the repositories' directories
        markers = tuple(
            marker_of(c.ref.local_path)
            for c in plan.commits
            if c.ref.local_path is not None
        )
        load = Guarded(plan.staged.load, "staged fills", markers)
        staged = {
            (layer_name, i): (load, list(files))
            for i, files in enumerate(plan.staged.batches)
        }
        layers[layer_name] = MaterializedLayer(staged)
        dependencies[layer_name] = set()
        fill_keys.extend(staged)
        touches.extend([None] * len(staged))
        fill_names.append(layer_name)
    dsk = _store_tasks(
        name,
        token,
        _Fills(fill_keys, touches),
        plan.spaces,
        plan.commits,
        plan.settings,
        checkpoint,
    )
    outputs: list[Key] = [(name, i) for i in range(len(plan.commits))]
    repositories: list[tuple[Any, str]] = [("", "")] * len(plan.commits)
    for r, i in enumerate(plan.output_of):
        repositories[i] = requests[r].repository
    source = Planned(tuple(requests), checkpoint, tuple(repositories))
    layers[name] = StoreLayer(dsk, fill_names, outputs, source)
    dependencies[name] = set(fill_names)
    return Built(HighLevelGraph(layers, dependencies), outputs)


def merge(dsk: HighLevelGraph) -> HighLevelGraph:
    """Plan the dask_hizt computes in ``dsk`` as one.

    The requests of every :class:`Unplanned` and :class:`StoreLayer` layer
    (those with the same checkpoint batching together) are planned and built
    as one compute; each old layer keeps its name and output keys, now
    aliases of the merged commits, and its fill layers are dropped. A
    compute alone is built as it is. The inputs stay as they are, so
    dask-awkward's optimizer, run afterwards, projects the columns that the
    merged fills touch.
    """
    stores = {
        n: x for n, x in dsk.layers.items() if isinstance(x, StoreLayer | Unplanned)
    }
    batching: dict[tuple[int, float | None] | None, list[str]] = {}
    for n, store in stores.items():
        c = store.source.checkpoint
        batching.setdefault(None if c is None else (c.batch, c.seconds), []).append(n)
    if not any(isinstance(x, Unplanned) for x in stores.values()) and all(
        len(names) == 1 for names in batching.values()
    ):
        return dsk
    layers = dict(dsk.layers)
    dependencies = {n: set(d) for n, d in dsk.dependencies.items()}
    for names in batching.values():
        if len(names) == 1:
            (n,) = names
            alone = stores[n]
            if isinstance(alone, Unplanned):
                layers.update(alone.built.graph.layers)
                dependencies.update(
                    {k: set(d) for k, d in alone.built.graph.dependencies.items()}
                )
            continue
        requests = [r for n in names for r in stores[n].source.requests]
        checkpoints = [
            c for n in names if (c := stores[n].source.checkpoint) is not None
        ]
        checkpoint = min(checkpoints, key=lambda c: c.start) if checkpoints else None
        token = tokenize(sorted(names))
        name = f"hizt-commit-{token}"
        built = build(plan(requests), requests, name, token, checkpoint)
        merged = built.graph.layers[name]
        assert isinstance(merged, StoreLayer)
        commit_of = dict(zip(merged.source.repositories, built.keys, strict=True))
        for n in names:
            old = stores[n]
            for f in old.fill_names:
                layers.pop(f, None)
                dependencies.pop(f, None)
            layers[n] = MaterializedLayer(
                {
                    out: commit_of[repo]
                    for out, repo in zip(
                        old.outputs, old.source.repositories, strict=True
                    )
                }
            )
            dependencies[n] = {name}
        layers.update(built.graph.layers)
        dependencies.update({n: set(d) for n, d in built.graph.dependencies.items()})
    return HighLevelGraph(layers, dependencies)


def pending_outputs(
    groups: Sequence[FillGroup], tasks: Sequence[FillTask], token: str
) -> list[Delayed]:
    """The dry fill tasks of ``Hist.pending``, one ``Delayed`` per partition
    of each group, in order."""
    graphs = [
        fill_layer(f"hizt-pending-{token}-{g}", task, group)
        for g, (group, task) in enumerate(zip(groups, tasks, strict=True))
    ]
    layers: dict[str, Any] = {}
    dependencies: dict[str, set[str]] = {}
    for fg in graphs:
        layers.update(fg.layers)
        dependencies.update(fg.dependencies)
    graph = HighLevelGraph(layers, dependencies)
    return [
        Delayed(
            (f"hizt-pending-{token}-{g}", i), graph, layer=f"hizt-pending-{token}-{g}"
        )
        for g, group in enumerate(groups)
        for i in range(len(group.infos))
    ]


@dataclass(frozen=True)
class Guarded:
    """A task that touches a repository: icechunk's storage errors (an
    endpoint gone, a permission refused) become a :class:`StoreError` naming
    the store, with secrets blanked; and ``markers`` (those of local
    repositories) must be what the client wrote, or nothing is done."""

    fn: Callable[..., Any]
    store: str
    markers: tuple[Marker, ...] = ()

    def __call__(self, *args: Any) -> Any:
        # before anything is written: the client's directory, not another disk
        for marker in self.markers:
            marker.check()
        try:
            return self.fn(*args)
        except icechunk.StorageError as err:
            msg = f"store {self.store}: {redact(str(err))}"
            raise StoreError(msg) from None


def _where(ref: RepoRef) -> str:
    return ref.url or ref.local_path or "(an icechunk repository)"


def _guarded(fn: Callable[..., Any], ref: RepoRef) -> Guarded:
    """``fn`` as a :class:`Guarded` task of the repository ``ref``."""
    markers = () if ref.local_path is None else (marker_of(ref.local_path),)
    return Guarded(fn, _where(ref), markers)


def awkward_optimize() -> Any:
    """dask-awkward's optimizer: the very object its arrays use."""
    from dask_awkward.lib.core import Array  # noqa: PLC0415 - optional dependency

    return Array.__dask_optimize__


#: The settings through which collections look up dask-awkward's optimizer
#: (``dask.context.globalmethod``): dask-awkward's arrays and scalars, and
#: dask-histogram's histograms (``hist.dask``), which use it when
#: dask-awkward is installed.
_AWKWARD_OPTIMIZE_KEYS = (
    "awkward_array_optimize",
    "awkward_scalar_optimize",
    "histogram_optimize",
)


def join_awkward_optimizer() -> None:
    """Have dask-awkward's collections optimize with :func:`_awkward_merged`.

    dask optimizes collections together only when they share one optimizer
    object, and dask-awkward must project columns over every collection of a
    compute (a histogram's fills next to a report and ``hist.dask``
    histograms), so the histograms use the optimizer of dask-awkward's
    arrays; and that optimizer must :func:`merge` the histograms before it
    projects. dask-awkward and dask-histogram let a setting take their
    optimizer's place: this sets those the user has not set.
    """
    unset = {
        k: _awkward_merged
        for k in _AWKWARD_OPTIMIZE_KEYS
        if k not in dask.config.config
    }
    if unset:
        dask.config.set(unset)


def _awkward_merged(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask-awkward's optimizations, after :func:`merge`."""
    from dask_awkward.lib.optimize import all_optimizations  # noqa: PLC0415

    if isinstance(dsk, HighLevelGraph):
        dsk = merge(dsk)
    return all_optimizations(dsk, keys, **kwargs)


def fill_layer(name: str, task: FillTask, group: FillGroup) -> HighLevelGraph:
    """The fill tasks of a group's partitions, ``(name, i)``, on top of their inputs.

    Each gets its partition's inputs (``group.slot_keys[slot][i]``) and then
    its :class:`~dask_hizt._identity.PartitionInfo`. Built as a blockwise layer
    where every input is partitioned as ``(collection name, i)``, so that dask
    fuses element-wise work on the inputs (e.g. a weight times a factor) into
    the fill task instead of shipping each derived array to it.
    """
    infos, inputs, slot_keys = group.infos, group.inputs, group.slot_keys
    n = len(infos)
    per_block = BlockwiseDepDict({(i,): info for i, info in enumerate(infos)})
    names = [
        keys[0][0] if keys and isinstance(keys[0], tuple) else None
        for keys in slot_keys
    ]
    aligned = all(
        nm is not None and list(keys) == [(nm, i) for i in range(n)]
        for nm, keys in zip(names, slot_keys, strict=True)
    )
    # dask-expr (dataframe) graphs name their layers otherwise than their
    # keys, which blockwise fusion cannot follow; their partitions are one
    # fused task each anyway.
    arrays = all(isinstance(c, da.Array) for c in inputs)
    layer: Any
    if inputs and all(is_awkward(c) for c in inputs):
        # dask-awkward's own layer: mockable, so that its optimizer can run
        # partition 0 on typetracers to find the columns the fills touch.
        from dask_awkward.lib.core import partitionwise_layer  # noqa: PLC0415

        layer = partitionwise_layer(FillBlock(task), name, *inputs, per_block)
    elif names and aligned and arrays:
        layer = blockwise(
            FillBlock(task),
            name,
            "i",
            *[x for nm in names for x in (nm, "i")],
            per_block,
            "i",
            numblocks=dict.fromkeys(names, (n,)),
        )
    else:
        layer = {
            (name, i): (task, [k[i] for k in slot_keys], info)
            for i, info in enumerate(infos)
        }
    return HighLevelGraph.from_collections(name, layer, dependencies=list(inputs))


def optimize(dsk: HighLevelGraph, keys: Sequence[Key]) -> HighLevelGraph:
    """Fuse element-wise work on the inputs into the fill tasks, and have the
    fused fill tasks make their inputs one at a time (see :mod:`._lazy`)."""
    fills = {
        n
        for layer in dsk.layers.values()
        if isinstance(layer, StoreLayer)
        for n in layer.fill_names
    }
    fused = fuse_roots(optimize_blockwise(dsk, keys=list(keys)), keys=list(keys))
    layers = dict(fused.layers)
    for name, layer in layers.items():
        if name in fills:
            layers[name] = MaterializedLayer(
                {k: make_lazy(v) for k, v in layer.items()},
                annotations=layer.annotations,
            )
    return HighLevelGraph(layers, dict(fused.dependencies))


class StoreLayer(MaterializedLayer):
    """The routing, owner and commit tasks of a compute.

    dask-awkward's optimizer runs partition 0 of the whole graph on
    typetracers to learn which columns are read; :meth:`mock` stands in for
    this layer then, so that nothing is routed, written or committed.
    """

    def __init__(
        self,
        mapping: dict[Key, Any],
        fill_names: Sequence[str],
        outputs: Sequence[Key],
        source: Planned,
    ) -> None:
        super().__init__(mapping)
        self.fill_names = tuple(fill_names)
        self.outputs = tuple(outputs)
        self.source = source

    def mock(self) -> MaterializedLayer:
        """Each output waits for partition 0 of every fill layer, and does nothing."""
        zero = [(f, 0) for f in self.fill_names]
        return MaterializedLayer(dict.fromkeys(self.outputs, (_mocked, zero)))


def _mocked(parts: Any) -> None:
    del parts


class Unplanned(Layer):
    """A compute not planned yet: what ``__dask_graph__`` gives, so that the
    computes of one ``dask.compute`` are planned once, together, by
    :func:`merge` (in the optimizer), not each alone first.

    Anything that reads its tasks before (``dict(h.__dask_graph__())``, a
    compute without optimization) gets the whole graph of the compute
    planned alone.
    """

    fill_names: tuple[str, ...] = ()

    def __init__(self, source: Planned, name: str, token: str) -> None:
        super().__init__()
        self.source = source
        self.name = name
        self.token = token
        self.outputs: tuple[DaskKey, ...] = tuple(
            (name, i) for i in range(len(source.repositories))
        )

    @cached_property
    def built(self) -> Built:
        """The compute planned alone."""
        requests = self.source.requests
        return build(
            plan(requests), requests, self.name, self.token, self.source.checkpoint
        )

    @cached_property
    def _tasks(self) -> dict[DaskKey, Any]:
        return dict(self.built.graph.to_dict())

    def is_materialized(self) -> bool:
        return "_tasks" in self.__dict__

    def get_output_keys(self) -> set[DaskKey]:
        return set(self.outputs)

    def __getitem__(self, key: DaskKey) -> Any:
        return self._tasks[key]

    def __iter__(self) -> Iterator[DaskKey]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


@dataclass(frozen=True)
class _Fills:
    """The fill tasks of a compute, and per task the key spaces its partials
    can add to (``None``: any, as for staged loads)."""

    keys: Sequence[Key]
    touches: Sequence[frozenset[int] | None]

    def of(self, space: int) -> list[Key]:
        """The keys of the tasks that can add to ``space``."""
        return [
            k
            for k, on in zip(self.keys, self.touches, strict=True)
            if on is None or space in on
        ]


def _store_tasks(
    name: str,
    token: str,
    fills: _Fills,
    spaces: Sequence[KeySpace],
    commits: Sequence[CommitPlan],
    settings: Settings,
    checkpoint: Checkpoint | None = None,
) -> dict[Key, Any]:
    """The tasks of one compute after the fills: routing, owners and the commits.

    Parameters
    ----------
    name
        Key name of the outputs, ``(name, i)`` for ``commits[i]``: the
        snapshot id each repository's (last) commit made.
    token
        Suffix that makes the other key names unique.
    fills
        The fill tasks.
    spaces
        The key spaces, with their owners in key order.
    commits
        One per repository.
    settings
        The tunables, captured when the graph is built.
    checkpoint
        Commit in batches of fill tasks (see :mod:`._checkpoint`); by
        default ONE commit per repository.
    """
    dsk: dict[Key, Any] = {}
    if checkpoint is not None and len(fills.keys) > checkpoint.batch:
        _checkpointed(dsk, name, token, fills, spaces, commits, settings, checkpoint)
        return dsk
    for i, c in enumerate(commits):
        writers: list[Key] = []
        for s in c.spaces:
            space = spaces[s]
            routed = route(
                dsk,
                f"{token}-{s}",
                fills.of(s),
                space.owners,
                settings,
                s,
                space.nbytes,
            )
            for o, children in enumerate(routed):
                key = (f"hizt-write-{token}-{s}", o)
                dsk[key] = (_guarded(space.owners[o], c.ref), children)
                writers.append(key)
        dsk[(name, i)] = (_guarded(CommitTask(c, f"{name}-{i}"), c.ref), writers)
    return dsk


def _checkpointed(
    dsk: dict[Key, Any],
    name: str,
    token: str,
    fills: _Fills,
    spaces: Sequence[KeySpace],
    commits: Sequence[CommitPlan],
    settings: Settings,
    checkpoint: Checkpoint,
) -> None:
    """Routing, owners, gates and commits of a checkpointed compute.

    The repositories' chains go in step: batch ``b`` of each opens after
    batch ``b - 1`` of every repository committed, so that dask's ordering
    cannot run one repository's batches all before another's first commit
    (a job killed then would have checkpointed nothing there). Every owner
    writes in every batch (its fork carries what earlier batches wrote),
    so each batch routes all its fill tasks.
    """
    size = checkpoint.batch
    n = len(fills.keys)
    batches = [range(a, min(a + size, n)) for a in range(0, n, size)]
    owned = [
        [(s, o) for s in c.spaces for o in range(len(spaces[s].owners))]
        for c in commits
    ]
    forks = [{so: j for j, so in enumerate(ow)} for ow in owned]
    prev: list[Key] = []
    for i, c in enumerate(commits):
        prev.append((f"hizt-start-{token}", i))
        dsk[prev[i]] = ChainState(c.base, checkpoint.start, creation=c.creation)
    for b, batch in enumerate(batches):
        final = b == len(batches) - 1
        done = list(prev)
        for i, c in enumerate(commits):
            gate = (f"hizt-gate-{token}", i, b)
            others = [k for j, k in enumerate(done) if j != i]
            dsk[gate] = (
                _guarded(
                    Gate(c.ref, c.branch, len(forks[i]), checkpoint.seconds, final),
                    c.ref,
                ),
                (_after, done[i], others) if others and b else done[i],
            )
            writers: list[Key] = []
            for s in c.spaces:
                space = spaces[s]
                routed = route(
                    dsk,
                    f"{token}-{s}-b{b}",
                    [fills.keys[k] for k in batch],
                    space.owners,
                    settings,
                    s,
                    space.nbytes,
                )
                for o, children in enumerate(routed):
                    # owner o writes through the fork its gate opened, after
                    # (and with what was carried by) batch b - 1
                    fork = (f"hizt-fork-{token}", s, b, o)
                    dsk[fork] = (pick_fork, gate, forks[i][(s, o)])
                    before = (f"hizt-write-{token}-{s}-b{b - 1}", o) if b else None
                    key = (f"hizt-write-{token}-{s}-b{b}", o)
                    dsk[key] = (
                        _guarded(write_batch, c.ref),
                        space.owners[o],
                        fork,
                        children,
                        before,
                    )
                    writers.append(key)
            step = BatchCommit(c, f"{name}-{i}-{b}", b, len(batches))
            commit = (f"hizt-commit-{token}", i, b)
            dsk[commit] = (_guarded(step, c.ref), gate, writers)
            prev[i] = commit
    for i, last in enumerate(prev):
        dsk[(name, i)] = (snapshot_of, last)


def _after(value: Any, others: Any) -> Any:
    """``value``, once ``others`` are done."""
    del others
    return value
