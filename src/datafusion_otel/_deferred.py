"""Spans recorded on the query path and created off it, in batches.

Creating an OpenTelemetry SDK span right after a DataFusion query is far slower than in a
tight loop: the query has evicted the SDK's code and data from the CPU caches, so a span that
costs ~40 us warm costs 0.2-0.4 ms there (measured on TPC-H, see
``benchmarks/bench_instrumentation.py``). So span-only executions only *record* what their
span will be (the query's cached name data, or the DataFrame while it has no name yet, the
caller's context, start and end time, the returned rows and partitions) and append the record
to a bounded queue; a daemon thread creates the real spans with their recorded
timestamps, a batch at a time, shortly after (`INTERVAL_S`), while the cache is warm for the
SDK and mostly while the next query runs with the GIL released.

Nothing is lost silently:

* `flush` creates every pending span on the caller's thread; `datafusion_otel.force_flush`,
  ``TracerProvider.force_flush`` (through `FlushHook`), ``uninstrument()`` and interpreter
  exit (an ``atexit`` hook that runs before the SDK's own shutdown hook) call it;
* a full queue (`CAPACITY` records) drops the new record, counts it in `dropped` and warns
  once; a record whose span could not be created is counted in `failed`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

__all__ = ["CAPACITY", "INTERVAL_S", "FlushHook", "Pending", "flush", "hook", "queue"]

_LOG = logging.getLogger("datafusion_otel.instrumentation")

CAPACITY = 65_536
"""Most records waiting for their span; more are dropped (and counted)."""

INTERVAL_S = 0.1
"""How long a record waits at most before the worker creates its span."""


class Pending(Protocol):
    """A recorded span that can be created later."""

    def materialize(self) -> None:
        """Create (and end) the span, with the recorded timestamps."""


class DeferredSpans:
    """The queue of recorded spans and the worker that creates them."""

    def __init__(self, capacity: int = CAPACITY, interval_s: float = INTERVAL_S) -> None:
        self._capacity = capacity
        self._interval_s = interval_s
        self._queue: deque[Pending] = deque()
        self._work_lock = threading.Lock()  # one materializer at a time (worker or flush)
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self.dropped = 0
        """Records dropped because the queue was full."""
        self.failed = 0
        """Records whose span could not be created."""
        self.late = 0
        """Spans created during a provider's shutdown (exporters may have missed them)."""
        self.created = 0
        """Records materialized (spans created, or failed)."""
        self.cpu_ns = 0
        """CPU time spent materializing them (thread CPU clock, any thread), in ns."""

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, record: Pending) -> None:
        """Queue ``record``; never blocks, never raises."""
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                _LOG.warning(
                    "datafusion-otel: %d spans are waiting to be created; dropping new ones "
                    "(counted in DataFusionInstrumentor.dropped_spans)",
                    self._capacity,
                )
            return
        self._queue.append(record)
        if self._thread is None:
            self._start()

    def flush(self) -> int:
        """Create every pending span now, on this thread; return how many were created."""
        return self._drain(yield_gil=False)

    def _drain(self, *, yield_gil: bool) -> int:
        done = 0
        with self._work_lock:
            while True:
                try:
                    record = self._queue.popleft()
                except IndexError:
                    return done
                started = time.thread_time_ns()
                try:
                    record.materialize()
                except Exception:
                    self.failed += 1
                    _LOG.debug("could not create a deferred span", exc_info=True)
                del record  # its last references go here, inside the measured time
                self.cpu_ns += time.thread_time_ns() - started
                self.created += 1
                done += 1
                if yield_gil:
                    time.sleep(0)  # let a thread that waits for the GIL (a query) go first

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="datafusion-otel-spans", daemon=True)
            thread.start()
            self._thread = thread
            run_before_provider_shutdown()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            self._drain(yield_gil=True)

    def _after_fork(self) -> None:
        self._thread = None  # threads do not survive fork(); start again on the next record
        self._queue.clear()  # the parent creates these spans; the child must not repeat them
        self._work_lock = threading.Lock()
        self._start_lock = threading.Lock()


queue = DeferredSpans()
"""The process-wide queue of recorded spans."""


def flush() -> int:
    """Create every pending span now; return how many were created."""
    return queue.flush()


def _flush_at_exit() -> None:
    queue.flush()  # never raises: a span that cannot be created is counted


def run_before_provider_shutdown() -> None:
    """(Re-)register the exit hook so that it runs before every provider's own exit hook.

    ``atexit`` runs hooks in reverse order of registration and an SDK ``TracerProvider``
    registers its shutdown when it is created, so the hook is registered again whenever a
    new provider is first used.
    """
    atexit.unregister(_flush_at_exit)
    atexit.register(_flush_at_exit)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=queue._after_fork)


class FlushHook(SpanProcessor):
    """Makes ``TracerProvider.force_flush`` and ``shutdown`` include the pending spans.

    Added once to every provider that receives deferred spans. The SDK flushes processors
    in the order they were added; when this hook comes after the exporters, the spans it
    creates are flushed by flushing the provider once more.

    Args:
        provider: The provider the hook is added to.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._local = threading.local()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Do nothing."""

    def on_end(self, span: ReadableSpan) -> None:
        """Do nothing."""

    def shutdown(self) -> None:
        """Create the pending spans; count them as lost (processors shut down before miss them).

        The SDK shuts processors down in the order they were added, so exporters added before
        this hook are closed already. Spans created here are counted in `DeferredSpans.late`
        and warned about; flush the provider before shutting it down to avoid this.
        """
        created = queue.flush()
        if created:
            queue.late += created
            _LOG.warning(
                "datafusion-otel: %d execution spans were created during "
                "TracerProvider.shutdown(); exporters shut down before may have missed them "
                "(call provider.force_flush() before provider.shutdown())",
                created,
            )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Create the pending spans, then flush the provider again if there were any."""
        if getattr(self._local, "busy", False):
            return True
        if queue.flush() == 0:
            return True
        self._local.busy = True
        try:
            return bool(self._provider.force_flush(timeout_millis))
        finally:
            self._local.busy = False


_hooked: weakref.WeakKeyDictionary[TracerProvider, FlushHook] = weakref.WeakKeyDictionary()
_hook_lock = threading.Lock()


def hook(provider: TracerProvider) -> None:
    """Add a `FlushHook` to ``provider`` (once) and keep the exit hook ahead of its own."""
    with _hook_lock:
        if provider in _hooked:
            return
        flush_hook = FlushHook(provider)
        provider.add_span_processor(flush_hook)
        _hooked[provider] = flush_hook
        run_before_provider_shutdown()
