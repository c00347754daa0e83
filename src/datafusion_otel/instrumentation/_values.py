"""The query path of span-only executions that return a value (``collect``, ``to_pandas``...).

The cheapest faithful trace of a call, the way the sqlite3 instrumentor does it: start the
span in the caller's context, attach it, call DataFusion, detach, set the result figures and
end the span, all on the calling thread. What the span is named and carries at start is
built once per query (`datafusion_otel.instrumentation._execution.start_attributes`) and found
through the DataFrame's `QueryInfo`.

Calls with artifact capture, and DataFrames that are not plain ``datafusion.DataFrame``
objects (those compiled by ``datafusion_otel.bridge`` capture themselves), take the general
path in `datafusion_otel.instrumentation._wrappers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from datafusion import DataFrame
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.context import Context

from datafusion_otel._sanitize.errors import remember_frame
from datafusion_otel.instrumentation._execution import INSIDE, Tracing, internal_error
from datafusion_otel.instrumentation._query import info_for, summary_for

__all__ = ["SUPPRESS_KEY_PLAIN", "partition_count", "value_wrapper"]

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
    attach = otel_context.attach
    detach = otel_context.detach
    plain = DataFrame
    begin = tracing.begin

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not tracing.active or inside.get():
            return original(self, *args, **kwargs)
        parent = current()
        if parent.get(_SUPPRESS_KEY) or parent.get(SUPPRESS_KEY_PLAIN):
            return original(self, *args, **kwargs)  # suppress_instrumentation() is in force
        if tracing.capture or type(self) is not plain:
            return slow(self, args, kwargs, parent)
        try:
            info = info_for(self)
            execution = begin(method, info.summary or summary_for(self, info), info, parent)
        except Exception:
            internal_error(f"naming {method}")
            execution = None
        if execution is None:
            return original(self, *args, **kwargs)
        token = attach(execution.context)
        nested = inside.set(True) if nests else None  # write_parquet -> ..._with_options
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            if nested is not None:
                inside.reset(nested)
            detach(token)
            remember_frame(exc, self)  # its message may quote DataFrame-API literals
            execution.end(error=exc)
            raise
        if nested is not None:
            inside.reset(nested)
        detach(token)
        try:
            if partitioned:
                parts = len(result)
            elif keeps_plan:  # `partition_count(self)`, inlined: self is a plain DataFrame
                parts = self.df.execution_plan().partition_count
            else:
                parts = None
            count = rows(result) if rows is not None else None
        except Exception:
            internal_error(f"reading the result of {method}")
            parts = count = None
        execution.end(rows=count, partitions=parts)
        return result

    return wrapper
