"""Counting down the streams of one execution to the moment the last one ends.

Shared by the plan-artifact bridge (which captures artifacts when the last stream ends) and the
auto-instrumentation (which ends the execution span then): streams end in any order, on any
thread, by exhaustion, an error, ``close()`` or garbage collection. Both also read
``__arrow_c_stream__`` the way DataFusion does, partition after partition (`partition_batches`).

A stream that is garbage-collected must not end its span (or capture artifacts) inside the
finalizer: the collector runs finalizers on whatever thread allocates, at any point, also
inside a span processor that holds a lock (ending a span there calls that processor again:
a deadlock, seen with DataFusion's own test suite). So finalizers only `run_later` the work:
a reentrant-safe ``queue.SimpleQueue.put``; a daemon thread (``datafusion-otel-stream-ends``,
started with the first traced stream, idle otherwise) runs it, and `run_pending` runs what is
left on the caller's thread (``datafusion_otel.force_flush()`` and ``uninstrument()`` call it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = [
    "StreamLatch",
    "StreamOutcome",
    "ensure_worker",
    "partition_batches",
    "run_later",
    "run_pending",
]

_LOG = logging.getLogger("datafusion_otel.instrumentation")
_later: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
_run_lock = threading.Lock()
_start_lock = threading.Lock()
_worker: threading.Thread | None = None


def run_later(action: Callable[[], object]) -> None:
    """Queue ``action`` from a garbage-collection finalizer (safe there: no lock taken)."""
    _later.put(action)


def _run(action: Callable[[], object]) -> None:
    with _run_lock:
        try:
            action()
        except Exception:
            _LOG.debug("ending a garbage-collected stream failed", exc_info=True)


def run_pending() -> int:
    """Run every queued action now, on this thread (after any one in progress); return how many."""
    done = 0
    while True:
        try:
            action = _later.get_nowait()
        except queue.Empty:
            with _run_lock:  # wait for an action the worker may be running
                return done
        _run(action)
        done += 1


def _work() -> None:
    while True:
        _run(_later.get())


def ensure_worker() -> None:
    """Start the thread that runs queued actions, once per process (call outside finalizers)."""
    global _worker  # noqa: PLW0603 - one worker per process
    worker = _worker
    if worker is not None and worker.is_alive():
        return
    with _start_lock:
        if _worker is None or not _worker.is_alive():  # not started, or lost in a fork
            _worker = threading.Thread(
                target=_work, name="datafusion-otel-stream-ends", daemon=True
            )
            _worker.start()


@dataclass(frozen=True)
class StreamOutcome:
    """How the streams of one execution ended, reported once, by the last one.

    Attributes:
        exhausted: Every stream was read to its end.
        error: The first error a stream ended with, if any.
    """

    exhausted: bool
    error: BaseException | None


class StreamLatch:
    """Counts ``streams`` stream ends down to zero; thread-safe.

    Args:
        streams: How many streams must end (0: the first `count_down` reports at once).
    """

    __slots__ = ("_error", "_exhausted", "_lock", "_open", "_reported")

    def __init__(self, streams: int) -> None:
        self._open = streams
        self._exhausted = True
        self._error: BaseException | None = None
        self._reported = False
        self._lock = threading.Lock()

    def count_down(
        self, *, exhausted: bool, error: BaseException | None = None
    ) -> StreamOutcome | None:
        """Record that one stream ended.

        Args:
            exhausted: The stream was read to its end.
            error: The exception it ended with, if any.

        Returns:
            The outcome of all streams when this was the last one to end (exactly once),
            else None.
        """
        with self._lock:
            self._open -= 1
            self._exhausted = self._exhausted and exhausted
            if error is not None and self._error is None:
                self._error = error
            if self._open > 0 or self._reported:
                return None
            self._reported = True
            return StreamOutcome(self._exhausted, self._error)


def partition_batches(streams: Iterable[Iterable[Any]], schema: pa.Schema) -> Iterator[Any]:
    """Yield the batches of ``streams`` as ``pyarrow`` batches, partition after partition.

    DataFusion's ``__arrow_c_stream__`` does the same (``PartitionedDataFrameStreamReader``):
    the first partition to its end, then the next; nothing is read before it is asked for.
    A batch whose schema differs from ``schema`` only in field metadata or nullability is
    relabelled with ``schema``, as DataFusion's reader declares ``schema`` for every batch.
    """
    for stream in streams:
        for batch in stream:
            table = batch.to_pyarrow()
            if not table.schema.equals(schema):
                table = pa.RecordBatch.from_arrays(table.columns, schema=schema)
            yield table
