"""`CapturedDataFrame`: a DataFrame that captures its plan artifacts when it executes.

Capturing after execution is what lets the physical plan be the executed one and runtime
metrics come for free (no second run). The artifacts are captured once, at the first
execution, under the span current when that execution started (the run, or an execution
span): the execution hands its references to the capture worker
(`datafusion_otel._capture.schedule`), which does the work off the query's thread. Every executing
method captures: the ones that keep the executed plan with
runtime metrics, the others (``count``, ``show``, ``write_*``...) with the plan only and a note
saying why; streams capture when exhausted, failed, closed or garbage-collected (then on the
stream-ends thread, `datafusion_otel._capture.stream_latch.run_later`, never inside the collector).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
from datafusion import DataFrame, RecordBatchStream
from datafusion.record_batch import RecordBatch
from opentelemetry import trace

from datafusion_otel._capture.stream_latch import (
    StreamLatch,
    ensure_worker,
    partition_batches,
    run_later,
)

__all__ = ["CapturedDataFrame", "is_self_capturing"]

_LOG = logging.getLogger("datafusion_otel.bridge")
_T = TypeVar("_T")
Capture = Callable[
    ["CapturedDataFrame", bool, "BaseException | None", "str | None", trace.Span, "float | None"],
    None,
]
_PARTIAL = "the stream was not read to the end: runtime metrics are partial"


def is_self_capturing(df: object) -> bool:
    """Return True if ``df`` captures its own artifacts (so instrumentation must not)."""
    return isinstance(df, CapturedDataFrame)


def _plan_lost(method: str) -> str:
    return f"{method}() does not keep the executed plan: no runtime metrics"


class CapturedDataFrame(DataFrame):
    """A DataFrame returned by `sql_to_datafusion` when artifacts are to be captured.

    It behaves exactly like the DataFrame it wraps. Transformations (``filter``, ``select``...)
    return plain DataFrames: only the compiled query itself is captured.
    """

    def __init__(self, df: DataFrame, capture: Capture) -> None:
        super().__init__(df.df)
        self._capture_fn = capture
        self._claimed = False
        self._claim_lock = threading.Lock()
        self._started: float | None = None  # perf_counter() when its execution began

    def _claim(self) -> bool:
        """Return True exactly once: the caller captures."""
        with self._claim_lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def _capture_now(
        self, executed: bool, error: BaseException | None, note: str | None, span: trace.Span
    ) -> None:
        started = self._started
        duration_ms = None if started is None else (time.perf_counter() - started) * 1000
        try:
            self._capture_fn(self, executed, error, note, span, duration_ms)
        except Exception:  # capture must never break the query
            _LOG.exception("plan artifact capture failed")

    def capture_into(
        self,
        span: trace.Span,
        *,
        executed: bool,
        error: BaseException | None = None,
        note: str | None = None,
    ) -> None:
        """Capture now onto ``span`` unless already captured.

        The instrumentation calls this with its execution span.
        """
        if sys.is_finalizing():
            return
        if self._claim():
            self._capture_now(executed, error, note, span)

    def _run(
        self, call: Callable[[], _T], *, keeps_plan: bool = True, note: str | None = None
    ) -> _T:
        span = trace.get_current_span()  # the instrumentation may capture first, onto its span
        if not self._claimed:
            self._started = time.perf_counter()
        try:
            result = call()
        except BaseException as exc:
            self.capture_into(span, executed=False, error=exc, note=note)
            raise
        self.capture_into(span, executed=keeps_plan, note=note)
        return result

    # -- methods that keep the executed plan -------------------------------------------------
    def collect(self) -> list[pa.RecordBatch]:
        """Execute and collect all batches; captures artifacts after execution."""
        return self._run(super().collect)

    def collect_partitioned(self) -> list[list[pa.RecordBatch]]:
        """Execute and collect batches per partition; captures artifacts after execution."""
        return self._run(super().collect_partitioned)

    def to_arrow_table(self) -> pa.Table:
        """Execute into an Arrow table; captures artifacts after execution."""
        return self._run(super().to_arrow_table)

    def to_pandas(self) -> Any:
        """Execute into a pandas DataFrame; captures artifacts after execution."""
        return self._run(super().to_pandas)

    def to_polars(self) -> Any:
        """Execute into a polars DataFrame; captures artifacts after execution."""
        return self._run(super().to_polars)

    def to_pylist(self) -> list[dict[str, Any]]:
        """Execute into a list of rows; captures artifacts after execution."""
        return self._run(super().to_pylist)

    def to_pydict(self) -> dict[str, list[Any]]:
        """Execute into a dict of columns; captures artifacts after execution."""
        return self._run(super().to_pydict)

    def execute_stream(self) -> RecordBatchStream:
        """Stream batches; artifacts are captured when the stream ends (see module doc)."""
        if self._claimed:
            return super().execute_stream()
        self._started = time.perf_counter()
        group = _StreamGroup(self, trace.get_current_span(), 1)
        try:
            stream = super().execute_stream()
        except BaseException as exc:
            group.done(exc)
            raise
        return _CapturingStream(stream, group)

    def execute_stream_partitioned(self) -> list[RecordBatchStream]:
        """Stream each partition; artifacts are captured when every stream has ended."""
        if self._claimed:
            return super().execute_stream_partitioned()
        self._started = time.perf_counter()
        span = trace.get_current_span()
        try:
            streams = super().execute_stream_partitioned()
        except BaseException as exc:
            _StreamGroup(self, span, 1).done(exc)
            raise
        group = _StreamGroup(self, span, len(streams))
        if not streams:
            group.done()
        return [_CapturingStream(s, group) for s in streams]

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Export as an Arrow C stream, re-routed to keep metrics.

        The partitions of `execute_stream_partitioned` are read in order, lazily, as
        DataFusion's own ``__arrow_c_stream__`` reads them (same row order, same laziness).
        """
        if self._claimed or requested_schema is not None:
            return self._run(
                lambda: super(CapturedDataFrame, self).__arrow_c_stream__(requested_schema),
                keeps_plan=False,
                note=_plan_lost("__arrow_c_stream__ with a requested schema"),
            )
        schema = self.schema()
        batches = partition_batches(self.execute_stream_partitioned(), schema)
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        return reader.__arrow_c_stream__()

    # -- methods that lose the executed plan: artifacts without runtime metrics --------------
    def count(self) -> int:
        """Count rows; artifacts are captured without runtime metrics (plan not kept)."""
        return self._run(super().count, keeps_plan=False, note=_plan_lost("count"))

    def show(self, num: int = 20) -> None:
        """Print rows; artifacts are captured without runtime metrics (plan not kept)."""
        self._run(lambda: DataFrame.show(self, num), keeps_plan=False, note=_plan_lost("show"))

    def collect_column(self, *args: Any, **kwargs: Any) -> Any:
        """Collect one column; artifacts are captured without runtime metrics."""
        return self._run(
            lambda: DataFrame.collect_column(self, *args, **kwargs),
            keeps_plan=False,
            note=_plan_lost("collect_column"),
        )

    def cache(self) -> DataFrame:
        """Execute and cache; artifacts are captured without runtime metrics."""
        return self._run(super().cache, keeps_plan=False, note=_plan_lost("cache"))

    def describe(self) -> DataFrame:
        """Summary statistics; artifacts are captured without runtime metrics."""
        return self._run(super().describe, keeps_plan=False, note=_plan_lost("describe"))

    def write_csv(self, *args: Any, **kwargs: Any) -> None:
        """Write CSV; artifacts are captured without runtime metrics."""
        self._run(lambda: DataFrame.write_csv(self, *args, **kwargs), keeps_plan=False,
                  note=_plan_lost("write_csv"))  # fmt: skip

    def write_json(self, *args: Any, **kwargs: Any) -> None:
        """Write JSON; artifacts are captured without runtime metrics."""
        self._run(lambda: DataFrame.write_json(self, *args, **kwargs), keeps_plan=False,
                  note=_plan_lost("write_json"))  # fmt: skip

    def write_parquet(self, *args: Any, **kwargs: Any) -> None:
        """Write Parquet; artifacts are captured without runtime metrics."""
        self._run(lambda: DataFrame.write_parquet(self, *args, **kwargs), keeps_plan=False,
                  note=_plan_lost("write_parquet"))  # fmt: skip

    def write_parquet_with_options(self, *args: Any, **kwargs: Any) -> None:
        """Write Parquet with options; artifacts are captured without runtime metrics."""
        self._run(
            lambda: DataFrame.write_parquet_with_options(self, *args, **kwargs),
            keeps_plan=False,
            note=_plan_lost("write_parquet_with_options"),
        )

    def write_table(self, *args: Any, **kwargs: Any) -> None:
        """Insert into a table; artifacts are captured without runtime metrics."""
        self._run(lambda: DataFrame.write_table(self, *args, **kwargs), keeps_plan=False,
                  note=_plan_lost("write_table"))  # fmt: skip


class _StreamGroup:
    """The streams of one execution: the capture happens when the last one ends."""

    def __init__(self, owner: CapturedDataFrame, span: trace.Span, streams: int) -> None:
        self._owner = owner
        self._span = span
        self._latch = StreamLatch(streams)

    def done(self, error: BaseException | None = None, *, partial: bool = False) -> None:
        outcome = self._latch.count_down(exhausted=error is None and not partial, error=error)
        if outcome is None:
            return
        note = _PARTIAL if not outcome.exhausted and outcome.error is None else None
        self._owner.capture_into(
            self._span, executed=outcome.error is None, error=outcome.error, note=note
        )


class _CapturingStream(RecordBatchStream):
    """A stream that reports to its group when it ends.

    It wraps the stream DataFusion (or the instrumentation) returned; it ends when exhausted,
    failed, closed or garbage-collected.
    """

    def __init__(self, stream: RecordBatchStream, group: _StreamGroup) -> None:
        super().__init__(stream.rbs)
        self._inner = stream  # keep it: an instrumented stream ends its span when collected
        self._group: _StreamGroup | None = group
        ensure_worker()

    def _end(self, error: BaseException | None = None, *, partial: bool = False) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.done(error, partial=partial)

    def next(self) -> RecordBatch:
        """Return the next batch; captures artifacts at the end."""
        return self.__next__()

    def __next__(self) -> RecordBatch:
        try:
            return self._inner.__next__()
        except StopIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise

    def __iter__(self) -> _CapturingStream:
        return self

    async def __anext__(self) -> RecordBatch:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise

    def __aiter__(self) -> _CapturingStream:
        return self

    def close(self) -> None:
        """Stop reading: the artifacts are captured with the metrics measured so far."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
        self._end(partial=True)

    def __del__(self) -> None:
        if sys.is_finalizing():  # nothing can be captured while the interpreter shuts down
            return
        group, self._group = self._group, None
        if group is not None:  # captured on the stream-ends thread, never inside the GC
            run_later(functools.partial(group.done, None, partial=True))
