"""Streams whose execution span ends when the stream ends.

``execute_stream``, ``execute_stream_partitioned``, ``__iter__``, ``__aiter__``,
``SessionContext.execute`` and ``__arrow_c_stream__`` return before any work is done: the
work happens while the caller reads. Their span therefore ends when the stream is exhausted,
fails, is closed (`TracedRecordBatchStream.close`) or is garbage-collected, whichever comes
first, on the thread where that happens; ``datafusion.stream.exhausted`` says whether it was
read to the end. The partitions of ``execute_stream_partitioned`` share one span, which ends
with the last of them. While a batch is read (``next``), the execution span is current on the
reading thread, as it is during the call that created the stream.

``__arrow_c_stream__`` with artifact capture reads ``execute_stream_partitioned()`` partition
after partition, lazily, as DataFusion's own implementation does (same order, same laziness),
because that path keeps the executed plan and its metrics and DataFusion's does not.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from datafusion.record_batch import RecordBatch, RecordBatchStream
from opentelemetry import context as otel_context

from datafusion_otel import attributes as attr
from datafusion_otel._capture.stream_latch import (
    StreamLatch,
    ensure_worker,
    partition_batches,
    run_later,
)
from datafusion_otel.bridge import is_self_capturing
from datafusion_otel.instrumentation._execution import Execution, internal_error
from datafusion_otel.instrumentation._execution import call_in as call_in_context

__all__ = [
    "StreamGroup",
    "TracedRecordBatchStream",
    "arrow_c_stream",
    "traced_batches",
    "traced_streams",
]


class StreamGroup:
    """The state shared by the streams of one execution (one span for all of them).

    Args:
        execution: The execution whose span the streams end.
        streams: How many streams must finish before the span ends.
        df: The executed DataFrame, for artifact capture (None for ``SessionContext.execute``).
        partitions: ``datafusion.partition_count`` to record, when known.
    """

    def __init__(
        self,
        execution: Execution,
        streams: int,
        df: Any = None,
        partitions: int | None = None,
    ) -> None:
        self._execution = execution
        self.context = execution.context
        """The caller's context with the execution span current (attached while reading)."""
        self._latch = StreamLatch(streams)
        self._df = df
        self._partitions = partitions
        self._rows = 0
        self._lock = threading.Lock()  # guards the row count

    def add_rows(self, rows: int) -> None:
        """Count rows handed to the caller."""
        with self._lock:
            self._rows += rows

    def stream_done(self, *, exhausted: bool, error: BaseException | None = None) -> None:
        """Record that one stream ended; end the span after the last one. Never raises."""
        try:
            outcome = self._latch.count_down(exhausted=exhausted, error=error)
            if outcome is None:
                return
            end_ns = time.time_ns()  # artifacts are captured first; the span ends now
            execution, df, self._df = self._execution, self._df, None
            execution.conclude(
                df,
                executed=outcome.error is None,
                error=outcome.error,
                rows=self._rows,
                partitions=self._partitions,
                extra={attr.DATAFUSION_STREAM_EXHAUSTED: outcome.exhausted},
                end_ns=end_ns,
            )
        except Exception:
            internal_error("ending a stream span")


class _StreamEnd:
    """Ends one stream once; the GC finalizer holds this, never the stream itself."""

    __slots__ = ("done", "group")

    def __init__(self, group: StreamGroup) -> None:
        self.group = group
        self.done = False

    def finish(self, *, exhausted: bool, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.group.stream_done(exhausted=exhausted, error=error)

    def abandon(self) -> None:
        self.finish(exhausted=False)


class TracedRecordBatchStream(RecordBatchStream):
    """A ``RecordBatchStream`` that ends its execution span when it ends.

    It is a ``datafusion.RecordBatchStream`` (``isinstance`` checks hold) reading the same
    underlying stream, with one addition: `close`.
    """

    def __init__(self, inner: RecordBatchStream, group: StreamGroup) -> None:
        super().__init__(inner.rbs)
        self._end = _StreamEnd(group)
        ensure_worker()
        self._finalizer = weakref.finalize(self, run_later, self._end.abandon)
        self._finalizer.atexit = False

    def _count(self, batch: RecordBatch) -> None:
        try:
            self._end.group.add_rows(batch.to_pyarrow().num_rows)
        except Exception:
            internal_error("counting stream rows")

    def _finish(self, *, exhausted: bool, error: BaseException | None = None) -> None:
        self._finalizer.detach()
        self._end.finish(exhausted=exhausted, error=error)

    def __next__(self) -> RecordBatch:
        """Return the next batch; the span ends at the end of the stream or on an error."""
        token = otel_context.attach(self._end.group.context)
        try:
            batch = super().__next__()
        except StopIteration:
            otel_context.detach(token)
            self._finish(exhausted=True)
            raise
        except BaseException as exc:
            otel_context.detach(token)
            self._finish(exhausted=False, error=exc)
            raise
        otel_context.detach(token)
        self._count(batch)
        return batch

    async def __anext__(self) -> RecordBatch:
        """Return the next batch asynchronously; the span ends as for `__next__`."""
        try:
            batch = await super().__anext__()
        except StopAsyncIteration:
            self._finish(exhausted=True)
            raise
        except BaseException as exc:
            self._finish(exhausted=False, error=exc)
            raise
        self._count(batch)
        return batch

    def close(self) -> None:
        """Stop reading: end the span now (``datafusion.stream.exhausted`` = False)."""
        self._finish(exhausted=False)


def traced_batches(reader: Iterable[Any], group: StreamGroup) -> Iterator[Any]:
    """Yield the batches of ``reader`` (``pyarrow`` batches), ending the span with them.

    Used for ``__arrow_c_stream__``: each batch is read with the execution span current;
    dropping the iterator (the consumer released the stream) ends the span too, from the
    stream-ends thread (`datafusion_otel._capture.stream_latch.run_later`), even when it was never
    read (a generator that never started runs no ``except``: a finalizer covers that case).
    """
    end = _StreamEnd(group)
    batches = _traced_batches(iter(reader), group, end)
    ensure_worker()
    weakref.finalize(batches, run_later, end.abandon).atexit = False
    return batches


def _traced_batches(batches: Iterator[Any], group: StreamGroup, end: _StreamEnd) -> Iterator[Any]:
    attach = otel_context.attach
    detach = otel_context.detach
    try:
        while True:
            token = attach(group.context)  # never across a yield: the consumer's context
            try:
                batch = next(batches, None)
            finally:
                detach(token)
            if batch is None:
                break
            group.add_rows(batch.num_rows)
            yield batch
    except GeneratorExit:  # dropped, maybe by the garbage collector: not here (see run_later)
        run_later(end.abandon)
        raise
    except BaseException as exc:
        end.finish(exhausted=False, error=exc)
        raise
    else:
        end.finish(exhausted=True)


class _CapsuleHolder:
    """Hands an already exported Arrow C stream capsule to ``pa.RecordBatchReader.from_stream``."""

    def __init__(self, capsule: object) -> None:
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._capsule


def traced_streams(execution: Execution, df: Any, result: Any, *, streams: bool) -> Any:
    """Wrap the stream(s) ``execute_stream(_partitioned)`` returned so that they end the span."""
    try:
        if streams:
            group = StreamGroup(execution, len(result), df, partitions=len(result))
            if not result:  # no partition: nothing will end the span but this
                group.stream_done(exhausted=True)
            return [TracedRecordBatchStream(s, group) for s in result]
        partitions = None
        try:
            partitions = df.execution_plan().partition_count
        except Exception:
            internal_error("reading the partition count of a stream")
        return TracedRecordBatchStream(result, StreamGroup(execution, 1, df, partitions))
    except Exception:
        internal_error("tracing a stream")
        execution.end()
        return result


def arrow_c_stream(
    execution: Execution,
    original: Any,
    df: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    capture: bool,
) -> object:
    """Export ``df`` as an Arrow C stream whose span ends when the consumer is done with it.

    Like DataFusion's own ``__arrow_c_stream__``, the partition streams are created now and
    read in partition order, lazily, as the consumer asks for batches.
    """
    requested = args[0] if args else kwargs.get("requested_schema")
    if requested is None and (capture or is_self_capturing(df)):
        token = otel_context.attach(execution.context)
        try:
            streams = df.execute_stream_partitioned()  # keeps the executed plan: metrics
            schema = df.schema()
        except BaseException as exc:
            otel_context.detach(token)
            execution.conclude(df, executed=False, error=exc)
            raise
        otel_context.detach(token)
        try:
            group = StreamGroup(execution, 1, df, partitions=len(streams))
            batches = traced_batches(partition_batches(streams, schema), group)
            return pa.RecordBatchReader.from_batches(schema, batches).__arrow_c_stream__()
        except Exception:
            internal_error("tracing an Arrow C stream")
            execution.end()
            return df.__arrow_c_stream__()  # passes straight through: we are inside
    capsule = call_in_context(execution, original, df, args, kwargs)
    try:
        inner = pa.RecordBatchReader.from_stream(_CapsuleHolder(capsule))
        group = StreamGroup(execution, 1, df if capture or is_self_capturing(df) else None)
        reader = pa.RecordBatchReader.from_batches(inner.schema, traced_batches(inner, group))
        return reader.__arrow_c_stream__()
    except Exception:
        internal_error("tracing an Arrow C stream")
        execution.end()
        return capsule
