"""Progress bars for computes: dask's on local schedulers, distributed's on clusters.

:func:`compute` is ``dask.base.compute`` with an optional progress display
that follows the scheduler the compute runs on:

- on a distributed ``Client`` (the default scheduler while one is active, or
  ``scheduler=client``), the graph is submitted as with ``client.get`` and
  ``distributed.progress`` follows its futures: a text bar in a terminal, a
  widget in a notebook;
- on the local schedulers (threads, processes, synchronous),
  ``dask.diagnostics.ProgressBar`` prints a text bar.

Nothing else changes: the same graph, optimisation and post-compute step as
``dask.compute``, so the results are the same with and without progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import dask.base

__all__ = ["compute"]


def compute(*args: Any, progress: bool = False, **kwargs: Any) -> tuple[Any, ...]:
    """``dask.compute(*args, **kwargs)``, showing progress if asked.

    Parameters
    ----------
    *args
        Dask collections (and other objects), as for ``dask.compute``.
    progress
        Show a progress bar while the graph runs.
    **kwargs
        Passed to ``dask.compute`` (``scheduler=``, ``traverse=``, ...).

    Returns
    -------
    tuple
        What ``dask.compute`` returns.
    """
    if not progress:
        return tuple(dask.base.compute(*args, **kwargs))
    client = _distributed_client(args, kwargs.get("scheduler"))
    if client is not None:
        kwargs["scheduler"] = _get_with_progress(client)
        return tuple(dask.base.compute(*args, **kwargs))
    from dask.diagnostics.progress import ProgressBar  # noqa: PLC0415

    with ProgressBar():
        return tuple(dask.base.compute(*args, **kwargs))


def _distributed_client(args: tuple[Any, ...], scheduler: Any) -> Any:
    """The distributed ``Client`` the compute would run on, or ``None``."""
    try:
        from distributed import Client  # noqa: PLC0415 - imported when asked
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    if isinstance(scheduler, Client):
        return scheduler
    collections = [a for a in args if dask.base.is_dask_collection(a)]
    try:
        get = dask.base.get_scheduler(scheduler=scheduler, collections=collections)
    except (ValueError, TypeError):  # let dask.compute report a bad scheduler
        return None
    owner = getattr(get, "__self__", None)
    return owner if isinstance(owner, Client) else None


def _get_with_progress(client: Any) -> Callable[..., Any]:
    """A scheduler function: ``client.get`` that shows its futures' progress."""
    from distributed import progress  # noqa: PLC0415

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        kwargs.pop("sync", None)
        packed = client.get(dsk, keys, sync=False, **kwargs)
        futures = [f for f in _flatten(packed) if hasattr(f, "release")]
        try:
            # blocks until done in a terminal; in a notebook it shows a widget
            # and returns, and gather waits
            progress(futures)
            return client.gather(packed)
        finally:
            for f in futures:
                f.release()

    return get


def _flatten(packed: Any) -> list[Any]:
    """The leaves of nested lists and tuples (the packing of ``client.get``)."""
    if isinstance(packed, list | tuple):
        return [leaf for item in packed for leaf in _flatten(item)]
    return [packed]
