"""Run a fused fill task with its inputs made one at a time.

When dask fuses element-wise work into a fill task (say 300 weight
variations ``w * (1 + i / 1000)``), its executor computes every derived
input before calling the fill, so a partition of 1e6 entries holds 300
arrays of 8 MB at once. This executor runs the same fused subgraph, but
makes each input when the fill first reads it and drops it after the last
fill that reads it; intermediate results shared by several inputs (the
partition's ``w``) are kept while some input still needs them.

Only the fused-subgraph form of ``dask._task_spec`` is understood; anything
else runs as dask would run it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from dask._task_spec import (
    Alias,
    DataNode,
    GraphNode,
    Task,
    TaskRef,
    _execute_subgraph,
)

from ._fill import FillTask

__all__ = ["FillBlock", "make_lazy"]

Key = Hashable


@dataclass(frozen=True)
class FillBlock:
    """A fill task as a blockwise function: the partition's inputs come as
    arguments, followed by its :class:`~dask_hizt._identity.PartitionInfo`."""

    task: FillTask

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        *inputs, info = args
        return self.task(inputs, info)


def make_lazy(node: Any) -> Any:
    """The fused fill task ``node`` as a task that makes its inputs lazily;
    other nodes are returned unchanged."""
    if isinstance(node, Task) and node.func is _execute_subgraph:
        return Task(node.key, _run_lazily, *node.args)
    return node


def _run_lazily(
    inner: Mapping[Key, GraphNode], outkey: Key, inkeys: tuple[Key, ...], *deps: Any
) -> Any:
    return _Level(inner, dict(zip(inkeys, deps, strict=True)), None, outkey).run()


class _Level:
    """One fused subgraph, evaluated on demand with reference counts.

    ``given`` holds the values of the subgraph's external inputs; in a nested
    subgraph, ``parent`` makes them on demand instead.
    """

    def __init__(
        self,
        dsk: Mapping[Key, GraphNode],
        given: dict[Key, Any],
        parent: tuple[_Level, dict[Key, Key]] | None,
        outkey: Key,
    ) -> None:
        self.dsk = dsk
        self.given = given
        self.parent = parent
        self.outkey = outkey
        self.cache: dict[Key, Any] = {}
        self.refs: dict[Key, int] = {}
        for key, node in dsk.items():
            if key != outkey:
                for dep in node.dependencies:
                    self.refs[dep] = self.refs.get(dep, 0) + 1

    def demand(self, key: Key) -> None:
        """Count one more future reader of ``key``."""
        self.refs[key] = self.refs.get(key, 0) + 1

    def get(self, key: Key) -> Any:
        """The value of ``key``, made (with what it needs) if not cached."""
        if key in self.cache:
            return self.cache[key]
        if key in self.given:
            value = self.given[key]
        elif key not in self.dsk:
            assert self.parent is not None, f"unknown key {key!r}"
            level, outer = self.parent
            value = level.get(outer[key])
        else:
            node = self.dsk[key]
            value = node({d: self.get(d) for d in node.dependencies})
            for dep in node.dependencies:
                self.release(dep)
        self.cache[key] = value
        return value

    def release(self, key: Key) -> None:
        """One reader of ``key`` is done; drop it when none is left."""
        self.refs[key] -= 1
        if self.refs[key] > 0:
            return
        self.cache.pop(key, None)
        self.given.pop(key, None)
        if self.parent is not None and key not in self.dsk:
            level, outer = self.parent
            level.release(outer[key])

    def run(self) -> Any:
        node = self.dsk[self.outkey]
        if not isinstance(node, Task):
            return self._eagerly()
        if node.func is _execute_subgraph:
            inner, outkey, inkeys, *deps = node.args
            targets = [_ref(d) for d in deps]
            if any(t is None for t in targets):
                return self._eagerly()
            outer = dict(zip(inkeys, targets, strict=True))
            for target in outer.values():
                self.demand(target)
            return _Level(inner, {}, (self, outer), outkey).run()
        block = node.func
        *data, info = node.args
        slots = [_ref(a) for a in data]
        if not isinstance(block, FillBlock) or node.kwargs or None in slots:
            return self._eagerly()
        for key in slots:
            self.demand(key)
        known = _ref(info)  # the partition's info: a literal, or a node of its own
        if known is None:
            return block.task(_Inputs(self, slots), _literal(info))
        self.demand(known)
        value = self.get(known)
        self.release(known)
        return block.task(_Inputs(self, slots), value)

    def _eagerly(self) -> Any:
        """As dask would run it: every input made before the call."""
        for dep in self.dsk[self.outkey].dependencies:
            self.demand(dep)
        return self.get(self.outkey)


def _literal(arg: Any) -> Any:
    """The value of a literal task argument (dask may wrap it in a DataNode)."""
    return arg.value if isinstance(arg, DataNode) else arg


def _ref(arg: Any) -> Key | None:
    """The key an argument stands for (a reference or an alias), else None."""
    if isinstance(arg, TaskRef):
        return arg.key
    if isinstance(arg, Alias):
        return arg.target
    return None


class _Inputs:
    """A fill task's inputs, made on first read and dropped on release."""

    def __init__(self, level: _Level, slots: list[Key]) -> None:
        self.level = level
        self.slots = slots

    def __getitem__(self, i: int) -> Any:
        return self.level.get(self.slots[i])

    def __len__(self) -> int:
        return len(self.slots)

    def release(self, i: int) -> None:
        self.level.release(self.slots[i])
