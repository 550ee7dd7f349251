"""Store URLs to icechunk storages: ``s3://bucket/prefix`` and its options.

A ``store=`` given as a URL is turned into an ``icechunk.Storage`` here, with
settings taken from ``storage_options`` first and the standard AWS
environment variables second:

=====================  ==========================================================
setting                from the environment
=====================  ==========================================================
credentials            ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
                       ``AWS_SESSION_TOKEN`` (or any source of the AWS SDK's
                       default chain: profiles, web identity, instance roles)
``region``             ``AWS_REGION``, then ``AWS_DEFAULT_REGION``
``endpoint_url``       ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``
=====================  ==========================================================

Credentials from the environment are looked up by each process that touches
the repository (icechunk's ``from_env``): a pickled repository, session or
fork then carries no secret, so dask graphs can be shipped to a cluster whose
workers have the same environment. Static keys given in ``storage_options``
are different: icechunk pickles them in plain text, so they travel with every
graph that reaches the repository.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dask.config
import icechunk

from .errors import StoreError

__all__ = [
    "OPTIONS",
    "QUIET_LOGS",
    "StoreURL",
    "is_url",
    "open_repository",
    "parse_url",
    "quiet_icechunk_logs",
    "redact",
    "repository_config",
    "s3_storage",
]

#: The keys ``storage_options`` accepts (keywords of ``icechunk.s3_storage``).
OPTIONS = frozenset(
    {
        "region",
        "endpoint_url",
        "allow_http",
        "force_path_style",
        "anonymous",
        "from_env",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "requester_pays",
        "network_stream_timeout_seconds",
    }
)
_SECRET_OPTIONS = ("secret_access_key", "session_token")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_KNOWN_SCHEMES = {
    "gs": "Google Cloud Storage",
    "gcs": "Google Cloud Storage",
    "az": "Azure Blob Storage",
    "abfs": "Azure Blob Storage",
    "abfss": "Azure Blob Storage",
    "azure": "Azure Blob Storage",
    "r2": "Cloudflare R2",
    "tigris": "Tigris",
    "http": "HTTP",
    "https": "HTTP",
    "file": "file URLs",
    "memory": "in-memory storage",
}


#: icechunk's log filter once dask_hizt opens a repository: icechunk's default
#: (``warn``), less two warnings that do not apply to dask_hizt's use. Filters
#: go by target (crate or module), not by message:
#:
#: - ``icechunk_arrow_object_store`` (the local-filesystem storage) warns "The
#:   LocalFileSystem storage is not safe for concurrent commits": dask_hizt
#:   serialises the commits to a local repository with a file lock;
#: - ``icechunk_storage::readback`` warns "conditional PUT is enabled but
#:   `unsafe_use_metadata` is disabled": the spurious conflict it may cause is
#:   retried as any conflict is.
QUIET_LOGS = "warn,icechunk_arrow_object_store=error,icechunk_storage::readback=error"
_logs_quieted = False


def quiet_icechunk_logs() -> None:
    """Set icechunk's log filter to :data:`QUIET_LOGS`, once per process.

    Called whenever dask_hizt opens a repository (not on import). A filter
    the user chose through the ``ICECHUNK_LOG`` environment variable (or
    ``ICECHUNK_NO_LOGS``) is left alone, and so is any filter set with
    ``icechunk.set_logs_filter`` after the first repository was opened.
    """
    global _logs_quieted  # noqa: PLW0603 - one switch per process
    if _logs_quieted:
        return
    _logs_quieted = True
    if os.environ.get("ICECHUNK_LOG") or "ICECHUNK_NO_LOGS" in os.environ:
        return
    icechunk.set_logs_filter(QUIET_LOGS)


@dataclass(frozen=True)
class StoreURL:
    """A parsed object-store URL.

    Attributes
    ----------
    scheme
        Always ``"s3"`` for now.
    bucket
        The bucket name.
    prefix
        The key prefix of the repository inside the bucket, without leading
        or trailing ``/``.
    """

    scheme: str
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"


def is_url(text: str) -> bool:
    """Whether a ``store=`` string is a URL rather than a local path.

    Parameters
    ----------
    text
        The ``store=`` argument.

    Returns
    -------
    bool
        ``True`` for ``scheme://...``.
    """
    return "://" in text


def parse_url(text: str) -> StoreURL:
    """Split ``s3://bucket/prefix`` into its parts.

    Parameters
    ----------
    text
        The URL.

    Returns
    -------
    StoreURL
        Scheme, bucket and prefix.

    Raises
    ------
    StoreError
        For schemes other than ``s3``, a missing bucket or an empty prefix
        (icechunk cannot create a repository at the root of a bucket).
    """
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme != "s3":
        what = _KNOWN_SCHEMES.get(scheme, "this scheme")
        msg = (
            f"store {text!r}: the {scheme!r} scheme ({what}) is not supported; "
            "use s3://bucket/prefix, a local path, or an icechunk.Repository "
            "built with icechunk's own storage functions"
        )
        raise StoreError(msg)
    if parts.query or parts.fragment or parts.username or parts.password:
        msg = f"store {text!r}: an s3:// URL is s3://bucket/prefix, with nothing else"
        raise StoreError(msg)
    bucket = parts.netloc
    prefix = parts.path.strip("/")
    if not bucket:
        msg = f"store {text!r}: no bucket; the form is s3://bucket/prefix"
        raise StoreError(msg)
    if not prefix:
        msg = (
            f"store {text!r}: give a prefix inside the bucket (s3://{bucket}/prefix); "
            "icechunk repositories are not created at the root of a bucket"
        )
        raise StoreError(msg)
    return StoreURL(scheme, bucket, prefix)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def s3_kwargs(
    url: StoreURL, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``icechunk.s3_storage`` for ``url``.

    Parameters
    ----------
    url
        Where the repository is.
    storage_options
        Settings that override the environment; see :data:`OPTIONS`.

    Returns
    -------
    dict
        ``bucket``, ``prefix``, the endpoint, region and addressing settings,
        and the credentials: ``from_env=True`` unless the options give
        static keys or ask for anonymous access.

    Raises
    ------
    StoreError
        For unknown options, or only half of a static key pair.
    """
    options = dict(storage_options or {})
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        msg = f"store {url}: unknown storage_options {unknown}; known are {sorted(OPTIONS)}"
        raise StoreError(msg)
    endpoint = options.pop("endpoint_url", None) or _env(
        "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
    )
    region = options.pop("region", None) or _env("AWS_REGION", "AWS_DEFAULT_REGION")
    kwargs: dict[str, Any] = {
        "bucket": url.bucket,
        "prefix": url.prefix,
        "region": region,
        "endpoint_url": endpoint,
        # an http:// endpoint is only reachable with allow_http
        "allow_http": bool(
            options.pop("allow_http", bool(endpoint and endpoint.startswith("http://")))
        ),
        # S3-compatible servers (MinIO, Ceph, moto, ...) at an endpoint of
        # their own mostly serve path-style requests only
        "force_path_style": bool(options.pop("force_path_style", endpoint is not None)),
    }
    keys: dict[str, Any] = {
        k: options.pop(k)
        for k in ("access_key_id", "secret_access_key")
        if k in options
    }
    token = options.pop("session_token", None)
    anonymous = bool(options.pop("anonymous", False))
    from_env = options.pop("from_env", None)
    kwargs.update(options)  # requester_pays, network_stream_timeout_seconds
    if keys or token:
        if len(keys) != 2:
            msg = (
                f"store {url}: storage_options need both access_key_id and "
                "secret_access_key (or neither, to take credentials from the environment)"
            )
            raise StoreError(msg)
        if anonymous or from_env:
            msg = f"store {url}: static keys cannot be combined with anonymous or from_env"
            raise StoreError(msg)
        kwargs.update(keys, session_token=token)
    elif anonymous:
        if from_env:
            msg = f"store {url}: anonymous and from_env exclude each other"
            raise StoreError(msg)
        kwargs["anonymous"] = True
    else:
        kwargs["from_env"] = True
    return kwargs


def s3_storage(
    url: StoreURL, storage_options: Mapping[str, Any] | None = None
) -> icechunk.Storage:
    """An ``icechunk.Storage`` for an ``s3://`` URL.

    Parameters
    ----------
    url
        Where the repository is.
    storage_options
        Settings that override the environment; see :func:`s3_kwargs`.

    Returns
    -------
    icechunk.Storage
        The storage; it holds static keys only if ``storage_options`` gave them.
    """
    kwargs = s3_kwargs(url, storage_options)
    try:
        return icechunk.s3_storage(**kwargs)
    except (icechunk.IcechunkError, ValueError, TypeError) as err:
        msg = f"store {url}: invalid storage settings: {redact(str(err), storage_options)}"
        raise StoreError(msg) from None


def repository_config() -> icechunk.RepositoryConfig:
    """Repository settings for object storage: bounded retries.

    icechunk retries a failed request up to ten times with backoff of up to
    three minutes, so an unreachable endpoint takes half a minute or more to
    report. ``dask_hizt.storage-retries`` (tries per request, the first
    included) bounds that; the backoff starts at 0.1 s and is capped at 5 s.
    The settings apply to this process's use of the repository and travel
    with it when pickled; nothing is written to the repository.

    Returns
    -------
    icechunk.RepositoryConfig
        A configuration holding only the storage retry settings (the
        repository's own stored configuration still applies otherwise).
    """
    tries = max(1, int(dask.config.get("dask_hizt.storage-retries")))
    retries = icechunk.StorageRetriesSettings(
        max_tries=tries, initial_backoff_ms=100, max_backoff_ms=5_000
    )
    return icechunk.RepositoryConfig(storage=icechunk.StorageSettings(retries=retries))


def redact(text: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``text`` with every secret in the options or the environment blanked.

    Parameters
    ----------
    text
        A message, e.g. of an icechunk error.
    storage_options
        The options the storage was made with.

    Returns
    -------
    str
        The message, with secret keys and session tokens replaced by ``***``.
    """
    secrets = [str(os.environ.get(name, "")) for name in _SECRET_ENV]
    secrets += [str((storage_options or {}).get(k) or "") for k in _SECRET_OPTIONS]
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def cache_key(
    url: StoreURL, storage_options: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """A key under which one process keeps the repository opened for ``url``.

    The effective settings (environment included) are part of it, so a
    changed endpoint or retry setting opens the repository anew; secrets
    enter only as a hash.
    """
    kwargs = s3_kwargs(url, storage_options)
    parts = [str(url), f"retries={dask.config.get('dask_hizt.storage-retries')}"]
    for k, v in sorted(kwargs.items()):
        secret = k in _SECRET_OPTIONS and v is not None
        shown = hashlib.sha256(str(v).encode()).hexdigest() if secret else v
        parts.append(f"{k}={shown!r}")
    return tuple(parts)


def open_repository(
    url: StoreURL,
    storage_options: Mapping[str, Any] | None = None,
    *,
    create: bool = True,
) -> icechunk.Repository:
    """Open the repository at ``url``, creating it if the prefix is empty.

    Parameters
    ----------
    url
        Where the repository is.
    storage_options
        Settings that override the environment; see :func:`s3_kwargs`.
    create
        Create a repository if none is there.

    Returns
    -------
    icechunk.Repository
        The repository, with :func:`repository_config` in force.

    Raises
    ------
    StoreError
        If there is no repository and ``create`` is false, the prefix holds
        other objects, or the store cannot be reached or read. The message
        names the URL, never a secret.
    """
    quiet_icechunk_logs()
    storage = s3_storage(url, storage_options)
    config = repository_config()
    try:
        return _open_or_create(storage, config, create)
    except icechunk.RepositoryNotFoundError:
        msg = f"no repository at {str(url)!r}"
        raise StoreError(msg) from None
    except _NotClean:
        msg = (
            f"store {str(url)!r}: the prefix holds objects that are not an icechunk "
            "repository; give an empty prefix (a repository is created there)"
        )
        raise StoreError(msg) from None
    except icechunk.IcechunkError as err:
        msg = (
            f"store {str(url)!r} cannot be opened as an icechunk repository: "
            f"{redact(_first_line(err), storage_options)}"
        )
        raise StoreError(msg) from None


class _NotClean(Exception):
    """The prefix is neither empty nor a repository."""


def _open_or_create(
    storage: icechunk.Storage, config: icechunk.RepositoryConfig, create: bool
) -> icechunk.Repository:
    """Open the repository, or create it; racing creators all end up with
    the one repository that was created first.

    A creator that lost the race finds either the prefix unclean (the
    winner's objects are there, its repository may not be complete yet) or
    its conditional write of the repository info refused (a conflict: the
    winner's landed first); it then opens the winner's repository. Conflicts
    are retried up to ``dask_hizt.commit-retries`` times, as commits are;
    an unclean prefix that never becomes a repository, 10 times.
    """
    tries = max(1, int(dask.config.get("dask_hizt.commit-retries")))
    unclean = 0
    for attempt in range(tries):
        try:
            return icechunk.Repository.open(storage, config=config)
        except icechunk.RepositoryNotFoundError:
            if not create:
                raise
        except icechunk.ConflictError:
            # the repository info changed while it was read: a creator raced
            _pause(attempt)
            continue
        try:
            return icechunk.Repository.create(storage, config=config)
        except icechunk.ConflictError:
            pass  # another creator's repository info landed first: open it
        except icechunk.IcechunkError as err:
            if getattr(err, "kind", None) != "parent-directory-not-clean":
                raise
            unclean += 1
            if unclean >= 10:
                raise _NotClean from None
            time.sleep(0.05 * unclean)
    # out of tries: a last open, which says what stands in the way
    try:
        return icechunk.Repository.open(storage, config=config)
    except icechunk.RepositoryNotFoundError:
        if unclean:
            raise _NotClean from None
        raise


def _pause(attempt: int) -> None:
    """A short, growing, jittered wait between two tries of a racing open."""
    time.sleep(min(0.5, 0.02 * (attempt + 1)) * (0.5 + random.random()))


def _first_line(err: BaseException) -> str:
    """The cause of an icechunk error without its multi-line context trace."""
    text = str(err).strip()
    return text.split("\n\ncontext:", 1)[0].strip() or type(err).__name__
