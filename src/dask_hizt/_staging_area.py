"""Where ``dh.Staging`` keeps its staged fills until they are committed: a
*staging area* next to the repository.

- :class:`LocalArea`: the directory ``.dask_hizt-staging`` inside a
  repository on a local or shared filesystem;
- :class:`S3Area`: the key prefix ``<repository prefix>/.dask_hizt-staging/``
  in the repository's own bucket, so that workers that share no disk with
  the client stage their fills where the repository lives.

Both have the same four operations (:meth:`put`, :meth:`get`,
:meth:`delete`, :meth:`older_than`) on objects named by the caller, and
pickle into the tasks that use them. An :class:`S3Area` holds the bucket,
the key prefix and the storage's non-secret settings (endpoint, region,
addressing); every process that touches it looks the credentials up itself,
with the AWS SDK's default chain (environment variables, profiles, web
identity, instance roles), as icechunk's ``from_env`` does for the
repository. So a ``Staging``, and what coffea adds up in its tree of
futures, carries no secret. Static keys (``dh.gc`` on a store given with
them) stay in the process that was given them: such an area refuses to be
pickled.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask.config

from ._repo import RepoRef
from .errors import StoreError
from .storage import is_url, parse_url, redact, s3_kwargs

__all__ = [
    "SECRET_OPTIONS",
    "STAGING_DIR",
    "LocalArea",
    "S3Area",
    "StagingArea",
    "open_staging",
    "staging_area",
]

#: Name of the staging area inside a repository (a directory or a key prefix).
STAGING_DIR = ".dask_hizt-staging"

#: The ``storage_options`` that are secrets; ``dh.Staging`` refuses them.
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token")


class StagingArea(Protocol):
    """Staged objects, by name, next to one repository."""

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name``, whole (a reader never sees part of it),
        replacing any object of that name."""

    def get(self, name: str) -> bytes:
        """The object ``name``; :class:`~dask_hizt.StoreError` if it is gone."""

    def delete(self, names: Iterable[str]) -> int:
        """Delete the objects ``names`` (missing ones are no error); how many
        were asked to go."""

    def older_than(self, cutoff: dt.datetime) -> list[str]:
        """The names of the objects written before ``cutoff`` (aware, UTC)."""


def _missing(name: str, where: str) -> StoreError:
    return StoreError(
        f"staged fill {name!r} is missing from {where}: a commit or dh.gc removed "
        "it; run the chunks of events of this Staging again"
    )


@dataclass(frozen=True)
class LocalArea:
    """A staging directory on a local or shared filesystem.

    Parameters
    ----------
    directory
        The directory (``<repository>/.dask_hizt-staging``); made on the
        first :meth:`put`.
    """

    directory: str

    def __str__(self) -> str:
        return self.directory

    def put(self, name: str, data: bytes) -> None:
        """Write ``data`` to a temporary file and rename it to ``name``."""
        target = Path(self.directory, name)
        target.parent.mkdir(exist_ok=True)
        # pid and thread: two writers of one name never share a temporary file
        tmp = target.with_name(f"{name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def get(self, name: str) -> bytes:
        """The bytes of the file ``name``."""
        try:
            return Path(self.directory, name).read_bytes()
        except FileNotFoundError:
            raise _missing(name, self.directory) from None

    def delete(self, names: Iterable[str]) -> int:
        """Unlink the files ``names``."""
        n = 0
        for name in names:
            Path(self.directory, name).unlink(missing_ok=True)
            n += 1
        return n

    def older_than(self, cutoff: dt.datetime) -> list[str]:
        """Files (left-over temporary ones too) last modified before ``cutoff``."""
        root = Path(self.directory)
        if not root.is_dir():
            return []
        limit = cutoff.timestamp()
        names = []
        for p in root.iterdir():
            try:
                info = p.stat()
            except FileNotFoundError:
                continue  # removed meanwhile, by a commit
            if stat.S_ISREG(info.st_mode) and info.st_mtime < limit:
                names.append(p.name)
        return sorted(names)


#: S3 clients of this process, by area settings, credentials and retries.
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class S3Area:
    """A staging prefix in an S3 bucket.

    Parameters
    ----------
    bucket
        The repository's bucket.
    prefix
        Key prefix of the area (``<repository prefix>/.dask_hizt-staging``),
        without a trailing ``/``.
    endpoint_url, region, force_path_style, anonymous, requester_pays, timeout
        The repository storage's settings, as :func:`dask_hizt.storage.s3_kwargs`
        resolves them (``timeout``: ``network_stream_timeout_seconds``).
    credentials
        Static keys ``(access key id, secret, session token)``; ``None`` (the
        only kind that pickles): the default chain, looked up in each process.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    force_path_style: bool = False
    anonymous: bool = False
    requester_pays: bool = False
    timeout: float | None = None
    credentials: tuple[str, str, str | None] | None = field(
        default=None, repr=False, compare=False
    )

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        if self.credentials is not None:
            msg = "a staging area given static S3 keys stays in its process"
            raise TypeError(msg)
        return dict(self.__dict__)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> S3Area:
        """The area of the repository made with ``icechunk.s3_storage(**kwargs)``."""
        keys = None
        if kwargs.get("access_key_id") is not None:
            keys = (
                str(kwargs["access_key_id"]),
                str(kwargs["secret_access_key"]),
                kwargs.get("session_token"),
            )
        timeout = kwargs.get("network_stream_timeout_seconds")
        return cls(
            bucket=str(kwargs["bucket"]),
            prefix=_join(str(kwargs["prefix"]), STAGING_DIR),
            endpoint_url=kwargs.get("endpoint_url"),
            region=kwargs.get("region"),
            force_path_style=bool(kwargs.get("force_path_style")),
            anonymous=bool(kwargs.get("anonymous")),
            requester_pays=bool(kwargs.get("requester_pays")),
            timeout=None if timeout is None else float(timeout),
            credentials=keys,
        )

    def _client(self) -> Any:
        """This process's boto3 client for the area (made once, thread-safe)."""
        tries = max(1, int(dask.config.get("dask_hizt.storage-retries")))
        key = (self, self.credentials, tries)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = self._new_client(tries)
        return client

    def _new_client(self, tries: int) -> Any:
        try:
            import boto3  # noqa: PLC0415 - optional: only S3 staging needs it
            import botocore  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415
        except ImportError:
            raise StoreError(_NO_BOTO3) from None
        options: dict[str, Any] = {
            "retries": {"max_attempts": tries, "mode": "standard"},
            "s3": {"addressing_style": "path" if self.force_path_style else "auto"},
        }
        if self.timeout is not None:
            options["read_timeout"] = self.timeout
        if self.anonymous:
            options["signature_version"] = botocore.UNSIGNED
        keys: dict[str, Any] = {}
        if self.credentials is not None:
            keys = {
                "aws_access_key_id": self.credentials[0],
                "aws_secret_access_key": self.credentials[1],
                "aws_session_token": self.credentials[2],
            }
        # a session of its own: boto3's default session is not thread-safe
        return boto3.session.Session(**keys).client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(**options),
        )

    def _call(self, what: str, key: str, method: str, **kwargs: Any) -> Any:
        """``client.method(Bucket=..., **kwargs)``, its errors as StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if self.requester_pays:
            kwargs["RequestPayer"] = "requester"
        try:
            return getattr(self._client(), method)(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404"}:
                raise _missing(key.rsplit("/", 1)[-1], str(self)) from None
            msg = f"{what} s3://{self.bucket}/{key} failed: {redact(str(err))}"
            raise StoreError(msg) from None
        except BotoCoreError as err:
            msg = f"{what} s3://{self.bucket}/{key} failed: {redact(str(err))}"
            raise StoreError(msg) from None

    def put(self, name: str, data: bytes) -> None:
        """Put the object ``<prefix>/<name>`` (S3 objects appear whole)."""
        key = _join(self.prefix, name)
        self._call("staging a fill to", key, "put_object", Key=key, Body=data)

    def get(self, name: str) -> bytes:
        """The object ``<prefix>/<name>``."""
        key = _join(self.prefix, name)
        body = self._call("reading the staged fill", key, "get_object", Key=key)
        data: bytes = body["Body"].read()
        return data

    def delete(self, names: Iterable[str]) -> int:
        """Delete the objects, 1,000 per request (S3's limit)."""
        keys = [_join(self.prefix, n) for n in names]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            out = self._call(
                "deleting staged fills under",
                self.prefix,
                "delete_objects",
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = out.get("Errors") or []
            if errors:
                first = errors[0]
                msg = (
                    f"deleting staged fills under {self}: {len(errors)} failed, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
                raise StoreError(msg)
        return len(keys)

    def older_than(self, cutoff: dt.datetime) -> list[str]:
        """Objects under the prefix whose ``LastModified`` is before ``cutoff``."""
        names: list[str] = []
        token: str | None = None
        start = self.prefix + "/"
        while True:
            extra = {} if token is None else {"ContinuationToken": token}
            page = self._call(
                "listing staged fills under",
                self.prefix,
                "list_objects_v2",
                Prefix=start,
                **extra,
            )
            names.extend(
                o["Key"][len(start) :]
                for o in page.get("Contents", ())
                if o["LastModified"] < cutoff
            )
            if not page.get("IsTruncated"):
                return sorted(names)
            token = page["NextContinuationToken"]


_NO_BOTO3 = (
    "dh.Staging on S3 needs boto3 to stage its fills: install dask-hizt[s3] (or boto3)"
)


def _join(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def staging_area(
    ref: RepoRef, storage_options: Mapping[str, Any] | None = None
) -> StagingArea | None:
    """The staging area of a repository; ``None`` if it has no place for one
    (storage neither on a filesystem nor on S3).

    Parameters
    ----------
    ref
        The repository.
    storage_options
        The ``storage_options`` it was opened with (``s3://`` URLs). Static
        keys among them are kept by the area, which then cannot be pickled.

    Raises
    ------
    StoreError
        For an S3 area without boto3.
    """
    if ref.local_path is not None:
        return LocalArea(str(Path(ref.local_path, STAGING_DIR)))
    if ref.url is not None:
        kwargs = s3_kwargs(parse_url(ref.url), storage_options)
    else:
        found = _s3_settings(repr(ref.repo.storage))
        if found is None:
            return None
        kwargs = found
    _require_boto3()
    return S3Area.from_kwargs(kwargs)


def open_staging(
    store: object, storage_options: Mapping[str, Any] | None
) -> tuple[RepoRef, StagingArea]:
    """The repository of a ``dh.Staging`` and its staging area.

    What cannot work (static keys, an S3 store without boto3, a bad URL) is
    refused before the repository is opened, and maybe created.

    Raises
    ------
    StoreError
        For static keys in ``storage_options`` (a Staging travels between
        processes), S3 without boto3, a store ``RepoRef.from_store`` refuses,
        or storage with no place for staged fills.
    """
    given = sorted(k for k in SECRET_OPTIONS if (storage_options or {}).get(k))
    if given:
        msg = (
            f"dh.Staging does not take {given} in storage_options: they would "
            "travel with every staged result; each process (the client and every "
            "worker) takes the credentials from its own environment "
            "(AWS_ACCESS_KEY_ID, ..., a profile or a role)"
        )
        raise StoreError(msg)
    if isinstance(store, str) and is_url(store):
        _require_boto3()
    ref = RepoRef.from_store(store, storage_options=storage_options)
    area = staging_area(ref, storage_options)
    if area is None:
        msg = (
            "dh.Staging needs a repository on a filesystem (local or shared) or on "
            "S3 (an s3:// URL) to stage its fills in; this repository's storage "
            "is neither"
        )
        raise StoreError(msg)
    return ref, area


def _require_boto3() -> None:
    try:
        import boto3  # noqa: F401, PLC0415
    except ImportError:
        raise StoreError(_NO_BOTO3) from None


def _s3_settings(text: str) -> dict[str, Any] | None:
    """The settings of an S3 storage, from its repr (icechunk has no accessor):
    ``None`` for other kinds of storage."""
    lines = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^(\w+): (.*)$", text, flags=re.MULTILINE)
    }
    if lines.get("type") != "S3 (native)" or "bucket" not in lines:
        return None

    def flag(name: str) -> bool:
        return lines.get(name, "false").lower() == "true"

    return {
        "bucket": lines["bucket"],
        "prefix": lines.get("prefix", ""),
        "region": lines.get("region"),
        "endpoint_url": lines.get("endpoint_url"),
        "force_path_style": flag("force_path_style"),
        "anonymous": flag("anonymous"),
        "requester_pays": flag("requester_pays"),
    }
