"""Defaults of dask_hizt's tunables, registered in dask.config under ``dask_hizt``."""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

__all__ = ["DEFAULTS"]

_FILE = Path(__file__).with_name("dask_hizt.yaml")
DEFAULTS = yaml.safe_load(_FILE.read_text(encoding="utf-8"))

dask.config.update_defaults(DEFAULTS)
