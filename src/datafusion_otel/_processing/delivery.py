"""Delivery of rows and artifacts to sinks, never blocking or failing the caller.

Sinks that declare ``nonblocking = True`` are called on the caller's thread, always (so their
rows are there as soon as the call returns; a call of a user's sink slower than 50 ms is warned
about once per sink, the package's own sinks are not warned about); every other sink is called
from one background worker through a queue bounded in records (100,000) and in estimated bytes
(64 MiB by default, ``DATAFUSION_OTEL_QUEUE_BYTES``): a full queue drops the record and counts
it, so a blocked sink cannot make memory grow without bound. A sink that raises is logged once
per (sink, record name), with the exception's type and traceback frames but never its message
(it may quote row values), and counted.

Every sink delivered to that has a ``force_flush(timeout)`` method (``ParquetSink``) is kept
in a weak registry: `SinkDispatcher.flush_sinks` (called by `datafusion_otel.force_flush`)
flushes them all within one timeout, so their buffered rows reach storage too.

At interpreter exit the queue is flushed within what is left of the package's one exit budget
(`datafusion_otel._exit`). A forked child starts with an empty queue and no sink to flush: the
records queued and the sinks known at fork time are the parent's to deliver and flush.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datafusion_otel._exit import env_float, exit_remaining
from datafusion_otel.diagnostics import DiagnosticsSink

__all__ = [
    "DeliveryStats",
    "FlushMark",
    "SinkDispatcher",
    "describe_exception",
    "dispatcher",
]

_LOG = logging.getLogger("datafusion_otel.delivery")
_SLOW_INLINE_SECONDS = 0.05
_DEFAULT_EXIT_SECONDS = 5.0  # SinkDispatcher.shutdown's default
_DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
_ROW_OVERHEAD_BYTES = 64
_VALUE_OVERHEAD_BYTES = 16


def describe_exception(exc: BaseException) -> str:
    """Return ``exc``'s type and traceback frames, without its message (may quote values)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"{type(exc).__module__}.{type(exc).__qualname__} (message not logged)\n{frames}"


def _estimate(value: object) -> int:
    """A cheap, shallow estimate of the bytes a queued value holds."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + _VALUE_OVERHEAD_BYTES
    if isinstance(value, Mapping):
        total = _ROW_OVERHEAD_BYTES
        for item in value.values():
            if isinstance(item, (str, bytes, bytearray)):
                total += len(item) + _VALUE_OVERHEAD_BYTES
            elif isinstance(item, (Mapping, list, tuple)):
                total += _VALUE_OVERHEAD_BYTES * (len(item) + 1)
            else:
                total += _VALUE_OVERHEAD_BYTES
        return total
    return _VALUE_OVERHEAD_BYTES


_Task = Callable[[], None]


def _is_package_sink(sink: object) -> bool:
    """Whether ``sink``'s class is the package's own (``ParquetSink``, ``DiagnosticsCollector``).

    Their ``nonblocking`` is part of their design (a slow call is GIL or CPU contention, or a
    big batch): advising the user to remove it would be advice they cannot follow.
    """
    return type(sink).__module__.split(".", 1)[0] == "datafusion_otel"


@dataclass
class FlushMark:
    """What one flushing caller has been told: the lost-record count at its last flush."""

    lost: int = 0


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of sink deliveries since the process started.

    Attributes:
        delivered: Records a sink accepted.
        failed: Records whose sink raised.
        dropped: Records dropped because the worker queue was full (in records or in
            estimated bytes) or shut down.
        pending: Records waiting in the worker queue.
        pending_bytes: Estimated bytes of the records waiting in the worker queue.
    """

    delivered: int
    failed: int
    dropped: int
    pending: int
    pending_bytes: int = 0


class SinkDispatcher:
    """Calls sinks inline when they are non-blocking, otherwise on a worker thread.

    Args:
        max_queue: Records the worker queue holds at most.
        max_queue_bytes: Estimated bytes the worker queue holds at most (default:
            ``DATAFUSION_OTEL_QUEUE_BYTES`` or 64 MiB).
    """

    def __init__(self, *, max_queue: int = 100_000, max_queue_bytes: int | None = None) -> None:
        self._max_queue = max_queue
        self._max_bytes = (
            int(env_float("DATAFUSION_OTEL_QUEUE_BYTES", _DEFAULT_QUEUE_BYTES))
            if max_queue_bytes is None
            else max_queue_bytes
        )
        self._bytes = 0
        self._queue: deque[tuple[DiagnosticsSink, str, _Task, int]] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._busy = 0
        self._closed = False
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._default_mark = FlushMark()
        self._logged: set[tuple[int, str]] = set()
        self._warned_slow: set[int] = set()
        self._flushable: weakref.WeakSet[object] = weakref.WeakSet()

    # -- public ------------------------------------------------------------------------------
    def record_events(
        self, sink: DiagnosticsSink, name: str, rows: Sequence[Mapping[str, object]]
    ) -> None:
        """Deliver ``rows`` of table ``name`` to ``sink``; never raises."""
        rows = list(rows)
        size = sum(_estimate(row) for row in rows) if self._needs_size(sink) else 0
        self._submit(sink, name, lambda: sink.record_events(name, rows), size)

    def record_artifact(
        self, sink: DiagnosticsSink, name: str, payload: Mapping[str, object]
    ) -> None:
        """Deliver the artifact ``payload`` named ``name`` to ``sink``; never raises."""
        size = _estimate(payload) if self._needs_size(sink) else 0
        self._submit(sink, name, lambda: sink.record_artifact(name, payload), size)

    def stats(self) -> DeliveryStats:
        """Return the delivery counters."""
        with self._cond:
            return DeliveryStats(
                delivered=self._delivered,
                failed=self._failed,
                dropped=self._dropped,
                pending=len(self._queue) + self._busy,
                pending_bytes=self._bytes,
            )

    def new_mark(self) -> FlushMark:
        """Return a mark for a new flushing caller: losses before now are not its news."""
        with self._cond:
            return FlushMark(self._failed + self._dropped)

    def force_flush(self, timeout: float = 30.0, *, mark: FlushMark | None = None) -> bool:
        """Wait until queued records are delivered.

        Args:
            timeout: Seconds to wait at most.
            mark: The caller's own record of what it has already been told about; "since the
                previous flush" means since this caller's previous flush, so one caller's
                flush never hides a loss from another. Default: a mark shared by callers
                that pass none.

        Returns:
            False if records are still pending after ``timeout`` or if any record failed or
            was dropped since the previous flush; True otherwise.
        """
        mark = mark if mark is not None else self._default_mark
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            lost = self._failed + self._dropped
            clean = lost == mark.lost
            mark.lost = lost
            return clean

    def flush_sinks(self, timeout: float = 30.0) -> bool:
        """Call ``force_flush(timeout)`` of every sink delivered to that has one.

        The sinks are flushed in parallel, each on a daemon thread, so a stuck sink costs at
        most ``timeout`` seconds in total and does not hold up the others.

        Args:
            timeout: Seconds to wait at most, for all sinks together.

        Returns:
            False if a sink's ``force_flush`` returned False, raised, or had not returned
            within ``timeout``; True otherwise (also when there is no such sink).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            sinks = list(self._flushable)
        results: dict[int, bool] = {}

        def flush(sink: Any) -> None:
            try:
                remaining = max(deadline - time.monotonic(), 0.0)
                results[id(sink)] = sink.force_flush(remaining) is not False
            except Exception as exc:  # a sink's failure must never reach the caller
                results[id(sink)] = False
                self._log_once(sink, "force_flush", "raised " + describe_exception(exc))

        threads = [
            threading.Thread(target=flush, args=(sink,), name="datafusion-otel-flush", daemon=True)
            for sink in sinks
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return all(results.get(id(sink), False) for sink in sinks)

    def shutdown(self, timeout: float = _DEFAULT_EXIT_SECONDS) -> bool:
        """Flush within ``timeout`` seconds, then stop accepting work for the worker."""
        flushed = self.force_flush(timeout)
        with self._cond:
            self._closed = True
            self._dropped += len(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._cond.notify_all()
        return flushed

    def _forget_parent_work(self) -> None:
        """In a forked child: drop the parent's queued records and flushable sinks."""
        self._cond = threading.Condition()  # another thread may have held it at fork time
        self._queue.clear()
        self._bytes = 0
        self._busy = 0
        self._worker = None
        self._flushable = weakref.WeakSet()

    # -- internals ---------------------------------------------------------------------------
    @staticmethod
    def _needs_size(sink: DiagnosticsSink) -> bool:
        return not getattr(sink, "nonblocking", False)

    def _remember(self, sink: DiagnosticsSink) -> None:
        """Keep ``sink`` (weakly) for `flush_sinks` if it has a ``force_flush`` method."""
        try:
            if sink in self._flushable or not callable(getattr(sink, "force_flush", None)):
                return
            with self._cond:
                self._flushable.add(sink)
        except TypeError:  # not weakly referenceable or not hashable: not flushed
            return

    def _submit(self, sink: DiagnosticsSink, name: str, task: _Task, size: int) -> None:
        self._remember(sink)
        if getattr(sink, "nonblocking", False):
            # Always inline: a wall-clock test cannot tell a slow sink from a thread that waited
            # for the GIL or the CPU, and moving a sink to the worker would make its rows arrive
            # late, unannounced, for the rest of the process.
            started = time.monotonic()
            self._run(sink, name, task)
            if (
                time.monotonic() - started > _SLOW_INLINE_SECONDS
                and id(sink) not in self._warned_slow
                and not _is_package_sink(sink)
            ):
                self._warned_slow.add(id(sink))
                _LOG.warning(
                    "sink %r declares nonblocking = True but took over %.0f ms for %s; "
                    "remove nonblocking to have it called from the background worker",
                    sink,
                    _SLOW_INLINE_SECONDS * 1000,
                    name,
                )
            return
        with self._cond:
            if (
                self._closed
                or len(self._queue) >= self._max_queue
                or (self._queue and self._bytes + size > self._max_bytes)
            ):
                self._dropped += 1
                self._log_once(sink, name, "dropped: delivery queue full or shut down")
                return
            self._queue.append((sink, name, task, size))
            self._bytes += size
            self._ensure_worker()
            self._cond.notify_all()

    def _run(self, sink: DiagnosticsSink, name: str, task: _Task) -> None:
        try:
            task()
        except Exception as exc:  # a sink's failure must never reach the observed program
            with self._cond:
                self._failed += 1
            self._log_once(sink, name, "raised " + describe_exception(exc))
        else:
            with self._cond:
                self._delivered += 1

    def _log_once(self, sink: object, name: str, what: str) -> None:
        key = (id(sink), name)
        if key in self._logged:
            return
        self._logged.add(key)
        _LOG.error(
            "diagnostics sink %s for %s %s (further errors of this sink and table are counted, "
            "not logged)",
            type(sink).__name__,
            name,
            what,
        )

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(
                target=self._work, name="datafusion-otel-sinks", daemon=True
            )
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                sink, name, task, size = self._queue.popleft()
                self._bytes -= size
                self._busy += 1
            try:
                self._run(sink, name, task)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


dispatcher = SinkDispatcher()
"""The process-wide dispatcher used by runs and span processors."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=dispatcher._forget_parent_work)


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - exercised in subprocess tests
    dispatcher.force_flush(exit_remaining(), mark=FlushMark())
