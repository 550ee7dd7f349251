"""The command line, run as a user runs it: each command in a subprocess, on a
real local repository, its output checked against the stored data."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import hist
import numpy as np
import pytest
from conftest import as_hist, weighted_sum

import dask_hizt as dh
from dask_hizt import _selection
from dask_hizt.cli import DATASETS, _demo_partition
from dask_hizt.testing import assert_hist_equal

N = 4_000
CATS = ["DY", "QCD", "TT"]


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = os.environ | {"ICECHUNK_LOG": "error"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "dask_hizt.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _ok(*args: str, cwd: Path) -> str:
    done = _run(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@dataclass
class Ran:
    """Exit code and output of the command line run in this process."""

    returncode: int
    stdout: str
    stderr: str


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``dask-hizt ARGS`` in this process (``main``), as the console script
    runs it; faster than a subprocess for the many variants of a command."""
    from dask_hizt.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse: --help, usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def _failed(done: subprocess.CompletedProcess[str] | Ran, code: int) -> str:
    """Exit code ``code`` and, for 1, exactly one line on stderr; returns it."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("dask-hizt: error: ")
    else:
        assert lines[0].startswith("usage: dask-hizt")
    return lines[-1]


@dataclass
class Filled:
    """A repository filled by the fixture, with eager references."""

    repo: Path
    first: str  # snapshot after the first fill of "ana/pt_eta" (tag "v1")
    eager1: hist.Hist[Any]  # "ana/pt_eta" at "v1"
    eager: hist.Hist[Any]  # "ana/pt_eta" at the tip
    counts: hist.Hist[Any]  # "counts" at the tip


def _data(seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "dataset": rng.choice(CATS, N),
        "pt": rng.exponential(40.0, N),
        "eta": rng.normal(0.0, 2.0, N),
        "weight": rng.normal(1.0, 0.3, N),
    }


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    repo = tmp_path_factory.mktemp("cli") / "repo.icechunk"
    axes = (
        hist.axis.StrCategory(CATS, name="dataset"),
        hist.axis.Regular(20, 0, 200, name="pt", label="p_T [GeV]"),
        hist.axis.Regular(8, -4, 4, name="eta"),
    )
    eager = hist.Hist(*axes, storage=hist.storage.Weight())
    counts: hist.Hist[Any] = hist.Hist(hist.axis.Integer(0, 10, name="n"))
    first = ""
    eager1 = eager.copy()
    with dask.config.set(scheduler="sync"):
        for seed in (1, 2):
            d = _data(seed)
            lazy = {k: da.from_array(v, chunks=N // 4) for k, v in d.items()}
            dh.Hist(
                *axes, storage=hist.storage.Weight(), store=repo, path="ana/pt_eta"
            ).fill(**lazy).compute()
            eager.fill(d["dataset"], d["pt"], d["eta"], weight=d["weight"])
            if seed == 1:
                first = dh.open(repo, "ana/pt_eta").snapshot_id
                eager1 = eager.copy()
        n = np.random.default_rng(3).integers(-1, 12, N)
        dh.Hist(hist.axis.Integer(0, 10, name="n"), store=repo, path="counts").fill(
            n=da.from_array(n, chunks=N // 2)
        ).compute()
        counts.fill(n=n)
    dh.open(repo, "counts").repository.create_tag("v1", first)
    return Filled(repo, first, eager1, eager, counts)


def _table(out: str, ncols: int) -> list[list[str]]:
    """The rows of a ``show`` table: cells split on runs of 2+ spaces."""
    rows = []
    for line in out.splitlines()[2:]:
        if line.startswith(("sum ", "...")):
            break
        rows.append(re.split(r"\s{2,}", line.strip())[:ncols])
    return rows


# ------------------------------------------------------------------ demo ---


def test_demo_fills_on_a_local_cluster_and_prints_history(tmp_path: Path) -> None:
    args = (
        "demo",
        "--events",
        "40000",
        "--partitions",
        "4",
        "--store",
        "demo.icechunk",
    )
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pt of DY, summed over eta" in result.stdout
    assert "dask_hizt: fill demo/pt_eta from 4 input partitions" in result.stdout
    assert "created" in result.stdout
    # progress is on by default, on stderr (distributed's bar on the LocalCluster)
    assert "100% Completed" in result.stderr
    assert "Completed" not in result.stdout

    stored = dh.open(tmp_path / "demo.icechunk", "demo/pt_eta")
    expected = stored.schema.empty_hist()
    for i in range(4):
        df = _demo_partition(i, 10_000)
        expected.fill(dataset=df.dataset, pt=df.pt, eta=df.eta, weight=df.weight)  # type: ignore[attr-defined]
    assert_hist_equal(stored, expected, rtol=1e-12)
    assert list(stored.axes[0]) == list(DATASETS)

    # run again: every partition is in already; nothing is added or committed
    again = _run(*args, "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4 of them are in the histogram already" in again.stdout
    assert "Completed" not in again.stderr
    assert dh.open(tmp_path / "demo.icechunk", "demo/pt_eta").snapshot_id == (
        stored.snapshot_id
    )


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a repository")
    result = _run("demo", "--store", "afile", "--events", "100", cwd=tmp_path)
    _failed(result, 1)


# ------------------------------------------------------------- help, usage ---
#
# Each command runs once as a subprocess (the real entry point: exit code,
# stdout, one-line errors); its other cases run in this process through
# ``main``, which is the same code without the interpreter's start-up.


def test_help_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _run("--help", cwd=tmp_path)
    assert done.returncode == 0
    commands = ("demo", "ls", "show", "plot", "log", "diff", "export", "tag", "gc")
    for command in commands:
        assert command in done.stdout
        assert _main(capsys, command, "--help").returncode == 0
    assert "20:80:rebin2" in _main(capsys, "show", "--help").stdout
    # wrong command lines: exit code 2 with the usage
    assert "required" in _failed(_run("show", cwd=tmp_path), 2)
    assert "invalid choice" in _failed(_main(capsys, "frobnicate"), 2)


# ---------------------------------------------------------------- reading ---


def test_ls(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok("ls", str(filled.repo), cwd=filled.repo.parent)
    assert "ana/pt_eta  Weight  880 bins" in out  # (3 + 1) x 22 x 10, flow included
    assert "dataset  StrCategory  3 categories: DY, QCD, TT" in out
    assert "pt  Regular  20 bins [0, 200)  'p_T [GeV]'" in out
    assert "counts  Double" in out
    assert "n  Integer  10 integers [0, 10)" in out
    # an older snapshot by tag: the histograms that existed then
    old = _main(capsys, "ls", str(filled.repo), "--tag", "v1")
    assert old.returncode == 0
    assert "ana/pt_eta" in old.stdout
    assert "counts" not in old.stdout


def test_show_selection_equals_eager(filled: Filled) -> None:
    out = _ok(
        "show",
        str(filled.repo),
        "ana/pt_eta",
        "dataset=DY",
        "pt=20:80:rebin2",
        "eta=sum",
        cwd=filled.repo.parent,
    )
    want = as_hist(
        filled.eager["DY", hist.loc(20) : hist.loc(80) : hist.rebin(2), sum]  # type: ignore[index]
    )
    rows = _table(out, 3)
    assert [r[0] for r in rows] == ["[20, 40)", "[40, 60)", "[60, 80)"]
    got = np.array([float(r[1]) for r in rows])
    np.testing.assert_allclose(got, want.values(), rtol=1e-9)
    errors = np.array([float(r[2]) for r in rows])
    variances = want.variances()
    assert variances is not None
    np.testing.assert_allclose(errors, np.sqrt(variances), rtol=1e-3)


def test_show_two_axes_flow_and_older_snapshot(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("show", str(filled.repo), "ana/pt_eta", "pt=sum", "--flow", "--tag", "v1")
    done = _main(capsys, *args)
    assert done.returncode == 0, done.stderr
    want = as_hist(filled.eager1[:, sum, :])  # type: ignore[index]
    rows = _table(done.stdout, 4)
    assert len(rows) == want.values(flow=True).size  # 4 x 10 bins
    assert rows[0][:2] == ["DY", "(-inf, -4)"]
    assert rows[-1][:2] == ["<other>", "[4, inf)"]
    got = np.array([float(r[2]) for r in rows]).reshape(want.values(flow=True).shape)
    np.testing.assert_allclose(got, want.values(flow=True), rtol=1e-9)


def test_show_integer_axis_and_single_bin(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _main(capsys, "show", str(filled.repo), "counts")
    rows = _table(done.stdout, 2)
    assert [r[0] for r in rows] == [str(i) for i in range(10)]
    assert [float(r[1]) for r in rows] == list(filled.counts.values())
    one = _main(capsys, "show", str(filled.repo), "counts", "n=#3")
    assert f"value: {filled.counts[3]:.10g}" in one.stdout
    few = _main(capsys, "show", str(filled.repo), "counts", "--max-rows", "4")
    assert "... 6 more bins" in few.stdout


def test_show_errors(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = filled.repo.parent
    repo = str(filled.repo)
    line = _failed(_run("show", repo, "nothing/here", cwd=cwd), 1)
    assert "no histogram at path 'nothing/here'" in line
    line = _failed(_main(capsys, "show", repo, "ana/pt_eta", "nosuch=1"), 2)
    assert "no axis 'nosuch'" in line
    line = _failed(_main(capsys, "show", repo, "ana/pt_eta", "pt"), 2)
    assert "AXIS=SPEC" in line
    line = _failed(_main(capsys, "show", repo, "ana/pt_eta", "dataset=WW"), 2)
    assert "'WW'" in line
    line = _failed(_main(capsys, "show", str(cwd / "missing"), "x"), 1)
    assert "no repository" in line
    line = _failed(_main(capsys, "show", repo, "counts", "--snapshot", "ZZZZ"), 1)
    assert "snapshot 'ZZZZ'" in line


def test_selection_parser() -> None:
    axes = [
        hist.axis.StrCategory(CATS, name="dataset"),
        hist.axis.Regular(20, 0, 200, name="pt"),
        hist.axis.Boolean(name="ok"),
        hist.axis.IntCategory([1, 5], name="run"),
    ]
    got = _selection.parse(["dataset=DY,TT", "pt=20::rebin(2)", "ok=true", "3=5"], axes)
    # hist's tags compare by identity; compare what they print
    assert repr(got) == repr(
        {0: ["DY", "TT"], 1: slice(hist.loc(20.0), None, hist.rebin(2)), 2: True, 3: 5}
    )
    got = _selection.parse(["pt=#2:#10:sum", "dataset=#1"], axes)
    assert got == {1: slice(2, 10, sum), 0: 1}
    got = _selection.parse(["dataset=:", "pt=45"], axes)
    assert repr(got) == repr({0: slice(None, None, None), 1: hist.loc(45.0)})
    for bad in (["pt=a:b"], ["pt=1:2:3"], ["dataset=DY", "0=QCD"], ["x"], ["ok=maybe"]):
        with pytest.raises(_selection.SelectionError):
            _selection.parse(bad, axes)


# ------------------------------------------------------------------ files ---


def test_plot_writes_an_image(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib.image

    out = tmp_path / "pt.png"
    repo = str(filled.repo)
    args = ("plot", repo, "ana/pt_eta", "eta=sum", "dataset=DY", "-o", str(out))
    assert f"wrote {out}" in _ok(*args, cwd=tmp_path)
    image = matplotlib.image.imread(out)
    assert image.ndim == 3
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    # two axes, a category among them; SVG
    svg = tmp_path / "pt.svg"
    done = _main(capsys, "plot", repo, "ana/pt_eta", "eta=sum", "-o", str(svg))
    assert done.returncode == 0, done.stderr
    assert svg.read_text().lstrip().startswith("<?xml")
    # too many axes left: a usage error
    line = _failed(_main(capsys, "plot", repo, "ana/pt_eta", "-o", str(out)), 2)
    assert "eta=sum" in line


def test_plot_without_mplhep_uses_plain_matplotlib(
    filled: Filled,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib.image

    monkeypatch.setitem(sys.modules, "mplhep", None)  # import mplhep fails
    out = tmp_path / "counts.png"
    done = _main(capsys, "plot", str(filled.repo), "counts", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert matplotlib.image.imread(out).shape[0] > 100


def test_export_root_h5_pickle(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import h5py
    import uproot
    from uhi.io import hdf5

    repo = str(filled.repo)
    _ok("export", repo, "ana/pt_eta", str(tmp_path / "h.pkl"), cwd=tmp_path)
    with (tmp_path / "h.pkl").open("rb") as f:
        assert_hist_equal(pickle.load(f), filled.eager, rtol=1e-12)

    def export(*args: str) -> None:
        done = _main(capsys, "export", repo, *args)
        assert done.returncode == 0, done.stderr

    h5 = str(tmp_path / "h.h5")
    export("ana/pt_eta", h5)
    export("counts", h5, "--update")
    with h5py.File(h5) as f:
        assert_hist_equal(
            hist.Hist(dict(hdf5.read(f["ana/pt_eta"]))), filled.eager, rtol=1e-12
        )
        assert_hist_equal(hist.Hist(dict(hdf5.read(f["counts"]))), filled.counts)

    root = str(tmp_path / "h.root")
    export("ana/pt_eta", root, "--name", "pt_eta")
    export("ana/pt_eta", root, "eta=sum", "--update")
    with uproot.open(root) as f:
        back = f["pt_eta"].to_hist()
        np.testing.assert_allclose(back.values(), filled.eager.values(), rtol=1e-12)
        variances = filled.eager.variances()
        assert variances is not None
        np.testing.assert_allclose(back.variances(), variances, rtol=1e-12)
        assert f["ana/pt_eta"].classname == "TH2D"
        np.testing.assert_allclose(
            f["ana/pt_eta"].values(),
            as_hist(filled.eager[:, :, sum]).values(),  # type: ignore[index]
            rtol=1e-12,
        )

    line = _failed(_main(capsys, "export", repo, "counts", "h.txt"), 2)
    assert ".root, .h5 or .pkl" in line
    line = _failed(_main(capsys, "export", repo, "counts", h5, "--update"), 1)
    assert "already holds 'counts'" in line


def test_missing_extras_name_the_extra(filled: Filled, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for module in ("uproot", "matplotlib"):
        (blocked / f"{module}.py").write_text(f"raise ImportError('no {module}')\n")
    env = {"PYTHONPATH": str(blocked)}
    repo = str(filled.repo)
    done = _run("export", repo, "counts", "c.root", cwd=tmp_path, env=env)
    assert "pip install 'dask-hizt[export]'" in _failed(done, 1)
    done = _run("plot", repo, "counts", "-o", "c.png", cwd=tmp_path, env=env)
    assert "pip install 'dask-hizt[plot]'" in _failed(done, 1)


# ---------------------------------------------------------------- history ---


def test_log_lists_commits_newest_first_with_inputs(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _ok("log", str(filled.repo), cwd=filled.repo.parent)
    repo = dh.open(filled.repo, "counts").repository
    snaps = list(repo.ancestry(branch="main"))
    heads = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert heads == [s.id for s in snaps]  # newest first, every commit
    assert "    counts: 2 input partitions" in out
    assert out.count("    ana/pt_eta: 4 input partitions") == 2
    assert "    ana/pt_eta: created" in out
    # one histogram, at most 2 commits
    only = _main(capsys, "log", str(filled.repo), "--path", "ana/pt_eta", "-n", "2")
    history = dh.open(filled.repo, "ana/pt_eta").history()
    lines = only.stdout.splitlines()
    heads = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert heads == [c.snapshot_id for c in history[:2]]
    assert "counts" not in only.stdout


def test_diff_reports_changed_histograms_and_sums(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _ok("diff", str(filled.repo), "v1", "main", cwd=filled.repo.parent)
    lines = out.splitlines()
    assert lines[0].startswith(f"{filled.first} -> ")
    by_path = {line.split()[0]: line for line in lines[1:]}
    assert set(by_path) == {"ana/pt_eta", "counts"}
    before, after = weighted_sum(filled.eager1), weighted_sum(filled.eager)
    match = re.search(r"sum (\S+) -> (\S+) \((\S+)\)", by_path["ana/pt_eta"])
    assert match is not None
    np.testing.assert_allclose(
        [float(g) for g in match.groups()], [before, after, after - before], rtol=1e-9
    )
    assert re.search(
        r"\[value: \d+ chunks?; variance: \d+ chunks?\]", by_path["ana/pt_eta"]
    )
    assert f"sum new -> {filled.counts.sum(flow=True):.10g}" in by_path["counts"]
    line = _failed(_main(capsys, "diff", str(filled.repo), "v1", "nope"), 1)
    assert "'nope' is no branch, tag or snapshot id" in line


def test_diff_backwards_in_history(filled: Filled) -> None:
    out = _ok("diff", str(filled.repo), "main", "v1", cwd=filled.repo.parent)
    lines = out.splitlines()
    tip = dh.open(filled.repo, "counts").snapshot_id
    assert (
        lines[0]
        == f"{tip} -> {filled.first} (back in history: NEW is an ancestor of OLD)"
    )
    by_path = {line.split()[0]: line for line in lines[1:]}
    assert set(by_path) == {"ana/pt_eta", "counts"}
    before, after = weighted_sum(filled.eager), weighted_sum(filled.eager1)
    match = re.search(r"sum (\S+) -> (\S+) \((\S+)\)", by_path["ana/pt_eta"])
    assert match is not None
    np.testing.assert_allclose(
        [float(g) for g in match.groups()], [before, after, after - before], rtol=1e-9
    )
    total = filled.counts.sum(flow=True)
    assert f"sum {total:.10g} -> deleted ({-total:+.10g})" in by_path["counts"]


@pytest.mark.parametrize("new", ["main", "tip-snapshot"])
def test_diff_of_a_snapshot_with_itself(filled: Filled, new: str) -> None:
    tip = dh.open(filled.repo, "counts").snapshot_id
    if new == "tip-snapshot":  # as a tag at the tip of main would be
        new = tip
    done = _run("diff", str(filled.repo), "main", new, cwd=filled.repo.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{tip} -> {tip}",
        "no histogram changed (the same snapshot)",
    ]
    assert done.stderr == ""


def test_diff_of_diverged_branches_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo_path = tmp_path / "repo.icechunk"
    # different data each time: the same data would be skipped as already in
    data = [np.random.default_rng(i).uniform(0, 1, 50) for i in range(3)]

    def fill(x: np.ndarray[Any, Any], branch: str) -> dh.StoredHist:
        stored: dh.StoredHist = dh.histogram(
            x, bins=5, range=(0, 1), store=repo_path, path="x", branch=branch
        ).compute()
        return stored

    parted = fill(data[0], "main")
    parted.repository.create_branch("other", parted.snapshot_id)
    fill(data[1], "main")
    fill(data[2], "other")
    line = _failed(_main(capsys, "diff", str(repo_path), "main", "other"), 1)
    assert "neither is an ancestor of the other" in line
    # each branch against where they parted works
    out = _main(capsys, "diff", str(repo_path), parted.snapshot_id, "other").stdout
    assert "x  sum 50 -> 100 (+50)" in out


def test_tag_create_list_and_refuse_existing(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(filled.repo)
    out = _ok("tag", repo, "first-fill", filled.first, cwd=filled.repo.parent)
    assert f"tagged {filled.first} as 'first-fill'" in out
    listed = _main(capsys, "tag", repo, "--list").stdout
    assert f"first-fill  {filled.first}" in listed
    assert f"v1  {filled.first}" in listed
    tip = dh.open(filled.repo, "counts").snapshot_id
    assert f"tagged {tip} as 'tip'" in _main(capsys, "tag", repo, "tip").stdout
    line = _failed(_main(capsys, "tag", repo, "v1"), 1)
    assert "v1" in line
    _failed(_main(capsys, "tag", repo), 2)


def test_gc(filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok("gc", str(filled.repo), "--dry-run", cwd=filled.repo.parent)
    assert "would delete 0 chunks" in out
    line = _failed(_main(capsys, "gc", str(filled.repo), "--older-than", "0s"), 1)
    assert "idle" in line
    line = _failed(_main(capsys, "gc", str(filled.repo), "--older-than", "soon"), 2)
    assert "duration" in line
    _failed(_main(capsys, "gc", str(tmp_path / "none")), 1)
