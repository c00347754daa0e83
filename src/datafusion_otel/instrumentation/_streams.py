"""Streams whose execution span ends when the stream ends.

``execute_stream``, ``execute_stream_partitioned``, ``__iter__``, ``__aiter__``,
``SessionContext.execute`` and ``__arrow_c_stream__`` return before any work is done: the
work happens while the caller reads. Their span therefore ends when the stream is exhausted,
fails, is closed (`TracedRecordBatchStream.close`) or is garbage-collected, whichever comes
first; ``datafusion.stream.exhausted`` says whether it was read to the end. The partitions of
``execute_stream_partitioned`` share one span, which ends with the last of them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from datafusion.record_batch import RecordBatch, RecordBatchStream

from datafusion_otel import attributes as attr
from datafusion_otel._stream_latch import StreamLatch
from datafusion_otel.instrumentation._execution import Execution, internal_error

__all__ = ["StreamGroup", "TracedRecordBatchStream", "traced_batches"]


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
            execution, df, self._df = self._execution, self._df, None
            execution.capture(df, executed=outcome.error is None, error=outcome.error)
            execution.end(
                rows=self._rows,
                partitions=self._partitions,
                error=outcome.error,
                extra={attr.DATAFUSION_STREAM_EXHAUSTED: outcome.exhausted},
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
        self._finalizer = weakref.finalize(self, self._end.abandon)
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
        try:
            batch = super().__next__()
        except StopIteration:
            self._finish(exhausted=True)
            raise
        except BaseException as exc:
            self._finish(exhausted=False, error=exc)
            raise
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


def traced_batches(reader: Any, group: StreamGroup) -> Iterator[Any]:
    """Yield the batches of a ``pyarrow.RecordBatchReader``, ending the span with them.

    Used for ``__arrow_c_stream__``: closing or dropping the generator (the consumer released
    the stream) ends the span too.
    """
    end = _StreamEnd(group)
    try:
        for batch in reader:
            group.add_rows(batch.num_rows)
            yield batch
    except GeneratorExit:
        end.abandon()
        raise
    except BaseException as exc:
        end.finish(exhausted=False, error=exc)
        raise
    else:
        end.finish(exhausted=True)
    finally:
        end.abandon()  # no-op unless the loop ended without passing above
