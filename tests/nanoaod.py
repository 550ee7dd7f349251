"""NanoAOD-like test data, an eager reference and a read counter for coffea tests.

A plain helper module, not a test file: tests import it as ``import nanoaod``
(pytest puts ``tests/`` on ``sys.path``; spawned distributed workers inherit
that ``sys.path``, which :class:`ReadLog` relies on). Importing it needs only
numpy, hist, pytest and distributed; awkward, uproot, coffea and dask-awkward
are imported by the functions that use them. Guard coffea tests with
``pytest.importorskip("coffea.dataset_tools")``.

- :func:`write_nanoaod`: a ROOT file with a TTree ``Events`` (not an RNTuple)
  with NanoAOD branch names: a muon collection (``nMuon``, ``Muon_pt``, ...)
  and branches the processor does not use (``run``, jets, ``MET_pt``, ...)
  that column projection must leave unread (:data:`BRANCHES`).
- :func:`fileset`, :func:`muon_pt_processor`, :func:`merge_outputs`: the
  coffea side (``preprocess`` + ``apply_to_fileset`` + ``hist.dask``).
- :func:`muon_pt_hist`, :func:`eager_reference`: the same histogram filled
  eagerly with uproot, the bin-for-bin reference. Event weights are 0.5, 1 or
  2 (``genWeight``), so every sum of weights and of squared weights is exact
  in float64 in any order: compare with ``==``, flow bins included.
- :class:`ReadLog`, :func:`steps_of`, :func:`report_partitions`: which
  partitions (file, entry range) were read, how often, and which branches, in
  this process or on the workers of a distributed cluster with processes.
- :func:`no_layer_chains`: the config that stack A needs (see there).
- fixtures (import them into the test module to use them:
  ``from nanoaod import nanoaod_files, nanoaod_schema``):
  :func:`nanoaod_files` (two datasets, one file each, once per session) and
  :func:`nanoaod_schema` (``NanoAODSchema`` without the missing
  cross-reference warnings).

The coffea call sequence, checked on stack B (dask/distributed 2025.3.1,
dask-awkward 2026.2.1, coffea 2026.9.0, uproot 5.7.7), in-process and on a
``LocalCluster`` with two worker processes::

    from coffea.dataset_tools import apply_to_fileset, preprocess

    available, _updated = preprocess(fileset(paths), step_size=10_000)
    out, report = apply_to_fileset(
        muon_pt_processor(paths), available, schemaclass=nanoaod_schema,
        uproot_options={"allow_read_errors_with_report": True},
    )
    out, report = dask.compute(out, report)
    # out: {dataset: {"muon_pt": hist.Hist}}; report: {dataset: ak.Array}
    assert merge_outputs(out) == eager_reference(paths)   # or compare views

On stack A (dask/distributed 2026.8, dask-awkward 2025.3.0, same coffea and
uproot) both ``preprocess`` and the compute need :func:`no_layer_chains`;
with it the result is exact, but on a distributed cluster every branch is
read (no projection), which :class:`ReadLog` shows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
from distributed.diagnostics.plugin import WorkerPlugin

#: Name of the TTree written by :func:`write_nanoaod`.
TREE = "Events"

#: Every branch written by :func:`write_nanoaod`, in file order.
BRANCHES: tuple[str, ...] = (
    "run",
    "luminosityBlock",
    "event",
    "nMuon",
    "Muon_pt",
    "Muon_eta",
    "Muon_phi",
    "Muon_mass",
    "Muon_charge",
    "nJet",
    "Jet_pt",
    "Jet_eta",
    "Jet_phi",
    "Jet_mass",
    "MET_pt",
    "MET_phi",
    "genWeight",
)

#: The branches :func:`muon_pt_processor` needs: a projected read touches
#: exactly these (``nMuon`` is the counter that ``Muon_pt``'s offsets come from).
MUON_PT_BRANCHES: frozenset[str] = frozenset({"nMuon", "Muon_pt", "genWeight"})

#: Weights of the events (``genWeight``) and how often each occurs.
WEIGHTS = np.array([0.5, 1.0, 2.0], dtype=np.float32)
WEIGHT_PROBS = (0.25, 0.5, 0.25)

#: Probability of 0, 1, 2, 3, 4 muons in an event.
MUON_MULTIPLICITY_PROBS = (0.35, 0.35, 0.2, 0.07, 0.03)

MUON_MASS = np.float32(0.10566)


def default_pt_axis() -> hist.axis.Regular:
    """40 bins of 2.5 GeV from 5 to 105: muons start at 3 GeV and 1-2% are above
    105 GeV, so both flow bins are filled."""
    return hist.axis.Regular(40, 5.0, 105.0, name="pt", label="muon pt [GeV]")


def _chunk(rng: np.random.Generator, first_event: int, n: int) -> dict[str, Any]:
    """``n`` events of NanoAOD-like data, ``event`` numbers from ``first_event``."""
    import awkward as ak

    n_mu = rng.choice(5, size=n, p=MUON_MULTIPLICITY_PROBS).astype(np.int32)
    m = int(n_mu.sum())
    # pt falls roughly exponentially above a 3 GeV threshold; NanoAOD sorts
    # each event's muons by decreasing pt
    mu_pt = ak.sort(
        ak.unflatten((3.0 + rng.exponential(25.0, m)).astype(np.float32), n_mu),
        ascending=False,
    )
    muon = ak.zip(
        {
            "pt": mu_pt,
            "eta": ak.unflatten(
                np.clip(rng.normal(0.0, 1.2, m), -2.4, 2.4).astype(np.float32), n_mu
            ),
            "phi": ak.unflatten(rng.uniform(-np.pi, np.pi, m).astype(np.float32), n_mu),
            "mass": ak.unflatten(np.full(m, MUON_MASS, dtype=np.float32), n_mu),
            "charge": ak.unflatten(
                rng.choice(np.array([-1, 1], dtype=np.int32), m), n_mu
            ),
        }
    )
    n_jet = rng.poisson(3.0, n).clip(0, 12).astype(np.int32)
    j = int(n_jet.sum())
    jet = ak.zip(
        {
            "pt": ak.sort(
                ak.unflatten(
                    (15.0 + rng.exponential(40.0, j)).astype(np.float32), n_jet
                ),
                ascending=False,
            ),
            "eta": ak.unflatten(rng.uniform(-4.7, 4.7, j).astype(np.float32), n_jet),
            "phi": ak.unflatten(
                rng.uniform(-np.pi, np.pi, j).astype(np.float32), n_jet
            ),
            "mass": ak.unflatten(rng.gamma(2.0, 5.0, j).astype(np.float32), n_jet),
        }
    )
    event = np.arange(first_event, first_event + n, dtype=np.uint64)
    return {
        "run": np.ones(n, dtype=np.uint32),
        "luminosityBlock": (event // 1000 + 1).astype(np.uint32),
        "event": event,
        "Muon": muon,
        "Jet": jet,
        "MET_pt": rng.rayleigh(30.0, n).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "genWeight": rng.choice(WEIGHTS, size=n, p=WEIGHT_PROBS),
    }


def write_nanoaod(
    path: str | os.PathLike[str],
    n_events: int = 30_000,
    seed: int = 0,
    *,
    basket_size: int = 10_000,
) -> Path:
    """Write a NanoAOD-like ROOT file with a TTree ``Events`` of ``n_events`` events.

    Branches: see :data:`BRANCHES`. ``nMuon`` (int32) counts the jagged
    ``Muon_pt/eta/phi/mass`` (float32) and ``Muon_charge`` (int32), 0-4 muons
    per event; ``nJet`` counts ``Jet_*``; ``genWeight`` (float32) is 0.5, 1 or 2.
    Events are written in baskets of ``basket_size`` entries (one ``extend``
    each). The same ``(n_events, seed, basket_size)`` give the same values.
    Uses ``mktree`` because uproot 5.7 writes an RNTuple on plain assignment.
    """
    import awkward as ak
    import uproot

    path = Path(path)
    rng = np.random.default_rng(seed)
    first = 1 + 10_000_000 * seed
    with uproot.recreate(path) as f:
        tree = None
        for start in range(0, n_events, basket_size):
            data = _chunk(rng, first + start, min(basket_size, n_events - start))
            if tree is None:
                types = {
                    k: v.type.content if isinstance(v, ak.Array) else v.dtype
                    for k, v in data.items()
                }
                tree = f.mktree(TREE, types)
            tree.extend(data)
    return path


# ---------------------------------------------------------------- coffea side


def _paths(paths: str | os.PathLike[str] | Iterable[Any]) -> list[str]:
    return (
        [str(paths)]
        if isinstance(paths, str | os.PathLike)
        else [str(p) for p in paths]
    )


def fileset(
    paths_by_dataset: Mapping[str, str | os.PathLike[str] | Iterable[Any]],
) -> Any:
    """A coffea ``DataGroupSpec`` ``{dataset: {"files": {path: "Events"}}}`` for
    ``preprocess`` (one path or an iterable of paths per dataset).

    ``preprocess`` with a plain dict emits a DeprecationWarning in coffea
    2026.9, which this project's pytest settings turn into an error.
    """
    from coffea.dataset_tools import DataGroupSpec

    return DataGroupSpec.model_validate(
        {
            name: {"files": dict.fromkeys(_paths(paths), TREE)}
            for name, paths in paths_by_dataset.items()
        }
    )


def muon_pt_hist(
    datasets: Iterable[str], pt_axis: hist.axis.Regular | None = None
) -> hist.Hist[Any]:
    """The empty reference histogram: ``StrCategory(datasets)`` x pt, Weight storage."""
    return hist.Hist(
        hist.axis.StrCategory(list(datasets), name="dataset"),
        pt_axis if pt_axis is not None else default_pt_axis(),
        storage=hist.storage.Weight(),
    )


def muon_pt_processor(
    datasets: Iterable[str], pt_axis: hist.axis.Regular | None = None
) -> Callable[[Any], dict[str, Any]]:
    """A coffea processor (a plain callable, which ``apply_to_fileset`` accepts)
    filling one ``hist.dask.Hist`` like :func:`muon_pt_hist` with every muon's
    pt, weighted by its event's ``genWeight``, in the bin of its dataset.

    Returns ``{"muon_pt": hist.dask.Hist}`` per dataset; reads exactly
    :data:`MUON_PT_BRANCHES`.
    """
    names = list(datasets)
    axis = pt_axis if pt_axis is not None else default_pt_axis()

    def process(events: Any) -> dict[str, Any]:
        import dask_awkward as dak
        import hist.dask

        h = hist.dask.Hist(
            hist.axis.StrCategory(names, name="dataset"),
            axis,
            storage=hist.storage.Weight(),
        )
        pt = events.Muon.pt
        weight = dak.broadcast_arrays(events.genWeight, pt)[0]
        h.fill(
            dataset=events.metadata["dataset"],
            pt=dak.flatten(pt),
            weight=dak.flatten(weight),
        )
        return {"muon_pt": h}

    return process


def merge_outputs(
    out: Mapping[str, Mapping[str, hist.Hist[Any]]], key: str = "muon_pt"
) -> hist.Hist[Any]:
    """Sum one histogram over the datasets of a computed ``apply_to_fileset`` output."""
    hs = [o[key] for o in out.values()]
    total = hs[0].copy()
    for h in hs[1:]:
        total += h
    return total


# ----------------------------------------------------------- eager reference


def eager_reference(
    paths_by_dataset: Mapping[str, str | os.PathLike[str] | Iterable[Any]],
    pt_axis: hist.axis.Regular | None = None,
) -> hist.Hist[Any]:
    """:func:`muon_pt_hist` filled eagerly with uproot from the files themselves.

    For each dataset (category value = the mapping's key) and each of its files,
    reads ``Muon_pt`` and ``genWeight``, broadcasts the event weight to each
    muon, flattens, and fills. Bin for bin the same as
    :func:`muon_pt_processor`'s output summed over datasets, flow included.
    """
    import awkward as ak
    import uproot

    h = muon_pt_hist(paths_by_dataset, pt_axis)
    for name, paths in paths_by_dataset.items():
        for p in _paths(paths):
            with uproot.open(p) as f:
                arr = f[TREE].arrays(["Muon_pt", "genWeight"])
            pt, w = ak.broadcast_arrays(arr.Muon_pt, arr.genWeight)
            h.fill(
                dataset=name,
                pt=ak.to_numpy(ak.flatten(pt)),
                weight=ak.to_numpy(ak.flatten(w)),
            )
    return h


# --------------------------------------------------------------- read counter


def _record_read(
    log_path: str, tree: Any, start: int, stop: int, keys: Iterable[str]
) -> None:
    line = json.dumps(
        {
            "file": str(tree.file.file_path),
            "tree": tree.object_path.strip("/").split(";")[0],
            "start": int(start),
            "stop": int(stop),
            "branches": sorted(keys),
            "pid": os.getpid(),
        }
    )
    # one os.write of one line with O_APPEND: lines from several processes
    # never interleave on a local file system
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _install(log_path: str) -> Callable[[], None]:
    """Wrap uproot's dask read (``UprootReadMixin.read_tree``, used by every
    ``uproot.dask`` partition read of a TTree, so by coffea's ``mode="dask"``)
    so that each real read appends a line to ``log_path``. Returns the undo.

    Typetracer (mock) passes of the dask-awkward optimizer do not go through
    ``read_tree`` and are not counted.
    """
    from uproot._dask import UprootReadMixin

    original = UprootReadMixin.read_tree

    def read_tree(self: Any, tree: Any, start: int, stop: int) -> Any:
        _record_read(log_path, tree, start, stop, self.common_keys)
        return original(self, tree, start, stop)

    read_tree.__wrapped__ = original  # type: ignore[attr-defined]
    UprootReadMixin.read_tree = read_tree

    def undo() -> None:
        UprootReadMixin.read_tree = original

    return undo


class _ReadLogPlugin(WorkerPlugin):
    """A ``distributed`` worker plugin installing the read hook on each worker."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.name = f"nanoaod-read-log-{abs(hash(log_path))}"
        self._undo: Callable[[], None] | None = None

    def setup(self, worker: Any) -> None:  # noqa: ARG002
        self._undo = _install(self.log_path)

    def teardown(self, worker: Any) -> None:  # noqa: ARG002
        if self._undo is not None:
            self._undo()
            self._undo = None


class ReadLog:
    """Counts real partition reads, in this process or on distributed workers.

    Each read of a partition appends one JSON line ``{"file", "tree", "start",
    "stop", "branches", "pid"}`` to ``path`` (make it under ``tmp_path``).

    Use ``with log.local():`` around a compute with the synchronous or threaded
    scheduler, or ``with log.on(client):`` around a compute on a distributed
    cluster (it registers a worker plugin that wraps the read on every worker
    and removes it at exit; workers started later get it too). Then::

        log.counts()      # Counter{(file, start, stop): n_reads}
        log.branches()    # set of branch names read, over all reads
        log.records()     # the raw list of dicts

    Typical assertions: every partition read exactly once
    (``set(log.counts().values()) == {1}`` and the keys are the preprocessed
    steps), and projection worked (``log.branches() == MUON_PT_BRANCHES``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextmanager
    def local(self) -> Iterator[ReadLog]:
        undo = _install(str(self.path))
        try:
            yield self
        finally:
            undo()

    @contextmanager
    def on(self, client: Any) -> Iterator[ReadLog]:
        plugin = _ReadLogPlugin(str(self.path))
        client.register_plugin(plugin, name=plugin.name)
        try:
            yield self
        finally:
            client.unregister_worker_plugin(plugin.name)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(s) for s in self.path.read_text().splitlines() if s]

    def counts(self) -> Counter[tuple[str, int, int]]:
        return Counter((r["file"], r["start"], r["stop"]) for r in self.records())

    def branches(self) -> set[str]:
        return {b for r in self.records() for b in r["branches"]}


def steps_of(available: Any) -> set[tuple[str, int, int]]:
    """The ``(file, start, stop)`` partitions of a preprocessed fileset (what
    ``preprocess`` returns first): the keys :meth:`ReadLog.counts` should have,
    each once."""
    return {
        (str(path), int(start), int(stop))
        for files in available.steps.values()
        for path, steps in files.items()
        for start, stop in steps
    }


def report_partitions(
    report: Mapping[str, Any],
) -> dict[tuple[str, int, int], int | None]:
    """``{(file, start, stop): num_requested_bytes}`` from a computed coffea/uproot
    report (``{dataset: ak.Array}``, one row per partition of the report's read
    layer; a failed read has ``None`` bytes).

    The report has no branch names, and it only sees the read layer it came
    from: a partition read a second time by another, unfused read layer does
    not show. Use :class:`ReadLog` to count reads and branches.
    """
    import ast

    out = {}
    for rep in report.values():
        for row in rep.to_list():
            file, _tree, start, stop, _is_chunk = (
                ast.literal_eval(a) for a in row["args"]
            )
            counters = row["performance_counters"]
            out[(str(file), int(start), int(stop))] = (
                None if counters is None else counters["num_requested_bytes"]
            )
    return out


@contextmanager
def no_layer_chains() -> Iterator[None]:
    """Turn off dask-awkward's layer-chain fusion (keep column projection).

    Needed on stack A (dask 2026.x with dask-awkward 2025.3.0), where both
    ``preprocess`` and the compute of the processor's output raise
    ``ValueError: Cannot fuse tasks with multiple outputs`` otherwise. Imports
    dask_awkward first: ``dask.config.set`` as a context on a key whose
    defaults are loaded inside the block drops the whole ``awkward`` section
    at exit (later computes then fail with ``KeyError: 'awkward'``).
    """
    import dask
    import dask_awkward  # noqa: F401  (loads the "awkward" config defaults)

    with dask.config.set({"awkward.optimization.which": ["columns"]}):
        yield


# -------------------------------------------------------------------- fixture

#: The datasets of :func:`nanoaod_files`: name -> (events, seed).
DATASETS: dict[str, tuple[int, int]] = {"DYJets": (30_000, 1), "TTbar": (24_000, 2)}


@pytest.fixture(scope="session")
def nanoaod_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two datasets of one NanoAOD-like file each: ``{name: path}`` (see
    :data:`DATASETS`), written once per session. Skips without uproot."""
    pytest.importorskip("uproot")
    d = tmp_path_factory.mktemp("nanoaod")
    return {
        name: write_nanoaod(d / f"{name}.root", n, seed)
        for name, (n, seed) in DATASETS.items()
    }


@pytest.fixture
def nanoaod_schema(monkeypatch: pytest.MonkeyPatch) -> Any:
    """coffea's ``NanoAODSchema`` with ``warn_missing_crossrefs`` off for the test.

    The files hold only muons and jets, so the schema would warn (RuntimeWarning,
    an error under this project's ``filterwarnings = error``) for each of the 16
    cross-reference index branches of a real NanoAOD that are missing here.
    Skips without coffea.
    """
    nanoevents = pytest.importorskip("coffea.nanoevents")
    monkeypatch.setattr(nanoevents.NanoAODSchema, "warn_missing_crossrefs", False)
    return nanoevents.NanoAODSchema
