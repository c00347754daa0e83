"""Layout of the run store: keys, file names, the format version and the artifacts schema.

Format version 2 (written since object storage support; ``_format.json`` at the root)::

    <root>/
      _format.json                          {"format": "datafusion-otel-run-store", "version": 2}
      datafusion_runs_v1/                   one folder (key prefix) per diagnostics table
        day=YYYY-MM-DD/                     the UTC day the row's run started
          <time_ns>-<writer>-<seq>.parquet  immutable; <writer> = host-pid-random
          c-<time_ns>-<writer>.parquet      a merged file written by ``compact``
          c-<time_ns>-<writer>.covers.json  the files it merged (written after it)
      datafusion_plan_artifacts_v1/ ...     same layout for every table
      artifacts/
        artifact=<name>/day=YYYY-MM-DD/...  one folder per artifact name (hive-style)
      _compact.lease                        held by the one running compactor

Version 1 (a local folder, before this layout) had the same table folders without the
``day=`` level and no ``_format.json``; readers read both (every ``*.parquet`` under a
table's folder is a file of that table), writers add version-2 files next to version-1 ones.

Artifacts keep their payload as one JSON string column (``payload``), next to the
``run_id`` found in the payload, so any artifact shape fits one schema and stays queryable
(``artifacts`` table in `RunStore`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from datafusion_otel import attributes as attr

if TYPE_CHECKING:
    from datafusion_otel.store._fs import StoreFS

__all__ = [
    "ARTIFACTS_SCHEMA",
    "FORMAT_KEY",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LEASE_KEY",
    "MANIFEST_SUFFIX",
    "MERGED_PREFIX",
    "PARQUET_SUFFIX",
    "artifact_prefix",
    "day_of",
    "day_of_key",
    "format_document",
    "is_merged",
    "manifest_key",
    "merged_key",
    "new_data_key",
    "parse_format",
    "record_format",
    "resolve_home",
    "table_of_key",
    "table_prefix",
    "writer_id",
]

ARTIFACTS_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("event_time_unix_ms", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=True),
        pa.field("payload", pa.string(), nullable=False),  # JSON object
    ],
    metadata={b"table_name": b"artifacts"},
)
"""Schema of the artifact files; the artifact name is the folder (``artifact=<name>``)."""

FORMAT_KEY = "_format.json"
"""Object at the store's root recording its format version."""
FORMAT_VERSION = 2
"""The format version this package writes (and the newest it reads)."""
FORMAT_NAME = "datafusion-otel-run-store"
LEASE_KEY = "_compact.lease"
"""Object held by the one compactor running on a store."""
MERGED_PREFIX = "c-"
"""File-name prefix of merged files (written by ``compact``)."""
MANIFEST_SUFFIX = ".covers.json"
"""Suffix of a merged file's manifest (the files it covers), next to it."""
PARQUET_SUFFIX = ".parquet"
DAY_PREFIX = "day="

_DAY = re.compile(r"(?:^|/)day=(\d{4}-\d{2}-\d{2})/")
_WRITER_CHARS = re.compile(r"[^A-Za-z0-9]+")
_seq = itertools.count()
_seq_lock = threading.Lock()
_writer: tuple[int, str] | None = None


def resolve_home(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the local store folder: ``path``, else ``$DATAFUSION_OTEL_HOME``, else the default.

    The default is ``./.datafusion-otel`` (relative to the working directory). A
    ``file://`` URI names a local folder. For a store that may be on object storage use
    `datafusion_otel.store._fs.resolve_location`.

    Args:
        path: Explicit folder.

    Returns:
        The folder (not created).

    Raises:
        ValueError: If the path is a URI with a scheme other than ``file``.
    """
    from datafusion_otel.store._fs import resolve_location

    location = resolve_location(path)
    if isinstance(location, Path):
        return location
    raise ValueError(f"run store {location.uri!r} is not a local folder")


def format_document() -> bytes:
    """Return the content of ``_format.json`` for this package's format version."""
    return json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION}).encode()


def record_format(fs: StoreFS) -> None:
    """Write ``_format.json`` unless there is one; rewrite an empty one.

    An empty document is what a writer of an earlier release left when it was killed (or
    ran out of space) between creating the file and writing it; writers now write it whole.
    """
    if fs.put_new(FORMAT_KEY, format_document()):
        return
    data = fs.get(FORMAT_KEY)
    if data is not None and not data.strip():
        fs.put(FORMAT_KEY, format_document())


def parse_format(data: bytes | None) -> int:
    """Return the format version recorded in ``_format.json`` (1 when there is none).

    An empty document (a writer killed while creating it, before writes were atomic) is
    read as this package's version; the next writer rewrites it (`record_format`).

    Raises:
        ValueError: If the document is not a run store format document.
    """
    if data is None:
        return 1
    if not data.strip():
        return FORMAT_VERSION
    try:
        document = json.loads(data)
        version = int(document["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{FORMAT_KEY} is not a run store format document") from exc
    return version


def writer_id() -> str:
    """Return this process's writer id (host, pid and a random part; new after a fork)."""
    global _writer  # noqa: PLW0603 - one id per process
    pid = os.getpid()
    if _writer is None or _writer[0] != pid:
        host = _WRITER_CHARS.sub("", socket.gethostname())[:24] or "host"
        _writer = (pid, f"{host}-{pid}-{secrets.token_hex(3)}")
    return _writer[1]


def day_of(unix_ms: int | None) -> str:
    """Return the UTC day (``YYYY-MM-DD``) of a Unix time in ms (today when None)."""
    if unix_ms is None:
        unix_ms = time.time_ns() // 1_000_000
    return dt.datetime.fromtimestamp(unix_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d")


def day_of_key(key: str) -> str | None:
    """Return the day folder a key lies in (None for a version-1 file)."""
    match = _DAY.search(key)
    return match.group(1) if match else None


def table_prefix(table: str) -> str:
    """Return the key prefix of diagnostics table ``table`` (ends with ``/``)."""
    return f"{table}/"


def artifact_prefix(name: str) -> str:
    """Return the key prefix of artifact ``name`` (ends with ``/``).

    Raises:
        ValueError: If ``name`` could escape the store (path separators, ``..``).
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"invalid artifact name {name!r}")
    return f"{attr.ARTIFACTS_FOLDER}/{attr.ARTIFACT_PARTITION}={name}/"


def table_of_key(key: str) -> str:
    """Return the table prefix a data key belongs to (``artifacts/artifact=x/`` for artifacts)."""
    parts = key.split("/")
    if parts[0] == attr.ARTIFACTS_FOLDER and len(parts) > 2:
        return f"{parts[0]}/{parts[1]}/"
    return f"{parts[0]}/"


def new_data_key(prefix: str, day: str) -> str:
    """Return a new, unique, time-ordered key for a data file of ``prefix`` on ``day``."""
    with _seq_lock:
        seq = next(_seq)
    name = f"{time.time_ns():020d}-{writer_id()}-{seq:06d}{PARQUET_SUFFIX}"
    return f"{prefix}{DAY_PREFIX}{day}/{name}"


def merged_key(folder: str) -> str:
    """Return a new key for a merged file in ``folder`` (a key prefix ending with ``/``)."""
    with _seq_lock:
        seq = next(_seq)
    return f"{folder}{MERGED_PREFIX}{time.time_ns():020d}-{writer_id()}-{seq:06d}{PARQUET_SUFFIX}"


def manifest_key(merged: str) -> str:
    """Return the key of the manifest of merged file ``merged``."""
    return merged.removesuffix(PARQUET_SUFFIX) + MANIFEST_SUFFIX


def is_merged(key: str) -> bool:
    """Whether ``key`` is a merged file (written by ``compact``)."""
    return key.rsplit("/", 1)[-1].startswith(MERGED_PREFIX) and key.endswith(PARQUET_SUFFIX)
