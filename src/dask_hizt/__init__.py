"""dask_hizt: Dask-native histograms kept on disk in icechunk repositories.

Fill lazily from dask collections, compute once, and read back ``hist.Hist``
objects from any committed snapshot.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import config as _config
from ._version import __version__

if TYPE_CHECKING:
    from .collection import Hist, HistSet, compute, histogram
    from .errors import (
        CommitError,
        CorruptChunkError,
        DuplicateInputError,
        FillError,
        HiztError,
        NotAHistogramError,
        SchemaMismatchError,
        StoreError,
        UnsharedStoreError,
        UnsupportedAxisError,
        UnsupportedStorageError,
    )
    from .maintenance import GcReport, delete, gc
    from .runner import Staging
    from .stored import Commit, StoredHist, open

del _config

#: Where each public name is defined. They are imported on first use
#: (PEP 562), so that ``import dask_hizt`` (and ``dask-hizt --help``) does not
#: import zarr, icechunk, pandas and the dask collections until needed.
_LAZY = {
    "Commit": "stored",
    "CommitError": "errors",
    "CorruptChunkError": "errors",
    "DuplicateInputError": "errors",
    "FillError": "errors",
    "GcReport": "maintenance",
    "Hist": "collection",
    "HistSet": "collection",
    "HiztError": "errors",
    "NotAHistogramError": "errors",
    "SchemaMismatchError": "errors",
    "Staging": "runner",
    "StoreError": "errors",
    "StoredHist": "stored",
    "UnsharedStoreError": "errors",
    "UnsupportedAxisError": "errors",
    "UnsupportedStorageError": "errors",
    "compute": "collection",
    "delete": "maintenance",
    "gc": "maintenance",
    "histogram": "collection",
    "open": "stored",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Commit",
    "CommitError",
    "CorruptChunkError",
    "DuplicateInputError",
    "FillError",
    "GcReport",
    "Hist",
    "HistSet",
    "HiztError",
    "NotAHistogramError",
    "SchemaMismatchError",
    "Staging",
    "StoreError",
    "StoredHist",
    "UnsharedStoreError",
    "UnsupportedAxisError",
    "UnsupportedStorageError",
    "__version__",
    "compute",
    "delete",
    "gc",
    "histogram",
    "open",
]
