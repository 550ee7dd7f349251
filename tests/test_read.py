"""Reading back parts of a stored histogram: indexing, projections, dask arrays.

Every read is compared with the same operation on the eager ``hist.Hist``
filled with the same data: same axes, same bins (flow included), same
scalars, same exceptions and warnings.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import icechunk
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

N = 3_000
DATASETS = ["DY", "QCD", "TT", "WW"]
STORAGES: dict[str, type[hist.storage.Storage]] = {
    "double": hist.storage.Double,
    "int64": hist.storage.Int64,
    "weight": hist.storage.Weight,
    "mean": hist.storage.Mean,
    "wmean": hist.storage.WeightedMean,
}


def _fill(
    store: Path, path: str, axes: tuple[Any, ...], storage: str, columns: list[Any]
) -> tuple[dh.StoredHist, hist.Hist[Any]]:
    """Fill a stored histogram; return it and its whole eager ``hist.Hist``."""
    rng = np.random.default_rng(len(path))
    # Non-integer weights, so that exact equality also checks summation order.
    weight = None if storage in ("int64", "mean") else rng.normal(1, 0.4, N)
    sample = rng.normal(5, 2, N) if "mean" in storage else None

    def lazy(x: Any) -> Any:
        return None if x is None else da.from_array(np.asarray(x), chunks=N // 3)

    stored = (
        dh.Hist(*axes, storage=STORAGES[storage](), store=store, path=path)
        .fill(*map(lazy, columns), weight=lazy(weight), sample=lazy(sample))
        .compute()
    )
    eager = hist.Hist(*axes, storage=STORAGES[storage]()).fill(
        *columns, weight=weight, sample=sample
    )
    # Partitioned fills add weights in another order than one eager fill.
    assert_hist_equal(stored, eager, rtol=1e-9)
    # The reference is what was stored, read whole: reads must equal it exactly.
    return stored, stored.to_hist()


def _cat3d_axes() -> tuple[Any, ...]:
    return (
        hist.axis.StrCategory(DATASETS, name="ds"),
        hist.axis.Regular(10, 0, 100, name="pt"),
        hist.axis.Integer(-1, 5, name="nj"),
    )


def _cat3d_columns() -> list[Any]:
    rng = np.random.default_rng(7)
    return [
        rng.choice([*DATASETS, "ZZ"], N),  # ZZ lands in the overflow bin
        rng.exponential(40, N) - 5,
        rng.integers(-3, 8, N),
    ]


def _mixed_axes() -> tuple[Any, ...]:
    return (
        hist.axis.IntCategory([1, 3, 5], name="ic"),
        hist.axis.Variable([0, 1, 3, 10], name="v"),
        hist.axis.Boolean(name="b"),
        hist.axis.Regular(6, -1, 1, underflow=False, overflow=False, name="r"),
    )


def _mixed_columns() -> list[Any]:
    rng = np.random.default_rng(8)
    return [
        rng.choice([1, 3, 5, 7], N),
        rng.exponential(3, N) - 0.5,
        rng.random(N) < 0.3,
        rng.normal(0, 0.6, N),
    ]


def _noflow_axes() -> tuple[Any, ...]:
    return (
        hist.axis.Regular(5, 0, 1, flow=False, name="x"),
        hist.axis.StrCategory(["a", "b"], overflow=False, name="s"),
    )


def _noflow_columns() -> list[Any]:
    rng = np.random.default_rng(9)
    return [rng.random(N) * 1.2 - 0.1, rng.choice(["a", "b"], N)]


def _unnamed_axes() -> tuple[Any, ...]:
    # hist labels axes without name or label "Axis i" by position: a result
    # keeps the labels of the whole histogram
    return (
        hist.axis.StrCategory(["a", "b", "c"]),
        hist.axis.Regular(8, 0, 1),
        hist.axis.Integer(0, 4, label="count"),
        hist.axis.Regular(5, -1, 1, name="y"),
    )


def _unnamed_columns() -> list[Any]:
    rng = np.random.default_rng(10)
    return [
        rng.choice(["a", "b", "c", "d"], N),
        rng.uniform(-0.1, 1.1, N),
        rng.integers(-1, 6, N),
        rng.normal(0, 0.6, N),
    ]


SHAPES: dict[str, tuple[Callable[[], tuple[Any, ...]], Callable[[], list[Any]]]] = {
    "cat3d": (_cat3d_axes, _cat3d_columns),
    "mixed": (_mixed_axes, _mixed_columns),
    "noflow": (_noflow_axes, _noflow_columns),
    "unnamed": (_unnamed_axes, _unnamed_columns),
}


def _storages(shape: str) -> list[str]:
    """The storages each shape is stored in (every one for cat3d)."""
    if shape == "cat3d":
        return list(STORAGES)
    if shape in ("mixed", "unnamed"):
        return ["double", "weight"]
    return ["double", "int64", "weight"]


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], tuple[dh.StoredHist, hist.Hist[Any]]]:
    """Every shape in every storage, stored with small chunks (dense axes split)."""
    store = tmp_path_factory.mktemp("read") / "repo.icechunk"
    out = {}
    # 128 bytes: 16 bins per chunk, so dense axes are cut into several chunks
    with dask.config.set({"dask_hizt.chunk-bytes": 128, "scheduler": "sync"}):
        for shape, (axes, columns) in SHAPES.items():
            for storage in _storages(shape):
                out[shape, storage] = _fill(
                    store, f"{shape}_{storage}", axes(), storage, columns()
                )
    return out


def _outcome(f: Callable[[], Any]) -> tuple[Any, list[type[Warning]]]:
    """A call's result (or exception) and the warning categories it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = f()
        except Exception as err:  # noqa: BLE001 - compared with the eager error
            result = err
    return result, [w.category for w in caught]


def check_same(got: Any, expected: Any, *, rtol: float = 0.0) -> None:
    """A stored read equals the eager one: histogram, scalar or exception.

    Exact unless a tolerance is given.
    """
    if isinstance(expected, Exception):
        assert isinstance(got, Exception), f"expected {expected!r}, got {got!r}"
        assert type(got) is type(expected), f"{got!r} != {expected!r}"
        return
    if isinstance(got, Exception):
        raise got
    if isinstance(expected, hist.Hist):
        assert isinstance(got, hist.Hist)
        assert_hist_equal(got, expected, rtol=rtol)
        if not rtol:
            assert got == expected  # boost's own comparison: axes, storage, bins
    else:
        assert type(got) is type(expected)
        assert got == expected


def check_index(stored: dh.StoredHist, eager: hist.Hist[Any], index: Any) -> None:
    got, got_warnings = _outcome(lambda: stored[index])
    expected, expected_warnings = _outcome(lambda: eager[index])
    check_same(got, expected)
    assert got_warnings == expected_warnings


# Index expressions per shape; each is checked for every storage of the shape.
L = hist.loc
R = hist.rebin
INDEXES: dict[str, list[Any]] = {
    "cat3d": [
        ...,
        (),
        ("DY", ...),
        ("QCD", slice(None), slice(None)),
        (L("TT"), 3, L(2)),
        (0, 0, 0),
        (-1, -1, -1),
        (hist.overflow, hist.underflow, hist.overflow),
        ("DY", L(-5.0), L(40)),
        ("WW", L(500.0), hist.underflow),
        ("ZZ", ...),  # a label not on the axis
        (hist.overflow, sum, sum),
        (sum, sum, sum),
        (sum, ...),
        (..., sum),
        (slice(None, None, sum), 2, slice(None)),
        ("DY", slice(2, 7), slice(L(0), L(3))),
        (slice(None), slice(L(20.0), L(80.0)), slice(None, None, R(2))),
        (slice(1, 3), slice(1, 9, R(4)), sum),
        ("TT", slice(2, 5, sum), 1),
        (1, 3j, ...),  # complex shortcuts: 3j is loc(3.0)
        (slice(None), slice(20j, 70j), slice(None, None, 2j)),
        ({"ds": "QCD"}),
        ({"ds": "QCD", "nj": L(4)}),
        ({0: 1, "pt": slice(None, None, sum)}),
        ({"nj": sum, "pt": 4}),
        ({"ds": 1, 0: 2}),  # duplicate key
        (["DY", "WW"], ...),
        (["QCD"], 5, slice(None)),
        ("*", sum, 2),
        ("?Y", ...),  # wildcard matching DY only
        (4, 0, 0),  # past the categories: out of range
        (0, 10, 0),
        (0, 0, 0, 0),  # too many indices
        (..., ..., 0),
        (0, 1.5, 0),  # float index: TypeError
    ],
    "mixed": [
        ...,
        (L(3), ...),
        (L(7), 1, True, 2),  # an IntCategory label off the axis: overflow
        (hist.overflow, L(2.0), L(False), sum),
        (2, 0, 1, L(0.5)),
        (slice(None), slice(1, None), True, slice(None, None, R(3))),
        (sum, L(0.5), slice(None), slice(L(-0.5), L(0.5))),
        ({"b": True, "ic": L(5)}),
        ({"r": sum, "v": sum}),
        ([1, 2], slice(None), 0, sum),
        ([L(5), L(1)], ...),
        (slice(None), hist.underflow, ...),
        (0, 0, 0, hist.underflow),  # r has no underflow bin
        (0, 0, 0, L(5.0)),  # nor overflow bin
        (0, -4, 0, 0),
    ],
    "noflow": [
        ...,
        (2, "a"),
        (L(0.5), sum),
        (slice(1, 4), "b"),
        (slice(None, None, R(5)), slice(None)),
        (sum, "a"),
        (hist.underflow, 0),
        (L(2.0), 0),
        (0, "c"),
        (0, hist.overflow),
        ({"s": ["b"]}),
    ],
    "unnamed": [
        ...,
        (0, ...),
        ("b", slice(None), sum, slice(None)),
        (slice(None), 3, ...),
        (sum, slice(None), slice(None), 2),
        (..., sum),
        (slice(None), slice(None, None, R(2)), L(1), sum),
        (slice(1, 3), L(0.5), slice(None), slice(None, None, sum)),
        ({0: "a"}),
        ({1: sum, "y": 1}),
        ({2: slice(1, 3), 3: R(5)}),
        (["a", "c"], ...),
        ("*", sum, ...),
        (hist.overflow, hist.underflow, hist.overflow, slice(None)),
        (0, 0, 0, 0),
        (sum, sum, sum, sum),
    ],
}


def _each_storage(
    filled: dict[tuple[str, str], Any],
    shape: str,
    check: Callable[[dh.StoredHist, hist.Hist[Any]], None],
) -> None:
    """Run a check on one shape in each of its storages, naming a failing one."""
    for storage in _storages(shape):
        try:
            check(*filled[shape, storage])
        except AssertionError as err:
            err.add_note(f"storage: {storage}")
            raise


@pytest.mark.parametrize(
    ("shape", "i"),
    [
        pytest.param(shape, i, id=f"{shape}-{i}")
        for shape, indexes in INDEXES.items()
        for i in range(len(indexes))
    ],
)
def test_getitem_equals_eager(
    filled: dict[tuple[str, str], Any], shape: str, i: int
) -> None:
    _each_storage(
        filled,
        shape,
        lambda stored, eager: check_index(stored, eager, INDEXES[shape][i]),
    )


# Random combinations of per-axis parts, as tuples or dicts.
_PARTS = {
    "ds": [
        "DY",
        "TT",
        L("QCD"),
        0,
        -1,
        3,
        hist.overflow,
        slice(None),
        slice(1, 3),
        slice(L("QCD"), None),
        slice(None, None, sum),
        sum,
        ["DY", "WW"],
        [L("TT")],
        "*",
    ],
    "pt": [
        0,
        9,
        -1,
        hist.underflow,
        hist.overflow,
        L(55.0),
        L(-5.0),
        L(500.0),
        3j,
        slice(None),
        slice(2, 7),
        slice(L(20.0), L(80.0)),
        slice(None, None, R(2)),
        slice(1, 9, R(4)),
        slice(None, None, 5j),
        slice(2, 5, sum),
        sum,
    ],
    "nj": [
        0,
        L(3),
        L(-1),
        L(10),
        hist.underflow,
        slice(None),
        slice(L(0), L(3)),
        slice(None, None, R(3)),
        slice(None, 4, sum),
        sum,
    ],
}


@st.composite
def _indexes(draw: st.DrawFn) -> Any:
    parts = {name: draw(st.sampled_from(options)) for name, options in _PARTS.items()}
    form = draw(st.sampled_from(["tuple", "dict", "ellipsis"]))
    if form == "dict":
        keep = draw(st.sets(st.sampled_from(list(parts)), min_size=1))
        return {name: parts[name] for name in keep}
    values = list(parts.values())
    if form == "ellipsis":
        cut = draw(st.integers(0, len(values)))
        return (*values[:cut], ...)
    return tuple(values)


@settings(max_examples=60, deadline=None)
@given(index=_indexes(), storage=st.sampled_from(list(STORAGES)))
def test_getitem_random_indexes(
    filled: dict[tuple[str, str], Any], index: Any, storage: str
) -> None:
    stored, eager = filled["cat3d", storage]
    check_index(stored, eager, index)


PROJECTIONS: dict[str, list[tuple[int | str, ...]]] = {
    "cat3d": [(0,), (1,), (2,), ("pt", "ds"), (2, 1), (0, 2), (), (0, 1, 2), (2, 0, 1)],
    "mixed": [(0,), (1,), (3,), ("r", "v"), (2, 0), (1, 3), (), (3, 2, 1, 0)],
    "noflow": [(0,), (1,), (1, 0), ()],
    "unnamed": [(0,), (1,), (2, 1), (3, 0), ("y", 2), (1, 2, 3), ()],
}


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        pytest.param(shape, axes, id=f"{shape}-{axes}")
        for shape, projections in PROJECTIONS.items()
        for axes in projections
    ],
)
@pytest.mark.parametrize("flow", [True, False])
def test_project_equals_eager(
    filled: dict[tuple[str, str], Any],
    shape: str,
    axes: tuple[int | str, ...],
    flow: bool,
) -> None:
    def check(stored: dh.StoredHist, eager: hist.Hist[Any]) -> None:
        # exact: bins are added (accumulators merged) in boost's order
        check_same(stored.project(*axes, flow=flow), eager.project(*axes, flow=flow))

    _each_storage(filled, shape, check)


@pytest.mark.parametrize("axes", [("nope",), (3,), (-1,), (0, "ds")])
def test_project_errors_like_hist(
    filled: dict[tuple[str, str], Any], axes: tuple[Any, ...]
) -> None:
    stored, eager = filled["cat3d", "double"]
    got, _ = _outcome(lambda: stored.project(*axes))
    expected, _ = _outcome(lambda: eager.project(*axes))
    check_same(got, expected)


def test_project_float_axis_is_a_type_error(
    filled: dict[tuple[str, str], Any],
) -> None:
    # hist fails in pybind11 with a RuntimeError here; a TypeError is plainer
    with pytest.raises(TypeError):
        filled["cat3d", "double"][0].project(1.0)


def _expected_field(eager: Any, field: str, flow: bool) -> Any:
    view = np.asarray(eager.view(flow=flow))
    return view if view.dtype.names is None else view[field]


@pytest.mark.parametrize("storage", list(STORAGES))
def test_to_dask_array(filled: dict[tuple[str, str], Any], storage: str) -> None:
    stored, eager = filled["cat3d", storage]
    for field in stored.schema.spec.fields:
        full = stored.to_dask_array(field, flow=True)
        assert full.chunksize == stored.layout.chunks
        assert full.name == stored.to_dask_array(field, flow=True).name
        np.testing.assert_array_equal(
            full.compute(), _expected_field(eager, field, True)
        )
        inner = stored.to_dask_array(field)
        np.testing.assert_array_equal(
            inner.compute(), _expected_field(eager, field, False)
        )
        # the graph pickles (a readonly session's store does), as a cluster needs
        again = pickle.loads(pickle.dumps(inner))
        np.testing.assert_array_equal(again.compute(), inner.compute())
    with pytest.raises(ValueError, match="no field"):
        stored.to_dask_array("nope")


def test_to_dask_array_on_cluster(
    filled: dict[tuple[str, str], Any], client: Any
) -> None:
    stored, eager = filled["mixed", "weight"]
    arr = stored.to_dask_array("variance")
    np.testing.assert_array_equal(client.compute(arr).result(), eager.variances())


# ---------------------------------------------------------------- xarray --


def _xarray_cases() -> dict[str, Callable[[Path], dh.Hist]]:
    x = da.random.default_rng(4).normal(0, 1, size=N, chunks=N // 3)
    w = da.random.default_rng(5).uniform(0, 2, size=N, chunks=N // 3)
    rng = np.random.default_rng(6)

    def cat(store: Path) -> dh.Hist:
        # unnamed axes next to a named one called like a placeholder
        h = dh.Hist(
            hist.axis.StrCategory(["a", "b"]),
            hist.axis.Regular(6, -3, 3, name="axis_0"),
            hist.axis.Integer(0, 3),
            storage=hist.storage.WeightedMean(),
            store=store,
            path="cat",
        )
        c = da.from_array(rng.choice(["a", "b", "c"], N), chunks=N // 3)
        n = da.from_array(rng.integers(-1, 4, N), chunks=N // 3)
        return h.fill(c, x, n, weight=w, sample=x)

    return {
        "bins-range": lambda store: dh.histogram(
            x, bins=20, range=(-3, 3), store=store, path="a/h"
        ),
        "edges-weights": lambda store: dh.histogram(
            x, bins=[-3.0, -1.0, 0.0, 0.5, 3.0], weights=w, store=store, path="e"
        ),
        "weight-storage": lambda store: dh.histogram(
            x,
            bins=7,
            range=(-2, 2),
            weights=w,
            storage=hist.storage.Weight(),
            store=store,
            path="w",
        ),
        "int64": lambda store: dh.histogram(
            x, bins=5, range=(0, 1), storage=hist.storage.Int64(), store=store, path="i"
        ),
        "multi-axis": cat,
    }


@pytest.mark.parametrize("case", list(_xarray_cases()))
def test_xarray_opens_every_histogram(repo_path: Path, case: str) -> None:
    import xarray as xr  # in the test dependency group

    stored = _xarray_cases()[case](repo_path).compute(scheduler="sync")
    session = stored.repository.readonly_session(snapshot_id=stored.snapshot_id)
    ds = xr.open_zarr(
        session.store, group=stored.path, consolidated=False, zarr_format=3
    )
    dims = stored.schema.dimension_names
    assert len(set(dims)) == len(dims)
    if case == "multi-axis":
        assert dims == ("axis_0_", "axis_0", "axis_2")
    else:
        assert dims == ("axis_0",)  # dh.histogram's axis is unnamed
    view = np.asarray(stored.to_hist().view(flow=True))
    assert sorted(ds.data_vars) == sorted(stored.schema.spec.fields)
    for field in stored.schema.spec.fields:
        assert ds[field].dims == dims
        want = view if view.dtype.names is None else view[field]
        np.testing.assert_array_equal(ds[field].values, want)


# ----------------------------------------------------------- chunk reads --

_CHUNK_KEY = re.compile(r"^h/(\w+)/c(/\d+)+$")


@pytest.fixture
def chunk_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The chunk keys read through any IcechunkStore, in order."""
    reads: list[str] = []
    original = icechunk.IcechunkStore.get

    async def counting_get(
        self: icechunk.IcechunkStore, key: str, prototype: Any, byte_range: Any = None
    ) -> Any:
        if _CHUNK_KEY.match(key):
            reads.append(key)
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(icechunk.IcechunkStore, "get", counting_get)
    return reads


def test_one_category_reads_its_chunks_only(
    repo_path: Path, chunk_reads: list[str]
) -> None:
    cats = [f"c{i}" for i in range(8)]
    axes = (
        hist.axis.StrCategory(cats, name="cat"),
        hist.axis.Regular(100, 0, 1, name="x"),
    )
    rng = np.random.default_rng(3)
    columns = [rng.choice(cats, N), rng.random(N)]
    # 256 bytes: the 102 bins of x are 4 chunks, so 9 * 4 = 36 chunks in all
    with dask.config.set({"dask_hizt.chunk-bytes": 256}):
        stored, eager = _fill(repo_path, "h", axes, "double", columns)
    n_chunks = stored.layout.n_chunks
    assert n_chunks == 36

    chunk_reads.clear()
    check_same(stored["c3", :], eager["c3", :])
    one = list(chunk_reads)
    assert len(one) <= n_chunks / 8 + 1
    assert len(one) == 4
    assert {k.split("/")[3] for k in one} == {"3"}

    chunk_reads.clear()
    check_same(stored[:, :], eager[:, :])
    assert sorted(set(chunk_reads)) == sorted(chunk_reads)
    assert len(chunk_reads) == n_chunks

    chunk_reads.clear()
    assert_hist_equal(stored.to_hist(), eager)
    assert len(chunk_reads) == n_chunks

    chunk_reads.clear()
    check_same(stored[:, hist.loc(0.5)], eager[:, hist.loc(0.5)])
    assert len(chunk_reads) == 9  # one chunk column of x

    chunk_reads.clear()
    check_same(stored["c5", 40], eager["c5", 40])
    assert len(chunk_reads) == 1

    chunk_reads.clear()
    with pytest.warns(UserWarning, match="experimental"):
        got = stored[["c1", "c6"], ::sum]
    with pytest.warns(UserWarning, match="experimental"):
        check_same(got, eager[["c1", "c6"], ::sum])  # type: ignore[index]
    assert len(chunk_reads) == 3 * 4  # two categories and the overflow one

    chunk_reads.clear()
    check_same(stored.project("x"), eager.project("x"))
    assert sorted(set(chunk_reads)) == sorted(chunk_reads)  # each chunk once
    assert len(chunk_reads) == n_chunks
