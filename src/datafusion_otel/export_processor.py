"""`ExportSpanProcessor`: a batching span processor that counts what it delivers.

It does what the SDK's ``BatchSpanProcessor`` does (a bounded queue, one worker thread that
exports batches) and two things the SDK's does not:

* it counts, per exporter, spans queued, exported, dropped (queue full, or still queued when
  the shutdown deadline passed) and failed (the exporter reported failure or raised);
* `force_flush` and `shutdown` return within their timeout, and return False when a span was
  not delivered (the SDK's ``force_flush`` ignores its timeout and answers True after failed
  exports).

``on_end`` only appends to a deque under a lock: a dead, silent or slow backend costs the
query thread nothing. Only sampled spans are queued (RECORD_ONLY spans stay local).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from datafusion_otel._exit import bounded_at_exit

__all__ = ["ExportSpanProcessor", "ExporterStats"]

_LOG = logging.getLogger("datafusion_otel.export")


@dataclass(frozen=True)
class ExporterStats:
    """Counters of one exporter since it was configured.

    ``queued == exported + failed + pending + (spans dropped at shutdown)``; spans dropped
    because the queue was full were never queued.

    Attributes:
        queued: Spans accepted into the export queue.
        exported: Spans the exporter reported as delivered.
        dropped: Spans lost without an export attempt: queue full, or still queued when a
            shutdown deadline passed.
        failed: Spans in batches the exporter reported as failed (or raised on).
        pending: Spans waiting in the queue or in an export in flight.
    """

    queued: int
    exported: int
    dropped: int
    failed: int
    pending: int


class ExportSpanProcessor(SpanProcessor):
    """Batch sampled spans to ``exporter`` on a worker thread, counting every outcome.

    Args:
        exporter: The span exporter (for example the OTLP exporter).
        name: Name of this exporter in `delivery_stats`.
        max_queue_size: Spans buffered; when full, new spans are dropped and counted.
        max_export_batch_size: Spans per ``export`` call.
        schedule_delay: Seconds between exports when no batch is full.
        exit_timeout: Default timeout, in seconds, of `shutdown` (used at process exit).
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        name: str,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay: float = 1.0,
        exit_timeout: float = 3.0,
    ) -> None:
        self.exporter = exporter
        self.name = name
        self._max_queue = max_queue_size
        self._batch_size = max_export_batch_size
        self._delay = schedule_delay
        self._exit_timeout = exit_timeout
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._cond = threading.Condition()
        self._queued = 0
        self._exported = 0
        self._dropped = 0
        self._failed = 0
        self._in_flight = 0
        self._flush_requests = 0
        self._lost_mark = 0
        self._closed = False
        self._warned: set[str] = set()
        self._worker = threading.Thread(
            target=self._work, name=f"datafusion-otel-export-{name}", daemon=True
        )
        self._worker.start()

    # -- SpanProcessor -----------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Do nothing: spans are queued when they end."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` for export if it is sampled; never blocks, never raises."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        with self._cond:
            if self._closed or len(self._queue) >= self._max_queue:
                self._dropped += 1
                reason = "shut down" if self._closed else "queue full"
                self._warn_once(reason, "span dropped (%s); further drops are counted", reason)
                return
            self._queue.append(span)
            self._queued += 1
            if len(self._queue) >= self._batch_size:
                self._cond.notify_all()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every span queued so far, waiting at most ``timeout_millis``.

        Returns:
            False if spans are still pending at the deadline, or if any span was dropped or
            failed since the previous flush; True if everything was delivered.
        """
        return self._flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int | None = None) -> bool:  # type: ignore[override]
        """Flush within ``timeout_millis`` (default: the exit timeout), then stop.

        Spans still queued at the deadline are counted as dropped; an export in flight is
        abandoned to its own timeout on the daemon worker, so this never hangs. At interpreter
        exit the wait is also cut to what is left of the package's exit budget.

        Returns:
            False if anything was not delivered.
        """
        timeout = self._exit_timeout if timeout_millis is None else timeout_millis / 1000
        timeout = bounded_at_exit(timeout)
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            if self._closed:
                return self._clean()
            self._closed = True
        flushed = self._flush(max(deadline - time.monotonic(), 0.0))
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._dropped += left
            self._cond.notify_all()
        if left:
            _LOG.warning(
                "exporter %s: %d spans still queued at shutdown were dropped", self.name, left
            )
        closer = threading.Thread(target=self._shutdown_exporter, daemon=True)
        closer.start()
        closer.join(max(deadline - time.monotonic(), 0.0))
        return flushed and left == 0

    @property
    def exit_timeout(self) -> float:
        """Default timeout, in seconds, of `shutdown`."""
        return self._exit_timeout

    # -- stats -------------------------------------------------------------------------------
    def stats(self) -> ExporterStats:
        """Return this exporter's counters."""
        with self._cond:
            return ExporterStats(
                queued=self._queued,
                exported=self._exported,
                dropped=self._dropped,
                failed=self._failed,
                pending=len(self._queue) + self._in_flight,
            )

    # -- internals ---------------------------------------------------------------------------
    def _clean(self) -> bool:
        lost = self._dropped + self._failed
        clean = lost == self._lost_mark
        self._lost_mark = lost
        return clean

    def _flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            target = self._queued  # every span queued before this call must be settled
            self._flush_requests += 1
            self._cond.notify_all()
            try:
                while self._settled() < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._worker.is_alive():
                        return False
                    self._cond.wait(remaining)
            finally:
                self._flush_requests -= 1
            return self._clean()

    def _settled(self) -> int:
        return self._queued - len(self._queue) - self._in_flight

    def _shutdown_exporter(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:  # an exporter's failure never reaches the program
            _LOG.exception("exporter %s failed to shut down", self.name)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _LOG.warning("exporter %s: " + message, self.name, *args)

    def _next_batch(self) -> list[ReadableSpan] | None:
        """Wait for a batch to export; None when closed and drained."""
        with self._cond:
            deadline = time.monotonic() + self._delay
            while True:
                if self._queue and (
                    len(self._queue) >= self._batch_size
                    or self._flush_requests
                    or self._closed
                    or time.monotonic() >= deadline
                ):
                    count = min(len(self._queue), self._batch_size)
                    batch = [self._queue.popleft() for _ in range(count)]
                    self._in_flight = count
                    return batch
                if self._closed and not self._queue:
                    return None
                if not self._queue:
                    deadline = time.monotonic() + self._delay
                self._cond.wait(max(deadline - time.monotonic(), 0.001))

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                result = self.exporter.export(batch)
                ok = result is SpanExportResult.SUCCESS
            except Exception:  # an exporter's failure never reaches the program
                ok = False
                _LOG.exception("exporter %s raised while exporting", self.name)
            with self._cond:
                if ok:
                    self._exported += len(batch)
                else:
                    self._failed += len(batch)
                    self._warn_once(
                        "failed",
                        "export of %d spans failed; further failures are counted "
                        "(see delivery_stats())",
                        len(batch),
                    )
                self._in_flight = 0
                self._cond.notify_all()
