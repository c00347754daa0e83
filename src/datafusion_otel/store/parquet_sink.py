"""`ParquetSink`: the embedded default sink, Parquet files in one folder per table.

The store is a local folder or ``s3://bucket/prefix`` on S3-compatible storage (see
`datafusion_otel.store._fs`); the layout (one ``day=YYYY-MM-DD`` folder per table and UTC
day the row's run started, files named after their writer) is in
`datafusion_otel.store._layout`. Many writer processes, on many machines, may write one
store at once with no coordination: each writes its own immutable files.

Durability and the loss bound:

* ``record_events`` / ``record_artifact`` only append to an in-memory buffer under a lock
  (the sink is ``nonblocking``: it is called on the query's thread and does no I/O there).
* The sink's writer thread writes a table's buffered rows as new Parquet files of at most
  ``batch_rows`` rows each: when the table holds ``batch_rows`` rows, ``flush_interval``
  seconds after its oldest buffered row arrived, or at once for every table when the buffer
  is half full. `force_flush`, `close` and process exit (``atexit``, bounded by
  ``exit_timeout``) write everything buffered, in files of at most ``batch_rows`` rows.
* Every local file is written under a temporary name (``.<name>.parquet.tmp``), fsynced,
  then renamed with ``os.replace``; every S3 object with one PUT of the whole file: readers
  see a complete file or none. A crash (even SIGKILL) at any moment leaves a readable store;
  leftover ``.tmp`` files are ignored by readers and removed by the next sink opened on the
  folder once they are an hour old.
* A row goes to the day its run started: the run row by its ``start_time_unix_ms``, the
  other rows of a run by the start the sink saw in the run's ``datafusion_run_started_v1``
  artifact (else, for work attached from another process, the day the row is written).
* **Loss bound**: the sink holds at most ``max_buffer_rows`` rows and ``max_buffer_bytes``
  estimated bytes that are not yet in a renamed file (buffered rows plus the files being
  written) in each of two pools: the ``datafusion_runs_v1`` rows, and the rows of every other
  table and artifact. Run rows have a pool of their own because a run's row arrives last,
  after its operator-metric and plan rows, which must not starve it. A crash loses at most
  what the pools hold: **2 x ``max_buffer_rows`` rows over all tables** (and 2 x
  ``max_buffer_bytes`` estimated bytes), whatever the load. A row that would go over its
  pool's cap is dropped on arrival and counted in `ParquetSink.dropped_rows` (and
  `ParquetSink.overflow_rows`); the first drop is logged and the next `force_flush` returns
  False. A failed write (disk full, permissions, an unreachable S3 endpoint: a request gives
  up after ``$DATAFUSION_OTEL_S3_TIMEOUT`` seconds), a row not matching its table's schema
  and a row recorded after `close` are dropped the same way.
* `force_flush` and `close` wait at most their timeout, also when a write hangs (the write
  then goes on on a helper thread; the process can exit meanwhile).
"""

from __future__ import annotations

import atexit
import io
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

from datafusion_otel._exit import exit_remaining
from datafusion_otel._processing.delivery import FlushMark, describe_exception, dispatcher
from datafusion_otel._processing.run_metadata import snapshot_text
from datafusion_otel.attributes import RUN_STARTED_ARTIFACT, RUNS_TABLE
from datafusion_otel.store._buffer import Chunk, Key, PendingRows, estimate_bytes
from datafusion_otel.store._day_files import RunDays, rows_to_table, split_by_day
from datafusion_otel.store._fs import LocalFS, StoreFS, open_location, resolve_location
from datafusion_otel.store._layout import record_format

__all__ = ["ParquetSink"]

_LOG = logging.getLogger("datafusion_otel.store")
_STALE_TMP_SECONDS = 3600.0
_EXIT_TIMEOUT = 5.0
_BUFFER_BATCHES = 10
_MAX_BUFFER_BYTES = 64 * 1024 * 1024
_OVERFLOW_KEY: Key = ("buffer", "cap")
_RUNS_KEY: Key = ("table", RUNS_TABLE)
_live_sinks: weakref.WeakSet[ParquetSink] = weakref.WeakSet()


class ParquetSink:
    """Diagnostics sink writing every table and artifact to Parquet files under one folder.

    Args:
        path: Store folder (or a ``file://`` URI), or ``s3://bucket/prefix`` (needs the
            ``s3`` extra; settings from the ``AWS_*`` environment variables). Default:
            ``$DATAFUSION_OTEL_HOME``, else ``./.datafusion-otel``.
        batch_rows: Rows of one table that trigger a write; the most rows of one file.
        flush_interval: Seconds after which buffered rows are written anyway.
        fsync: Sync each file to disk before renaming it into place (survives power loss,
            not only process crashes).
        exit_timeout: Seconds the ``atexit`` flush may take at most.
        max_buffer_rows: Most rows held that are not yet in a file, per pool (run rows,
            and all other rows): a crash loses at most twice this. Default:
            ``10 * batch_rows``.
        max_buffer_bytes: Most estimated bytes held that are not yet in a file, per pool
            (64 MiB).

    Raises:
        ValueError: If ``batch_rows`` < 1, ``flush_interval`` <= 0, ``max_buffer_rows`` <
            ``batch_rows``, ``max_buffer_bytes`` < 1, or ``path`` is a URI whose scheme the
            store does not support (``gs://``, ...).

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
        max_buffer_rows: int | None = None,
        max_buffer_bytes: int = _MAX_BUFFER_BYTES,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval}")
        max_rows = _BUFFER_BATCHES * batch_rows if max_buffer_rows is None else max_buffer_rows
        if max_rows < batch_rows:
            raise ValueError(
                f"max_buffer_rows must be >= batch_rows ({batch_rows}), got {max_rows}"
            )
        if max_buffer_bytes < 1:
            raise ValueError(f"max_buffer_bytes must be >= 1, got {max_buffer_bytes}")
        location = resolve_location(path)
        self._fs: StoreFS = open_location(location, fsync=fsync)
        self.path: Path | str = location if isinstance(location, Path) else location.uri
        """The store: a local folder, or an ``s3://`` URI."""
        if isinstance(self._fs, LocalFS):
            self._fs.root.mkdir(parents=True, exist_ok=True)
        self.batch_rows = batch_rows
        self.max_buffer_rows = max_rows
        self.max_buffer_bytes = max_buffer_bytes
        self._fsync = fsync
        self.exit_timeout = exit_timeout
        self._cond = threading.Condition()
        self._io_lock = threading.Lock()
        self._pending = PendingRows(
            batch_rows=batch_rows, max_rows=max_rows, max_bytes=max_buffer_bytes,
            interval=flush_interval, reserved=frozenset({_RUNS_KEY}),
        )  # fmt: skip
        self._closed = False
        self._failures = 0
        self._failure_mark = 0
        self._overflow = 0
        self._logged: set[Key] = set()
        self._run_days = RunDays()
        self._format_written = False
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

    @property
    def dropped_rows(self) -> int:
        """Rows this sink accepted a call for but will never store, for any reason.

        Over the buffer cap (see `overflow_rows`), a failed write, a row not matching its
        table's schema, or a row recorded after `close` (a payload value JSON cannot hold is
        not dropped: it becomes null with a note).
        """
        with self._cond:
            return self._failures

    @property
    def overflow_rows(self) -> int:
        """Rows dropped on arrival because the buffer was full (a part of `dropped_rows`).

        Full means ``max_buffer_rows`` rows or ``max_buffer_bytes`` estimated bytes held in
        the row's pool (``datafusion_runs_v1`` rows, or the rows of every other table).
        """
        with self._cond:
            return self._overflow

    # -- DiagnosticsSink -------------------------------------------------------------------------
    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Buffer ``rows`` of the diagnostics table ``name`` (no I/O on this thread).

        Args:
            name: Table name, for example ``datafusion_runs_v1``.
            rows: Rows shaped like the table's schema.
        """
        copies = [dict(row) for row in rows]
        self._run_days.saw(name, copies)
        self._append(("table", name), [(row, estimate_bytes(row)) for row in copies])

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        """Buffer one artifact; it is stored as JSON under ``artifacts/artifact=<name>/``.

        The payload is serialized at once, so later changes to it are not stored; a value JSON
        cannot hold becomes null with a note
        (`datafusion_otel._processing.run_metadata.snapshot_text`).

        Args:
            name: Artifact name, for example ``datafusion_run_started_v1``.
            payload: JSON-serializable payload; its ``run_id`` (if any) gets its own column.
        """
        key: Key = ("artifact", name)
        text = snapshot_text(payload)  # never raises: a bad value is a note, the rest is kept
        run_id = payload.get("run_id")
        if name == RUN_STARTED_ARTIFACT:
            self._run_days.note(run_id, payload.get("start_time_unix_ms"))
        else:
            self._run_days.learn(run_id)
        row: dict[str, object] = {
            "event_time_unix_ms": time.time_ns() // 1_000_000,
            "run_id": run_id if isinstance(run_id, str) else None,
            "payload": text,
        }
        self._append(key, [(row, estimate_bytes(row))])

    # -- flushing --------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Write every buffered row now (in files of at most ``batch_rows`` rows).

        Args:
            timeout: Seconds to wait at most, also when a write hangs (an unreachable
                endpoint): the write then goes on on a helper thread.

        Returns:
            False if the rows could not all be written within ``timeout``, or if any row was
            dropped since the previous flush (see `dropped_rows`).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        done = threading.Event()

        def flush() -> None:
            if not self._io_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                return
            try:
                with self._cond:
                    chunks = self._pending.take(everything=True)
                self._write(chunks)
                done.set()
            finally:
                self._io_lock.release()

        try:
            helper = threading.Thread(target=flush, name="datafusion-otel-flush", daemon=True)
            helper.start()
        except RuntimeError:  # no new threads at interpreter shutdown: write on this one
            flush()
        else:
            helper.join(max(deadline - time.monotonic(), 0.0))
        if not done.is_set():
            return False
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
        with self._cond:
            unwritten = self._pending.held_rows
        if unwritten:
            self._log_once(
                ("close", "timeout"),
                f"closed after {limit:g} s with {unwritten} rows not written (they are lost)",
            )
        return flushed

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------
    def _append(self, key: Key, rows: list[tuple[dict[str, object], int]]) -> None:
        if not rows:
            return
        with self._cond:
            closed = self._closed
            taken, wake = (0, False) if closed else self._pending.add(key, rows)
            self._failures += len(rows) - taken
            if not closed:
                self._overflow += len(rows) - taken
            if wake:
                self._cond.notify_all()
        if closed:
            self._log_once(key, "received rows after close(); they are not stored")
        elif taken < len(rows):
            self._log_once(
                _OVERFLOW_KEY,
                f"dropped rows: its buffer holds {self.max_buffer_rows} rows or "
                f"{self.max_buffer_bytes} bytes not yet written in the row's pool (run rows "
                "or other rows; the loss bound is twice that); "
                "dropped rows are counted in dropped_rows",
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._pending.due(now):
                        break
                    deadline = self._pending.next_deadline()
                    self._cond.wait(None if deadline is None else max(deadline - now, 0.001))
                if self._closed:
                    return
            with self._io_lock:
                with self._cond:
                    chunks = self._pending.take(everything=False)
                self._write(chunks)

    def _write(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            try:
                for data_key, rows in split_by_day(chunk.key, chunk.rows, self._run_days):
                    self._write_rows(chunk.key, data_key, rows)
            finally:
                with self._cond:
                    self._pending.release(chunk)

    def _write_rows(self, key: Key, data_key: str, rows: list[dict[str, object]]) -> None:
        try:
            self._ensure_format()
            table, misfits = rows_to_table(key, rows)
            if misfits:
                with self._cond:
                    self._failures += misfits
                self._log_once(key, f"dropped {misfits} rows not matching the schema")
            self._write_file(table, data_key)
        except Exception as exc:  # a storage failure must never reach the observed program
            with self._cond:
                self._failures += len(rows)
            # the type and frames only: a conversion error's message can quote a row's value
            what = f"could not write {len(rows)} rows: {describe_exception(exc)}"
            self._log_once(key, what)

    def _ensure_format(self) -> None:
        """Record the store's format version, once per sink (concurrent writers agree)."""
        if not self._format_written:
            record_format(self._fs)
            self._format_written = True

    def _write_file(self, table: pa.Table, key: str) -> None:
        if table.num_rows == 0:
            return
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self._fs.put(key, buffer.getvalue())  # complete or absent, never partial
        self.files_written += 1
        self.rows_written += table.num_rows

    def _remove_stale_tmp(self) -> None:
        if not isinstance(self._fs, LocalFS):
            return  # an S3 object is complete or absent: nothing to clean up
        cutoff = time.time() - _STALE_TMP_SECONDS
        for tmp in self._fs.stale_tmp_files():
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                continue

    def _log_once(self, key: Key, what: str) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        where = "" if key == _OVERFLOW_KEY else f" for {key[0]} {key[1]}"
        _LOG.error(
            "ParquetSink(%s) %s%s (further errors of this kind are counted, not logged)",
            self.path,
            what,
            where,
        )


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - exercised in subprocess tests
    # rows still queued for a sink reach it first
    dispatcher.force_flush(exit_remaining(), mark=FlushMark())
    for sink in list(_live_sinks):
        sink.close(min(sink.exit_timeout, exit_remaining()))  # one exit budget for all
