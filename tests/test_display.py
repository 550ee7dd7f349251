"""Showing stored histograms: notebook HTML, ``.plot()``, progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import matplotlib as mpl
import numpy as np
import pytest

import dask_hizt as dh
from dask_hizt import _display

mpl.use("Agg")
import matplotlib.pyplot as plt

N = 2_000


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """1-D, 2-D (category x regular) and 3-D stored histograms, and eager twins."""
    repo = tmp_path_factory.mktemp("display") / "repo.icechunk"
    rng = np.random.default_rng(7)
    data = {
        "dataset": rng.choice(["DY", "TT"], N),
        "pt": rng.exponential(30.0, N),
        "eta": rng.normal(0.0, 1.5, N),
    }
    lazy = {k: da.from_array(v, chunks=N // 2) for k, v in data.items()}
    shapes = {
        "pt": (hist.axis.Regular(10, 0, 100, name="pt", label="p_T [GeV]"),),
        "ds_pt": (
            hist.axis.StrCategory(["DY", "TT"], name="dataset"),
            hist.axis.Regular(10, 0, 100, name="pt"),
        ),
        "pt_eta": (
            hist.axis.Regular(10, 0, 100, name="pt"),
            hist.axis.Regular(6, -3, 3, name="eta"),
        ),
        "cube": (
            hist.axis.StrCategory(["DY", "TT"], name="dataset"),
            hist.axis.Regular(10, 0, 100, name="pt"),
            hist.axis.Regular(6, -3, 3, name="eta"),
        ),
    }
    out: dict[str, Any] = {}
    with dask.config.set(scheduler="sync"):
        for path, axes in shapes.items():
            names = [a.name for a in axes]
            storage = hist.storage.Weight() if path == "cube" else hist.storage.Double()
            h = dh.Hist(*axes, storage=storage, store=repo, path=path)
            stored_ = h.fill(*(lazy[n] for n in names)).compute()
            eager = hist.Hist(*axes, storage=storage).fill(*(data[n] for n in names))
            out[path] = (stored_, eager)
    return out


@pytest.fixture
def figure() -> Iterator[Any]:
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


# ---------------------------------------------------------------- _repr_html_ ---


def test_repr_html_1d_has_table_and_svg(stored: dict[str, Any]) -> None:
    s, eager = stored["pt"]
    page = s._repr_html_()
    assert "<td style='text-align:left'>pt</td>" in page
    assert s.snapshot_id in page
    assert "Double" in page
    assert f"{eager.sum(flow=True):.10g}" in page
    assert "p_T [GeV]" in page
    assert "10 bins [0, 100)" in page
    assert page.count("<svg") == 1
    assert "</svg>" in page


def test_repr_html_2d_draws_a_mesh(stored: dict[str, Any]) -> None:
    page = stored["pt_eta"][0]._repr_html_()
    assert page.count("<svg") == 1
    assert "<image" in page  # the colour mesh, rasterized inside the SVG


def test_repr_html_3d_and_large_are_text_only(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s, eager = stored["cube"]
    page = s._repr_html_()
    assert "<svg" not in page
    assert "Weight" in page
    assert f"{eager.sum(flow=True).value:.10g}" in page
    assert "2 categories: DY, TT" in page

    # more bins than the limit (a million): nothing is read
    big = dh.Hist(
        hist.axis.Regular(1000, 0, 1, name="x"),
        hist.axis.Regular(1000, 0, 1, name="y"),
        store=tmp_path / "big.icechunk",
        path="big",
    ).compute()

    def refuse(*_: Any) -> None:
        raise AssertionError("read")

    monkeypatch.setattr(dh.StoredHist, "to_hist", refuse)
    large = big._repr_html_()
    assert "not read" in large
    assert "No drawing" in large
    assert "<svg" not in large


def test_repr_html_without_matplotlib(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    page = stored["pt"][0]._repr_html_()
    assert "<svg" not in page
    assert "matplotlib is not installed" in page


def test_text_table_of_weighted_1d(stored: dict[str, Any]) -> None:
    s, eager = stored["cube"]
    table = _display.text(s["TT", :, sum])
    want = eager["TT", :, sum]
    lines = table.splitlines()
    assert lines[0].split() == ["pt", "value", "error"]
    values = [float(line.split(")")[1].split()[0]) for line in lines[1:11]]
    np.testing.assert_allclose(values, want.values(), rtol=1e-9)
    assert lines[-1].startswith("sum (flow bins included):")


# ---------------------------------------------------------------------- plot ---


def test_plot_1d_draws_the_values(stored: dict[str, Any], figure: Any) -> None:
    s, eager = stored["pt"]
    artists = s.plot(ax=figure)
    (stairs,) = artists
    np.testing.assert_allclose(stairs.stairs.get_data().values, eager.values())
    np.testing.assert_allclose(stairs.stairs.get_data().edges, eager.axes[0].edges)
    assert figure.get_xlabel() == "p_T [GeV]"


def test_plot_2d_mesh_and_category_overlay(stored: dict[str, Any]) -> None:
    s, eager = stored["pt_eta"]
    fig = plt.figure()
    try:
        mesh = s.plot().pcolormesh
        np.testing.assert_allclose(
            np.asarray(mesh.get_array()).reshape(eager.values().T.shape),
            eager.values().T,
        )
    finally:
        plt.close(fig)
    s, eager = stored["ds_pt"]
    fig, ax = plt.subplots()
    try:
        lines = s.plot(ax=ax)
        assert len(lines) == 2  # one step line per dataset
        for line, ds in zip(lines, ["DY", "TT"], strict=True):
            np.testing.assert_allclose(
                line.stairs.get_data().values, eager[ds, :].values()
            )
    finally:
        plt.close(fig)


def test_plot_refuses_3d_and_names_missing_extra(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = stored["cube"]
    with pytest.raises(ValueError, match="select or project first"):
        s.plot()
    monkeypatch.setitem(sys.modules, "mplhep", None)
    with pytest.raises(ImportError, match=r"dask-hizt\[plot\]"):
        stored["pt"][0].plot()


def test_display_draw_fallback(stored: dict[str, Any], figure: Any) -> None:
    s, eager = stored["ds_pt"]
    bars = _display.draw(s.project("dataset"), figure)
    np.testing.assert_allclose(
        [b.get_height() for b in bars], eager.project("dataset").values()
    )
    assert [t.get_text() for t in figure.get_xticklabels()] == ["DY", "TT"]


# ------------------------------------------------------------------ progress ---


def _fill(repo: Path, factor: float) -> tuple[dh.Hist, hist.Hist[Any]]:
    values = np.random.default_rng(3).exponential(20.0, N) * factor
    axis = hist.axis.Regular(10, 0, 100, name="x")
    h = dh.Hist(axis, store=repo, path="x").fill(x=da.from_array(values, chunks=N // 4))
    return h, hist.Hist(axis).fill(x=values)


def test_progress_on_local_scheduler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo.icechunk"
    h, eager = _fill(repo, 1.0)
    s = h.compute(progress=True, scheduler="threads")
    out = capsys.readouterr().out
    assert "100% Completed" in out
    np.testing.assert_array_equal(s.values(flow=True), eager.values(flow=True))
    h2, eager2 = _fill(repo, 2.0)
    (s2,) = dh.compute(h2, scheduler="threads")  # progress is opt-in
    assert "Completed" not in capsys.readouterr().out
    np.testing.assert_array_equal(
        s2.values(flow=True), (eager + eager2).values(flow=True)
    )


def test_progress_on_distributed(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    del client  # the default scheduler while it lives
    repo = tmp_path / "repo.icechunk"
    h, eager = _fill(repo, 1.0)
    (s,) = dh.compute(h, progress=True)
    out = capsys.readouterr().out
    assert "100% Completed" in out
    np.testing.assert_array_equal(s.values(flow=True), eager.values(flow=True))
    assert s.history()[0].message.startswith("dask_hizt: fill")
