"""Store maintenance for operators: `compact_store` and `prune_store` (CLI: ``compact``, ``prune``).

Both work on a local folder and on ``s3://bucket/prefix`` alike, while writers keep writing,
and take the store's maintenance lease (one maintenance process at a time; a dead holder's
lease expires). See `datafusion_otel.store._compact` and `datafusion_otel.store._prune`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable

from datafusion_otel.store._checks import one_line
from datafusion_otel.store._compact import CompactionReport, compact
from datafusion_otel.store._fs import LocalFS, StoreFS, open_location, resolve_location
from datafusion_otel.store._lease import LeaseError
from datafusion_otel.store._prune import PruneReport, parse_age, prune
from datafusion_otel.store.run_store import StoreError

__all__ = ["CompactionReport", "PruneReport", "compact_store", "parse_age", "prune_store"]


def _open(path: str | os.PathLike[str] | None) -> StoreFS:
    try:
        fs = open_location(resolve_location(path))
    except (ValueError, ImportError) as exc:
        raise StoreError(str(exc)) from exc
    if isinstance(fs, LocalFS) and not fs.root.is_dir():
        raise StoreError(f"no run store at {fs.root} (it does not exist)")
    return fs


def compact_store(
    path: str | os.PathLike[str] | None = None,
    *,
    target_bytes: int = 128 * 1024 * 1024,
    lease_seconds: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> CompactionReport:
    """Merge the store's small files into larger ones, losing and duplicating no row.

    Args:
        path: The store (folder, ``file://`` or ``s3://`` URI; default as `RunStore`).
        target_bytes: Size a merged file grows to at most (sum of its sources' sizes).
        lease_seconds: Lifetime of the maintenance lease (renewed while working).
        progress: Called with one line per folder merged.

    Raises:
        StoreError: If the store cannot be opened, another process holds the lease, or the
            store failed (the message is one line).
    """
    fs = _open(path)
    try:
        return compact(fs, target_bytes=target_bytes, lease_seconds=lease_seconds,
                       progress=progress)  # fmt: skip
    except LeaseError as exc:
        raise StoreError(str(exc)) from exc
    except Exception as exc:  # a storage error (obstore's, OSError): one line
        raise StoreError(f"compaction of {fs.uri} failed: {one_line(exc)}") from exc


def prune_store(
    path: str | os.PathLike[str] | None = None,
    *,
    older_than: dt.timedelta,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> PruneReport:
    """Delete the files of every day that ended at least ``older_than`` ago (all tables).

    Args:
        path: The store (folder, ``file://`` or ``s3://`` URI; default as `RunStore`).
        older_than: Age of the days to remove (`parse_age` reads ``30d``).
        dry_run: Only report what would be deleted.
        now: The current time (default: now).

    Raises:
        StoreError: As `compact_store`.
    """
    fs = _open(path)
    try:
        return prune(fs, older_than=older_than, dry_run=dry_run, now=now)
    except LeaseError as exc:
        raise StoreError(str(exc)) from exc
    except Exception as exc:  # a storage error (obstore's, OSError): one line
        raise StoreError(f"pruning {fs.uri} failed: {one_line(exc)}") from exc
