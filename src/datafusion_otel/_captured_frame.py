"""`CapturedDataFrame`: a DataFrame that captures its plan artifacts when it executes.

Capturing after execution is what lets the physical plan be the executed one and runtime
metrics come for free (no second run). The artifacts are captured once, at the first
execution, and attached to the span current at that moment (the run, or an execution span).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
from datafusion import DataFrame, RecordBatchStream
from datafusion.record_batch import RecordBatch

__all__ = ["CapturedDataFrame", "is_self_capturing"]

_LOG = logging.getLogger("datafusion_otel.bridge")
_T = TypeVar("_T")
Capture = Callable[["CapturedDataFrame", bool, "BaseException | None", str | None], None]


def is_self_capturing(df: object) -> bool:
    """Return True if ``df`` captures its own artifacts (so instrumentation must not)."""
    return isinstance(df, CapturedDataFrame)


class CapturedDataFrame(DataFrame):
    """A DataFrame returned by `sql_to_datafusion` when artifacts are to be captured.

    It behaves exactly like the DataFrame it wraps. Transformations (``filter``, ``select``...)
    return plain DataFrames: only the compiled query itself is captured.
    """

    def __init__(self, df: DataFrame, capture: Capture) -> None:
        super().__init__(df.df)
        self._capture_fn = capture
        self._captured = False

    def _capture(self, executed: bool, error: BaseException | None, note: str | None) -> None:
        if self._captured:
            return
        self._captured = True
        try:
            self._capture_fn(self, executed, error, note)
        except Exception:  # capture must never break the query
            _LOG.exception("plan artifact capture failed")

    def _run(
        self, call: Callable[[], _T], *, keeps_plan: bool = True, note: str | None = None
    ) -> _T:
        if self._captured:
            return call()
        try:
            result = call()
        except BaseException as exc:
            self._capture(False, exc, note)
            raise
        self._capture(keeps_plan, None, note)
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
        """Stream batches; artifacts are captured when the stream is exhausted."""
        if self._captured:
            return super().execute_stream()
        try:
            stream = super().execute_stream()
        except BaseException as exc:
            self._capture(False, exc, None)
            raise
        return _CapturingStream(stream, self)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Export as an Arrow C stream, re-routed through `execute_stream` to keep metrics."""
        if self._captured or requested_schema is not None:
            return super().__arrow_c_stream__(requested_schema)
        schema = self.schema()
        batches = (batch.to_pyarrow() for batch in self.execute_stream())
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        return reader.__arrow_c_stream__()

    # -- methods that lose the executed plan: artifacts without runtime metrics --------------
    def count(self) -> int:
        """Count rows; artifacts are captured without runtime metrics (plan not kept)."""
        return self._run(super().count, keeps_plan=False, note="count() does not keep the plan")

    def show(self, num: int = 20) -> None:
        """Print rows; artifacts are captured without runtime metrics (plan not kept)."""
        self._run(lambda: super(CapturedDataFrame, self).show(num), keeps_plan=False,
                  note="show() does not keep the plan")  # fmt: skip


class _CapturingStream(RecordBatchStream):
    """A RecordBatchStream that captures its DataFrame's artifacts when exhausted."""

    def __init__(self, stream: RecordBatchStream, owner: CapturedDataFrame) -> None:
        super().__init__(stream.rbs)
        self._owner = owner

    def _done(self) -> None:
        self._owner._capture(True, None, None)

    def next(self) -> RecordBatch:
        """Return the next batch; captures artifacts at the end."""
        return self.__next__()

    def __next__(self) -> RecordBatch:
        try:
            return super().__next__()
        except StopIteration:
            self._done()
            raise

    def __iter__(self) -> _CapturingStream:
        return self

    async def __anext__(self) -> RecordBatch:
        try:
            return await super().__anext__()
        except StopAsyncIteration:
            self._done()
            raise

    def __aiter__(self) -> _CapturingStream:
        return self
