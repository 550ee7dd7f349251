"""The on-disk handle: a committed histogram, read back as ``hist.Hist``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dask.array as da
import hist
import icechunk
import numpy as np
import numpy.typing as npt
from dask.base import tokenize

from . import _display, _read
from ._arrays import find_at_snapshot, readonly_at
from ._history import ancestry
from ._repo import RepoRef, check_path
from .errors import NotAHistogramError, StoreError
from .layout import Layout
from .schema import Schema

__all__ = ["Commit", "StoredHist", "open"]


@dataclass(frozen=True)
class Commit:
    """One commit that changed a histogram.

    Attributes
    ----------
    snapshot_id
        The icechunk snapshot made by the commit.
    written_at
        When it was made.
    message
        The commit message.
    inputs
        The identities of the input partitions the commit added (see
        ``Hist.fill``'s ``partition_ids`` and docs/format.md).
    created
        Whether the commit created the histogram (with its first counts).
    """

    snapshot_id: str
    written_at: datetime
    message: str
    inputs: tuple[str, ...]
    created: bool = False


class StoredHist:
    """A histogram as committed in one snapshot of an icechunk repository.

    Obtained from ``Hist.compute()`` or :func:`dask_hizt.open`. Reading is
    lazy: nothing is read until a view or ``to_hist()`` is asked for.
    """

    def __init__(
        self,
        ref: RepoRef,
        path: str,
        snapshot_id: str,
        session: icechunk.Session | None = None,
    ) -> None:
        self._ref = ref
        self.path = path
        self.snapshot_id = snapshot_id
        self._session = readonly_at(ref, snapshot_id) if session is None else session
        found = find_at_snapshot(self._session, path)
        if found is None:
            msg = f"no histogram at path {path!r}"
            raise NotAHistogramError(msg)
        self._schema, self._layout = found

    @property
    def repository(self) -> icechunk.Repository:
        """The icechunk repository holding the histogram."""
        return self._ref.repo

    @property
    def axes(self) -> hist.axestuple.NamedAxesTuple:
        """The axes, as ``hist`` axis objects."""
        return hist.axestuple.NamedAxesTuple(self._schema.hist_axes())

    @property
    def storage_type(self) -> type[Any]:
        """The boost-histogram storage class."""
        return self._schema.storage

    @property
    def schema(self) -> Schema:
        """Axes and storage as stored."""
        return self._schema

    @property
    def layout(self) -> Layout:
        """Shape and chunking of the stored arrays."""
        return self._layout

    def to_hist(self) -> hist.Hist:  # type: ignore[type-arg]
        """The whole histogram, flow bins included, as a ``hist.Hist``."""
        return _read.read_full(self._session.store, self._schema, self.path)

    def view(self, flow: bool = False) -> Any:
        """The bin contents, as boost-histogram's ``view``."""
        return self.to_hist().view(flow=flow)

    def values(self, flow: bool = False) -> npt.NDArray[Any]:
        """Bin values (sums of weights, or counts)."""
        return np.asarray(self.to_hist().values(flow=flow))

    def variances(self, flow: bool = False) -> npt.NDArray[Any] | None:
        """Bin variances (``None`` where the storage cannot give them)."""
        out = self.to_hist().variances(flow=flow)
        return None if out is None else np.asarray(out)

    def __getitem__(self, index: Any) -> Any:
        """Index like ``hist.Hist``, reading only the chunks the index needs.

        Takes every index ``hist.Hist`` takes (integers, ``hist.loc``,
        category labels, slices, ``sum``, ``hist.rebin``, ``...``, lists of
        categories, dicts keyed by axis name or number) and returns exactly
        ``self.to_hist()[index]``. Axes picked down to one bin, and category
        lists, are read at the picked bins only; other axes are read whole.
        """
        return _read.getitem(self._session.store, self._schema, self.path, index)

    def project(self, *axes: int | str, flow: bool = True) -> hist.Hist:  # type: ignore[type-arg]
        """The histogram over some axes only, like ``hist.Hist.project``.

        Streams over the chunks (each is read once), so memory is about the
        output plus one chunk; see :func:`dask_hizt._read.project` for the
        one case where several chunks are held at once. The result equals
        ``self.to_hist().project(*axes, flow=flow)`` exactly.

        Parameters
        ----------
        *axes
            Axes to keep, by name or number, in the order wanted.
        flow
            Whether the flow bins of the dropped axes are added in.
        """
        return _read.project(
            self._session.store, self._schema, self._layout, self.path, axes, flow=flow
        )

    def to_dask_array(self, field: str = "value", flow: bool = False) -> da.Array:
        """One storage field as a dask array over the stored zarr array.

        The dask chunks are the zarr chunks (cut at the flow bins when
        ``flow=False``). The graph holds this snapshot's readonly session,
        which pickles, so it computes on distributed clusters too.

        Parameters
        ----------
        field
            ``"value"``, or ``"variance"`` for Weight storage.
        flow
            Keep the flow bins.
        """
        name = "dask-hizt-" + tokenize(self.snapshot_id, self.path, field)
        return _read.to_dask_array(
            self._session.store, self._schema, self.path, field, flow=flow, name=name
        )

    def history(self) -> list[Commit]:
        """The commits that filled this histogram, newest first, back to the
        one that created it (a histogram deleted and made again starts anew)."""
        out = []
        for snap, record in ancestry(self._ref.repo, snapshot_id=self.snapshot_id):
            if record is None:
                continue
            if self.path in record.deleted:
                break
            inputs = record.inputs.get(self.path)
            made = self.path in record.created
            if inputs is not None or made:
                out.append(
                    Commit(snap.id, snap.written_at, snap.message, inputs or (), made)
                )
            if made:
                break
        return out

    def __repr__(self) -> str:
        axes = ", ".join(repr(a) for a in self._schema.hist_axes())
        return (
            f"StoredHist({axes}, storage={self._schema.storage.__name__}(), "
            f"path={self.path!r}, snapshot_id={self.snapshot_id!r})"
        )

    def _repr_html_(self) -> str:
        """Notebook display: path, snapshot, storage, axes, sum and, for 1-D
        and 2-D histograms of at most ``_display.REPR_MAX_BINS`` bins with
        matplotlib installed, a small drawing. Larger histograms are not read."""
        where = self._ref.local_path or self._ref.url or "an icechunk repository"
        return _display.repr_html(self, where)

    def plot(self, *args: Any, **kwargs: Any) -> Any:
        """Draw the histogram with ``hist``'s own plotting (mplhep).

        Exactly ``self.to_hist().plot(*args, **kwargs)``: 1-D histograms as
        steps, 2-D ones as a colour mesh (or, with a category axis, one step
        line per category). Select or project higher-dimensional histograms
        first, e.g. ``stored["DY", :, sum].plot()`` or
        ``stored.project("pt").plot()``.

        Parameters
        ----------
        *args, **kwargs
            Passed to ``hist.Hist.plot`` (e.g. ``ax=``).

        Returns
        -------
        Any
            What ``hist.Hist.plot`` returns (mplhep's artists).

        Raises
        ------
        ValueError
            For histograms of more than two axes.
        ImportError
            Without matplotlib and mplhep (``pip install 'dask-hizt[plot]'``).
        """
        if len(self._schema.axes) > 2:
            names = ", ".join(repr(n) for n in self._schema.names)
            msg = (
                f"plot() draws 1-D and 2-D histograms; {self.path!r} has "
                f"{len(self._schema.axes)} axes ({names}): select or project "
                "first, e.g. stored.project(<axis>).plot()"
            )
            raise ValueError(msg)
        for package in ("matplotlib", "mplhep"):
            try:
                __import__(package)
            except ImportError as err:
                raise _display.missing_extra(package, "plot", "plot()") from err
        return self.to_hist().plot(*args, **kwargs)


def open(
    store: Any,
    path: str,
    *,
    snapshot_id: str | None = None,
    tag: str | None = None,
    branch: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> StoredHist:
    """Open a committed histogram.

    Parameters
    ----------
    store
        An ``icechunk.Repository``, an ``s3://bucket/prefix`` URL or the path
        of a local repository.
    path
        The histogram's path in the repository.
    snapshot_id, tag, branch
        Which committed state to read; at most one. Default: the tip of
        ``main``.
    storage_options
        Settings of an ``s3://`` store, as for :class:`~dask_hizt.Hist`.
    """
    given = [x for x in (snapshot_id, tag, branch) if x is not None]
    if len(given) > 1:
        msg = "give at most one of snapshot_id=, tag= and branch="
        raise StoreError(msg)
    ref = RepoRef.from_store(store, create=False, storage_options=storage_options)
    path = check_path(path)
    repo = ref.repo
    try:
        if snapshot_id is not None:
            snap = repo.lookup_snapshot(snapshot_id).id
        elif tag is not None:
            snap = repo.lookup_tag(tag)
        else:
            snap = repo.lookup_branch(branch or "main")
    except (icechunk.IcechunkError, ValueError) as err:
        what = (
            f"snapshot {snapshot_id!r}"
            if snapshot_id is not None
            else f"tag {tag!r}"
            if tag is not None
            else f"branch {branch or 'main'!r}"
        )
        msg = f"{what} not found in the repository: {err}"
        raise StoreError(msg) from err
    return StoredHist(ref, path, str(snap))
