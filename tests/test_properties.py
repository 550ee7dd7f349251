"""Property and stateful tests: random axes, storages, data and partitionings,
always equal to the eager hist.Hist of the same data."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import dask
import dask.array as da
import hist
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import dask_hizt as dh

AXIS_MAKERS = {
    "regular": lambda i: hist.axis.Regular(7, -2, 2, name=f"a{i}"),
    "regular-noflow": lambda i: hist.axis.Regular(
        5, -1, 1, underflow=False, overflow=False, name=f"a{i}"
    ),
    "circular": lambda i: hist.axis.Regular(6, 0, 6, circular=True, name=f"a{i}"),
    "log": lambda i: hist.axis.Regular(
        5, 0.1, 10, transform=hist.axis.transform.log, name=f"a{i}"
    ),
    "variable": lambda i: hist.axis.Variable([-1, 0, 0.5, 2], name=f"a{i}"),
    "integer": lambda i: hist.axis.Integer(-1, 4, name=f"a{i}"),
    "boolean": lambda i: hist.axis.Boolean(name=f"a{i}"),
    "intcat": lambda i: hist.axis.IntCategory([1, 3], name=f"a{i}"),
    "strcat": lambda i: hist.axis.StrCategory(["a", "b"], name=f"a{i}"),
    "strcat-grow": lambda i: hist.axis.StrCategory([], growth=True, name=f"a{i}"),
}
STORAGES = ["Double", "Int64", "Weight", "Mean", "WeightedMean"]


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind in ("strcat", "strcat-grow"):
        return rng.choice(["a", "b", "c"], n)
    if kind == "intcat":
        return rng.choice([1, 2, 3], n)
    if kind == "integer":
        return rng.integers(-3, 6, n)
    if kind == "boolean":
        return rng.integers(0, 2, n).astype(bool)
    return rng.normal(0.5, 2, n)


def _close(got: hist.Hist, expected: hist.Hist) -> None:
    # growing axes gain categories in sorted order, eager fills in order of first sight
    for a, b in zip(got.axes, expected.axes, strict=True):
        assert type(a) is type(b)
    gv, ev = np.asarray(got.view(flow=True)), np.asarray(expected.view(flow=True))
    order = [
        [list(a).index(c) for c in b]
        if isinstance(a, hist.axis.StrCategory) and a.traits.growth
        else slice(None)
        for a, b in zip(got.axes, expected.axes, strict=True)
    ]
    for ax, o in enumerate(order):
        if not isinstance(o, slice):
            gv = np.take(gv, o, axis=ax)
    for f in gv.dtype.names or [None]:
        g = gv if f is None else gv[f]
        e = ev if f is None else ev[f]
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-9, err_msg=str(f))


@given(
    kinds=st.lists(st.sampled_from(sorted(AXIS_MAKERS)), min_size=1, max_size=3),
    storage=st.sampled_from(STORAGES),
    n=st.integers(1, 600),
    chunks=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    chunk_bytes=st.sampled_from(["64B", "1MiB"]),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_histograms_equal_eager(
    kinds: list[str], storage: str, n: int, chunks: int, seed: int, chunk_bytes: str
) -> None:
    rng = np.random.default_rng(seed)
    axes = [AXIS_MAKERS[k](i) for i, k in enumerate(kinds)]
    data = [_values(k, n, rng) for k in kinds]
    kw: dict[str, np.ndarray] = {}
    if storage in ("Double", "Weight", "WeightedMean"):
        kw["weight"] = rng.uniform(0.5, 2, n)
    if "Mean" in storage:
        kw["sample"] = rng.normal(3, 1, n)
    d = Path(tempfile.mkdtemp())
    try:
        with dask.config.set(
            {"dask_hizt.chunk-bytes": chunk_bytes, "dask_hizt.owners": 3}
        ):
            h = dh.Hist(
                *axes, storage=getattr(hist.storage, storage)(), store=d, path="h"
            )
            h.fill(
                *[da.from_array(x, chunks=chunks) for x in data],
                **{k: da.from_array(v, chunks=chunks) for k, v in kw.items()},
            )
            stored = h.compute(scheduler="sync")
        expected = hist.Hist(*axes, storage=getattr(hist.storage, storage)()).fill(
            *data, **kw
        )
        _close(stored.to_hist(), expected)
    finally:
        shutil.rmtree(d)


class StoredVersusMemory(RuleBasedStateMachine):
    """Random fills, computes, reopenings and slice reads against an in-memory hist.Hist."""

    AXES = (
        hist.axis.StrCategory(["x", "y", "z"], name="c"),
        hist.axis.Regular(6, 0, 3, name="v"),
    )

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.lazy = dh.Hist(
            *self.AXES, storage=hist.storage.Weight(), store=self.dir, path="s/h"
        )
        self.model = hist.Hist(*self.AXES, storage=hist.storage.Weight())
        self.pending = hist.Hist(*self.AXES, storage=hist.storage.Weight())
        self.stored: dh.StoredHist | None = None
        self.seed = 0

    @rule(
        n=st.integers(0, 300),
        chunks=st.integers(1, 120),
        scalar=st.sampled_from([None, "x", "z", "w"]),
    )
    def fill(self, n: int, chunks: int, scalar: str | None) -> None:
        self.seed += 1
        rng = np.random.default_rng(self.seed)
        v = rng.uniform(-0.5, 3.5, n)
        w = rng.integers(1, 4, n).astype(float)
        c = scalar if scalar is not None else rng.choice(["x", "y", "q"], n)
        lazy_c = c if scalar is not None else da.from_array(c, chunks=max(1, chunks))
        self.lazy.fill(
            c=lazy_c,
            v=da.from_array(v, chunks=max(1, chunks)),
            weight=da.from_array(w, chunks=max(1, chunks)),
        )
        self.pending.fill(c=c, v=v, weight=w)

    @rule()
    def compute(self) -> None:
        self.stored = self.lazy.compute(scheduler="threads")
        self.model += self.pending
        self.pending.reset()
        self.lazy = dh.Hist(
            *self.AXES, storage=hist.storage.Weight(), store=self.dir, path="s/h"
        )

    @precondition(lambda self: self.stored is not None)
    @rule()
    def reopen(self) -> None:
        assert self.stored is not None
        again = dh.open(self.dir, "s/h", snapshot_id=self.stored.snapshot_id)
        _close(again.to_hist(), self.model)

    @precondition(lambda self: self.stored is not None)
    @rule(cat=st.sampled_from(["x", "y", "z"]), lo=st.integers(0, 5))
    def read_a_slice(self, cat: str, lo: int) -> None:
        latest = dh.open(self.dir, "s/h")
        got = latest.to_hist()[cat, lo:]
        want = self.model[cat, lo:]
        np.testing.assert_array_equal(
            np.asarray(got.values(flow=True)), np.asarray(want.values(flow=True))
        )

    @invariant()
    def branch_holds_the_model(self) -> None:
        if self.stored is not None:
            np.testing.assert_array_equal(
                dh.open(self.dir, "s/h").values(flow=True),
                np.asarray(self.model.values(flow=True)),
            )

    def teardown(self) -> None:
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


StoredVersusMemory.TestCase.settings = settings(
    max_examples=8, stateful_step_count=8, deadline=None
)
test_stored_versus_memory = StoredVersusMemory.TestCase
