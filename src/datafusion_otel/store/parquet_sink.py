"""`ParquetSink`: the embedded default sink, Parquet files in one folder per table.

Durability and the loss bound:

* ``record_events`` / ``record_artifact`` only append to an in-memory buffer under a lock
  (the sink is ``nonblocking``: it is called on the query's thread and does no I/O there).
* The sink's writer thread writes a table's buffered rows as ONE new Parquet file when the
  table holds ``batch_rows`` rows, or ``flush_interval`` seconds after its oldest buffered
  row arrived, whichever comes first. `force_flush`, `close` and process exit (``atexit``,
  bounded by ``exit_timeout``) write everything buffered.
* Every file is written under a temporary name (``.<name>.parquet.tmp``), fsynced, then
  renamed with ``os.replace``: readers see a complete file or none. A crash (even SIGKILL)
  at any moment leaves a readable store; leftover ``.tmp`` files are ignored by readers and
  removed by the next sink opened on the folder once they are an hour old.
* **Loss bound**: a crash loses at most the rows still buffered, i.e. per table fewer than
  ``batch_rows`` rows and at most ``flush_interval`` seconds of rows (plus the file being
  written at that instant). A failed write (disk full, permissions) is logged once, counted,
  and reported by the next `force_flush` returning False; those rows are dropped.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from datafusion_otel._coerce import coerce_rows
from datafusion_otel._delivery import FlushMark, dispatcher
from datafusion_otel._exit import exit_remaining
from datafusion_otel._run_metadata import snapshot_text
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._layout import (
    ARTIFACTS_SCHEMA,
    TMP_SUFFIX,
    artifact_folder,
    new_file_name,
    resolve_home,
    table_folder,
)

__all__ = ["ParquetSink"]

_LOG = logging.getLogger("datafusion_otel.store")
_STALE_TMP_SECONDS = 3600.0
_EXIT_TIMEOUT = 5.0
_live_sinks: weakref.WeakSet[ParquetSink] = weakref.WeakSet()

# A buffer key is ("table", name) or ("artifact", name).
_Key = tuple[str, str]


class ParquetSink:
    """Diagnostics sink writing every table and artifact to Parquet files under one folder.

    Args:
        path: Store folder. Default: ``$DATAFUSION_OTEL_HOME``, else ``./.datafusion-otel``.
        batch_rows: Rows of one table that trigger a write.
        flush_interval: Seconds after which buffered rows are written anyway.
        fsync: Sync each file to disk before renaming it into place (survives power loss,
            not only process crashes).
        exit_timeout: Seconds the ``atexit`` flush may take at most.

    Raises:
        ValueError: If ``batch_rows`` < 1 or ``flush_interval`` <= 0.

    Example:
        >>> from datafusion_otel import tracked_run
        >>> sink = ParquetSink("/tmp/my-runs")  # doctest: +SKIP
        >>> with tracked_run(label="nightly", sink=sink):  # doctest: +SKIP
        ...     ...
        >>> sink.close()  # doctest: +SKIP
    """

    nonblocking: ClassVar[bool] = True
    """Recording is a list append under a lock; files are written by the sink's own thread."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_rows: int = 1000,
        flush_interval: float = 2.0,
        fsync: bool = True,
        exit_timeout: float = _EXIT_TIMEOUT,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval}")
        self.path = resolve_home(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._batch_rows = batch_rows
        self._interval = flush_interval
        self._fsync = fsync
        self.exit_timeout = exit_timeout
        self._cond = threading.Condition()
        self._io_lock = threading.Lock()
        self._buffers: dict[_Key, list[dict[str, object]]] = {}
        self._first_at: dict[_Key, float] = {}
        self._closed = False
        self._failures = 0
        self._failure_mark = 0
        self._logged: set[_Key] = set()
        self.files_written = 0
        self.rows_written = 0
        self._remove_stale_tmp()
        self._thread = threading.Thread(
            target=self._run, name=f"datafusion-otel-parquet:{self.path}", daemon=True
        )
        self._thread.start()
        _live_sinks.add(self)

    def __repr__(self) -> str:
        return f"ParquetSink({str(self.path)!r})"

    # -- DiagnosticsSink -------------------------------------------------------------------------
    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Buffer ``rows`` of the diagnostics table ``name`` (no I/O on this thread).

        Args:
            name: Table name, for example ``datafusion_runs_v1``.
            rows: Rows shaped like the table's schema.
        """
        self._append(("table", name), [dict(row) for row in rows])

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        """Buffer one artifact; it is stored as JSON under ``artifacts/artifact=<name>/``.

        Args:
            name: Artifact name, for example ``datafusion_run_started_v1``.
            payload: JSON-serializable payload; its ``run_id`` (if any) gets its own column.
        """
        run_id = payload.get("run_id")
        row: dict[str, object] = {
            "event_time_unix_ms": time.time_ns() // 1_000_000,
            "run_id": run_id if isinstance(run_id, str) else None,
            "payload": dict(payload),
        }
        self._append(("artifact", name), [row])

    # -- flushing --------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Write every buffered row now.

        Args:
            timeout: Seconds to wait at most for a write in progress on the writer thread.

        Returns:
            False if the rows could not all be written within ``timeout``, or if any write
            failed since the previous flush.
        """
        if not self._io_lock.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            self._write(self._take(everything=True))
        finally:
            self._io_lock.release()
        with self._cond:
            clean = self._failures == self._failure_mark
            self._failure_mark = self._failures
        return clean

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the writer thread and refuse further rows (they are counted as lost).

        Args:
            timeout: Seconds to wait at most (default ``exit_timeout``).

        Returns:
            As `force_flush`.
        """
        limit = self.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        flushed = self.force_flush(limit)
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        _live_sinks.discard(self)
        return flushed

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------
    def _append(self, key: _Key, rows: list[dict[str, object]]) -> None:
        if not rows:
            return
        with self._cond:
            if self._closed:
                self._failures += len(rows)
                self._log_once(key, "received rows after close(); they are not stored")
                return
            buffer = self._buffers.setdefault(key, [])
            wake = not buffer  # a new deadline, or a full batch, for the writer thread
            if wake:
                self._first_at[key] = time.monotonic()
            buffer.extend(rows)
            if wake or len(buffer) >= self._batch_rows:
                self._cond.notify_all()

    def _take(self, *, everything: bool) -> dict[_Key, list[dict[str, object]]]:
        """Remove and return the buffers that are due (all of them when ``everything``)."""
        now = time.monotonic()
        with self._cond:
            due = [
                key
                for key, rows in self._buffers.items()
                if rows
                and (
                    everything
                    or len(rows) >= self._batch_rows
                    or now - self._first_at.get(key, now) >= self._interval
                )
            ]
            taken = {key: self._buffers.pop(key) for key in due}
            for key in due:
                self._first_at.pop(key, None)
            return taken

    def _next_deadline(self) -> float | None:
        if not self._first_at:
            return None
        return min(self._first_at.values()) + self._interval

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    deadline = self._next_deadline()
                    now = time.monotonic()
                    full = any(len(r) >= self._batch_rows for r in self._buffers.values())
                    if full or (deadline is not None and deadline <= now):
                        break
                    self._cond.wait(None if deadline is None else deadline - now)
                if self._closed:
                    return
            with self._io_lock:
                self._write(self._take(everything=False))

    def _write(self, batches: dict[_Key, list[dict[str, object]]]) -> None:
        for key, rows in batches.items():
            try:
                table, folder = self._to_table(key, rows)
                self._write_file(table, folder)
            except Exception:  # a storage failure must never reach the observed program
                with self._cond:
                    self._failures += len(rows)
                self._log_once(key, f"could not write {len(rows)} rows", exc_info=True)
            else:
                self.files_written += 1
                self.rows_written += table.num_rows

    def _to_table(self, key: _Key, rows: list[dict[str, object]]) -> tuple[pa.Table, Path]:
        kind, name = key
        if kind == "artifact":
            for row in rows:
                row["payload"] = snapshot_text(row["payload"])  # a bad value: a note, kept
            return coerce_rows(rows, ARTIFACTS_SCHEMA), artifact_folder(self.path, name)
        schema = SCHEMAS.get(name)
        folder = table_folder(self.path, name)
        if schema is None:  # a table this package does not know: keep it with inferred types
            return pa.Table.from_pylist(rows), folder
        try:
            return coerce_rows(rows, schema), folder
        except ValueError:  # keep the rows that fit; report the others
            good: list[dict[str, object]] = []
            for row in rows:
                try:
                    coerce_rows([row], schema)
                except ValueError:
                    continue
                good.append(row)
            with self._cond:
                self._failures += len(rows) - len(good)
            self._log_once(key, f"dropped {len(rows) - len(good)} rows not matching the schema")
            return coerce_rows(good, schema), folder

    def _write_file(self, table: pa.Table, folder: Path) -> None:
        if table.num_rows == 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = new_file_name()
        final = folder / name
        tmp = folder / f".{name}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for tmp in self.path.rglob(f".*{TMP_SUFFIX}"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                continue

    def _log_once(self, key: _Key, what: str, *, exc_info: bool = False) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        _LOG.error(
            "ParquetSink(%s) %s for %s %s (further errors for it are counted, not logged)",
            self.path,
            what,
            key[0],
            key[1],
            exc_info=exc_info,
        )


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - exercised in subprocess tests
    # rows still queued for a sink reach it first
    dispatcher.force_flush(exit_remaining(), mark=FlushMark())
    for sink in list(_live_sinks):
        sink.close(min(sink.exit_timeout, exit_remaining()))  # one exit budget for all
