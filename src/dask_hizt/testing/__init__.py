"""Test helpers for code that uses dask_hizt.

:func:`assert_hist_equal` compares histograms bin for bin, flow bins and every
storage field included, and says which bins differ. The pytest plugin
(:mod:`dask_hizt.testing.plugin`, registered under the name ``dask_hizt``)
gives the same explanation for a failing ``assert a == b`` between
histograms, and :mod:`dask_hizt.testing.strategies` has hypothesis strategies
for axes, storages and fills (it needs hypothesis; this module does not).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._compare import CategoryOrder, HistLike, assert_hist_equal

#: Imported on first use (PEP 562): pytest loads the plugin, hence this
#: package, in every run, and should not pay for numpy and hist there.
_LAZY = {"CategoryOrder", "HistLike", "assert_hist_equal"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module("._compare", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["CategoryOrder", "HistLike", "assert_hist_equal"]
