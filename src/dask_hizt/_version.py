"""The installed version of dask_hizt, in a module of its own: modules of the
package that record it need not import the package (which imports them)."""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["__version__"]

__version__ = version("dask-hizt")
