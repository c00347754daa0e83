"""The wrappers patched onto ``datafusion.DataFrame`` and ``datafusion.SessionContext``.

A span-only execution that returns a value (``collect``, ``to_pandas``...) takes the short
path of `datafusion_otel.instrumentation._values`; ``SessionContext.sql`` is wrapped by
`datafusion_otel.instrumentation._sql`. Everything else takes the general path described here:
the execution span is started in the caller's context, current while DataFusion runs, and
ended when the result is complete (for streams: see `datafusion_otel.instrumentation._streams`).

Each wrapper first asks `is_instrumentation_enabled()` and whether it runs inside another
instrumented call (a context variable): nested calls (``tail`` -> ``count``, ``__iter__`` ->
``execute_stream``, ``sql_with_options`` -> ``sql``, ``write_parquet`` ->
``write_parquet_with_options``, and everything the artifact bridge runs) delegate straight to
the original, so each user call gives exactly one execution span.

Re-routing (only with ``capture_plan_artifacts=True``), so operator metrics exist:

* ``count`` runs the same ``count(*)`` aggregate as DataFusion, as a DataFrame it keeps;
* ``__arrow_c_stream__`` (``pa.table(df)``, ``polars.DataFrame(df)``) reads the partitions of
  ``execute_stream_partitioned`` in order, lazily, when no ``requested_schema`` is given.

Not re-routed, so the bridge gets them with ``executed=False`` (plans, no runtime metrics):
``show`` (its printed format is DataFusion's own), ``collect_column``, ``cache``, ``describe``,
``tail`` and ``write_*`` (DataFusion plans the write sink internally), and
``__arrow_c_stream__`` with a ``requested_schema``.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from datafusion import DataFrame, SessionContext
from datafusion import functions as f
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.context import Context

from datafusion_otel.instrumentation._execution import (
    INSIDE,
    Tracing,
    call_in,
    internal_error,
)
from datafusion_otel.instrumentation._query import (
    QueryInfo,
    info_for,
    remember,
    summary_for,
)
from datafusion_otel.instrumentation._sql import sql_wrapper
from datafusion_otel.instrumentation._streams import (
    StreamGroup,
    TracedRecordBatchStream,
    arrow_c_stream,
    traced_streams,
)
from datafusion_otel.instrumentation._values import (
    SUPPRESS_KEY_PLAIN,
    partition_count,
    value_wrapper,
)
from datafusion_otel.sanitize import QuerySummary

__all__ = ["CONTEXT_METHODS", "DATAFRAME_METHODS", "MethodSpec", "make_wrapper"]

ResultKind = Literal["value", "stream", "streams", "capsule", "dataframe"]


_num_rows = operator.attrgetter("num_rows")


def _batches_rows(batches: list[Any]) -> int:
    return sum(map(_num_rows, batches))


def _pydict_rows(result: dict[str, list[Any]]) -> int:
    return len(next(iter(result.values()))) if result else 0


@dataclass(frozen=True)
class MethodSpec:
    """How one execution method is traced.

    Attributes:
        kind: What the method returns: a value, a stream, a list of streams, an Arrow C stream
            capsule, or a new DataFrame (``cache``, ``tail``, ``describe``).
        rows: Returns ``db.response.returned_rows`` from the result, if it tells.
        keeps_plan: The DataFrame keeps the executed plan afterwards (partition count and
            operator metrics are readable without re-planning).
        same_query: The returned DataFrame holds the same query (its later executions are
            named like this one).
        partitioned: The result is a list with one item per partition (its length is the
            partition count).
        nests: DataFusion's Python method calls another instrumented method (measured on
            DataFusion 55: only ``write_parquet``, which calls ``write_parquet_with_options``).
    """

    kind: ResultKind = "value"
    rows: Callable[[Any], int] | None = None
    keeps_plan: bool = False
    same_query: bool = False
    partitioned: bool = False
    nests: bool = False


DATAFRAME_METHODS: dict[str, MethodSpec] = {
    "collect": MethodSpec(rows=_batches_rows, keeps_plan=True),
    "collect_partitioned": MethodSpec(
        rows=lambda parts: sum(map(_batches_rows, parts)), keeps_plan=True, partitioned=True
    ),
    "collect_column": MethodSpec(rows=len),
    "to_arrow_table": MethodSpec(rows=lambda t: t.num_rows, keeps_plan=True),
    "to_pandas": MethodSpec(rows=len, keeps_plan=True),
    "to_polars": MethodSpec(rows=len, keeps_plan=True),
    "to_pylist": MethodSpec(rows=len, keeps_plan=True),
    "to_pydict": MethodSpec(rows=_pydict_rows, keeps_plan=True),
    "count": MethodSpec(rows=int),
    "show": MethodSpec(),
    "tail": MethodSpec(kind="dataframe", same_query=True),
    "cache": MethodSpec(kind="dataframe", same_query=True),
    "describe": MethodSpec(kind="dataframe"),
    "execute_stream": MethodSpec(kind="stream", keeps_plan=True),
    "execute_stream_partitioned": MethodSpec(kind="streams", keeps_plan=True),
    "__iter__": MethodSpec(kind="stream", keeps_plan=True),
    "__aiter__": MethodSpec(kind="stream", keeps_plan=True),
    "__arrow_c_stream__": MethodSpec(kind="capsule"),
    "write_csv": MethodSpec(),
    "write_json": MethodSpec(),
    "write_parquet": MethodSpec(nests=True),
    "write_parquet_with_options": MethodSpec(),
    "write_table": MethodSpec(),
}
"""Every ``DataFrame`` method that executes, and how it is traced."""

CONTEXT_METHODS: tuple[str, ...] = ("sql", "sql_with_options", "execute")
"""``SessionContext`` methods that are patched."""


def make_wrapper(
    cls: type, name: str, original: Callable[..., Any], tracing: Tracing
) -> Callable[..., Any]:
    """Return the instrumented replacement of ``cls.name``.

    Args:
        cls: ``DataFrame`` or ``SessionContext``.
        name: Method name.
        original: The original function object (restored by ``uninstrument``).
        tracing: Options and tracer of the active instrumentation.

    Returns:
        A function with the original's name, docstring and signature metadata.
    """
    if cls is SessionContext:
        method = f"SessionContext.{name}"
        if name != "execute":
            return sql_wrapper(method, original, tracing, nests=name == "sql_with_options")
        handler: Callable[..., Any] = _traced_context_execute
    else:
        spec = DATAFRAME_METHODS[name]

        def handler(tracing: Tracing, **call: Any) -> Any:
            return _traced_dataframe_call(spec, tracing, **call)

        method = f"DataFrame.{name}"

    inside = INSIDE

    def traced(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Context) -> Any:
        token = inside.set(True)  # nested calls (tail -> count...) delegate straight through
        try:
            return handler(
                tracing,
                method=method,
                original=original,
                target=self,
                args=args,
                kwargs=kwargs,
                parent=parent,
            )
        finally:
            inside.reset(token)

    if cls is not SessionContext and spec.kind == "value":
        return value_wrapper(
            method,
            original,
            tracing,
            rows=spec.rows,
            partitioned=spec.partitioned,
            keeps_plan=spec.keeps_plan,
            nests=spec.nests,
            slow=traced,
        )
    current = otel_context.get_current

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not tracing.active or inside.get():
            return original(self, *args, **kwargs)
        parent = current()
        if parent.get(_SUPPRESS_KEY) or parent.get(SUPPRESS_KEY_PLAIN):
            return original(self, *args, **kwargs)  # suppress_instrumentation() is in force
        return traced(self, args, kwargs, parent)

    return wrapper


def _traced_dataframe_call(
    spec: MethodSpec,
    tracing: Tracing,
    *,
    method: str,
    original: Callable[..., Any],
    target: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context,
) -> Any:
    df = target
    try:
        info = info_for(df)
        summary = summary_for(df, info)
    except Exception:
        internal_error(f"naming {method}")
        return original(df, *args, **kwargs)
    execution = tracing.begin(method, summary, info, parent)
    if execution is None:
        return original(df, *args, **kwargs)
    capture = tracing.capture
    if spec.kind == "capsule":
        return arrow_c_stream(execution, original, df, args, kwargs, capture=capture)
    executed_df = df
    token = otel_context.attach(execution.context)
    try:
        if capture and method == "DataFrame.count" and not args and not kwargs:
            result, executed_df = _count_keeping_plan(df)
        else:
            result = original(df, *args, **kwargs)
    except BaseException as exc:
        otel_context.detach(token)
        end_ns = time.time_ns()
        execution.conclude(executed_df, executed=False, error=exc, end_ns=end_ns)
        raise
    otel_context.detach(token)
    end_ns = time.time_ns()  # artifacts are captured below; the span ends at the call's end
    if spec.kind in ("stream", "streams"):
        return traced_streams(execution, df, result, streams=spec.kind == "streams")
    try:
        rows = spec.rows(result) if spec.rows is not None else None
        partitions = None
        if spec.kind == "value" and isinstance(result, list) and method.endswith("partitioned"):
            partitions = len(result)
        elif spec.keeps_plan:
            partitions = partition_count(df)
        if spec.same_query and isinstance(result, DataFrame):
            remember(result, info)
    except Exception:
        internal_error(f"reading the result of {method}")
        rows = partitions = None
    executed = spec.keeps_plan or executed_df is not df
    execution.conclude(
        executed_df, executed=executed, rows=rows, partitions=partitions, end_ns=end_ns
    )
    return result


def _count_keeping_plan(df: Any) -> tuple[int, Any]:
    """Count rows like ``DataFrame.count`` but through a DataFrame that keeps its plan."""
    try:
        counting = df.aggregate([], [f.count_star()])
    except Exception:
        internal_error("re-routing count")
        return int(df.count()), df
    batches = counting.collect()
    return int(batches[0].column(0)[0].as_py()), counting


def _traced_context_execute(
    tracing: Tracing,
    *,
    method: str,
    original: Callable[..., Any],
    target: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context,
) -> Any:
    ctx = target
    try:
        info = QueryInfo(session_id=ctx.session_id())
        summary = QuerySummary("EXECUTE", ())
    except Exception:
        internal_error("naming SessionContext.execute")
        return original(ctx, *args, **kwargs)
    execution = tracing.begin(method, summary, info, parent)
    if execution is None:
        return original(ctx, *args, **kwargs)
    result = call_in(execution, original, ctx, args, kwargs)
    try:
        plan = args[0] if args else kwargs.get("plan")
        partitions = plan.partition_count if plan is not None else None
        return TracedRecordBatchStream(result, StreamGroup(execution, 1, None, partitions))
    except Exception:
        internal_error("tracing SessionContext.execute")
        execution.end()
        return result
