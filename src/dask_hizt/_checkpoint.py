"""Checkpointed computes: batches of partitions committed one after another.

With ``checkpoint=`` the fill tasks of a compute are cut into batches. Each
batch is routed to the owners as usual, but the owners of batch ``b`` write
only once batch ``b - 1`` is committed, through forks that the batch's *gate*
opens at the new tip. Fills of all batches still run in parallel; only the
writes and commits form a chain.

A time-based checkpoint lets a gate decide not to commit yet: its owners
then hand their merged partials on to the owners of the next batch, with
the identities of their partitions (partials carry them,
:attr:`dask_hizt._partial.Partial.inputs`) to the next commit. A job killed
halfway keeps its committed batches; computing it again skips them
(:mod:`dask_hizt._ledger`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dask.config
import icechunk

from ._arrays import Creation
from ._commit import CommitPlan, commit_forks, fill_message
from ._partial import Partial, combine
from ._repo import RepoRef, writable
from ._write import Owner, Written

__all__ = [
    "BatchCommit",
    "ChainState",
    "Checkpoint",
    "CheckpointArg",
    "Gate",
    "parse_checkpoint",
    "parse_duration",
    "pick_fork",
    "write_batch",
]

#: Seconds per unit of a duration, by every spelling ``parse_duration`` takes.
_UNITS: dict[str, float] = {
    **dict.fromkeys(("ns", "nanosecond", "nanoseconds"), 1e-9),
    **dict.fromkeys(("us", "microsecond", "microseconds"), 1e-6),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)\s*")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"10 min"``, ``"10 minutes"``, ``"1h"``
    or ``"30s"`` (a bare number is seconds).

    dask's ``parse_timedelta`` refuses ``"min"``, the spelling the docs use,
    hence a parser of our own.

    Raises
    ------
    ValueError
        If ``text`` is not a non-negative number followed by a known unit.
    """
    match = _DURATION.fullmatch(text.lower())
    if match is None or match[3] not in ("", *_UNITS):
        units = "s, min, h, d, w (or second, minute, hour, ...)"
        msg = f"{text!r} is not a duration such as '10 min' or '30s' (units: {units})"
        raise ValueError(msg)
    number = float(match[1] + ("" if match[2] is None else f"e{match[2]}"))
    seconds = number * _UNITS.get(match[3], 1.0)
    if not math.isfinite(seconds):
        msg = f"{text!r} is not a finite duration"
        raise ValueError(msg)
    return seconds


@dataclass(frozen=True)
class Checkpoint:
    """Commit every ``batch`` fill tasks, or (``seconds`` not ``None``) after
    the first batch that ends ``seconds`` after the previous commit; the
    compute started at ``start``."""

    batch: int
    seconds: float | None
    start: float


#: What ``checkpoint=`` takes: partitions, a duration, or ``None``.
CheckpointArg = int | float | str | dt.timedelta | None


def parse_checkpoint(value: CheckpointArg) -> Checkpoint | None:
    """A ``checkpoint=`` argument (or the ``dask_hizt.checkpoint`` setting):
    a number of partitions, a duration (``"10 min"``, a ``timedelta``,
    seconds as a float), or ``None`` for ONE commit."""
    if value is None:
        value = dask.config.get("dask_hizt.checkpoint", None)
    if value is None:
        return None
    start = time.time()
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            msg = f"checkpoint must be at least 1 partition, got {value}"
            raise ValueError(msg)
        return Checkpoint(value, None, start)
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as err:
            msg = f"checkpoint {value!r} is neither a number of partitions nor a duration: {err}"
            raise ValueError(msg) from err
    elif isinstance(value, float):
        seconds = value
    else:
        msg = f"checkpoint must be a number of partitions or a duration, got {value!r}"
        raise TypeError(msg)
    if not seconds >= 0 or not math.isfinite(seconds):
        msg = f"checkpoint duration must be finite and not negative, got {value!r}"
        raise ValueError(msg)
    step = int(dask.config.get("dask_hizt.checkpoint-step"))
    return Checkpoint(max(1, step), seconds, start)


@dataclass(frozen=True)
class ChainState:
    """Where a checkpointed compute stands after a batch.

    Attributes
    ----------
    snapshot
        The compute's last commit (at first, the snapshot it was planned on).
    last
        Wall-clock time of that commit (at first, of the plan).
    creation
        The compute's new histograms and categories, until a commit holds them.
    """

    snapshot: str
    last: float
    creation: Creation | None = None


@dataclass(frozen=True)
class GateState:
    """A gate's decision: the forks to write through, or ``None`` to carry on."""

    forks: tuple[icechunk.ForkSession, ...] | None
    base: str
    prev: ChainState


@dataclass(frozen=True)
class Gate:
    """Opens batch ``b`` once batch ``b - 1`` is committed.

    ``seconds`` is the time-based checkpoint (``None``: commit every batch).
    The final batch always commits.
    """

    ref: RepoRef
    branch: str
    n_forks: int
    seconds: float | None
    final: bool

    def __call__(self, prev: ChainState) -> GateState:
        due = self.seconds is None or time.time() - prev.last >= self.seconds
        if not (due or self.final):
            return GateState(None, prev.snapshot, prev)
        if prev.creation is not None:
            # Nothing committed yet: write into the arrays the compute creates.
            parent = prev.creation.parent
            return GateState(
                tuple(parent.fork() for _ in range(self.n_forks)), prev.snapshot, prev
            )
        session = writable(self.ref, self.branch)
        forks = tuple(session.fork() for _ in range(self.n_forks))
        return GateState(forks, str(session.snapshot_id), prev)


def pick_fork(gate: GateState, i: int) -> icechunk.ForkSession | None:
    """Owner ``i``'s fork (a task of its own, so that an owner receives only
    its fork, not every owner's)."""
    return None if gate.forks is None else gate.forks[i]


def write_batch(
    owner: Owner,
    fork: icechunk.ForkSession | None,
    partials: Sequence[Partial],
    prev: Written | Partial | None,
) -> Written | Partial:
    """Write a batch's partials, and what the previous batch carried, through
    ``fork``; without a fork, merge them and carry them on."""
    parts = [*partials, prev] if isinstance(prev, Partial) else list(partials)
    if fork is None:
        lo, hi = owner.key_range
        return combine(parts, lo, hi, owner.dense)
    return owner.write(parts, fork)


@dataclass(frozen=True)
class BatchCommit:
    """Commits batch ``batch`` (and what earlier batches carried), if its gate opened."""

    commit: CommitPlan
    compute_id: str
    batch: int
    n_batches: int

    def __call__(
        self, gate: GateState, written: Sequence[Written | Partial]
    ) -> ChainState:
        c = self.commit
        if gate.forks is None:
            # the owners carry their partials, and the identities with them
            return ChainState(gate.prev.snapshot, gate.prev.last, gate.prev.creation)
        record = c.record(self.compute_id, written)
        note = f" (checkpoint, batch {self.batch + 1} of {self.n_batches})"
        snapshot = commit_forks(
            c.ref,
            c.branch,
            gate.base,
            [w for w in written if isinstance(w, Written)],
            fill_message(
                c.what,
                record.inputs,
                note,
                () if gate.prev.creation is None else gate.prev.creation.created,
            ),
            record,
            retries=c.retries,
            since=c.base,
            creation=gate.prev.creation,
        )
        return ChainState(snapshot, time.time())


def snapshot_of(state: ChainState) -> str:
    """The output of a checkpointed compute: its last commit."""
    return state.snapshot
