"""The documentation's examples run as written."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_blocks(page: Path) -> str:
    return "\n".join(
        re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    )


def test_coffea_tutorial_runs(tmp_path: Path) -> None:
    pytest.importorskip("dask_awkward", minversion="2025.9")
    pytest.importorskip("coffea")
    code = _python_blocks(DOCS / "coffea.md")
    assert "dh.compute(out, report)" in code
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dask_hizt: fill 2 histograms" in done.stdout


def _console_blocks(page: Path) -> list[tuple[int, str]]:
    """The ```pycon blocks of a page, with the line each starts on."""
    text = page.read_text()
    return [
        (text.count("\n", 0, m.start()) + 2, m.group(1))
        for m in re.finditer(r"```pycon\n(.*?)```", text, flags=re.DOTALL)
    ]


PAGES_WITH_EXAMPLES = sorted(p.name for p in DOCS.glob("*.md") if _console_blocks(p))


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_doc_examples_run_as_doctests(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ```pycon block of a page runs, in order, in one namespace, in an
    empty directory, printing what the page shows (``...`` matches anything)."""
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    namespace: dict[str, object] = {"__name__": "__docs__"}
    report: list[str] = []
    for line, block in _console_blocks(DOCS / page):
        test = parser.get_doctest(block, namespace, f"{page}:{line}", page, line)
        runner.run(test, out=report.append, clear_globs=False)
        namespace = test.globs  # DocTest copies its globals; carry them on
    assert runner.failures == 0, "".join(report)
    assert runner.tries > 0
