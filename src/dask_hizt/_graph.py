"""The only module that builds dask graphs.

A compute of one or more histograms is this graph::

    fill(partition 0..P-1)          one sparse partial per key space, over
                                    all of its keys
      -> route (levels of combine)  each level merges up to `split-every`
                                    groups and splits the key range into up
                                    to `split-every` owner ranges
      -> write(owner 0..O-1)        read-merge-write of the owner's chunks
                                    in its fork
      -> commit (one per repository) merge the forks, ONE commit

Each routing level has about P nodes while ranges split, and O x groups
nodes after; no node holds more than its key range, so no task ever holds a
whole histogram, and the graph grows like P x levels + O x log(P).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import dask.array as da
import dask.config
import icechunk
from dask.blockwise import (
    BlockwiseDepDict,
    blockwise,
    fuse_roots,
    optimize_blockwise,
)
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from ._checkpoint import (
    BatchCommit,
    ChainState,
    Gate,
    pick_fork,
    snapshot_of,
    write_batch,
)
from ._commit import Commit, CommitTask
from ._fill import FillTask
from ._identity import PartitionInfo
from ._inputs import is_awkward
from ._lazy import FillBlock, make_lazy
from ._partial import combine, dense_fraction
from ._repo import RepoRef
from ._writer import Owner
from .errors import StoreError
from .storage import redact

__all__ = [
    "Checkpoint",
    "FillBlock",
    "GraphSettings",
    "StoreLayer",
    "compute_graph",
    "fill_layer",
    "optimize",
    "route_and_write",
]

Key = Hashable


@dataclass(frozen=True)
class Guarded:
    """A task that touches a repository: icechunk's storage errors (an
    endpoint gone, a permission refused) become a :class:`StoreError` naming
    the store, with secrets blanked."""

    fn: Callable[..., Any]
    store: str

    def __call__(self, *args: Any) -> Any:
        try:
            return self.fn(*args)
        except icechunk.StorageError as err:
            msg = f"store {self.store}: {redact(str(err))}"
            raise StoreError(msg) from None


def _where(ref: RepoRef) -> str:
    return ref.url or ref.local_path or "(an icechunk repository)"


@dataclass(frozen=True)
class GraphSettings:
    """dask_hizt's tunables, read from ``dask.config`` when a graph is built
    (a ``dask.config.set`` on the client does not reach a cluster's workers).

    Attributes
    ----------
    split_every
        Fan-in of the routing tree (``dask_hizt.split-every``).
    dense
        Dense fraction of partials (``dask_hizt.dense-fraction``).
    commit_retries
        Attempts of a commit that races others (``dask_hizt.commit-retries``).
    """

    split_every: int
    dense: float
    commit_retries: int

    @classmethod
    def from_config(cls) -> GraphSettings:
        """The settings in force now."""
        return cls(
            int(dask.config.get("dask_hizt.split-every")),
            dense_fraction(),
            int(dask.config.get("dask_hizt.commit-retries")),
        )


def route_and_write(
    dsk: dict[Key, Any],
    name: str,
    fill_keys: Sequence[Key],
    owners: Sequence[Owner],
    settings: GraphSettings,
    space: int | None = None,
    make_owner: Callable[[int, list[Any]], Any] | None = None,
) -> list[Key]:
    """Add routing and owner tasks of one key space to ``dsk``; return the owners' keys.

    Parameters
    ----------
    dsk
        Graph to extend; must already hold ``fill_keys``.
    name
        Prefix that makes this key space's key names unique.
    fill_keys
        Keys of the fill tasks.
    owners
        Owner tasks, in key order (their key ranges tile the key space).
    settings
        Fan-in (and fan-out) of the routing tree, and the dense fraction.
    space
        Which element of the fill tasks' output tuples is this key space's
        partial (``None``: the fill output is the partial itself).
    make_owner
        Makes the task of owner ``o`` from its routed children; by default
        ``(owners[o], children)``.
    """
    if not fill_keys:
        return []  # nothing filled: nothing to write
    f = max(2, settings.split_every)
    n_owners = len(owners)
    ranges: list[tuple[int, int]] = [(0, n_owners)]
    leaves: list[Any] = [
        k if space is None else (operator.getitem, k, space) for k in fill_keys
    ]
    nodes: dict[tuple[int, int], Any] = {(0, g): leaf for g, leaf in enumerate(leaves)}
    n_groups = len(fill_keys)
    level = 0
    while True:
        level += 1
        new_ranges: list[tuple[int, int]] = []
        parent: list[int] = []
        for ri, (o0, o1) in enumerate(ranges):
            pieces = min(f, o1 - o0)
            bounds = [o0 + (o1 - o0) * j // pieces for j in range(pieces + 1)]
            for a, b in pairwise(bounds):
                new_ranges.append((a, b))
                parent.append(ri)
        new_groups = math.ceil(n_groups / f)
        final = new_groups == 1 and all(b - a == 1 for a, b in new_ranges)
        new_nodes: dict[tuple[int, int], Key] = {}
        for nri, (o0, o1) in enumerate(new_ranges):
            for ng in range(new_groups):
                children = [
                    nodes[(parent[nri], g)]
                    for g in range(ng * f, min((ng + 1) * f, n_groups))
                ]
                key: Key
                if final:
                    key = (f"hizt-write-{name}", o0)
                    dsk[key] = (
                        (owners[o0], children)
                        if make_owner is None
                        else make_owner(o0, children)
                    )
                else:
                    key = (f"hizt-route-{name}", level, nri, ng)
                    lo = owners[o0].key_range[0]
                    hi = owners[o1 - 1].key_range[1]
                    dsk[key] = (combine, children, lo, hi, settings.dense)
                new_nodes[(nri, ng)] = key
        if final:
            return [new_nodes[(i, 0)] for i in range(len(new_ranges))]
        ranges, nodes, n_groups = new_ranges, dict(new_nodes), new_groups


def awkward_optimize() -> Any:
    """dask-awkward's optimizer: the very object its arrays use."""
    from dask_awkward.lib.core import Array  # noqa: PLC0415 - optional dependency

    return Array.__dask_optimize__


def fill_layer(
    name: str,
    task: FillTask,
    slot_keys: Sequence[Sequence[Key]],
    infos: Sequence[PartitionInfo],
    inputs: Sequence[Any],
) -> HighLevelGraph:
    """The fill tasks of ``len(infos)`` partitions, ``(name, i)``, on top of their inputs.

    Each gets its partition's inputs (``slot_keys[slot][i]``) and then its
    :class:`~dask_hizt._identity.PartitionInfo`. Built as a blockwise layer
    where every input is partitioned as ``(collection name, i)``, so that dask
    fuses element-wise work on the inputs (e.g. a weight times a factor) into
    the fill task instead of shipping each derived array to it.
    """
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
    fused = fuse_roots(optimize_blockwise(dsk, keys=list(keys)), keys=list(keys))
    layers = dict(fused.layers)
    for name, layer in layers.items():
        if name.startswith("hizt-fill-"):
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
        self, mapping: dict[Key, Any], fill_names: Sequence[str], outputs: Sequence[Key]
    ) -> None:
        super().__init__(mapping)
        self.fill_names = tuple(fill_names)
        self.outputs = tuple(outputs)

    def mock(self) -> MaterializedLayer:
        """Each output waits for partition 0 of every fill layer, and does nothing."""
        zero = [(f, 0) for f in self.fill_names]
        return MaterializedLayer(dict.fromkeys(self.outputs, (_mocked, zero)))


def _mocked(parts: Any) -> None:
    del parts


def compute_graph(
    name: str,
    token: str,
    fill_keys: Sequence[Key],
    spaces: Sequence[Sequence[Owner]],
    commits: Sequence[Commit],
    settings: GraphSettings,
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
    fill_keys
        Keys of the fill tasks (see :func:`fill_layer`).
    spaces
        Per key space, its owners in key order.
    commits
        One per repository.
    settings
        The tunables, captured when the graph is built.
    checkpoint
        Commit in batches of fill tasks (see :mod:`._checkpoint`); by
        default ONE commit per repository.
    """
    dsk: dict[Key, Any] = {}
    if checkpoint is not None and len(fill_keys) > checkpoint.batch:
        _checkpointed(
            dsk, name, token, fill_keys, spaces, commits, settings, checkpoint
        )
        return dsk
    where = {s: _where(c.ref) for c in commits for s in c.spaces}
    writers = [
        route_and_write(
            dsk,
            f"{token}-{s}",
            fill_keys,
            owners,
            settings,
            space=s,
            make_owner=functools.partial(_owner, owners, where.get(s, "")),
        )
        for s, owners in enumerate(spaces)
    ]
    for i, c in enumerate(commits):
        keys = [k for s in c.spaces for k in writers[s]]
        dsk[(name, i)] = (Guarded(CommitTask(c, f"{name}-{i}"), _where(c.ref)), keys)
    return dsk


@dataclass(frozen=True)
class Checkpoint:
    """Commit every ``batch`` fill tasks, or (``seconds`` not ``None``) after
    the first batch that ends ``seconds`` after the previous commit."""

    batch: int
    seconds: float | None
    start: float


def _checkpointed(
    dsk: dict[Key, Any],
    name: str,
    token: str,
    fill_keys: Sequence[Key],
    spaces: Sequence[Sequence[Owner]],
    commits: Sequence[Commit],
    settings: GraphSettings,
    checkpoint: Checkpoint,
) -> None:
    """Routing, owners, gates and commits of a checkpointed compute."""
    size = checkpoint.batch
    batches = [
        range(a, min(a + size, len(fill_keys))) for a in range(0, len(fill_keys), size)
    ]
    for i, c in enumerate(commits):
        owned = [(s, o) for s in c.spaces for o in range(len(spaces[s]))]
        forks = {so: j for j, so in enumerate(owned)}
        prev: Key = (f"hizt-start-{token}", i)
        dsk[prev] = ChainState(c.base, checkpoint.start, creation=c.creation)
        for b, batch in enumerate(batches):
            gate = (f"hizt-gate-{token}", i, b)
            final = b == len(batches) - 1
            dsk[gate] = (
                Guarded(
                    Gate(c.ref, c.branch, len(forks), checkpoint.seconds, final),
                    _where(c.ref),
                ),
                prev,
            )
            writers: list[Key] = []
            for s in c.spaces:
                writers += route_and_write(
                    dsk,
                    f"{token}-{s}-b{b}",
                    [fill_keys[k] for k in batch],
                    spaces[s],
                    settings,
                    space=s,
                    make_owner=functools.partial(
                        _batch_owner, dsk, token, gate, forks, spaces[s], s, b, c.ref
                    ),
                )
            step = BatchCommit(c, f"{name}-{i}-{b}", b, len(batches))
            commit = (f"hizt-commit-{token}", i, b)
            dsk[commit] = (Guarded(step, _where(c.ref)), gate, writers)
            prev = commit
        dsk[(name, i)] = (snapshot_of, prev)


def _batch_owner(
    dsk: dict[Key, Any],
    token: str,
    gate: Key,
    forks: Mapping[tuple[int, int], int],
    owners: Sequence[Owner],
    s: int,
    b: int,
    ref: RepoRef,
    o: int,
    children: list[Any],
) -> Any:
    """Owner ``o`` of key space ``s`` in batch ``b``: it writes through the
    fork its gate opened, after (and with what was carried by) batch ``b - 1``."""
    fork = (f"hizt-fork-{token}", s, b, o)
    dsk[fork] = (pick_fork, gate, forks[(s, o)])
    before = (f"hizt-write-{token}-{s}-b{b - 1}", o) if b else None
    return (Guarded(write_batch, _where(ref)), owners[o], fork, children, before)


def _owner(owners: Sequence[Owner], where: str, o: int, children: list[Any]) -> Any:
    return (Guarded(owners[o], where), children)
