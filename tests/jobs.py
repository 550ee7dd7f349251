"""What the job scripts of tests/test_inputs.py and tests/test_inputs_root.py
share: running each kind of input (one after another, or all at once in
threads) and printing a JSON report line per kind, and reading those lines
back. A plain helper module (not a test file), importable by the scripts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any


def run_each(
    kinds: Sequence[str], one: Callable[[str], dict[str, Any]], *, concurrent: bool
) -> int:
    """Run ``one(kind)`` for each kind and print its report as a JSON line;
    return the number of kinds whose report holds an ``error``."""
    lock = threading.Lock()
    failed: list[str] = []

    def report(kind: str) -> None:
        out = one(kind)
        with lock:
            print(json.dumps(out), flush=True)
            if "error" in out:
                failed.append(kind)

    if concurrent:
        threads = [threading.Thread(target=report, args=(k,)) for k in kinds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for kind in kinds:
            report(kind)
    return len(failed)


def reports(stdout: str) -> dict[str, dict[str, Any]]:
    """The JSON lines of a job's output, per kind."""
    out = {}
    for line in stdout.splitlines(keepends=True):
        # only whole lines: the killed job may be halfway through one
        if line.startswith("{") and line.endswith("\n"):
            report = json.loads(line)
            out[report["kind"]] = report
    return out


def tail(text: str, lines: int = 15) -> str:
    """The last lines of a process's output, for failure messages."""
    return "\n".join(text.strip().splitlines()[-lines:])
