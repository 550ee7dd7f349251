"""What a compute does, decided on the client before any graph is built:
targets, pending partitions, fill tasks, owners and commits.

One plan covers every histogram computed together (one
:class:`~dask_hizt._request.Request` each). :func:`plan` goes in named
steps, each a typed record:

1. :func:`_sites`: the repositories (one commit each) and the targets (one
   per histogram path per repository) the requests name;
   then :func:`_visible`: a local repository must be the same directory on
   the client and on every worker (:mod:`dask_hizt._visible`), checked
   before anything is written;
2. :func:`dask_hizt._growth.growth`: the values that growing axes meet;
3. :func:`_open`: a session per repository and its
   :class:`~dask_hizt._create.Creation` (histograms to create, categories to
   append; nothing is committed);
4. :func:`_lay_out`: each target's layout, in key spaces (per repository and
   storage kind; fill tasks give one partial per key space);
5. :func:`_known`: the identities each histogram already records;
6. :func:`dask_hizt._fill_groups.fill_groups`: the fill tasks, with what is
   known of each partition;
7. :func:`_staged`: the load tasks of ``dh.Staging``'s staged fills;
8. :func:`_spaces`: the owners of each key space
   (:func:`dask_hizt._route.owners`), over the chunks of the targets that
   something pending may add to (:func:`_touched`) only;
9. :func:`_commits`: one per repository.

:func:`dask_hizt._graph.build` turns a :class:`Plan` into the dask graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import icechunk

from ._arrays import Creation, find_at_snapshot, prepare, read_histogram_meta
from ._commit import CommitPlan
from ._fill import FillTask, Target
from ._fill_groups import FillGroup, fill_groups, queue
from ._growth import Growth, growth
from ._ledger import committed
from ._repo import RepoRef
from ._request import Request
from ._route import cluster_threads, owners
from ._stage import StagedLoad, staged_id
from ._version import __version__
from ._visible import check_workers, marker_of
from ._write import Owner
from .config import Settings
from .errors import NotAHistogramError

__all__ = [
    "KeySpace",
    "Pending",
    "Plan",
    "Repository",
    "StagedLoads",
    "pending",
    "plan",
]


@dataclass(frozen=True)
class Repository:
    """One repository (and branch) of a compute: one commit.

    ``writer`` is what owners fork from: the session at ``base``, or the
    creation fork when the compute creates or grows histograms.
    """

    ref: RepoRef
    branch: str
    targets: tuple[int, ...]
    base: str
    writer: icechunk.Session | icechunk.ForkSession
    creation: Creation | None


@dataclass(frozen=True)
class KeySpace:
    """The histograms of one repository and storage kind, keyed one after
    another: the fill tasks give one partial per key space (of at most
    ``nbytes`` when dense)."""

    repository: int
    size: int
    owners: tuple[Owner, ...]
    nbytes: int


@dataclass(frozen=True)
class StagedLoads:
    """The load tasks of ``dh.Staging``'s staged fills: ``load`` over each
    batch of staged object names."""

    load: StagedLoad
    batches: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Plan:
    """What a compute does (see the module docstring).

    ``output_of`` gives, per request, the index of the commit whose snapshot
    holds its counts.
    """

    targets: tuple[Target, ...]
    groups: tuple[FillGroup, ...]
    staged: StagedLoads | None
    spaces: tuple[KeySpace, ...]
    commits: tuple[CommitPlan, ...]
    output_of: tuple[int, ...]
    settings: Settings

    def fill_task(self, group: FillGroup, *, dry: bool = False) -> FillTask:
        """The task of ``group``'s partitions (``dry``: only digest them)."""
        sizes = tuple(s.size for s in self.spaces)
        return FillTask(self.targets, group.specs, sizes, self.settings.dense, dry)


def plan(requests: Sequence[Request]) -> Plan:
    """Plan the compute that fills, writes and commits ``requests`` together."""
    settings = Settings.from_config()
    sites = _sites(requests)
    _visible(sites)
    repos = _open(sites, growth(requests, sites.target_of))
    targets = _lay_out(sites, repos)
    known = _known(repos, targets)
    groups = fill_groups(queue(sites.fills(requests)), known)
    staged = _staged_files(requests, sites, known)
    touched = _touched(groups, staged)
    spaces = _spaces(targets, touched, repos, settings)
    return Plan(
        targets,
        tuple(groups),
        _staged(requests, staged, targets, spaces, settings),
        spaces,
        _commits(repos, targets, settings),
        tuple(sites.repo_of[t] for t in sites.target_of),
        settings,
    )


@dataclass(frozen=True)
class Pending:
    """What ``Hist.pending`` must look at: per request, the identities known
    unread, and the dry fill tasks of the groups identified by content."""

    known: tuple[tuple[str, ...], ...]
    groups: tuple[FillGroup, ...]
    tasks: tuple[FillTask, ...]

    def answer(
        self, found: Sequence[tuple[tuple[tuple[int, str], ...]]]
    ) -> list[list[str]]:
        """Per request, every pending identity, given what the dry tasks
        found (one result per partition of ``groups``, in order)."""
        out = [list(ids) for ids in self.known]
        per_task = [g for g in self.groups for _ in g.infos]
        for group, (pairs,) in zip(per_task, found, strict=True):
            for j, identity in pairs:
                out[group.members[j].request].append(identity)
        return out


def pending(requests: Sequence[Request]) -> Pending:
    """Per request, the identities of its fills' partitions not yet in its
    histogram, as far as known without reading, and the tasks that read the
    rest (fill tasks that only digest: nothing is filled, written or
    committed)."""
    settings = Settings.from_config()
    sites = _sites(requests)
    repos = _open(sites, {})
    targets = _lay_out(sites, repos)
    groups = fill_groups(queue(sites.fills(requests)), _known(repos, targets))
    known: list[list[str]] = [[] for _ in requests]
    for group in groups:
        if group.identified:
            for info in group.infos:
                for j, q in enumerate(group.members):
                    given = info.given[j]
                    if j not in info.skip and given is not None:
                        known[q.request].append(given)
    read = tuple(g for g in groups if not g.identified)
    spaces = tuple(KeySpace(-1, size, (), 0) for size in _space_sizes(targets))
    dry = Plan(targets, read, None, spaces, (), (), settings)
    return Pending(
        tuple(tuple(k) for k in known),
        read,
        tuple(dry.fill_task(g, dry=True) for g in read),
    )


# -------------------------------------------------------------- steps ---


@dataclass(frozen=True)
class _Site:
    """A repository and branch the requests name, and its targets."""

    ref: RepoRef
    branch: str
    targets: tuple[int, ...]


@dataclass(frozen=True)
class _Sites:
    """The repositories and targets of a compute.

    Attributes
    ----------
    repos
        One per repository and branch.
    target_of
        Per request, its target (one per histogram path per repository).
    first
        Per target, the first request that names it.
    repo_of
        Per target, its repository.
    """

    repos: tuple[_Site, ...]
    target_of: tuple[int, ...]
    first: tuple[Request, ...]
    repo_of: tuple[int, ...]

    def fills(self, requests: Sequence[Request]) -> list[tuple[int, int, Any]]:
        """Every queued fill as ``(request, target, fill)``."""
        return [
            (r, t, f)
            for r, (req, t) in enumerate(zip(requests, self.target_of, strict=True))
            for f in req.fills
        ]


def _sites(requests: Sequence[Request]) -> _Sites:
    repo_index: dict[tuple[Any, str], int] = {}
    target_index: dict[tuple[int, str], int] = {}
    members: list[list[int]] = []
    target_of: list[int] = []
    first: list[Request] = []
    repo_of: list[int] = []
    for req in requests:
        r = repo_index.setdefault(req.repository, len(repo_index))
        if r == len(members):
            members.append([])
        t = target_index.setdefault((r, req.path), len(target_index))
        if t == len(first):
            first.append(req)
            repo_of.append(r)
            members[r].append(t)
        target_of.append(t)
    repos = tuple(
        _Site(first[ts[0]].ref, first[ts[0]].branch, tuple(ts)) for ts in members
    )
    return _Sites(repos, tuple(target_of), tuple(first), tuple(repo_of))


def _visible(sites: _Sites) -> None:
    """Refuse a local repository that a current worker sees as another
    directory (the tasks check again: workers may join later)."""
    check_workers(
        marker_of(site.ref.local_path)
        for site in sites.repos
        if site.ref.local_path is not None
    )


def _open(sites: _Sites, grown: Growth) -> tuple[Repository, ...]:
    """A session per repository, and its creation (histograms to create,
    categories to append), made in forks that only the commit merges."""
    out = []
    for site in sites.repos:
        wanted = {
            sites.first[t].path: (sites.first[t].schema, sites.first[t].chunk_bytes)
            for t in site.targets
        }
        grow = {sites.first[t].path: grown[t] for t in site.targets if t in grown}
        session, creation = prepare(site.ref, site.branch, wanted, grow)
        writer = session if creation is None else creation.parent
        out.append(
            Repository(
                site.ref,
                site.branch,
                site.targets,
                str(session.snapshot_id),
                writer,
                creation,
            )
        )
    return tuple(out)


def _lay_out(sites: _Sites, repos: Sequence[Repository]) -> tuple[Target, ...]:
    """Each target as stored (or as it will be created), laid out in key
    spaces, one per repository and storage kind."""
    spaces: list[tuple[int, type[Any]]] = []
    size: list[int] = []
    targets = []
    for t, req in enumerate(sites.first):
        r = sites.repo_of[t]
        writer = repos[r].writer
        if repos[r].creation is None and isinstance(writer, icechunk.Session):
            # the session at the base, unchanged: what other plans read too
            found = find_at_snapshot(writer, req.path)
            if found is None:
                msg = f"no histogram at path {req.path!r}"
                raise NotAHistogramError(msg)
            stored, layout = found
        else:
            stored, layout = read_histogram_meta(writer.store, req.path)
        req.schema.check_same(stored, f"histogram {req.path!r}")
        kind = (r, stored.storage)
        if kind not in spaces:
            spaces.append(kind)
            size.append(0)
        s = spaces.index(kind)
        targets.append(Target(req.path, stored, layout, s, size[s]))
        size[s] += layout.n_keys
    return tuple(targets)


def _space_sizes(targets: Sequence[Target]) -> tuple[int, ...]:
    n = 1 + max((t.space for t in targets), default=-1)
    return tuple(
        sum(t.layout.n_keys for t in targets if t.space == s) for s in range(n)
    )


def _known(
    repos: Sequence[Repository], targets: Sequence[Target]
) -> tuple[frozenset[str], ...]:
    """Per target, the identities recorded in its histogram."""
    known: dict[int, frozenset[str]] = {}
    for repo in repos:
        paths = [targets[t].path for t in repo.targets]
        found = committed(repo.ref.repo, repo.base, paths)
        known.update({t: found[targets[t].path] for t in repo.targets})
    return tuple(known[t] for t in range(len(targets)))


def _staged_files(
    requests: Sequence[Request], sites: _Sites, known: Sequence[frozenset[str]]
) -> list[tuple[int, str]]:
    """``(target, name)`` of each staged fill (:mod:`dask_hizt.runner`) not yet in."""
    return [
        (t, f.name)
        for req, t in zip(requests, sites.target_of, strict=True)
        for f in req.staged
        if staged_id(f.item) not in known[t]
    ]


def _staged(
    requests: Sequence[Request],
    staged: Sequence[tuple[int, str]],
    targets: tuple[Target, ...],
    spaces: Sequence[KeySpace],
    settings: Settings,
) -> StagedLoads | None:
    """The load tasks of the staged fills not yet in."""
    if not staged:
        return None
    files = [f for _, f in staged]
    # one Staging (one repository, one staging area) per compute
    areas = {req.area for req in requests if req.staged}
    area = areas.pop() if len(areas) == 1 else None
    if area is None:
        msg = f"staged fills of one compute must share one staging area, got {areas}"
        raise ValueError(msg)
    load = StagedLoad(
        area,
        targets,
        {t.path: i for i, t in enumerate(targets)},
        tuple(s.size for s in spaces),
        settings.dense,
    )
    n = settings.staged_per_task
    return StagedLoads(
        load, tuple(tuple(files[i : i + n]) for i in range(0, len(files), n))
    )


def _touched(
    groups: Sequence[FillGroup], staged: Sequence[tuple[int, str]]
) -> frozenset[int]:
    """The targets that a pending fill may add to: a fill of a partition not
    known (by the user's identities) to be in, or a staged fill not yet in."""
    out = {t for t, _ in staged}
    for group in groups:
        for j, (t, _) in enumerate(group.specs):
            if any(j not in info.skip for info in group.infos):
                out.add(t)
    return frozenset(out)


def _spaces(
    targets: Sequence[Target],
    touched: frozenset[int],
    repos: Sequence[Repository],
    settings: Settings,
) -> tuple[KeySpace, ...]:
    """Each key space with its owners, forked from its repository's writer:
    owners of the touched targets' chunks only (none where nothing is
    pending: no routing, writing or forking for histograms that nothing adds
    to)."""
    threads = cluster_threads()
    repo_of = {t: r for r, repo in enumerate(repos) for t in repo.targets}
    out = []
    for s, size in enumerate(_space_sizes(targets)):
        members = [i for i, t in enumerate(targets) if t.space == s]
        r = repo_of[members[0]]
        cut = [targets[i] for i in members if i in touched]
        nbytes = sum(_dense_bytes(targets[i]) for i in members)
        found = owners(cut, repos[r].writer, settings, threads) if cut else []
        out.append(KeySpace(r, size, tuple(found), nbytes))
    return tuple(out)


def _dense_bytes(target: Target) -> int:
    """Bytes of a target's bins held dense (all fields, flow bins included)."""
    schema = target.schema
    return target.layout.n_keys * schema.dtype.itemsize * len(schema.spec.fields)


def _commits(
    repos: Sequence[Repository], targets: Sequence[Target], settings: Settings
) -> tuple[CommitPlan, ...]:
    """One commit per repository: the key spaces it merges and the paths it
    records inputs for."""
    return tuple(
        CommitPlan(
            repo.ref,
            repo.branch,
            repo.base,
            tuple(sorted({targets[t].space for t in repo.targets})),
            {t: targets[t].path for t in repo.targets},
            __version__,
            settings.commit_retries,
            repo.creation,
        )
        for repo in repos
    )
