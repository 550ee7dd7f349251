"""How the client side of one fill reads: the dask_hizt functions that
``Hist(...).fill(...).compute()`` calls in the client's thread, the number of
times control crosses from one dask_hizt module to another, the longest
functions of ``src/dask_hizt`` and the count of ``Any``.

Run with ``uv run python benchmarks/structure.py [--calls]``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src" / "dask_hizt"


def _module(frame: FrameType) -> str | None:
    name = frame.f_globals.get("__name__", "")
    if not isinstance(name, str) or not name.startswith("dask_hizt"):
        return None
    return name


def trace_fill() -> tuple[list[str], int, dict[tuple[str, str], int], dict[str, int]]:
    """The dask_hizt functions entered in the client's thread (in order of
    first entry) and the number of calls that cross modules."""
    import dask
    import dask.dataframe as dd
    import hist
    import numpy as np
    import pandas as pd

    import dask_hizt as dh

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"pt": rng.exponential(50, 10_000)})
    with tempfile.TemporaryDirectory() as tmp:
        df.to_parquet(f"{tmp}/x.parquet", row_group_size=2_500)
        ddf = dd.read_parquet(f"{tmp}/x.parquet", split_row_groups=True)
        entered: list[str] = []
        seen: set[str] = set()
        crossings = 0
        pairs: dict[tuple[str, str], int] = {}
        reentries: dict[str, int] = {}
        stack: list[str | None] = []
        main = threading.get_ident()

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            nonlocal crossings
            del arg
            if threading.get_ident() != main or event not in ("call", "return"):
                return
            callee = _module(frame)
            if event == "return":
                if stack:
                    stack.pop()
                return
            # a call into a module that is active further down, below another
            # dask_hizt module: control comes back (a round trip)
            active = [m for m in stack if m is not None]
            if (
                callee is not None
                and active
                and active[-1] != callee
                and callee in active
            ):
                reentries[callee] = reentries.get(callee, 0) + 1
            stack.append(callee)
            if callee is None:
                return
            back = frame.f_back
            caller = _module(back) if back is not None else None
            if caller is not None and caller != callee:
                crossings += 1
                pair = (caller, callee)
                pairs[pair] = pairs.get(pair, 0) + 1
            q = frame.f_code.co_qualname
            if "<genexpr>" in q or "__create_fn__" in q or q == "<module>":
                return
            fn = f"{callee}:{q}"
            if fn not in seen:
                seen.add(fn)
                entered.append(fn)

        assert dh.Hist is not None  # its modules imported before tracing
        with dask.config.set(scheduler="threads"):
            sys.setprofile(profile)
            try:
                h = dh.Hist(
                    hist.axis.Regular(20, 0, 200, name="pt"),
                    store=f"{tmp}/repo",
                    path="pt",
                )
                h.fill(pt=ddf.pt).compute()
            finally:
                sys.setprofile(None)
    return entered, crossings, pairs, reentries


def longest(n: int = 12) -> list[tuple[int, str]]:
    """The ``n`` longest functions (lines, ``module.qualname``)."""
    out = []
    for path in sorted(SRC.glob("*.py")):
        tree = ast.parse(path.read_text())
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                ):
                    q = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        size = (child.end_lineno or child.lineno) - child.lineno + 1
                        out.append((size, f"{path.stem}.{q}"))
                    stack.append((child, q + "."))
    return sorted(out, reverse=True)[:n]


def count_any() -> int:
    return sum(len(re.findall(r"\bAny\b", p.read_text())) for p in SRC.rglob("*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", action="store_true", help="list every function")
    args = parser.parse_args()
    entered, crossings, pairs, reentries = trace_fill()
    modules = list(dict.fromkeys(f.split(":")[0] for f in entered))
    print(f"client: {len(entered)} dask_hizt functions, {crossings} module crossings")
    print(
        "modules in order of first entry:",
        " -> ".join(m.removeprefix("dask_hizt.") for m in modules),
    )
    short = {k: k.removeprefix("dask_hizt.") for pair in pairs for k in pair}
    busiest = sorted(pairs.items(), key=lambda kv: -kv[1])
    print(
        f"{len(pairs)} caller->callee module pairs:",
        ", ".join(f"{short[a]}->{short[b]} {n}" for (a, b), n in busiest),
    )
    if args.calls:
        for f in entered:
            print("  ", f)
    print(
        f"round trips (calls back into a module active further down the stack): "
        f"{sum(reentries.values())}",
        ", ".join(f"{short.get(m, m)} {n}" for m, n in sorted(reentries.items())),
    )
    print("longest functions:")
    for size, name in longest():
        print(f"  {size:4d}  {name}")
    print(f"Any in src/dask_hizt: {count_any()}")


if __name__ == "__main__":
    main()
