"""The documentation's examples run as written."""

from __future__ import annotations

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
