"""Partials, the fill kernel and the routing tree, without dask or storage."""

from __future__ import annotations

import dataclasses

import dask.config
import hist
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_hizt._fill import Arg, FillSpec, FillTask, Target
from dask_hizt._identity import PartitionInfo
from dask_hizt._partial import Partial, combine, from_entries
from dask_hizt._route import route
from dask_hizt._write import _touched_chunks
from dask_hizt.config import Settings
from dask_hizt.errors import FillError
from dask_hizt.layout import Layout
from dask_hizt.schema import Schema


def _dense_from(p: Partial) -> np.ndarray:
    return p.to_dense()[0]


@given(
    keys=st.lists(st.integers(0, 99), max_size=300),
    fraction=st.sampled_from([0.0, 0.25, 2.0]),
)
def test_from_entries_sums_per_key(keys: list[int], fraction: float) -> None:
    k = np.asarray(keys, dtype=np.int64)
    w = np.arange(len(k), dtype=np.float64)
    with dask.config.set({"dask_hizt.dense-fraction": fraction}):
        counts = from_entries(0, 100, k, [None], [np.int64])
        sums = from_entries(0, 100, k, [w], [np.float64])
    np.testing.assert_array_equal(_dense_from(counts), np.bincount(k, minlength=100))
    np.testing.assert_array_equal(
        _dense_from(sums), np.bincount(k, weights=w, minlength=100)
    )
    if counts.keys is not None:
        assert np.all(np.diff(counts.keys) > 0)


@given(
    parts=st.lists(st.lists(st.integers(0, 63), max_size=50), min_size=1, max_size=6),
    lo=st.integers(0, 64),
    width=st.integers(0, 64),
    fraction=st.sampled_from([0.0, 0.25, 2.0]),
)
@settings(max_examples=200)
def test_combine_restricts_and_sums(
    parts: list[list[int]], lo: int, width: int, fraction: float
) -> None:
    hi = min(64, lo + width)
    with dask.config.set({"dask_hizt.dense-fraction": fraction}):
        partials = [
            from_entries(0, 64, np.asarray(p, dtype=np.int64), [None], [np.int64])
            for p in parts
        ]
        out = combine(partials, lo, hi)
    assert (out.lo, out.hi) == (lo, max(lo, hi))
    everything = np.bincount(
        np.asarray([k for p in parts for k in p], dtype=np.int64), minlength=64
    )
    np.testing.assert_array_equal(_dense_from(out), everything[lo:hi])


@given(
    counts=st.lists(
        st.lists(st.integers(0, 70_000), min_size=4, max_size=4), min_size=1, max_size=5
    ),
    fraction=st.sampled_from([0.0, 0.25, 2.0]),
    weighted=st.booleans(),
)
@settings(max_examples=100)
def test_narrow_counts_add_up_without_overflow(
    counts: list[list[int]], fraction: float, weighted: bool
) -> None:
    # keys 0, 10, 20, 30 of [0, 64) filled that many times by each partial:
    # counts past 255 and 65535 in one partial, and sums past them in merges
    partials = []
    with dask.config.set({"dask_hizt.dense-fraction": fraction}):
        for c in counts:
            k = np.repeat(np.arange(0, 40, 10, dtype=np.int64), c)
            p = from_entries(0, 64, k, [None], [np.float64])
            if p.keys is not None and len(p):
                # a sparse partial holds counts in the narrowest unsigned type
                assert p.fields[0].dtype.kind == "u"
                assert p.fields[0].dtype.itemsize == (
                    1 if max(c) < 2**8 else 2 if max(c) < 2**16 else 4
                )
            partials.append(p)
        if weighted:  # a float partial merged with the counts
            partials.append(
                from_entries(
                    0, 64, np.array([10, 10]), [np.array([0.5, 0.25])], [np.float64]
                )
            )
        out = combine(partials, 0, 64)
        # two levels, as the routing tree merges
        groups = [g for g in (partials[::2], partials[1::2]) if g]
        halves = combine([combine(g, 0, 32) for g in groups], 0, 32)
    want = np.zeros(64)
    want[[0, 10, 20, 30]] = np.sum(counts, axis=0)
    if weighted:
        want[10] += 0.75
    np.testing.assert_array_equal(_dense_from(out), want)
    np.testing.assert_array_equal(_dense_from(halves), want[:32])


@given(
    keys=st.lists(st.integers(0, 63), max_size=80),
    chunk=st.sampled_from([1, 4, 16, 64]),
    fraction=st.sampled_from([0.0, 2.0]),
)
def test_touched_chunks_are_the_chunks_with_entries(
    keys: list[int], chunk: int, fraction: float
) -> None:
    # sparse and dense partials alike, over the keys [64, 128)
    k = np.asarray(keys, dtype=np.int64) + 64
    with dask.config.set({"dask_hizt.dense-fraction": fraction}):
        p = from_entries(64, 128, k, [None], [np.int64])
    got = _touched_chunks(p, chunk)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.unique(k // chunk))


@pytest.mark.parametrize(
    ("n_partitions", "n_owners", "split_every"),
    [(1, 1, 8), (100, 1, 8), (1, 16, 8), (100, 16, 8), (37, 5, 3), (3, 40, 2)],
)
def test_routing_tree_is_bounded(
    n_partitions: int, n_owners: int, split_every: int
) -> None:
    class FakeOwner:
        def __init__(self, i: int) -> None:
            self.key_range = (i * 10, (i + 1) * 10)

    dsk: dict = {("fill", i): None for i in range(n_partitions)}
    owners = [FakeOwner(i) for i in range(n_owners)]
    settings = dataclasses.replace(Settings.from_config(), split_every=split_every)
    routed = route(
        dsk, "t", [("fill", i) for i in range(n_partitions)], owners, settings
    )  # type: ignore[arg-type]
    assert len(routed) == n_owners
    for key, value in dsk.items():
        if value is None:
            continue
        children = value[1]
        assert 1 <= len(children) <= split_every, key
        # every routing node covers a key range inside the full key space
        assert key[0] == "hizt-route-t"
        _, _, lo, hi, _ = value
        assert 0 <= lo < hi <= n_owners * 10
    for children in routed:
        assert 1 <= len(children) <= split_every

    # each owner receives every fill partition exactly once, through one path
    def leaves(key) -> list:
        value = dsk[key]
        if value is None:
            return [key]
        return [leaf for child in value[1] for leaf in leaves(child)]

    for children in routed:
        got = sorted(leaf for child in children for leaf in leaves(child))
        assert got == [("fill", i) for i in range(n_partitions)]
    routing = sum(1 for k in dsk if k[0].startswith("hizt-route"))
    levels = int(np.ceil(np.log(max(n_partitions, n_owners)) / np.log(split_every))) + 1
    assert routing <= (n_partitions + n_owners) * levels


def _target(
    axes: list, storage: hist.storage.Storage, chunk_bytes: str = "64B"
) -> Target:
    schema = Schema.from_axes(axes, storage)
    return Target("h", schema, Layout.for_schema(schema, chunk_bytes), 0, 0)


def _task(target: Target, spec: FillSpec, dense: float = 0.25) -> FillTask:
    """A fill task filling one histogram; it returns one partial (one key space)
    and what it added."""
    return FillTask((target,), ((0, spec),), (target.layout.n_keys,), dense)


def _info(where: str = "p0") -> PartitionInfo:
    return PartitionInfo(where, (None,))


def _to_hist(task: Target, partial: Partial) -> hist.Hist:
    """Scatter a partial over the full key space back into a hist.Hist."""
    layout = task.layout
    h = task.schema.empty_hist()
    view = h.view(flow=True)
    dense = partial.to_dense()
    for chunk_id in range(layout.n_chunks):
        sel, inner = layout.chunk_region(chunk_id)
        cs = layout.chunk_size
        for name, values in zip(task.schema.spec.fields, dense, strict=True):
            block = values[chunk_id * cs : (chunk_id + 1) * cs].reshape(layout.chunks)[
                inner
            ]
            if name == "value" and len(task.schema.spec.fields) == 1:
                view[sel] = block
            else:
                view[name][sel] = block
    return h


AXES = [
    [hist.axis.Regular(7, -2, 2, name="x")],
    [
        hist.axis.Regular(7, -2, 2, name="x", underflow=False, overflow=False),
        hist.axis.Variable([0, 0.5, 1, 3], name="y"),
    ],
    [
        hist.axis.Regular(6, -3, 3, circular=True, name="x"),
        hist.axis.Integer(-1, 4, name="y"),
    ],
    [
        hist.axis.StrCategory(["a", "b"], name="x"),
        hist.axis.Integer(0, 3, name="y", underflow=False),
    ],
    [hist.axis.IntCategory([1, 5, 9], name="x"), hist.axis.Boolean(name="y")],
    [
        hist.axis.StrCategory(["a", "b"], name="x", overflow=False),
        hist.axis.Variable([-1, 0, 1], name="y", overflow=False),
    ],
]


def _values(axis: object, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(axis, hist.axis.StrCategory):
        return rng.choice(["a", "b", "c"], n)
    if isinstance(axis, hist.axis.IntCategory):
        return rng.choice([1, 5, 7, 9], n)
    if isinstance(axis, hist.axis.Boolean):
        return rng.integers(0, 2, n).astype(bool)
    if isinstance(axis, hist.axis.Integer):
        return rng.integers(-3, 6, n)
    x = rng.normal(0, 2, n)
    x[rng.random(n) < 0.02] = np.nan
    x[: min(n, 3)] = [-2, 0, 2][: min(n, 3)]  # exact edges
    return x


@given(
    case=st.sampled_from(range(len(AXES))),
    n=st.integers(0, 400),
    seed=st.integers(0, 2**16),
    storage=st.sampled_from(["Double", "Int64", "Weight", "Mean", "WeightedMean"]),
    fraction=st.sampled_from([0.0, 0.25, 5.0]),
)
@settings(max_examples=150, deadline=None)
def test_fill_kernel_equals_eager_fill(
    case: int, n: int, seed: int, storage: str, fraction: float
) -> None:
    axes = AXES[case]
    rng = np.random.default_rng(seed)
    data = [_values(ax, n, rng) for ax in axes]
    weight = rng.uniform(0.5, 2, n) if storage not in ("Int64", "Mean") else None
    sample = rng.normal(3, 1, n) if "Mean" in storage else None
    extra = [a for a in (weight, sample) if a is not None]
    slots = iter(range(len(axes), len(axes) + len(extra)))
    spec = FillSpec(
        tuple(Arg(index=i) for i in range(len(axes))),
        None if weight is None else Arg(index=next(slots)),
        None if sample is None else Arg(index=next(slots)),
    )
    target = _target(axes, getattr(hist.storage, storage)())
    (partial,) = _task(target, spec, fraction)([*data, *extra], _info())
    assert [t for t, _ in partial.inputs] == [0]
    expected = target.schema.empty_hist().fill(*data, weight=weight, sample=sample)
    got = _to_hist(target, partial)
    gv, ev = np.asarray(got.view(flow=True)), np.asarray(expected.view(flow=True))
    for field in gv.dtype.names or [None]:
        g = gv if field is None else gv[field]
        e = ev if field is None else ev[field]
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=str(field))


def test_fill_kernel_rejects_bad_values() -> None:
    target = _target(
        [hist.axis.StrCategory(["a"], name="c"), hist.axis.Regular(3, 0, 1, name="x")],
        hist.storage.Double(),
    )
    task = _task(target, FillSpec((Arg(index=0), Arg(index=1)), None))
    with pytest.raises(FillError, match="different lengths"):
        task([np.array(["a", "a"]), np.array([0.5])], _info())
    with pytest.raises(FillError, match="numeric"):
        task([np.array(["a"]), np.array(["0.5"])], _info())
    with pytest.raises(FillError, match="needs strings"):
        task([np.array([1]), np.array([0.5])], _info())
