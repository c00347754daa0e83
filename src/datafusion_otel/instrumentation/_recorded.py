"""The query path of span-only executions that return a value (``collect``, ``to_pandas``...).

On the query path such a call does as little as possible, because every line there runs
right after (or right before) a DataFusion query, with the CPU caches cold: it reads the
context once, times the original call, counts the result's rows and partitions and appends
one `Recorded` tuple to the deferred queue (`datafusion_otel._deferred`). Everything else
(naming the query, run placement, the span and its attributes) happens when the record is
materialized, off the query path.

The record keeps the query's `QueryInfo`, not the DataFrame: dropping an executed DataFrame
frees its physical plan (0.1-0.2 ms on TPC-H), and that stays where it is without
instrumentation, on the user's thread, when the user drops it. Only a DataFrame built with
the DataFrame API and not named yet is kept until its span is created (its name comes from
its logical plan).

A call that fails creates its span at once (its exception event needs the live exception).
Calls with artifact capture, and DataFrames that are not plain ``datafusion.DataFrame``
objects (those compiled by ``datafusion_otel.bridge`` capture themselves), take the general
path in `datafusion_otel.instrumentation._wrappers`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from datafusion import DataFrame
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.context import Context

from datafusion_otel import _deferred
from datafusion_otel.instrumentation._execution import INSIDE, Tracing, internal_error
from datafusion_otel.instrumentation._query import INFO_ATTR, info_for, summary_for
from datafusion_otel.runs import RUN_STACK, current_run

__all__ = ["SUPPRESS_KEY_PLAIN", "Recorded", "partition_count", "record_failure", "value_wrapper"]

SUPPRESS_KEY_PLAIN = "suppress_instrumentation"
"""The second key `opentelemetry.instrumentation.utils.suppress_instrumentation` sets."""

SlowPath = Callable[[Any, tuple[Any, ...], dict[str, Any], Context], Any]
"""``(self, args, kwargs, parent) -> result``: the general path of one method."""


def partition_count(df: Any) -> int:
    """``df.execution_plan().partition_count`` without the Python wrapper objects."""
    raw = getattr(df, "df", None)  # the Rust DataFrame inside ``datafusion.DataFrame``
    if raw is not None:
        return int(raw.execution_plan().partition_count)
    return int(df.execution_plan().partition_count)


class Recorded(tuple):  # type: ignore[type-arg]
    """One successful span-only execution, as recorded on the query path.

    The fields, in order: the `Tracing`, the provider and tracer of the call, the method
    name, the query's `QueryInfo` (None when the DataFrame has none yet), the DataFrame when
    it must be named from its plan (else None), the caller's context, whether a run was
    current at the call, start and end time (ns), the returned rows and the partition count
    (None when unknown). A tuple, because building one is the cheapest record Python has.
    """

    __slots__ = ()

    def materialize(self) -> None:
        """Create and end the execution span with the recorded times; may raise."""
        (tracing, current, method, info, df, parent, in_run, start, end, rows, parts) = self
        if df is not None:
            info = info_for(df)
        summary = summary_for(df, info)
        execution = tracing.execution(
            current, method, summary, info, parent, in_run, defer=True, start_ns=start
        )
        execution.end_recorded(end, rows, parts)


def record_failure(
    tracing: Tracing,
    method: str,
    df: Any,
    parent: Context,
    start_ns: int,
    error: BaseException,
) -> None:
    """Create the span of a failed call now (with its exception event); never raises."""
    try:
        info = info_for(df)
        summary = summary_for(df, info)
    except Exception:
        internal_error(f"naming {method}")
        return
    execution = tracing.begin(method, summary, info, parent, defer=False, start_ns=start_ns)
    if execution is not None:
        execution.end(error=error)


def value_wrapper(
    method: str,
    original: Callable[..., Any],
    tracing: Tracing,
    *,
    rows: Callable[[Any], int] | None,
    partitioned: bool,
    keeps_plan: bool,
    nests: bool,
    slow: SlowPath,
) -> Callable[..., Any]:
    """Return the replacement of a ``DataFrame`` method that executes and returns a value.

    Args:
        method: ``"DataFrame.collect"``...
        original: The original function.
        tracing: Options and tracer of the active instrumentation.
        rows: Returns ``db.response.returned_rows`` from the result, if it tells.
        partitioned: The result is a list with one item per partition.
        keeps_plan: The DataFrame keeps the executed plan afterwards.
        nests: The method calls another instrumented method (``write_parquet``): the call is
            marked as inside an instrumented call (`INSIDE`) so that the inner one passes
            straight through. Other methods go straight to Rust and skip that.
        slow: The general path, for calls the fast path does not cover.
    """
    inside = INSIDE
    current = otel_context.get_current
    time_ns = time.time_ns
    plain = DataFrame
    deferred = _deferred  # the queue is read at each call (tests replace it)
    run_stack = RUN_STACK

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not tracing.active or inside.get():
            return original(self, *args, **kwargs)
        parent = current()
        if parent.get(_SUPPRESS_KEY) or parent.get(SUPPRESS_KEY_PLAIN):
            return original(self, *args, **kwargs)  # suppress_instrumentation() is in force
        if tracing.capture or type(self) is not plain:
            return slow(self, args, kwargs, parent)
        token = inside.set(True) if nests else None  # write_parquet -> ..._with_options
        start = time_ns()
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            if token is not None:
                inside.reset(token)
            record_failure(tracing, method, self, parent, start, exc)
            raise
        end = time_ns()
        if token is not None:
            inside.reset(token)
        try:
            info = self.__dict__.get(INFO_ATTR)
            if partitioned:
                parts = len(result)
            elif keeps_plan:  # `partition_count(self)`, inlined: self is a plain DataFrame
                parts = self.df.execution_plan().partition_count
            else:
                parts = None
            deferred.queue.add(
                Recorded(
                    (
                        tracing,
                        tracing.tracer(),
                        method,
                        info,
                        self if info is None or not info.named else None,
                        parent,
                        run_stack.get() != () and current_run() is not None,
                        start,
                        end,
                        rows(result) if rows is not None else None,
                        parts,
                    )
                )
            )
        except Exception:
            deferred.queue.failed += 1  # the span is lost: count it
            internal_error(f"recording {method}")
        return result

    return wrapper
