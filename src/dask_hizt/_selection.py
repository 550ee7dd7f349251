"""The command line's selection syntax: ``AXIS=SPEC`` words to UHI indices.

A selection is a list of words, one per axis, each ``AXIS=SPEC``. ``AXIS`` is
an axis name, or its number (0 for the first axis). Axes not named are kept
whole. ``SPEC`` is one of:

==================  ======================================================
``sum``             sum over the axis (flow bins included), dropping it
``DY``              category axes: that category (the axis is dropped)
``DY,QCD``          category axes: those categories, in that order
``45``              numeric axes: the bin holding the value 45 (dropped)
``20:80``           numeric axes: the bins from the one holding 20 up to
                    the one holding 80 (``hist.loc(20):hist.loc(80)``);
                    either end may be left out
``20:80:rebin2``    the same, merging every 2 bins (also ``rebin(2)``)
``20:80:sum``       the same range, summed (the axis is dropped)
``#3``, ``#2:#10``  by bin number instead of value (any axis)
``true``/``false``  Boolean axes
==================  ======================================================

The result is a dict of UHI indices by axis number, for
``StoredHist.__getitem__``, which reads only the chunks it needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import boost_histogram as bh
import hist

__all__ = ["SelectionError", "parse"]

_REBIN = re.compile(r"^rebin\(?\s*(\d+)\s*\)?$")


class SelectionError(ValueError):
    """A selection word that does not parse, or names no axis."""


def _axis_number(name: str, axes: Sequence[Any]) -> int:
    names = [ax.name for ax in axes]
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(axes):
        return int(name)
    known = ", ".join(repr(n) for n in names if n) or "none"
    msg = f"no axis {name!r}: axes are numbered 0 to {len(axes) - 1} and named {known}"
    raise SelectionError(msg)


def _number(text: str, word: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"{word!r}: {text!r} is not a number"
        raise SelectionError(msg) from None


def _bound(text: str, word: str) -> Any:
    """One end of a slice: ``None``, a bin number ``#i`` or a value (``loc``)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("#"):
        return _bin(text, word)
    return hist.loc(_number(text, word))


def _bin(text: str, word: str) -> int:
    try:
        return int(text[1:])
    except ValueError:
        msg = f"{word!r}: {text!r} is not a bin number (#0, #1, ...)"
        raise SelectionError(msg) from None


def _step(text: str, word: str) -> Any:
    text = text.strip()
    if not text:
        return None
    if text == "sum":
        return sum
    match = _REBIN.match(text)
    if match:
        return hist.rebin(int(match.group(1)))
    msg = f"{word!r}: the third part of a range is 'sum' or 'rebinN', not {text!r}"
    raise SelectionError(msg)


def _category(text: str, axis: Any, word: str) -> Any:
    if isinstance(axis, bh.axis.Boolean):
        value = text.strip().lower()
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        msg = f"{word!r}: a Boolean axis takes true or false"
        raise SelectionError(msg)
    if isinstance(axis, bh.axis.IntCategory):
        try:
            return int(text)
        except ValueError:
            msg = f"{word!r}: {text!r} is not an integer category"
            raise SelectionError(msg) from None
    return text


def _spec(spec: str, axis: Any, word: str) -> Any:
    categorical = isinstance(
        axis, bh.axis.StrCategory | bh.axis.IntCategory | bh.axis.Boolean
    )
    if spec == "sum":
        return sum
    if spec.startswith("#") and ":" not in spec:
        return _bin(spec, word)
    if ":" in spec and not (categorical and not _is_bin_range(spec)):
        parts = spec.split(":")
        if len(parts) > 3:
            msg = f"{word!r}: a range is START:STOP or START:STOP:STEP"
            raise SelectionError(msg)
        start, stop = (_bound(p, word) for p in [*parts, ""][:2])
        if categorical and any(isinstance(b, hist.loc) for b in (start, stop)):
            msg = f"{word!r}: ranges on category axes use bin numbers (#0:#2)"
            raise SelectionError(msg)
        step = _step(parts[2], word) if len(parts) == 3 else None
        return slice(start, stop, step)
    if categorical:
        labels = [_category(p, axis, word) for p in spec.split(",")]
        return labels if len(labels) > 1 or spec.endswith(",") else labels[0]
    return hist.loc(_number(spec, word))


def _is_bin_range(spec: str) -> bool:
    """``#i:#j``-style ranges, or a bare ``:`` (everything)."""
    return all(not p or p.startswith("#") or p == "sum" for p in spec.split(":")) or (
        bool(_REBIN.match(spec.rsplit(":", maxsplit=1)[-1]))
    )


def parse(words: Sequence[str], axes: Sequence[Any]) -> dict[int, Any]:
    """Turn ``AXIS=SPEC`` words into UHI indices, by axis number.

    Parameters
    ----------
    words
        The selection, e.g. ``["dataset=DY", "pt=20:80:rebin2", "eta=sum"]``.
    axes
        The histogram's axes.

    Returns
    -------
    dict
        ``{axis number: index}``, for ``StoredHist[...]``.

    Raises
    ------
    SelectionError
        For words that do not parse, unknown axes, or an axis given twice.
    """
    out: dict[int, Any] = {}
    for word in words:
        name, sep, spec = word.partition("=")
        if not sep or not name.strip() or not spec.strip():
            msg = (
                f"{word!r}: a selection word is AXIS=SPEC, e.g. pt=20:80 or dataset=DY"
            )
            raise SelectionError(msg)
        number = _axis_number(name.strip(), axes)
        if number in out:
            msg = f"{word!r}: axis {name.strip()!r} is selected twice"
            raise SelectionError(msg)
        out[number] = _spec(spec.strip(), axes[number], word)
    return out
