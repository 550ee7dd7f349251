"""Compiled accumulation loops for :mod:`dask_hizt._shared_fill` (needs numba).

Imported only where numba is installed (the ``fast`` extra) and a fill task
has weighted fills to accumulate; :mod:`dask_hizt._shared_fill` falls back
to NumPy otherwise. The signatures are explicit, so the loops are compiled
(or loaded from numba's on-disk cache, ``cache=True``) once, when this module
is imported, and never again for another array layout.

Each loop walks the entries once, in order, so every bin is summed in the
order boost-histogram sums it. Keys below zero mark entries that land in no
bin (outside an axis without flow bins) and are skipped.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
from numba import types

__all__ = ["add_weights", "add_weights_squares"]

Keys = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Inputs may be read-only (arrays from Arrow, say); a read-only signature
# takes writable arrays as well, so one compiled version serves both.
_KEYS = types.Array(types.int64, 1, "C", readonly=True)
_IN = types.Array(types.float64, 1, "C", readonly=True)
_OUT = types.Array(types.float64, 1, "C")


@numba.njit(
    types.void(_KEYS, types.int64, _IN, _OUT),
    cache=True,
    nogil=True,
)
def add_weights(keys: Keys, shift: int, weights: Floats, out: Floats) -> None:
    """``out[keys + shift] += weights``, skipping negative keys."""
    for i in range(keys.shape[0]):
        k = keys[i]
        if k >= 0:
            out[k + shift] += weights[i]


@numba.njit(
    types.void(_KEYS, types.int64, _IN, _OUT, _OUT),
    cache=True,
    nogil=True,
)
def add_weights_squares(
    keys: Keys, shift: int, weights: Floats, out: Floats, out2: Floats
) -> None:
    """``out[keys + shift] += weights`` and ``out2[keys + shift] += weights**2``
    in one pass, skipping negative keys."""
    for i in range(keys.shape[0]):
        k = keys[i]
        if k >= 0:
            w = weights[i]
            out[k + shift] += w
            out2[k + shift] += w * w
