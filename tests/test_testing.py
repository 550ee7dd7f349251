"""dask_hizt.testing: assert_hist_equal, its pytest plugin, and the strategies."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import boost_histogram as bh
import dask.array as da
import hist
import numpy as np
import pytest
from hypothesis import given, settings

import dask_hizt as dh
import dask_hizt.testing.plugin
from dask_hizt.testing import assert_hist_equal
from dask_hizt.testing import strategies as hst

pytest_plugins = ["pytester"]


def _weighted() -> hist.Hist[Any]:
    h = hist.Hist(
        hist.axis.Regular(4, 0, 2, name="x"),
        hist.axis.StrCategory(["a", "b"], name="c"),
        storage=hist.storage.Weight(),
    )
    return h.fill(x=[0.1, 0.7, 1.9, 5.0], c=["a", "b", "b", "a"], weight=[1, 2, 3, 4])


def test_equal_histograms_pass(repo_path: Path) -> None:
    eager = _weighted()
    assert_hist_equal(eager, eager.copy())
    lazy = dh.Hist(
        *eager.axes, storage=hist.storage.Weight(), store=repo_path, path="h"
    )
    lazy.fill(
        x=da.from_array(np.array([0.1, 0.7, 1.9, 5.0]), chunks=2),
        c=da.from_array(np.array(["a", "b", "b", "a"]), chunks=2),
        weight=da.from_array(np.array([1.0, 2, 3, 4]), chunks=2),
    )
    stored = lazy.compute()
    # a StoredHist on either side, a plain boost-histogram one too
    assert_hist_equal(stored, eager)
    assert_hist_equal(eager, stored)
    assert_hist_equal(stored, dh.open(repo_path, "h"))
    plain = bh.Histogram(bh.axis.Regular(3, 0, 1), storage=bh.storage.Int64())
    assert_hist_equal(plain, hist.Hist(plain))


def test_one_bin_differs() -> None:
    eager = _weighted()
    other = eager.copy()
    other.fill(x=[1.2], c=["a"], weight=[0.5])
    with pytest.raises(AssertionError) as err:
        assert_hist_equal(other, eager)
    msg = str(err.value)
    assert msg.startswith("1 of 18 bins differ")
    # flow index (3, 0): bin 2 of x after the underflow bin, category a
    assert "(3, 0) (x=[1, 1.5), c='a') value: got 0.5, expected 0.0" in msg
    assert "(3, 0) (x=[1, 1.5), c='a') variance: got 0.25, expected 0.0" in msg
    # within a tolerance the bins are equal, but not beyond it
    near = eager.copy()
    view = near.view(flow=True)
    assert isinstance(view, bh.view.WeightedSumView)
    view.value[2, 1] += 1e-9  # x=0.7, c="b": 2.0
    assert_hist_equal(near, eager, rtol=1e-6)
    assert_hist_equal(near, eager, atol=1e-6)
    with pytest.raises(AssertionError, match=r"\(2, 1\)"):
        assert_hist_equal(near, eager, rtol=1e-12)


def test_a_flow_bin_differs() -> None:
    eager = _weighted()
    other = eager.copy()
    other.fill(x=[-1.0], c=["zz"])
    with pytest.raises(AssertionError) as err:
        assert_hist_equal(other, eager)
    assert "(0, 2) (x=underflow, c=overflow) value: got 1.0, expected 0.0" in str(
        err.value
    )
    # unless flow bins are left out
    assert_hist_equal(other, eager, flow=False)


def test_integer_storage_is_exact_whatever_the_tolerance() -> None:
    axis = hist.axis.Integer(0, 3, name="n")
    big: hist.Hist[Any] = hist.Hist(axis, storage=hist.storage.Int64())
    big.view()[:] = 10**12
    bigger = big.copy()
    bigger.view()[1] += 1
    with pytest.raises(
        AssertionError, match=r"\(2,\) \(n=1\) value: got 1000000000001"
    ):
        assert_hist_equal(bigger, big, rtol=1e-3)


def test_the_first_ten_of_many_differences() -> None:
    axis = hist.axis.Regular(50, 0, 1, name="x")
    h: hist.Hist[Any] = hist.Hist(axis).fill((np.arange(50) + 0.5) / 50)
    with pytest.raises(AssertionError) as err:
        assert_hist_equal(h, hist.Hist(axis))
    lines = str(err.value).splitlines()
    assert lines[0] == "50 of 52 bins differ (indices into view(flow=True)):"
    assert len(lines) == 11
    assert lines[1] == "  (1,) (x=[0, 0.02)) value: got 1.0, expected 0.0"


def test_category_order() -> None:
    a: hist.Hist[Any] = hist.Hist(hist.axis.StrCategory(["a", "b"], name="c"))
    b: hist.Hist[Any] = hist.Hist(hist.axis.StrCategory(["b", "a"], name="c"))
    a.fill(["a", "a", "b"])
    b.fill(["a", "a", "b"])
    with pytest.raises(
        AssertionError,
        match=r"axis 0 \('c'\) categories differ: got \['a', 'b'\], expected \['b', 'a'\]",
    ):
        assert_hist_equal(a, b)
    assert_hist_equal(a, b, categories="any order")
    # by label: a's "b" bin against b's "b" bin
    b.fill(["b"])
    with pytest.raises(
        AssertionError, match=r"\(0,\) \(c='b'\) value: got 1.0, expected 2.0"
    ):
        assert_hist_equal(a, b, categories="any order")
    # another set of categories is another axis in any order
    c: hist.Hist[Any] = hist.Hist(hist.axis.StrCategory(["a", "q"], name="c"))
    with pytest.raises(AssertionError, match="categories differ"):
        assert_hist_equal(a, c, categories="any order")


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (hist.axis.Regular(4, 0, 2.5, name="x"), "edge 1 is 0.5, expected 0.625"),
        (hist.axis.Regular(5, 0, 2, name="x"), "has 4 bins, expected 5"),
        (hist.axis.Variable([0, 0.5, 1, 1.5, 2], name="x"), "type differs"),
        (hist.axis.Regular(4, 0, 2, name="y"), "name differs: got 'x', expected 'y'"),
        (hist.axis.Regular(4, 0, 2, name="x", label="X"), "label differs"),
        (hist.axis.Regular(4, 0, 2, name="x", underflow=False), "underflow differs"),
        (hist.axis.Regular(4, 0, 2, name="x", metadata="m"), "metadata differs"),
        (
            hist.axis.Regular(4, 1, 2, name="x", transform=hist.axis.transform.log),
            "edges differ",
        ),
    ],
)
def test_axes_differ(other: hist.axis.AxisProtocol, message: str) -> None:
    h: hist.Hist[Any] = hist.Hist(hist.axis.Regular(4, 0, 2, name="x"))
    with pytest.raises(AssertionError, match=message):
        assert_hist_equal(h, hist.Hist(other))


def test_storage_type_differs() -> None:
    axis = hist.axis.Regular(4, 0, 2, name="x")
    with pytest.raises(
        AssertionError, match="storage differs: got Double, expected Int64"
    ):
        assert_hist_equal(
            hist.Hist(axis), hist.Hist(axis, storage=hist.storage.Int64())
        )
    y = hist.axis.Regular(4, 0, 2, name="y")
    with pytest.raises(AssertionError, match="number of axes differs"):
        assert_hist_equal(hist.Hist(axis), hist.Hist(axis, y))


def test_every_field_of_a_mean_storage() -> None:
    axis = hist.axis.Regular(2, 0, 2, name="x")
    h = hist.Hist(axis, storage=hist.storage.Mean()).fill([0.5, 0.5], sample=[1.0, 3.0])
    other = hist.Hist(axis, storage=hist.storage.Mean()).fill(
        [0.5, 0.5], sample=[0.0, 4.0]
    )
    # same count and mean, another spread
    with pytest.raises(AssertionError) as err:
        assert_hist_equal(other, h)
    msg = str(err.value)
    assert "_sum_of_deltas_squared: got 8.0, expected 2.0" in msg
    assert " count:" not in msg
    assert " value:" not in msg


@settings(max_examples=30, deadline=None)
@given(setup=hst.hist_setups(n_fills=2))
def test_strategies_make_fillable_histograms(setup: hst.HistSetup) -> None:
    """What the strategies draw fills a hist.Hist: one array per axis, samples
    for the mean storages, and the histogram equals its copy."""
    eager = setup.eager()
    assert_hist_equal(eager, eager.copy())
    assert all(len(f.args) == len(setup.axes) for f in setup.fills)
    assert all(
        f.sample is not None
        for f in setup.fills
        if isinstance(setup.storage, bh.storage.Mean | bh.storage.WeightedMean)
    )


def test_testing_imports_without_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import dask_hizt.testing, dask_hizt.testing.plugin\n"
        "assert 'dask_hizt.testing.strategies' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_plugin_is_installed_once(pytestconfig: pytest.Config) -> None:
    points = [
        e
        for e in importlib.metadata.entry_points(group="pytest11")
        if e.value == "dask_hizt.testing.plugin"
    ]
    assert [e.name for e in points] == ["dask_hizt"]
    pm = pytestconfig.pluginmanager
    assert pm.get_plugin("dask_hizt") is dask_hizt.testing.plugin
    registered = [p for p in pm.get_plugins() if p is dask_hizt.testing.plugin]
    assert len(registered) == 1


def test_plugin_explains_a_failing_equality(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import hist

        def test_equal():
            axis = hist.axis.Regular(4, 0, 2, name="x")
            assert hist.Hist(axis).fill([0.7]) == hist.Hist(axis).fill([1.2])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*assert Hist == Hist",
            "*2 of 6 bins differ (indices into view(flow=True)):",
            "*(2,) (x=[0.5, 1)) value: got 1.0, expected 0.0",
            "*(3,) (x=[1, 1.5)) value: got 0.0, expected 1.0",
        ]
    )
    # and without it, boost-histogram's plugin's (which it goes before)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:dask_hizt"
    )
    result.assert_outcomes(failed=1)
    assert "indices into view(flow=True)" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*Histograms are not equal*"])


def test_plugin_explains_a_stored_hist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import dask.array as da
        import hist
        import numpy as np
        import dask_hizt as dh

        def test_stored(tmp_path):
            axis = hist.axis.Integer(0, 3, name="n")
            h = dh.Hist(axis, storage=hist.storage.Int64(), store=tmp_path / "r", path="h")
            stored = h.fill(da.from_array(np.array([0, 1, 1]), chunks=2)).compute()
            assert stored == hist.Hist(axis, storage=hist.storage.Int64()).fill([0, 1])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*assert StoredHist('h') == Hist",
            "*1 of 5 bins differ*",
            "*(2,) (n=1) value: got 2, expected 1",
        ]
    )
