"""Fills that share their bin indices (dask_hizt._shared_fill), end to end.

Weight variations of one observable into a syst category axis, as a coffea
processor fills them (``h.fill(syst="up", pt=df.pt, weight=df.w * 1.1)``),
and one column into several histograms. Every result is compared bin for
bin with an eager ``hist.Hist`` filled from the same data: exactly for
counts, within 1e-12 relative for float sums (the order of the sums
differs). Each case runs with the compiled loops and with the NumPy
fallback, and filled densely and sparsely (``dask_hizt.dense-fraction``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boost_histogram as bh
import dask
import dask.array as da
import dask.dataframe as dd
import hist
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dask_hizt as dh
from dask_hizt import _arguments, _fill, _shared_fill
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema
from dask_hizt.testing import assert_hist_equal

N = 20_000
PARTS = 4


@pytest.fixture(params=["numba", "numpy"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled loops (where numba is installed) or the NumPy fallback."""
    if request.param == "numba":
        pytest.importorskip("numba")
        assert _shared_fill.numba_kernel() is not None
    else:
        monkeypatch.setattr(_shared_fill, "use_numba", False)
        assert _shared_fill.numba_kernel() is None
    return str(request.param)


@pytest.fixture(params=[0.25, 1e6], ids=["dense", "sparse"])
def fraction(request: pytest.FixtureRequest) -> Iterator[float]:
    """Partials summed densely (the default) or merged as sorted pairs."""
    with dask.config.set(
        {"dask_hizt.dense-fraction": request.param, "scheduler": "sync"}
    ):
        yield float(request.param)


@pytest.fixture
def index_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of the arrays that ``axis_indices`` binned (in this process)."""
    calls: list[int] = []
    real = _arguments.axis_indices

    def counting(axis: Any, spec: Any, values: Any) -> Any:
        calls.append(len(values))
        return real(axis, spec, values)

    for module in (_fill, _shared_fill):
        monkeypatch.setattr(module, "axis_indices", counting)
    return calls


def _data(seed: int = 0, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pt = rng.exponential(60, n)  # a tail beyond the range
    pt[rng.random(n) < 0.01] = np.nan
    pt[rng.random(n) < 0.01] = -5.0  # below the range
    return {
        "pt": pt,
        "eta": rng.normal(0, 2, n),
        "w": rng.uniform(0.5, 1.5, n),
        "ds": rng.choice(["DY", "TT", "WW"], n),  # WW is not a category below
    }


def _lazy(a: np.ndarray) -> da.Array:
    out: da.Array = da.from_array(a, chunks=len(a) // PARTS)
    return out


def _names(k: int) -> list[str]:
    return ["nominal", *(f"v{i}" for i in range(1, k))]


def _factor(i: int) -> float:
    return 1.0 + 0.013 * i


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("k", [1, 3, 50])
@pytest.mark.parametrize(
    "storage",
    [hist.storage.Weight(), hist.storage.Double()],
    ids=["Weight", "Double"],
)
def test_weight_variations_into_a_syst_axis(
    repo_path: Path,
    fraction: float,
    index_calls: list[int],
    k: int,
    storage: Any,
) -> None:
    data = _data()
    names = _names(k)
    axes = (
        hist.axis.StrCategory(names, name="syst"),
        hist.axis.Regular(20, 0, 200, name="pt"),
    )
    h = dh.Hist(*axes, storage=storage, store=repo_path, path="h")
    expected = hist.Hist(*axes, storage=storage)
    pt, w = _lazy(data["pt"]), _lazy(data["w"])
    for i, name in enumerate(names):
        h.fill(syst=name, pt=pt, weight=w * _factor(i))
        expected.fill(syst=name, pt=data["pt"], weight=data["w"] * _factor(i))
    assert_hist_equal(h.compute(), expected, rtol=1e-12)
    full = [n for n in index_calls if n > 1]
    # shared: pt is binned once per partition, not once per variation
    assert len(full) == (PARTS if k > 1 else PARTS * (fraction > 1))


@pytest.mark.usefixtures("kernel", "fraction")
@pytest.mark.parametrize("flow", [True, False], ids=["flow", "no-flow"])
@pytest.mark.parametrize(
    "storage",
    [hist.storage.Weight(), hist.storage.Double(), hist.storage.Int64()],
    ids=["Weight", "Double", "Int64"],
)
def test_one_column_into_several_histograms(
    repo_path: Path, flow: bool, storage: Any
) -> None:
    """The same column binned alike in three histograms, and differently in
    two more; a category array with a value outside its categories."""
    data = _data(1)
    weighted = not isinstance(storage, hist.storage.Int64)
    same = hist.axis.Regular(25, 0, 250, name="pt", underflow=flow, overflow=flow)
    other = hist.axis.Variable([0, 20, 50, 100, 300], name="pt", flow=flow)
    ds = hist.axis.StrCategory(["DY", "TT"], name="ds", overflow=flow)
    shapes = {
        "a": (same,),
        "b": (hist.axis.Regular(25, 0, 250, name="x", label="other name"),),
        "c": (ds, same),
        "d": (other,),
        "e": (ds, other),
    }
    if not flow:
        shapes["b"] = (same,)
    lazy = {c: _lazy(v) for c, v in data.items()}
    kw: dict[str, Any] = {"weight": lazy["w"]} if weighted else {}
    ekw: dict[str, Any] = {"weight": data["w"]} if weighted else {}
    hists, expected = [], []
    for path, axes in shapes.items():
        names = [a.name for a in axes]
        args = [lazy["ds"] if n == "ds" else lazy["pt"] for n in names]
        eargs = [data["ds"] if n == "ds" else data["pt"] for n in names]
        hists.append(
            dh.Hist(*axes, storage=storage, store=repo_path, path=path).fill(
                *args, **kw
            )
        )
        expected.append(hist.Hist(*axes, storage=storage).fill(*eargs, **ekw))
    for got, want in zip(dh.compute(*hists), expected, strict=True):
        assert_hist_equal(got, want, rtol=0 if not weighted else 1e-12)


@pytest.mark.usefixtures("kernel", "fraction")
@pytest.mark.parametrize(
    "storage",
    [hist.storage.Mean(), hist.storage.WeightedMean()],
    ids=["Mean", "WeightedMean"],
)
def test_mean_storages_next_to_shared_fills(repo_path: Path, storage: Any) -> None:
    """Mean storages keep their own path; a Weight histogram of the same
    variations shares its indices beside them."""
    data = _data(2)
    names = _names(5)
    syst = hist.axis.StrCategory(names, name="syst")
    pt = hist.axis.Regular(10, 0, 200, name="pt")
    lazy = {c: _lazy(v) for c, v in data.items()}
    mean = dh.Hist(syst, pt, storage=storage, store=repo_path, path="m")
    sums = dh.Hist(syst, pt, storage=hist.storage.Weight(), store=repo_path, path="s")
    e_mean = hist.Hist(syst, pt, storage=storage)
    e_sums = hist.Hist(syst, pt, storage=hist.storage.Weight())
    weighted = isinstance(storage, hist.storage.WeightedMean)
    for i, name in enumerate(names):
        w, ew = lazy["w"] * _factor(i), data["w"] * _factor(i)
        kw: dict[str, Any] = {"weight": w} if weighted else {}
        ekw: dict[str, Any] = {"weight": ew} if weighted else {}
        mean.fill(syst=name, pt=lazy["pt"], sample=lazy["eta"], **kw)
        e_mean.fill(syst=name, pt=data["pt"], sample=data["eta"], **ekw)
        sums.fill(syst=name, pt=lazy["pt"], weight=w)
        e_sums.fill(syst=name, pt=data["pt"], weight=ew)
    got_mean, got_sums = dh.compute(mean, sums)
    assert_hist_equal(got_mean, e_mean, rtol=1e-12)
    np.testing.assert_allclose(
        got_mean.variances(flow=True),
        np.asarray(e_mean.variances(flow=True)),
        rtol=1e-10,
    )
    assert_hist_equal(got_sums, e_sums, rtol=1e-12)


def _parquet(path: Path, frame: pd.DataFrame, files: int) -> None:
    path.mkdir(exist_ok=True)
    size = len(frame) // files
    for i in range(files):
        frame[i * size : (i + 1) * size].to_parquet(
            path / f"part{i}.parquet", row_group_size=size
        )


@pytest.mark.usefixtures("kernel", "fraction")
@pytest.mark.parametrize("k", [1, 3, 50])
def test_variations_from_parquet(tmp_path: Path, k: int) -> None:
    """The coffea pattern on a dataframe read from parquet: variations of a
    weight column into one histogram, a count of the same column beside it;
    run again with more variations, only the new ones go in."""
    data = _data(3)
    frame = pd.DataFrame({c: data[c] for c in ("pt", "eta", "w")})
    _parquet(tmp_path / "d", frame, PARTS)
    repo = tmp_path / "r.icechunk"
    names = _names(k)
    syst = hist.axis.StrCategory(names, name="syst")
    pt = hist.axis.Regular(30, 0, 300, name="pt")

    def job(n: int) -> tuple[dh.Hist, dh.Hist]:
        df = dd.read_parquet(tmp_path / "d")
        h = dh.Hist(syst, pt, storage=hist.storage.Weight(), store=repo, path="w")
        for i, name in enumerate(names[:n]):
            h.fill(syst=name, pt=df.pt, weight=df.w * _factor(i))
        counts = dh.Hist(pt, storage=hist.storage.Int64(), store=repo, path="n")
        return h, counts.fill(pt=df.pt)

    first = max(1, k // 2)
    dh.compute(*job(first))
    got, got_counts = dh.compute(*job(k))
    expected = hist.Hist(syst, pt, storage=hist.storage.Weight())
    for i, name in enumerate(names):
        expected.fill(syst=name, pt=data["pt"], weight=data["w"] * _factor(i))
    assert_hist_equal(got, expected, rtol=1e-12)
    assert_hist_equal(
        got_counts, hist.Hist(pt, storage=hist.storage.Int64()).fill(data["pt"])
    )


@pytest.mark.usefixtures("kernel", "fraction")
def test_int_category_scalars_and_arrays(repo_path: Path) -> None:
    """Scalar values on an IntCategory axis (one outside it, without flow:
    that fill counts nothing) next to an array on a Boolean axis."""
    data = _data(4)
    run = hist.axis.IntCategory([1, 2, 3], name="run", flow=False)
    sel = hist.axis.Boolean(name="sel")
    pt = hist.axis.Regular(15, 0, 150, name="pt", overflow=False)
    h = dh.Hist(run, sel, pt, storage=hist.storage.Weight(), store=repo_path, path="h")
    expected = hist.Hist(run, sel, pt, storage=hist.storage.Weight())
    passed = data["eta"] > 0
    lazy = {"pt": _lazy(data["pt"]), "sel": _lazy(passed), "w": _lazy(data["w"])}
    for i, r in enumerate([1, 2, 7, 3]):
        h.fill(run=r, sel=lazy["sel"], pt=lazy["pt"], weight=lazy["w"] * _factor(i))
        expected.fill(run=r, sel=passed, pt=data["pt"], weight=data["w"] * _factor(i))
    assert_hist_equal(h.compute(), expected, rtol=1e-12)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-20, 120, allow_nan=False),
            st.just(float("nan")),
            st.just(float("inf")),
        ),
        min_size=1,
        max_size=300,
    ),
    k=st.integers(1, 6),
    flow=st.booleans(),
    storage=st.sampled_from(["Weight", "Double", "Int64"]),
    fraction=st.sampled_from([0.25, 1e6]),
    compiled=st.booleans(),
    parts=st.integers(1, 3),
)
def test_property_variations_match_eager(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    values: list[float],
    k: int,
    flow: bool,
    storage: str,
    fraction: float,
    compiled: bool,
    parts: int,
) -> None:
    monkeypatch.setattr(_shared_fill, "use_numba", compiled)
    x = np.asarray(values)
    w = np.linspace(0.5, 2.0, len(x))
    store = tmp_path_factory.mktemp("prop") / "r.icechunk"
    names = _names(k)
    axes = (
        hist.axis.StrCategory(names, name="syst"),
        hist.axis.Regular(7, 0, 100, name="x", underflow=flow, overflow=flow),
    )
    st_ = getattr(hist.storage, storage)()
    weighted = storage != "Int64"
    h = dh.Hist(*axes, storage=st_, store=store, path="h")
    expected = hist.Hist(*axes, storage=st_)
    lx = da.from_array(x, chunks=max(1, -(-len(x) // parts)))
    lw = da.from_array(w, chunks=lx.chunks)
    for i, name in enumerate(names):
        kw: dict[str, Any] = {"weight": lw * _factor(i)} if weighted else {}
        h.fill(syst=name, x=lx, **kw)
        ekw: dict[str, Any] = {"weight": w * _factor(i)} if weighted else {}
        expected.fill(syst=name, x=x, **ekw)
    with dask.config.set({"dask_hizt.dense-fraction": fraction, "scheduler": "sync"}):
        got = h.compute()
    assert_hist_equal(got, expected, rtol=0 if not weighted else 1e-12)


_SMALL_TASK = """
import sys
import boost_histogram as bh
import dask
import dask.array as da
import hist
import numpy as np
import dask_hizt as dh

x = da.from_array(np.linspace(0, 100, 4000), chunks=1000)
w = da.ones_like(x)
names = ["nominal", "up", "down"]
h = dh.Hist(hist.axis.StrCategory(names, name="syst"), hist.axis.Regular(5, 0, 100, name="x"),
            storage=hist.storage.Weight(), store=sys.argv[1], path="h")
for i, n in enumerate(names):
    h.fill(syst=n, x=x, weight=w * (1 + i))
with dask.config.set(scheduler="sync"):
    got = h.compute().to_hist()
assert got.view(flow=True)["value"].sum() == 6 * 4000, got
print("numba" in sys.modules)
"""


def test_small_tasks_import_no_numba(tmp_path: Path) -> None:
    """A fresh process whose fill tasks share keys but have little to add
    does not pay numba's import (it is for large tasks; see NUMBA_WORK)."""
    out = subprocess.run(
        [sys.executable, "-c", _SMALL_TASK, str(tmp_path / "r.icechunk")],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "False"


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    chunk_bytes=st.sampled_from([8, 64, 512, 4096, 2**20]),
    data=st.data(),
)
def test_bin_key_is_layout_keys(
    shape: list[int], chunk_bytes: int, data: st.DataObject
) -> None:
    """The scalar key of a fill's constant arguments is the key Layout.keys gives."""
    axes: list[bh.axis.Axis] = [
        hist.axis.Integer(0, n, name=f"a{i}", flow=False) for i, n in enumerate(shape)
    ]
    axes[0] = hist.axis.StrCategory([str(c) for c in range(shape[0])], name="a0")
    layout = Layout.for_schema(Schema.from_axes(axes), chunk_bytes)
    idx = [data.draw(st.integers(0, n - 1)) for n in layout.shape]
    expected = layout.keys([np.array([i], np.intp) for i in idx])[0]
    assert _shared_fill.bin_key(layout, idx) == expected
