"""Every storage, including Mean and WeightedMean, and transformed axes, end to end."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import numpy as np
import numpy.typing as npt
import pytest

import dask_hizt as dh
from dask_hizt.testing import assert_hist_equal

N = 100_000


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "x": rng.uniform(0, 1, N),
        "cat": rng.choice(["a", "b", "c"], N),
        "s": rng.normal(100, 1, N),
        # a large mean and a small spread: sum-of-squares formulas would lose the variance
        "hard": rng.normal(1e4, 0.5, N),
        "w": rng.uniform(0.5, 2, N),
    }


def _lazy(a: npt.NDArray[Any]) -> da.Array:
    out: da.Array = da.from_array(a, chunks=N // 100)  # 100 partitions
    return out


@pytest.mark.parametrize("fraction", [0.0, 100.0], ids=["boost-fill", "sparse-merge"])
@pytest.mark.parametrize("storage", [hist.storage.Mean(), hist.storage.WeightedMean()])
def test_mean_storages_through_100_partitions(
    repo_path: Path,
    data: dict[str, npt.NDArray[Any]],
    storage: hist.storage.Storage,
    fraction: float,
) -> None:
    axes = (
        hist.axis.StrCategory(["a", "b"], name="cat"),
        hist.axis.Regular(7, 0, 1, name="x"),
    )
    weighted = isinstance(storage, hist.storage.WeightedMean)
    weight = data["w"] if weighted else None
    with dask.config.set({"dask_hizt.dense-fraction": fraction}):
        h = dh.Hist(*axes, storage=storage, store=repo_path, path="m")
        h.fill(
            cat=_lazy(data["cat"]),
            x=_lazy(data["x"]),
            sample=_lazy(data["s"]),
            weight=None if weight is None else _lazy(weight),
        )
        stored = h.compute()
    expected = hist.Hist(*axes, storage=storage).fill(
        cat=data["cat"], x=data["x"], sample=data["s"], weight=weight
    )
    assert_hist_equal(stored, expected, rtol=1e-12)
    variances = expected.variances(flow=True)
    assert variances is not None
    np.testing.assert_allclose(stored.variances(flow=True), variances, rtol=1e-10)
    assert stored.storage_type is type(storage)


def test_mean_is_accurate_where_sums_of_squares_cancel(
    repo_path: Path, data: dict[str, npt.NDArray[Any]]
) -> None:
    ax = hist.axis.Regular(4, 0, 1, name="x")
    h = dh.Hist(ax, storage=hist.storage.Mean(), store=repo_path, path="m")
    stored = h.fill(_lazy(data["x"]), sample=_lazy(data["hard"])).compute()
    view = stored.view(flow=True)
    for i in range(1, 5):
        # boost-histogram's stubs take one value; index takes arrays too
        bins = ax.index(data["x"])  # type: ignore[arg-type]
        inside = data["hard"][bins == i - 1].astype(np.longdouble)
        truth = ((inside - inside.mean()) ** 2).sum()
        # 20 standard deviations of relative spread 5e-5: a sum-of-squares
        # formula would keep ~7 digits; the merges keep 12
        assert abs(view["_sum_of_deltas_squared"][i] - truth) <= 1e-12 * truth
        assert abs(view["value"][i] - inside.mean()) <= 1e-15 * inside.mean()


def test_mean_accumulates_over_computes_and_concurrently(
    repo_path: Path, data: dict[str, npt.NDArray[Any]]
) -> None:
    axes = (hist.axis.Regular(5, 0, 1, name="x"),)
    h = dh.Hist(*axes, storage=hist.storage.Mean(), store=repo_path, path="m")
    h.fill(_lazy(data["x"]), sample=_lazy(data["s"]))
    h.compute()
    # two more computes of new data racing in threads: the loser replays its
    # merge on top of the winner's
    h2 = dh.Hist(*axes, storage=hist.storage.Mean(), store=repo_path, path="m")
    h2.fill(_lazy(data["x"][::-1]), sample=_lazy(data["s"] * 1.5))
    h3 = dh.Hist(*axes, storage=hist.storage.Mean(), store=repo_path, path="m")
    h3.fill(_lazy(data["x"]), sample=_lazy(data["s"] * 0.5))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda lazy: lazy.compute(scheduler="threads"), [h3, h2]))
    expected = hist.Hist(*axes, storage=hist.storage.Mean())
    expected.fill(data["x"], sample=data["s"])
    expected.fill(data["x"], sample=data["s"] * 0.5)
    expected.fill(data["x"][::-1], sample=data["s"] * 1.5)
    assert_hist_equal(dh.open(repo_path, "m"), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "axis",
    [
        hist.axis.Regular(20, 1e-3, 1, transform=hist.axis.transform.log, name="x"),
        hist.axis.Regular(20, 0, 1, transform=hist.axis.transform.sqrt, name="x"),
        hist.axis.Regular(20, 0, 1, transform=hist.axis.transform.Pow(3), name="x"),
    ],
    ids=["log", "sqrt", "pow"],
)
def test_transformed_axes(
    repo_path: Path, data: dict[str, npt.NDArray[Any]], axis: hist.axis.Regular
) -> None:
    stored = (
        dh.Hist(axis, storage=hist.storage.Int64(), store=repo_path, path="t")
        .fill(_lazy(data["x"]))
        .compute()
    )
    assert_hist_equal(
        stored, hist.Hist(axis, storage=hist.storage.Int64()).fill(data["x"])
    )
    assert stored.axes[0].transform == axis.transform


def test_sample_and_weight_errors(
    repo_path: Path, data: dict[str, npt.NDArray[Any]]
) -> None:
    x = _lazy(data["x"])
    ax = hist.axis.Regular(5, 0, 1)
    with pytest.raises(dh.FillError, match="needs sample="):
        dh.Hist(ax, storage=hist.storage.Mean(), store=repo_path, path="m").fill(x)
    with pytest.raises(dh.FillError, match="sample= is only for Mean"):
        dh.Hist(ax, storage=hist.storage.Double(), store=repo_path, path="d").fill(
            x, sample=x
        )
    with pytest.raises(dh.FillError, match="weight= cannot be used with Mean"):
        dh.Hist(ax, storage=hist.storage.Mean(), store=repo_path, path="m").fill(
            x, sample=x, weight=x
        )
    with pytest.raises(dh.FillError, match="weight= cannot be used with Int64"):
        dh.Hist(ax, storage=hist.storage.Int64(), store=repo_path, path="i").fill(
            x, weight=x
        )
