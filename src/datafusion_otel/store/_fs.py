"""Where a run store lives: a local folder or a prefix on S3-compatible object storage.

Both kinds offer the few operations the store needs, on keys relative to the store's root
(``/``-separated): list every object under a key prefix, write a whole object so that it
appears only when complete (`StoreFS.put`), create an object only if absent
(`StoreFS.put_new`, for the compaction lease), read one, delete one.

* `LocalFS`: a folder. A file is written under a hidden temporary name (``.<name>.tmp``),
  optionally fsynced, then renamed into place, so readers see a complete file or none.
* `S3FS`: ``s3://bucket/prefix`` through obstore (the Rust ``object_store`` crate DataFusion
  uses). An object is written with one PUT of the whole file: S3 makes it visible only once
  complete, and a writer killed mid-upload leaves nothing. Credentials and endpoint come from
  the standard environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``). Requests time out after
  ``DATAFUSION_OTEL_S3_TIMEOUT`` seconds (default 10) and are retried at most twice, so an
  unreachable endpoint fails a write within seconds instead of retrying for minutes.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from datafusion_otel import attributes as attr

__all__ = ["S3FS", "LocalFS", "StoreFS", "StoreObject", "open_location", "resolve_location"]

TMP_SUFFIX = ".tmp"
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV})
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TIMEOUT_ENV = "DATAFUSION_OTEL_S3_TIMEOUT"
_DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class StoreObject:
    """One complete object (file) of the store.

    Attributes:
        key: Path relative to the store's root, ``/``-separated.
        size: Bytes.
        modified: Last modification, Unix seconds.
    """

    key: str
    size: int
    modified: float


@dataclass(frozen=True)
class S3Location:
    """An ``s3://bucket/prefix`` store location (prefix without slashes at either end)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        """The location as an ``s3://`` URI."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def resolve_location(path: str | os.PathLike[str] | None = None) -> Path | S3Location:
    """Return the store location: ``path``, else ``$DATAFUSION_OTEL_HOME``, else the default.

    A plain path or a ``file://`` URI names a local folder, ``s3://bucket/prefix`` a prefix
    on S3-compatible storage; any other URI scheme is refused.

    Raises:
        ValueError: For another URI scheme, or an ``s3://`` URI without a bucket.
    """
    if path is None:
        path = os.environ.get(attr.HOME_ENV) or attr.DEFAULT_HOME
    text = os.fspath(path)
    match = _URI_SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    uri = urlsplit(text)
    if scheme == "file":
        if uri.netloc in {"", "localhost"}:
            return Path(unquote(uri.path) or "/")
        raise ValueError(f"run store {text!r}: a file:// URI names a local path (file:///path)")
    if scheme == "s3":
        if not uri.netloc:
            raise ValueError(
                f"run store {text!r}: an s3:// URI names a bucket (s3://bucket/prefix)"
            )
        return S3Location(uri.netloc, unquote(uri.path).strip("/"))
    raise ValueError(
        f"run store {text!r}: the {scheme}:// scheme is not supported "
        "(a local folder, file:///path or s3://bucket/prefix work)"
    )


class StoreFS:
    """The operations the run store needs from where it lives (see the module docstring)."""

    uri: str
    """The store's location as given to users (a folder path or an ``s3://`` URI)."""

    def list(self, prefix: str = "") -> list[StoreObject]:
        """Return every complete object whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Write the whole object ``key``; it appears only when complete."""
        raise NotImplementedError

    def put_new(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if no object has that key; return whether it was written."""
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        """Return the object ``key`` (None if there is none)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Delete ``key`` (no error if it is already gone)."""
        raise NotImplementedError

    def display(self, key: str) -> str:
        """Return how to show the object ``key`` to a user."""
        return f"{self.uri}/{key}"


class LocalFS(StoreFS):
    """A store in a local folder.

    Args:
        root: The folder (created on the first write).
        fsync: Sync each file to disk before renaming it into place.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.uri = str(root)
        self._fsync = fsync

    def path(self, key: str) -> Path:
        """Return the file of ``key``."""
        return self.root / key

    def display(self, key: str) -> str:
        return str(self.path(key))

    def list(self, prefix: str = "") -> list[StoreObject]:
        base = self.root / prefix if prefix.endswith("/") or not prefix else self.root
        if not base.is_dir():
            return []
        found: list[StoreObject] = []
        for path in base.rglob("*"):
            if path.name.startswith(".") or not path.is_file():
                continue  # a file being written (.<name>.tmp) is not an object yet
            key = path.relative_to(self.root).as_posix()
            if not key.startswith(prefix):
                continue
            try:
                stat = path.stat()
            except OSError:  # deleted meanwhile
                continue
            found.append(StoreObject(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}{TMP_SUFFIX}"
        try:
            self._write(tmp, data, "wb")
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def put_new(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if absent, complete or not at all (a hard link of a full file).

        The data goes to a private temporary file first, then is linked to its name (which
        fails if the name exists): a writer killed or out of space mid-write never leaves a
        partial ``_format.json`` or lease. Where hard links are not supported, the file is
        created exclusively and written (not atomic).
        """
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            self._write(tmp, data, "xb")
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                return self._put_new_unlinked(final, data)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes, mode: str) -> None:
        """Write ``data`` to the temporary file ``path`` (synced to disk when asked)."""
        with open(path, mode) as handle:
            handle.write(data)
            if self._fsync:
                handle.flush()
                os.fsync(handle.fileno())

    @staticmethod
    def _put_new_unlinked(final: Path, data: bytes) -> bool:
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        parent = self.path(key).parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()  # only once empty: a day folder goes with its last file
            except OSError:
                break
            parent = parent.parent

    def stale_tmp_files(self) -> Iterator[Path]:
        """Yield the temporary files writers left behind (crashed mid-write)."""
        if self.root.is_dir():
            yield from self.root.rglob(f".*{TMP_SUFFIX}")


def s3_timeout() -> float:
    """Seconds an S3 request may take (``$DATAFUSION_OTEL_S3_TIMEOUT``, default 10)."""
    try:
        value = float(os.environ.get(_TIMEOUT_ENV, _DEFAULT_TIMEOUT))
    except ValueError:
        return _DEFAULT_TIMEOUT
    return value if value > 0 else _DEFAULT_TIMEOUT


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class S3FS(StoreFS):
    """A store under a prefix of an S3 bucket (obstore; settings from the environment).

    Args:
        location: Bucket and prefix.
    """

    def __init__(self, location: S3Location) -> None:
        try:
            from obstore.store import S3Store  # optional dependency: the ``s3`` extra
        except ImportError as exc:
            raise ImportError(
                f"run store {location.uri!r}: s3:// stores need obstore "
                "(pip install 'datafusion-otel[s3]')"
            ) from exc

        self.location = location
        self.uri = location.uri
        timeout = s3_timeout()
        client: dict[str, Any] = {
            "timeout": dt.timedelta(seconds=timeout),
            "connect_timeout": dt.timedelta(seconds=min(timeout, 5.0)),
        }
        if (_env("AWS_ALLOW_HTTP") or "").lower() in {"1", "true", "yes"}:
            client["allow_http"] = True
        retry: Any = {
            "max_retries": 2,
            "retry_timeout": dt.timedelta(seconds=timeout),
            "backoff": {
                "init_backoff": dt.timedelta(milliseconds=100),
                "max_backoff": dt.timedelta(seconds=1),
                "base": 2,
            },
        }
        self._store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            client_options=client,  # type: ignore[arg-type]
            retry_config=retry,
        )

    def _full(self, key: str) -> str:
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def list(self, prefix: str = "") -> list[StoreObject]:
        import obstore

        found: list[StoreObject] = []
        for batch in obstore.list(self._store, prefix or None, chunk_size=1000):
            for meta in batch:
                key = str(meta["path"])
                if key.startswith(prefix):
                    found.append(
                        StoreObject(key, int(meta["size"]), meta["last_modified"].timestamp())
                    )
        return sorted(found, key=lambda o: o.key)

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self._store, key, data, use_multipart=False)

    def put_new(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self._store, key, data, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        return True

    def get(self, key: str) -> bytes | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    def delete(self, key: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.delete(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return

    def arrow_path(self, key: str) -> str:
        """Return ``key`` as a path for `arrow_filesystem` (``bucket/prefix/key``)."""
        return f"{self.location.bucket}/{self._full(key)}"

    def arrow_filesystem(self) -> Any:
        """Return a pyarrow ``S3FileSystem`` with the same settings (for reading datasets)."""
        from pyarrow import fs as pafs

        options: dict[str, Any] = {
            "access_key": _env("AWS_ACCESS_KEY_ID"),
            "secret_key": _env("AWS_SECRET_ACCESS_KEY"),
            "session_token": _env("AWS_SESSION_TOKEN"),
            "region": _env("AWS_REGION", "AWS_DEFAULT_REGION"),
            "connect_timeout": min(s3_timeout(), 5.0),
            "request_timeout": s3_timeout(),
        }
        endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint:
            parts = urlsplit(endpoint)
            options["endpoint_override"] = parts.netloc or parts.path
            options["scheme"] = parts.scheme or "https"
        return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


def open_location(location: Path | S3Location, *, fsync: bool = True) -> StoreFS:
    """Return the `StoreFS` of a resolved location (`resolve_location`)."""
    if isinstance(location, S3Location):
        return S3FS(location)
    return LocalFS(location, fsync=fsync)
