"""``SessionContext.sql`` / ``sql_with_options``: name the DataFrame, time planning, run DDL.

``SessionContext.sql`` parses and plans the statement (a logical plan) and returns a lazy
DataFrame; DDL and session statements (CREATE, DROP, SET...) it also executes before returning.

* A lazy statement (SELECT, INSERT, COPY...) stores the cached `QueryInfo` of its text in the
  returned DataFrame (so its later executions are named after the SQL). When a span is
  current (a run, or a span of the application), the call is also timed by a *planning span*
  named ``"plan <db.query.summary>"`` (`attributes.PLAN_SPAN_PREFIX`), child of that span,
  with ``datafusion.phase = "plan"``; it is therefore a sibling of the execution span that
  follows when the DataFrame runs, not its child (planning is over by then, and one planned
  DataFrame may execute many times). Outside any span no planning span is made: the
  execution that follows becomes its own run (``auto_run``), and a run of its own for each
  planning call would only add noise. DataFusion records no planning metrics.
* An eager statement is traced as an execution (one execution span, named after the SQL).

Under ``suppress_instrumentation()`` nothing is traced or remembered: a DataFrame created
there carries no SQL text into the spans of its later executions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from datafusion_otel import attributes as attr
from datafusion_otel._sanitize.dialect import note_sql
from datafusion_otel._sanitize.errors import exception_text, record_exception, remember_params
from datafusion_otel.instrumentation._execution import INSIDE, Tracing, call_in, internal_error
from datafusion_otel.instrumentation._query import (
    INFO_ATTR,
    QUERIES_ATTR,
    QueryInfo,
    query_info,
    span_name,
    sql_summary,
    summary_for,
)
from datafusion_otel.instrumentation._values import SUPPRESS_KEY_PLAIN
from datafusion_otel.sanitize import QuerySummary

__all__ = ["plan_attributes", "sql_wrapper"]


@functools.lru_cache(maxsize=1024)
def plan_attributes(
    method: str, summary: QuerySummary, session_id: str | None
) -> tuple[str, Mapping[str, AttributeValue]]:
    """Return the name and attributes of a planning span (cached; must not be modified)."""
    name = span_name(summary)
    attributes: dict[str, AttributeValue] = {
        attr.DATAFUSION_PHASE: attr.PHASE_PLAN,
        attr.DATAFUSION_METHOD: method,
        attr.DB_QUERY_SUMMARY: name,
    }
    if session_id is not None:
        attributes[attr.DATAFUSION_SESSION_ID] = session_id
    return (attr.PLAN_SPAN_PREFIX + name)[:255], MappingProxyType(attributes)


def sql_wrapper(
    method: str, original: Callable[..., Any], tracing: Tracing, *, nests: bool
) -> Callable[..., Any]:
    """Return the replacement of ``SessionContext.sql`` or ``sql_with_options``.

    Args:
        method: ``"SessionContext.sql"``...
        original: The original function.
        tracing: Options and tracer of the active instrumentation.
        nests: The original calls another patched method (``sql_with_options`` calls
            ``sql``), which must pass straight through.
    """
    inside = INSIDE
    current = otel_context.get_current

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not tracing.active or inside.get():
            return original(self, *args, **kwargs)
        parent = current()
        if parent.get(_SUPPRESS_KEY) or parent.get(SUPPRESS_KEY_PLAIN):
            return original(self, *args, **kwargs)  # suppress_instrumentation() is in force
        query = args[0] if args else kwargs.get("query")
        try:
            note_sql(self, query)  # a non-default dialect reads literals differently
            queries = self.__dict__.get(QUERIES_ATTR)  # the cache `query_info` fills
            info = queries.get(query) if queries is not None and type(query) is str else None
            if info is None:
                info = query_info(self, query)
        except Exception:
            internal_error("remembering SQL")
            return original(self, *args, **kwargs)
        if info is not None and info.eager:
            token = inside.set(True)  # eager (DDL...): traced now, nested calls delegate
            try:
                return _traced_eager_sql(
                    tracing, method, original, self, args, kwargs, parent, info
                )
            finally:
                inside.reset(token)
        # lazy: the DataFrame executes (and is traced) later
        nested = inside.set(True) if nests else None
        try:
            if info is not None and trace.get_current_span(parent).get_span_context().is_valid:
                result = _planned(tracing, method, original, self, args, kwargs, parent, info)
            else:
                result = original(self, *args, **kwargs)
        finally:
            if nested is not None:
                inside.reset(nested)
        if info is not None:
            try:
                result.__dict__[INFO_ATTR] = info  # what `remember` does
            except Exception:
                internal_error("remembering SQL")
        return result

    return wrapper


def _planned(
    tracing: Tracing,
    method: str,
    original: Callable[..., Any],
    ctx: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context,
    info: QueryInfo,
) -> Any:
    """Call ``original`` (planning a lazy statement) inside its planning span."""
    try:
        tracer = tracing.tracer()[1]
        name, attributes = plan_attributes(method, summary_for(None, info), info.session_id)
        span = tracer.start_span(name, parent, SpanKind.INTERNAL, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
    except Exception:
        internal_error("starting a planning span")
        return original(ctx, *args, **kwargs)
    try:
        result = original(ctx, *args, **kwargs)
    except BaseException as exc:
        otel_context.detach(token)
        remember_params(exc, args, kwargs)  # param_values are literals the SQL text lacks
        _end_failed(span, exc, tracing, info.sql)
        raise
    otel_context.detach(token)
    try:
        span.end()
    except Exception:  # a span processor's on_end raised: not the user's query's business
        internal_error("ending a planning span")
    return result


def _end_failed(span: trace.Span, exc: BaseException, tracing: Tracing, sql: str | None) -> None:
    """End a planning span with the error that ended it; never raises.

    The message is sanitized with the literals of ``sql``, the statement that failed.
    """
    try:
        policy = tracing.options.sql_text
        error_type = type(exc).__qualname__
        record_exception(span, exc, policy, sql=sql)
        span.set_attribute(attr.ERROR_TYPE, error_type)
        message = exception_text(exc, policy, sql)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
        span.end()
    except Exception:
        internal_error("ending a planning span")


def _traced_eager_sql(
    tracing: Tracing,
    method: str,
    original: Callable[..., Any],
    ctx: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context,
    info: QueryInfo,
) -> Any:
    """Trace a statement that ``SessionContext.sql`` executes before returning (DDL...)."""
    query = cast("str", info.sql)  # query_info returned an info: the query is text
    execution = tracing.begin(method, sql_summary(query), info, parent)
    if execution is None:
        return original(ctx, *args, **kwargs)
    result = call_in(execution, original, ctx, args, kwargs)
    execution.end()
    return result
