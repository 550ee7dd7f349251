"""pytest plugin: explain a failing ``==`` between histograms bin for bin.

Installed with dask_hizt as the ``pytest11`` entry point ``dask_hizt``, so
pytest loads it by itself (``-p no:dask_hizt`` turns it off). For
``assert left == right`` where both sides are :class:`dask_hizt.StoredHist`,
``hist.Hist`` or ``boost_histogram.Histogram`` objects, the failure shows
what :func:`dask_hizt.testing.assert_hist_equal` would say.
"""

from __future__ import annotations

import sys

import pytest


def _maybe_hist(obj: object) -> bool:
    """Cheap pre-check, importing nothing: no histogram exists before
    boost_histogram (or dask_hizt.stored) is imported. The plugin is loaded
    in every pytest run, so it imports dask_hizt.testing only when needed."""
    kinds = [
        getattr(sys.modules.get(module), name, None)
        for module, name in (
            ("boost_histogram", "Histogram"),
            ("dask_hizt.stored", "StoredHist"),
        )
    ]
    return any(k is not None and isinstance(obj, k) for k in kinds)


def _short(obj: object) -> str:
    """A one-line name of a histogram for the summary line."""
    path = getattr(obj, "path", None)
    kind = type(obj).__name__
    return f"{kind}({path!r})" if isinstance(path, str) else kind


# before boost-histogram's own plugin, whose explanation knows no StoredHist,
# no axis and no storage differences: pytest shows the first one given
@pytest.hookimpl(tryfirst=True)
def pytest_assertrepr_compare(
    config: pytest.Config,  # noqa: ARG001 - part of the hook's signature
    op: str,
    left: object,
    right: object,
) -> list[str] | None:
    """The explanation of ``left == right`` for two histograms, else ``None``."""
    if op != "==" or not _maybe_hist(left) or not _maybe_hist(right):
        return None
    from dask_hizt.testing._compare import _differences, _is_hist  # noqa: PLC0415

    if not _is_hist(left) or not _is_hist(right):
        return None
    found = _differences(left, right)
    if not found:
        found = [
            (
                "the histograms are equal bin for bin; this == compares something "
                "else (a StoredHist compares by identity: use "
                "dask_hizt.testing.assert_hist_equal)"
            )
        ]
    return [f"{_short(left)} == {_short(right)}", *found]
