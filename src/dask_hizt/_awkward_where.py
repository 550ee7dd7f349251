"""Where each partition of a dask-awkward array comes from: stable identities.

A fill commit records an identity per input partition so that a job run
again (in another process, on another machine) skips what is already in.
dask key names of uproot/coffea collections change from one process to the
next, so :func:`awkward_where` builds identities from the *provenance* of
each partition instead: which file, which tree, which entries. It looks only
at the graph and at file metadata, never at event data.

Strings
-------
One string per partition of the collection: the name of the file it reads
(its last path component), the tree and the entries or row groups. Free-form
fields are JSON strings (double-quoted, escaped), so no name can make two
provenances print alike; numbers are decimal integers. The strings only
tell apart partitions whose contents are equal (an identity is this plus a
digest of what the fill takes from the partition, see
:mod:`dask_hizt._identity`), so they hold nothing that changes when the
same data is read again: no directory (a copy, another mount point or
another URL of the file), no UUID, size or time (a file written again with
the same entries). Nothing is opened or read on the client.

``uproot.dask(..., open_files=True)`` (io_func ``_UprootRead``) and
``uproot.dask(..., open_files=False)`` (``_UprootOpenAndRead``), and so
coffea's ``NanoEventsFactory.from_root(..., mode="dask")`` and
``apply_to_fileset``::

    root:file="nano_dy.root",tree="Events",entries=0-10000

- ``tree``: the object path of the TTree (or RNTuple) without its cycle
  (``"Events;1"`` and ``"Events"`` are one tree).
- ``entries=start-stop``: the entry range read. ``open_files=False`` with
  ``steps_per_file`` (no entry ranges known on the client) gives
  ``step=i/n`` instead: step ``i`` of ``n`` equal steps of the tree.

``dask_awkward.from_parquet`` (file-wise and row-group-wise)::

    parquet:file="part0.parquet",row_groups=all
    parquet:file="part0.parquet",row_groups=[2]

A partition that reads several input layers (e.g. ``dak.zip`` of two
reads) gets the JSON array of its components' strings, sorted, duplicates
dropped (two reads of the same entries give one component)::

    ["parquet:...","root:..."]

Partition-wise check
--------------------
The graph is walked from the collection's layer down to its input layers.
Each layer gets, per output partition, the set of (input layer, input
partition) it reads, or is *constant*: no input layer below it, only
single-task layers (``dask.delayed`` values, dask-awkward's known scalars)
and what is computed from them alone:

- an ``AwkwardInputLayer`` of a recognised io_func (exact class, see above):
  partition ``i`` reads its own input ``i``;
- a ``Blockwise`` layer (dask-awkward's partition-wise layers): one output
  index, no new axes, not culled; every dependency is either indexed like
  the output with as many blocks (partition ``i`` reads its partition ``i``)
  or is constant (a broadcast one-block argument, a ``TaskRef``); the only
  other blockwise argument allowed is dask's ``BlockIndex``;
- a ``MaterializedLayer`` whose tasks are all plain key aliases
  ``(dep, j)`` of dependencies: ``coll.partitions[...]`` and
  ``dak.concatenate`` (axis 0) of whole partitions;
- anything else (repartition, slicing along axis 0, reductions, tree
  reductions, an unknown input such as ``from_awkward`` or ``from_map`` of an
  unknown function, a dask.array or dask.dataframe argument) makes the
  answer None as soon as it is below the collection.

The answer is a list only if every partition reads exactly one partition of
each input layer it reads, and no two partitions have the same string (e.g.
``dak.concatenate([a, a])`` or ``a.partitions[[0, 0]]`` give None).

What the strings do not say
---------------------------
They name the data a partition reads, not what is computed from it:
``events.Muon.pt`` and ``events.Jet.pt`` have the same strings (the content
digest tells them apart). A change of partitioning (another ``step_size``)
gives new, overlapping strings.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Final
from urllib.parse import urlparse

from dask.blockwise import Blockwise, BlockwiseDep
from dask.highlevelgraph import MaterializedLayer

__all__ = ["awkward_where"]

log = logging.getLogger(__name__)

#: A partition's reads: the (input layer name, input partition) it depends on.
Reads = frozenset[tuple[str, int]]


class _Constant:
    """A layer with no input layer below it: the same for every partition."""


CONSTANT: Final = _Constant()

#: Per layer: the reads of each of its partitions, or CONSTANT.
LayerReads = list[Reads] | _Constant


class _NotPartitionwise(Exception):
    """Raised inside the walk: the answer is None."""


def awkward_where(coll: Any) -> list[str] | None:
    """One provenance string per partition of ``coll``, the same in every process
    and on every machine for the same files, or None when it cannot be established.

    Parameters
    ----------
    coll : dask_awkward.Array
        The collection whose partitions to identify. Anything else (a
        dask-awkward Scalar or Record, another dask collection) gives None.

    Returns
    -------
    list of str or None
        ``coll.npartitions`` distinct strings (format in the module
        docstring), or None when the partitions of ``coll`` do not correspond
        one to one to partitions of recognised input layers. Never raises
        for an unrecognised input.

    Notes
    -----
    Reads no event data. For uproot layers that do not hold their files
    open (``open_files=False``, coffea), it opens each distinct file's header
    once per call to learn its UUID.
    """
    try:
        return _awkward_where(coll)
    except _NotPartitionwise as err:
        log.debug("no provenance for %r: %s", type(coll).__name__, err)
        return None
    except Exception:
        # the contract is None for what is not understood, never an error
        log.debug("no provenance for %r", type(coll).__name__, exc_info=True)
        return None


def _awkward_where(coll: Any) -> list[str]:
    if not _is_dak_array(coll):
        raise _NotPartitionwise("not a dask-awkward Array")
    graph = coll.dask
    layers: Mapping[str, Any] = graph.layers
    dependencies: Mapping[str, Any] = graph.dependencies
    npartitions = operator.index(coll.npartitions)
    top = coll.name
    if top not in layers:
        raise _NotPartitionwise(f"no layer {top!r}")

    ids: dict[str, list[str]] = {}  # input layer name -> its partitions' strings
    done: dict[str, LayerReads] = {}
    for name in _dependencies_first(top, dependencies, layers):
        deps = {d: done[d] for d in dependencies.get(name, ())}
        done[name] = _layer_reads(name, layers[name], deps, ids)

    reads = done[top]
    if isinstance(reads, _Constant):
        raise _NotPartitionwise("reads no input layer")
    if len(reads) != npartitions:
        raise _NotPartitionwise(f"{len(reads)} partitions, not {npartitions}")
    out = []
    for part in reads:
        layer_names = [n for n, _ in part]
        if not part or len(set(layer_names)) != len(layer_names):
            raise _NotPartitionwise("a partition reads several partitions of a layer")
        components = sorted({ids[n][i] for n, i in part})
        out.append(
            components[0]
            if len(components) == 1
            else json.dumps(components, separators=(",", ":"))
        )
    if len(set(out)) != len(out):
        raise _NotPartitionwise("two partitions read the same data")
    return out


def _is_dak_array(coll: Any) -> bool:
    try:
        from dask_awkward.lib.core import Array  # noqa: PLC0415 - optional dependency
    except ImportError:
        return False
    return isinstance(coll, Array)


def _dependencies_first(
    top: str, dependencies: Mapping[str, Any], layers: Mapping[str, Any]
) -> list[str]:
    """The layers below ``top`` (and ``top``), each after its dependencies.

    Iterative, since processors build chains deeper than the recursion limit.
    """
    order: list[str] = []
    state: dict[str, bool] = {}  # False: on the stack, True: done
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            state[name] = True
            order.append(name)
            continue
        if name in state:
            if not state[name]:
                raise _NotPartitionwise("cycle in the graph")
            continue
        if name not in layers:
            raise _NotPartitionwise(f"dependency {name!r} is not a layer")
        state[name] = False
        stack.append((name, True))
        stack.extend((d, False) for d in dependencies.get(name, ()) if d not in state)
    return order


def _layer_reads(
    name: str, layer: Any, deps: Mapping[str, LayerReads], ids: dict[str, list[str]]
) -> LayerReads:
    """The reads of each partition of one layer, given those of its dependencies."""
    from dask_awkward.layers import AwkwardInputLayer  # noqa: PLC0415 - optional

    if isinstance(layer, AwkwardInputLayer):
        if deps:
            raise _NotPartitionwise(f"input layer {name!r} has dependencies")
        strings = _input_layer_ids(layer)
        if strings is None:
            raise _NotPartitionwise(f"input layer {name!r} is not recognised")
        ids[name] = strings
        return [frozenset({(name, i)}) for i in range(len(strings))]
    if isinstance(layer, Blockwise):
        return _blockwise_reads(name, layer, deps)
    if isinstance(layer, MaterializedLayer):
        return _materialized_reads(name, layer, deps)
    raise _NotPartitionwise(f"layer {name!r} is a {type(layer).__name__}")


def _blockwise_reads(
    name: str, layer: Blockwise, deps: Mapping[str, LayerReads]
) -> LayerReads:
    out_index = tuple(getattr(layer, "output_indices", ()))
    if (
        len(out_index) != 1
        or getattr(layer, "new_axes", None)
        or getattr(layer, "output_blocks", None) is not None
    ):
        raise _NotPartitionwise(f"blockwise {name!r} is not one-dimensional")
    io_deps: Mapping[str, Any] = getattr(layer, "io_deps", None) or {}
    numblocks: Mapping[str, Any] = getattr(layer, "numblocks", {})
    aligned: dict[str, int] = {}
    for arg, index in layer.indices:
        if index is None:
            continue  # a literal, or a TaskRef to a whole dependency
        block_arg = io_deps.get(arg) if isinstance(arg, str) else arg
        if isinstance(block_arg, BlockwiseDep):
            # the partition number is fine; any other per-block argument may
            # be a read of its own (dask.array's from_array, from_zarr, ...)
            kind = type(block_arg).__name__
            if kind != "BlockIndex" or tuple(index) != out_index:
                raise _NotPartitionwise(f"blockwise {name!r} has a {kind}")
            continue
        if not isinstance(arg, str) or arg not in deps:
            raise _NotPartitionwise(f"blockwise {name!r} indexes {arg!r}")
        blocks = tuple(numblocks.get(arg, ()))
        if tuple(index) != out_index or len(blocks) != 1:
            b = -1  # contracted or reindexed: a whole dependency
        else:
            b = operator.index(blocks[0])
        # an argument used twice counts as aligned only if both uses are
        aligned[arg] = b if aligned.get(arg, b) == b else -1
    n = max((b for b in aligned.values() if b > 0), default=0)
    reads: list[set[tuple[str, int]]] = [set() for _ in range(n)]
    variable = False
    for dep, dep_reads in deps.items():
        if isinstance(dep_reads, _Constant):
            continue
        if aligned.get(dep) != n or len(dep_reads) != n:
            raise _NotPartitionwise(f"{name!r} reads all of {dep!r} per partition")
        variable = True
        for i, part in enumerate(dep_reads):
            reads[i] |= part
    if not variable:
        return CONSTANT
    return [frozenset(r) for r in reads]


def _materialized_reads(
    name: str, layer: MaterializedLayer, deps: Mapping[str, LayerReads]
) -> LayerReads:
    tasks: Mapping[Any, Any] = layer.mapping
    if not deps and len(tasks) != 1:
        # many blocks of their own: a dask.array from_array, from_zarr, ...
        raise _NotPartitionwise(f"{name!r} has {len(tasks)} tasks of its own")
    if all(isinstance(r, _Constant) for r in deps.values()):
        return CONSTANT  # a value: a literal, a dask.delayed, a known scalar
    n = len(tasks)
    reads: list[Reads | None] = [None] * n
    for key, task in tasks.items():
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and key[0] == name
            and isinstance(key[1], int)
            and 0 <= key[1] < n
        ):
            raise _NotPartitionwise(f"{name!r} has key {key!r}")
        target = _alias_target(task)
        dep_reads = deps.get(target[0]) if target is not None else None
        if target is None or dep_reads is None:
            raise _NotPartitionwise(f"{name!r} computes {key!r}")
        if isinstance(dep_reads, _Constant):
            reads[key[1]] = frozenset()
        elif 0 <= target[1] < len(dep_reads):
            reads[key[1]] = dep_reads[target[1]]
        else:
            raise _NotPartitionwise(f"{name!r} points out of {target[0]!r}")
    return [r if r is not None else frozenset() for r in reads]


def _alias_target(task: Any) -> tuple[str, int] | None:
    """The key ``task`` merely renames (a legacy alias or a dask ``Alias``)."""
    if type(task).__name__ == "Alias":
        task = getattr(task, "target", None)
    if (
        isinstance(task, tuple)
        and len(task) == 2
        and isinstance(task[0], str)
        and isinstance(task[1], int)
    ):
        return task[0], task[1]
    return None


# --------------------------------------------------------------- input layers


def _input_layer_ids(layer: Any) -> list[str] | None:
    """The provenance strings of the partitions of one input layer, or None."""
    io_func = layer.io_func
    kind = f"{type(io_func).__module__}.{type(io_func).__qualname__}"
    handler = _HANDLERS.get(kind)
    inputs = layer.inputs
    if handler is None or not isinstance(inputs, Sequence):
        return None
    return handler(io_func, inputs)


def _uproot_read_ids(io_func: Any, inputs: Sequence[Any]) -> list[str] | None:
    """``_UprootRead``: inputs ``(ttree index, start, stop)``, TTrees on io_func."""
    ttrees = getattr(io_func, "ttrees", None)
    if not isinstance(ttrees, Sequence):
        return None
    files: dict[int, str | None] = {}
    out = []
    for item in inputs:
        if not isinstance(item, tuple) or len(item) != 3:
            return None
        i, start, stop = (operator.index(x) for x in item)
        if i not in files:
            files[i] = _open_tree_file(ttrees[i])
        prefix = files[i]
        if prefix is None:
            return None
        out.append(f"{prefix},entries={start}-{stop}")
    return out


def _open_tree_file(ttree: Any) -> str | None:
    """``root:file=<name>,tree=<tree>`` of a TTree uproot already holds."""
    file = getattr(ttree, "file", None)
    tree = getattr(ttree, "object_path", None)
    if file is None or not isinstance(tree, str):
        return None
    return _root_prefix(file.file_path, tree)


def _uproot_open_and_read_ids(io_func: Any, inputs: Sequence[Any]) -> list[str] | None:
    """``_UprootOpenAndRead``: inputs ``(path, object path, start or step,
    stop or steps, is_chunk)``."""
    del io_func
    out = []
    for item in inputs:
        if not isinstance(item, tuple) or len(item) != 5:
            return None
        path, tree, first, second, is_chunk = item
        if not isinstance(path, str) or not isinstance(tree, str):
            return None
        if not isinstance(is_chunk, bool):
            return None
        first, second = operator.index(first), operator.index(second)
        prefix = _root_prefix(path, tree)
        if prefix is None:
            return None
        where = f"entries={first}-{second}" if is_chunk else f"step={first}/{second}"
        out.append(f"{prefix},{where}")
    return out


def _root_prefix(file_path: Any, tree: str) -> str | None:
    name = _file_name(file_path)
    if name is None:
        return None
    tree = tree.strip("/").rsplit(";", 1)[0] if ";" in tree else tree.strip("/")
    return f"root:file={json.dumps(name)},tree={json.dumps(tree)}"


def _file_name(path: Any) -> str | None:
    """The last component of a path or URL (also of ``file:`` and
    ``root://`` URLs), or None."""
    if not isinstance(path, str):
        return None
    parsed = urlparse(path)
    tail = parsed.path if len(parsed.scheme) > 1 else path
    tail = tail.replace("\\", "/")
    if tail.endswith("/"):
        return None  # a directory
    return PurePosixPath(tail).name or None


def _parquet_file_ids(io_func: Any, inputs: Sequence[Any]) -> list[str] | None:
    """``FromParquetFileWiseFn``: one path per partition, all row groups."""
    del io_func
    if not all(isinstance(p, str) for p in inputs):
        return None
    return _parquet_ids([(p, "all") for p in inputs])


def _parquet_fragment_ids(io_func: Any, inputs: Sequence[Any]) -> list[str] | None:
    """``FromParquetFragmentWiseFn``: ``(row group, path)`` per partition."""
    del io_func
    pairs = []
    for item in inputs:
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], int)
            and isinstance(item[1], str)
        ):
            return None
        pairs.append((item[1], f"[{operator.index(item[0])}]"))
    return _parquet_ids(pairs)


def _parquet_ids(pairs: Sequence[tuple[str, str]]) -> list[str] | None:
    out = []
    for path, row_groups in pairs:
        name = _file_name(path)
        if name is None:
            return None
        out.append(f"parquet:file={json.dumps(name)},row_groups={row_groups}")
    return out


_HANDLERS: Final[dict[str, Callable[[Any, Sequence[Any]], list[str] | None]]] = {
    "uproot._dask._UprootRead": _uproot_read_ids,
    "uproot._dask._UprootOpenAndRead": _uproot_open_and_read_ids,
    "dask_awkward.lib.io.parquet.FromParquetFileWiseFn": _parquet_file_ids,
    "dask_awkward.lib.io.parquet.FromParquetFragmentWiseFn": _parquet_fragment_ids,
}
