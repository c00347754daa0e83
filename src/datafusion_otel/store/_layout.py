"""On-disk layout of the run store: folders, file names and the artifacts schema.

::

    <home>/
      datafusion_runs_v1/              one folder per diagnostics table
        <time_ns>-<pid>-<seq>.parquet  complete files only (written as .tmp, then renamed)
      datafusion_plan_artifacts_v1/
      datafusion_operator_metrics_v1/
      datafusion_cache_state_v1/
      datafusion_findings_v1/          a run's findings, written when the run ends
      artifacts/
        artifact=<name>/               one folder per artifact name (hive-style partition)
          <time_ns>-<pid>-<seq>.parquet

Artifacts keep their payload as one JSON string column (``payload``), next to the
``run_id`` found in the payload, so any artifact shape fits one schema and stays queryable
(``artifacts`` table in `RunStore`).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from datafusion_otel import attributes as attr

__all__ = [
    "ARTIFACTS_SCHEMA",
    "TMP_SUFFIX",
    "artifact_folder",
    "data_files",
    "new_file_name",
    "resolve_home",
    "table_folder",
]

TMP_SUFFIX = ".tmp"
"""Suffix of files being written; readers ignore them (they do not end in ``.parquet``)."""

ARTIFACTS_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("event_time_unix_ms", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=True),
        pa.field("payload", pa.string(), nullable=False),  # JSON object
    ],
    metadata={b"table_name": b"artifacts"},
)
"""Schema of the artifact files; the artifact name is the folder (``artifact=<name>``)."""

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_seq = itertools.count()
_seq_lock = threading.Lock()


def resolve_home(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the store folder: ``path``, else ``$DATAFUSION_OTEL_HOME``, else the default.

    The default is ``./.datafusion-otel`` (relative to the working directory). A
    ``file://`` URI names a local folder; any other URI scheme (``s3://``, ``gs://``, ...)
    is refused: the run store is local only for now.

    Args:
        path: Explicit folder.

    Returns:
        The folder (not created).

    Raises:
        ValueError: If the path is a URI with a scheme other than ``file``.
    """
    if path is None:
        path = os.environ.get(attr.HOME_ENV) or attr.DEFAULT_HOME
    text = os.fspath(path)
    match = _URI_SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme == "file":
        uri = urlsplit(text)
        if uri.netloc in {"", "localhost"}:
            return Path(unquote(uri.path) or "/")
        raise ValueError(f"run store {text!r}: a file:// URI names a local path (file:///path)")
    raise ValueError(
        f"run store {text!r}: the {scheme}:// scheme is not supported yet "
        "(the run store is a local folder; file:///path works)"
    )


def table_folder(home: Path, table: str) -> Path:
    """Return the folder of diagnostics table ``table`` under ``home``."""
    return home / table


def artifact_folder(home: Path, name: str) -> Path:
    """Return the folder of artifact ``name`` under ``home``.

    Raises:
        ValueError: If ``name`` could escape the store (path separators, ``..``).
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"invalid artifact name {name!r}")
    return home / attr.ARTIFACTS_FOLDER / f"{attr.ARTIFACT_PARTITION}={name}"


def new_file_name() -> str:
    """Return a unique, time-ordered Parquet file name for this process."""
    with _seq_lock:
        seq = next(_seq)
    return f"{time.time_ns():020d}-{os.getpid()}-{seq:06d}.parquet"


def data_files(folder: Path) -> list[Path]:
    """Return the complete Parquet files of ``folder`` (recursively), sorted by path."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if p.is_file())
