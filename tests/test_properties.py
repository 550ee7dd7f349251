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
from conftest import as_hist
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
from dask_hizt.testing import assert_hist_equal
from dask_hizt.testing import strategies as hst

#: Tolerances of float sums added in another order (integer storages: exact).
RTOL, ATOL = 1e-10, 1e-9


@given(
    setup=hst.hist_setups(min_size=1),
    chunks=st.integers(1, 100),
    chunk_bytes=st.sampled_from(["64B", "1MiB"]),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_histograms_equal_eager(
    setup: hst.HistSetup, chunks: int, chunk_bytes: str
) -> None:
    (fill,) = setup.fills
    d = Path(tempfile.mkdtemp())
    try:
        with dask.config.set(
            {"dask_hizt.chunk-bytes": chunk_bytes, "dask_hizt.owners": 3}
        ):
            h = dh.Hist(*setup.axes, storage=setup.storage, store=d, path="h")
            h.fill(
                *[da.from_array(x, chunks=chunks) for x in fill.args],
                **{
                    k: da.from_array(v, chunks=chunks) for k, v in fill.kwargs().items()
                },
            )
            stored = h.compute(scheduler="sync")
        # growing axes gain categories in sorted order, eager fills in order of first sight
        assert_hist_equal(
            stored, setup.eager(), rtol=RTOL, atol=ATOL, categories="any order"
        )
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
        assert_hist_equal(again, self.model, rtol=RTOL, atol=ATOL)

    @precondition(lambda self: self.stored is not None)
    @rule(cat=st.sampled_from(["x", "y", "z"]), lo=st.integers(0, 5))
    def read_a_slice(self, cat: str, lo: int) -> None:
        latest = dh.open(self.dir, "s/h")
        got = as_hist(latest.to_hist()[cat, lo:])
        want = as_hist(self.model[cat, lo:])
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
