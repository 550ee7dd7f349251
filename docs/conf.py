"""Sphinx configuration of the dask_hizt documentation.

Build (no network needed):

    uv run --group docs sphinx-build -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST). The command line reference is generated from
the argparse parser at build time (``_generated/``, not committed); the
graph picture is committed (``_static/graph.svg``, made by
``docs/graph_picture.py``). Code examples in ``pycon`` blocks run as doctests
in ``tests/test_docs.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dask_hizt import __version__

os.environ.setdefault("ICECHUNK_LOG", "error")

project = "dask_hizt"
author = "dask_hizt developers"
copyright = "dask_hizt developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "README.md"]
templates_path: list[str] = []
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"dask_hizt {__version__}"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections say it
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# no intersphinx: the build runs without network


def _cli_help(out: Path) -> None:
    """Write the ``--help`` of every command, for ``cli.md`` to include."""
    from dask_hizt.cli import _parser  # noqa: PLC0415 - after COLUMNS is set

    parser = _parser()
    subparsers = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    parts = ["```text", "$ dask-hizt --help", parser.format_help().rstrip(), "```", ""]
    for name, sub in subparsers.choices.items():  # type: ignore[attr-defined]
        parts += [f"### `dask-hizt {name}`", "", "```text"]
        parts += [f"$ dask-hizt {name} --help", sub.format_help().rstrip(), "```", ""]
    out.parent.mkdir(exist_ok=True)
    text = "\n".join(parts)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app: Any) -> None:
    """Generate the command line reference before reading the sources."""
    os.environ["COLUMNS"] = "88"  # argparse wraps help to the terminal's width
    _cli_help(Path(app.srcdir) / "_generated" / "cli_help.md")
