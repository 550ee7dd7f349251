"""dask_hizt's tunables: their defaults, registered in dask.config under
``dask_hizt``, and :class:`Settings`, the values a graph is built with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import yaml
from dask.utils import parse_bytes

__all__ = ["DEFAULTS", "Settings"]

_FILE = Path(__file__).with_name("dask_hizt.yaml")
DEFAULTS = yaml.safe_load(_FILE.read_text(encoding="utf-8"))

dask.config.update_defaults(DEFAULTS)


@dataclass(frozen=True)
class Settings:
    """The tunables a compute's graph is built with, read from ``dask.config``
    on the client when the graph is built: tasks are given these values,
    because a ``dask.config.set`` on the client does not reach a cluster's
    workers.

    Attributes
    ----------
    split_every
        Fan-in of the routing tree (``dask_hizt.split-every``).
    dense
        How full a key range must be to stay dense
        (``dask_hizt.dense-fraction``).
    commit_retries
        Attempts of a commit that races others (``dask_hizt.commit-retries``).
    owners
        Owners per key space, or ``None`` to size them
        (``dask_hizt.owners``: ``auto`` or a count).
    owner_bytes, owner_chunks, owner_min_chunks
        How ``auto`` sizes owners (``dask_hizt.owner-bytes``,
        ``dask_hizt.owner-chunks``, ``dask_hizt.owner-min-chunks``).
    write_concurrency
        Chunks an owner reads and writes at once (``dask_hizt.write-concurrency``).
    staged_per_task
        ``dh.Staging`` staged fills loaded per task (``dask_hizt.staged-per-task``).
    """

    split_every: int
    dense: float
    commit_retries: int
    owners: int | None
    owner_bytes: int
    owner_chunks: int
    owner_min_chunks: int
    write_concurrency: int
    staged_per_task: int

    @classmethod
    def from_config(cls) -> Settings:
        """The settings in force now."""

        def get(key: str) -> Any:
            return dask.config.get(f"dask_hizt.{key}")

        owners = get("owners")
        return cls(
            split_every=max(2, int(get("split-every"))),
            dense=float(get("dense-fraction")),
            commit_retries=int(get("commit-retries")),
            owners=None if owners == "auto" else max(1, int(owners)),
            owner_bytes=int(parse_bytes(get("owner-bytes"))),
            owner_chunks=max(1, int(get("owner-chunks"))),
            owner_min_chunks=max(1, int(get("owner-min-chunks"))),
            write_concurrency=max(1, int(get("write-concurrency"))),
            staged_per_task=max(1, int(get("staged-per-task"))),
        )
