"""dask_hizt: Dask-native histograms kept on disk in icechunk repositories.

Fill lazily from dask collections, compute once, and read back ``hist.Hist``
objects from any committed snapshot.
"""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("dask-hizt")

from . import config as _config
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
    UnsupportedAxisError,
    UnsupportedStorageError,
)
from .maintenance import GcReport, gc
from .runner import Staging
from .stored import Commit, StoredHist, open

del _config

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
    "UnsupportedAxisError",
    "UnsupportedStorageError",
    "__version__",
    "compute",
    "gc",
    "histogram",
    "open",
]
