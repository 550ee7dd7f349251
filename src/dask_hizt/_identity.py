"""Partition identities: what a fill commit records of each input partition.

Every fill commit records, per histogram, one identity per input partition
it added (see :mod:`dask_hizt._ledger`); a compute adds only partitions whose
identity is not recorded yet. An identity must therefore be the same in every
process, on every machine and on both supported dask stacks, for the same
data: dask key names are not (dask-expr's ``read_parquet`` gets a new name in
every process), so they are never used. An identity is one of:

``"{where}#{digest}"`` (the default)
    ``digest`` is a 64-bit xxh3 digest of everything the fill puts into the
    histogram from this partition: every argument's values (dtype, length and
    bytes of arrays; type and value of broadcast scalars), in argument order.
    It is computed in the fill task, from the arrays it fills, so it does not
    depend on how the graph was built, which columns were projected, or what
    else was computed with it. ``where`` names the partition inside its input,
    so that identical contents at two places (a constant array, two equal
    files) stay apart: the provenance of the partition where the input layer
    tells it (for parquet files, the file's path relative to the dataset and
    its row groups; for ROOT files, the file's UUID, tree and entry range),
    else its position among the partitions of its input (``"3"``). A re-run
    reads such a partition again (to digest it) but adds nothing. The same
    fill queued twice on one histogram gets ``"~1"``, ``"~2"``, ... appended.

the user's ``partition_ids``
    Strings given to ``Hist.fill(..., partition_ids=[...])``, recorded as
    given. They are known before anything is read, so a re-run skips those
    partitions without reading them.

Both forms are exactly-once across processes: the first by construction,
the second by the user's promise that the strings name the data.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

__all__ = ["PartitionInfo", "content_digest", "content_id", "positions"]


@dataclass(frozen=True)
class PartitionInfo:
    """What a fill task knows of its partition before reading it.

    Attributes
    ----------
    where
        The partition's place in its input (provenance or position).
    given
        Per fill of the task: the user's identity of this partition, or
        ``None`` when the identity is the content (see the module docstring).
    skip
        Indices of the task's fills already in their histograms (known from
        the user's identities): not filled again.
    committed
        ``(target, identity)`` pairs recorded in the histograms with this
        ``where``: a content identity among them is not filled again.
    """

    where: str
    given: tuple[str | None, ...]
    skip: frozenset[int] = frozenset()
    committed: frozenset[tuple[int, str]] = frozenset()


def positions(n: int) -> list[str]:
    """``where`` of partitions known only by their position."""
    return [str(i) for i in range(n)]


def _update(h: Any, value: Any) -> None:
    if value is None:
        h.update(b"\x00n")
        return
    if isinstance(value, np.ndarray):
        arr = value.reshape(-1)
        h.update(f"\x00a{arr.dtype.str}:{len(arr)}:".encode())
        if arr.dtype.kind in "OUST":
            import pandas as pd  # noqa: PLC0415 - only strings need it

            # pandas' hash of objects uses a fixed key: the same in every process
            arr = pd.util.hash_array(np.asarray(arr, dtype=object))
        h.update(np.ascontiguousarray(arr).data)
        return
    h.update(f"\x00s{type(value).__name__}:{value!r}".encode())


def content_digest(values: Sequence[Any]) -> str:
    """The digest of one fill's arguments (arrays, scalars or ``None``), in order."""
    h = xxhash.xxh3_64()
    for v in values:
        _update(h, v)
    return h.hexdigest()


def array_digest(value: npt.NDArray[Any]) -> str:
    """The digest of one argument array (fills that share it digest it once)."""
    return content_digest([value])


def content_id(where: str, digests: Sequence[str], occurrence: int = 0) -> str:
    """A content identity from the per-argument digests of one fill."""
    h = xxhash.xxh3_64()
    for d in digests:
        h.update(d.encode())
        h.update(b"\x00")
    suffix = f"~{occurrence}" if occurrence else ""
    return f"{where}#{h.hexdigest()}{suffix}"


def where_prefix(identity: str) -> str:
    """The ``where`` of a content identity (the user's identities have none)."""
    return identity.rpartition("#")[0]


def relative_paths(paths: Sequence[str]) -> list[str]:
    """Paths relative to their common directory (a dataset that is moved or
    copied keeps its identities; the file name alone could repeat in
    partitioned datasets)."""
    norm = [p.replace(os.sep, "/") for p in paths]
    if len(norm) == 1:
        return [posixpath.basename(norm[0])]
    root = posixpath.commonpath(norm)
    return [posixpath.relpath(p, root) for p in norm]
