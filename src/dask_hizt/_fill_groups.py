"""The fill tasks of a compute: which queued fills read the same partitions,
the inputs of each task, and what is known of each partition's identity
before it is read.

Fills are grouped by the partitions they read
(:func:`dask_hizt._inputs.group_sources`), so each input partition is read
once for all of them and unrelated collections are never zipped together.
Inside a group each distinct input is one slot of the fill task, however
many fills read it; the dataframe columns of a group are packed into one
slot (:class:`dask_hizt._inputs.Packed`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._fill import Arg, FillSpec
from ._identity import PartitionInfo, positions, where_prefix
from ._inputs import (
    Packed,
    group_sources,
    is_awkward,
    is_frame,
    keys_of,
    npartitions,
    take,
    where_of,
)
from ._request import Fill, Source
from .errors import FillError

__all__ = ["FillGroup", "Queued", "fill_groups", "queue"]

Key = Hashable


@dataclass(frozen=True)
class Queued:
    """A fill of a target (of request ``request``), and how many identical
    fills of that target were queued before it."""

    target: int
    fill: Fill
    occurrence: int
    request: int


def queue(fills: Sequence[tuple[int, int, Fill]]) -> list[Queued]:
    """Every ``(request, target, fill)``, with how many identical fills of
    its target came before it."""
    seen: dict[tuple[int, str], int] = {}
    out = []
    for r, t, f in fills:
        key = (t, f.token())
        out.append(Queued(t, f, seen.get(key, 0), r))
        seen[key] = seen.get(key, 0) + 1
    return out


@dataclass(frozen=True)
class FillGroup:
    """The fill tasks of fills that read the same partitions: one per
    partition still to read.

    Attributes
    ----------
    members
        The group's fills.
    specs
        ``(target, spec)`` of each member: where its arguments are among a
        task's inputs.
    inputs
        The collections the tasks read, one per slot, cut to the partitions
        read.
    infos
        Per task, what is known of its partition.
    """

    members: tuple[Queued, ...]
    specs: tuple[tuple[int, FillSpec], ...]
    inputs: tuple[Any, ...]
    infos: tuple[PartitionInfo, ...]

    @property
    def slot_keys(self) -> list[list[Key]]:
        """Per slot, the keys of its partitions, in task order."""
        return [keys_of(c) for c in self.inputs]

    @property
    def identified(self) -> bool:
        """Whether every member has the user's identities (known unread)."""
        return all(q.fill.given is not None for q in self.members)


def fill_groups(
    queued: Sequence[Queued], known: Sequence[frozenset[str]]
) -> list[FillGroup]:
    """The fill tasks: per group of fills reading the same partitions, the
    partitions to read and what is known of their identities.

    ``known`` holds, per target, the identities recorded in its histogram.
    Partitions whose every fill is known (by the user's identities) to be
    in are not read at all; the others are, and their content decides
    (:class:`~dask_hizt._identity.PartitionInfo`).
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


class _Slots:
    """The slots of a group's fill tasks: one per distinct input collection,
    then one for the packed dataframe columns (if any)."""

    def __init__(self, members: Sequence[Queued]) -> None:
        self.collections: list[Any] = []
        self.frames: list[Any] = []
        self._slot: dict[tuple[Key, ...], int] = {}
        self._part: dict[str, int] = {}
        for q in members:
            for s in q.fill.sources():
                c = s.collection
                if is_frame(c):
                    if c._name not in self._part:
                        self._part[c._name] = len(self.frames)
                        self.frames.append(c)
                else:
                    key = tuple(keys_of(c))
                    if key not in self._slot:
                        self._slot[key] = len(self.collections)
                        self.collections.append(c)

    def arg(self, s: Source | None) -> Arg | None:
        """Where a fill argument is among a task's inputs."""
        if s is None:
            return None
        if not s.partitioned:
            return Arg(value=s.value)
        c = s.collection
        if is_frame(c):
            return Arg(index=len(self.collections), part=self._part[c._name])
        return Arg(index=self._slot[tuple(keys_of(c))])

    def spec(self, fill: Fill) -> FillSpec:
        """A fill's arguments as slots."""
        axes = tuple(self.arg(s) for s in fill.axes)
        return FillSpec(
            tuple(a for a in axes if a is not None),
            self.arg(fill.weight),
            self.arg(fill.sample),
        )


def _group(
    members: Sequence[Queued],
    known: Sequence[frozenset[str]],
    by_where: Sequence[Mapping[str, set[str]]],
) -> list[FillGroup]:
    """The fill tasks of one group (none if nothing in it is pending)."""
    slots = _Slots(members)
    specs = tuple((q.target, slots.spec(q.fill)) for q in members)
    packed = Packed(slots.frames) if slots.frames else None
    inputs = list(slots.collections)
    lowered = None
    if packed is not None:
        lowered, frame_coll = packed.optimized()
        inputs.append(frame_coll)
    n = npartitions(inputs[0]) if inputs else 1
    for c in inputs:
        if npartitions(c) != n:
            msg = f"fill arguments are partitioned differently: {n} and {npartitions(c)} partitions"
            raise FillError(msg)
    for q in members:
        if q.fill.given is not None and len(q.fill.given) != n:
            msg = f"partition_ids has {len(q.fill.given)} identities for {n} partitions"
            raise FillError(msg)
    where = _where(inputs, lowered, n)
    targets = {q.target for q in members}
    infos: list[PartitionInfo] = []
    needed: list[int] = []
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
        near = frozenset((t, x) for t in targets for x in by_where[t].get(where[i], ()))
        infos.append(PartitionInfo(where[i], given, skip, near))
        needed.append(i)
    if not needed:
        return []
    if len(needed) < n:
        inputs = [take(c, needed) for c in slots.collections]
        if packed is not None:
            inputs.append(packed.optimized(needed)[1])
    return [FillGroup(tuple(members), specs, tuple(inputs), tuple(infos))]


def _occurrence(given: str, q: Queued) -> str:
    """The user's identity of a fill queued again on the same histogram."""
    return f"{given}~{q.occurrence}" if q.occurrence else given


def _where(inputs: Sequence[Any], lowered: Any, n: int) -> list[str]:
    """The ``where`` of each partition of a group (provenance where an input
    tells it, else positions)."""
    found = [where_of(c) for c in inputs if is_awkward(c)]
    if lowered is not None:
        found.append(where_of(inputs[-1], lowered))
    told = [w for w in found if w != positions(n)]
    if not told:
        return positions(n)
    return ["|".join(dict.fromkeys(w[i] for w in told)) for i in range(n)]
