"""One traced execution: its span, its run (when it is one), its end, and artifact capture.

An execution span is an ordinary OpenTelemetry span, as in the instrumentations of
opentelemetry-python-contrib: it is started on the calling thread before the DataFusion work
begins (the user's span processors get ``on_start`` there, in the caller's context), it is
current on that thread while DataFusion runs (`Execution.context`: a Python UDF that DataFusion
calls on that thread, and a log record made there, nest under it), and it ends on the thread
where the work ends (the call returns or raises; a stream is exhausted, fails or is closed).
A ``SimpleSpanProcessor`` sees it the moment it ends. Only a stream dropped without that ends
its span from another thread (see `datafusion_otel._capture.stream_latch.run_later`).

Span placement:

* Inside a run (`datafusion_otel.runs.current_run`) or under any active span, the execution
  span is a child of the current context.
* Otherwise, with ``auto_run=True``, the execution span itself is the root span of a new run:
  it carries `attributes.RUN_ID` (= its trace id) and `attributes.RUN_EXPORTED`, so the
  diagnostics processor records a ``datafusion_runs_v1`` row for it like for any run. The
  run's label is the span name and its metadata ``{"datafusion_otel.auto_run": true}``; its
  status is "completed" unless the execution failed (then `attributes.RUN_STATUS` = "failed" and the
  metadata carry the error). One span instead of a run span plus a child, and no attribute
  that the processor can derive, keep span-only overhead low; `current_run` stays None
  during such an execution (there is no `DataFusionRun` object).
* The start attributes of an execution are built once per query text, session and method
  (`start_attributes`) and shared by its executions.

With artifact capture on, the thread where the work ended only hands the DataFrame and its
executed plan to the capture worker (`datafusion_otel._capture.schedule`) and the span ends at once;
the artifacts arrive shortly after on a ``datafusion.capture`` child span of the execution
span (`datafusion_otel.force_flush` waits for them; a run's end waits for its own).

Nothing here raises into the user's program: instrumentation errors are logged once per site
on the ``datafusion_otel.instrumentation`` logger and the query runs untraced or half-traced.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from opentelemetry.util.types import AttributeValue

from datafusion_otel import attributes as attr
from datafusion_otel._coerce import json_dumps
from datafusion_otel._processing.span_rows import register_auto_run
from datafusion_otel._sanitize.errors import exception_text, record_exception, remember_frame
from datafusion_otel.bridge import is_self_capturing, schedule_execution_artifacts
from datafusion_otel.compile_options import DEFAULT_ARTIFACTS, DataFusionCompileOptions
from datafusion_otel.config import exports_from, processor_for, resolve_provider
from datafusion_otel.instrumentation._options import InstrumentationOptions
from datafusion_otel.instrumentation._query import QueryInfo, cacheable, query_text, span_name
from datafusion_otel.instrumentation.version import __version__
from datafusion_otel.runs import RUN_STACK, current_run
from datafusion_otel.sanitize import QuerySummary, SqlTextPolicy

__all__ = [
    "INSIDE",
    "Execution",
    "Tracing",
    "call_in",
    "internal_error",
    "start_attributes",
]

_LOG = logging.getLogger("datafusion_otel.instrumentation")
_PLAN_NOT_KEPT = "this execution path does not keep the executed plan: no runtime metrics"
_END_LOCK = threading.Lock()
INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "datafusion_otel_inside_instrumented_call", default=False
)
"""True inside an instrumented call: nested DataFusion calls there are not traced again."""
_logged_sites: set[str] = set()
_logged_lock = threading.Lock()


def internal_error(site: str) -> None:
    """Log the exception being handled, once per ``site``; never raises."""
    with _logged_lock:
        if site in _logged_sites:
            _LOG.debug("instrumentation error in %s", site, exc_info=True)
            return
        _logged_sites.add(site)
    _LOG.exception(
        "datafusion-otel instrumentation error in %s; the query is not affected "
        "(further errors here are logged at DEBUG level)",
        site,
    )


class Tracing:
    """What the instrumented methods need while instrumentation is on.

    Args:
        options: The resolved options.
    """

    def __init__(self, options: InstrumentationOptions) -> None:
        self.options = options
        self.capture = options.capture_plan_artifacts
        """Whether plan artifacts are captured (read on every call)."""
        self.active = True
        self._current: tuple[trace.TracerProvider, trace.Tracer] | None = None
        self._with_processor: trace.TracerProvider | None = None

    def tracer(self) -> tuple[trace.TracerProvider, trace.Tracer]:
        """Return the provider and tracer for a new execution span."""
        provider = self.options.tracer_provider or resolve_provider()
        current = self._current
        if current is None or current[0] is not provider:
            tracer = provider.get_tracer(attr.TRACER_NAME, __version__)
            current = self._current = (provider, tracer)
        return current

    def begin(
        self,
        method: str,
        summary: QuerySummary,
        info: QueryInfo,
        parent: otel_context.Context,
    ) -> Execution | None:
        """Start one execution span now, in ``parent``; None if that failed (untraced query).

        Args:
            method: ``"DataFrame.collect"``...
            summary: What the query does (names the span).
            info: What is known about the query.
            parent: The context of the user's call.
        """
        try:
            provider, tracer = self.tracer()
            is_run = (
                self.options.auto_run
                and (RUN_STACK.get() == () or current_run() is None)
                and not trace.get_current_span(parent).get_span_context().is_valid
            )
            if is_run and provider is not self._with_processor:
                if isinstance(provider, SdkTracerProvider):
                    processor_for(provider)  # rows of auto runs reach the diagnostics tables
                self._with_processor = provider
            return Execution(
                self, tracer, method, summary, parent, info, provider if is_run else None
            )
        except Exception:
            internal_error("starting an execution span")
            return None


@functools.lru_cache(maxsize=1024)
def start_attributes(
    method: str,
    summary: QuerySummary,
    sql: str | None,
    session_id: str | None,
    policy: SqlTextPolicy,
) -> tuple[str, Mapping[str, AttributeValue]]:
    """Return the span name and start attributes of an execution (cached: built once per query).

    Not called through the cache for SQL texts that are not `cacheable`.

    The mapping is shared between executions of the same query and must not be modified (the
    SDK copies it into each span).
    """
    name = span_name(summary)
    attributes: dict[str, AttributeValue] = {
        attr.DB_SYSTEM_NAME: attr.DB_SYSTEM_VALUE,
        attr.DB_QUERY_SUMMARY: name,
        attr.DATAFUSION_METHOD: method,
    }
    if summary.operation:
        attributes[attr.DB_OPERATION_NAME] = summary.operation
    if len(summary.tables) == 1:
        attributes[attr.DB_COLLECTION_NAME] = summary.tables[0]
    text = query_text(sql, policy)
    if text is not None:
        attributes[attr.DB_QUERY_TEXT] = text
    if session_id is not None:
        attributes[attr.DATAFUSION_SESSION_ID] = session_id
    return name, MappingProxyType(attributes)


class Execution:
    """The span of one execution, from the user's call to the end of its result.

    The span is started when the `Execution` is built, in the caller's context; `context` is
    the caller's context with the span current, to attach while DataFusion works.
    """

    __slots__ = ("_ended", "_run_provider", "context", "info", "span", "tracing")

    def __init__(
        self,
        tracing: Tracing,
        tracer: trace.Tracer,
        method: str,
        summary: QuerySummary,
        parent: otel_context.Context,
        info: QueryInfo,
        run_provider: trace.TracerProvider | None,
    ) -> None:
        self.tracing = tracing
        self.info = info
        self._run_provider = run_provider  # the span's provider if it is an auto run, else None
        self._ended = False
        sql = info.sql
        build = start_attributes if sql is None or cacheable(sql) else start_attributes.__wrapped__
        name, attributes = build(method, summary, sql, info.session_id, tracing.options.sql_text)
        # An auto run's parent context holds no valid span, so the span is a root span; the
        # caller's other context values (baggage...) stay visible to processors and children.
        span = tracer.start_span(name, parent, SpanKind.CLIENT, attributes)
        if run_provider is not None:  # its run row must not depend on the app's span limits
            register_auto_run(span)
        self.span: trace.Span = span
        self.context: otel_context.Context = trace.set_span_in_context(span, parent)
        """The caller's context with the execution span current."""

    @property
    def is_run(self) -> bool:
        """Whether the execution span is the root span of its own run (auto run)."""
        return self._run_provider is not None

    def capture(self, df: Any, *, executed: bool, error: BaseException | None = None) -> None:
        """Attach plan artifacts of ``df`` to the span when capture is on; never raises.

        A DataFrame compiled by ``datafusion_otel.bridge`` captures itself, with its own
        options, onto this execution span, whether or not capture is on here.
        """
        if df is None:
            return
        if is_self_capturing(df):
            try:
                note = None if executed else _PLAN_NOT_KEPT
                df.capture_into(self.span, executed=executed, error=error, note=note)
            except Exception:
                internal_error("handing an execution to a compiled DataFrame")
            return
        if not self.tracing.options.capture_plan_artifacts:
            return
        _capture(df, self.span, self.info.sql, executed, ctx=self.info.ctx, tracing=self.tracing)

    def conclude(
        self,
        df: Any,
        *,
        executed: bool,
        error: BaseException | None = None,
        rows: int | None = None,
        partitions: int | None = None,
        extra: dict[str, AttributeValue] | None = None,
        end_ns: int | None = None,
    ) -> None:
        """Capture the artifacts of ``df`` (`capture`), then end the span (`end`).

        The span ends even if the capture is interrupted: a ``KeyboardInterrupt`` arriving
        there still propagates, as it would without instrumentation, after the span ended.
        """
        try:
            remember_frame(error, df)  # its message may quote DataFrame-API literals
            self.capture(df, executed=executed, error=error)
        finally:
            self.end(rows=rows, partitions=partitions, error=error, extra=extra, end_ns=end_ns)

    def end(
        self,
        *,
        rows: int | None = None,
        partitions: int | None = None,
        error: BaseException | None = None,
        extra: dict[str, AttributeValue] | None = None,
        end_ns: int | None = None,
    ) -> None:
        """End the span once (later calls do nothing); never raises.

        Args:
            rows: ``db.response.returned_rows``, when known.
            partitions: ``datafusion.partition_count``, when known.
            error: The exception that ended the execution, if any.
            extra: More attributes to set.
            end_ns: When the work ended (default: now).
        """
        with _END_LOCK:  # a stream may end in its consumer and in a finalizer at once
            if self._ended:
                return
            self._ended = True
        try:
            ending: dict[str, AttributeValue] = dict(extra) if extra else {}
            if rows is not None:
                ending[attr.DB_RESPONSE_RETURNED_ROWS] = rows
            if partitions is not None:
                ending[attr.DATAFUSION_PARTITION_COUNT] = partitions
            self._finish(ending, error, end_ns)
        except Exception:
            internal_error("ending an execution span")

    def _finish(
        self,
        ending: dict[str, AttributeValue],
        error: BaseException | None,
        end_ns: int | None,
    ) -> None:
        span = self.span
        provider = self._run_provider
        if provider is not None:
            # The run's label is the span name, its status "completed" unless it failed and
            # its metadata {"datafusion_otel.auto_run": true}: `run_row` derives them, so a
            # successful auto run costs two attributes, not five.
            context = span.get_span_context()
            ending[attr.RUN_ID] = format_trace_id(context.trace_id)
            ending[attr.RUN_EXPORTED] = (
                bool(context.trace_flags.sampled)
                and isinstance(provider, SdkTracerProvider)
                and exports_from(provider)
            )
        if error is not None:
            error_type = type(error).__qualname__
            policy = self.tracing.options.sql_text
            # messages quote query literals: sanitized with those of the execution's SQL
            message = exception_text(error, policy, self.info.sql)
            record_exception(span, error, policy, sql=self.info.sql)
            ending[attr.ERROR_TYPE] = error_type
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
            if provider is not None:
                ending[attr.RUN_STATUS] = "failed"
                ending[attr.RUN_METADATA] = json_dumps(
                    {
                        "datafusion_otel.auto_run": True,
                        "error_type": error_type,
                        "error_message": message,
                    }
                )
        try:
            if ending:
                span.set_attributes(ending)
        finally:
            span.end(end_ns)


def call_in(
    execution: Execution,
    original: Callable[..., Any],
    target: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call ``original`` with the execution span current; a failure ends the span, re-raised."""
    token = otel_context.attach(execution.context)
    try:
        result = original(target, *args, **kwargs)
    except BaseException as exc:
        otel_context.detach(token)
        remember_frame(exc, target)  # its message may quote DataFrame-API literals
        execution.end(error=exc)
        raise
    otel_context.detach(token)
    return result


def _capture(
    df: Any,  # a datafusion.DataFrame
    span: trace.Span,
    sql: str | None,
    executed: bool,
    *,
    ctx: Any = None,  # a datafusion.SessionContext
    tracing: Tracing | None = None,
) -> None:
    """Hand an executed DataFrame to the capture worker; never raises.

    A DataFrame compiled by ``datafusion_otel.bridge`` captures its own artifacts and is
    skipped here. The worker marks everything it runs as inside an instrumented call, so its
    own DataFusion calls are never traced.
    """
    try:
        options = (
            _bridge_options(
                tracing.options.sql_text,
                tracing.options.capture_min_duration_ms,
                tracing.options.artifacts,
            )
            if tracing is not None
            else _bridge_options("sanitized", None, DEFAULT_ARTIFACTS)
        )
        start = getattr(span, "start_time", None)
        duration_ms = (time.time_ns() - start) / 1e6 if isinstance(start, int) else None
        schedule_execution_artifacts(
            df,
            ctx=ctx,
            span=span,
            sql=sql,
            options=options,
            executed=executed,
            duration_ms=duration_ms,
        )
    except Exception:
        internal_error("capturing plan artifacts")


@functools.lru_cache(maxsize=8)
def _bridge_options(
    sql_text: SqlTextPolicy, min_duration_ms: float | None, artifacts: frozenset[str]
) -> DataFusionCompileOptions:
    """Return the compile options for the instrumentation's options."""
    return DataFusionCompileOptions(
        capture_plan_artifacts=True,
        sql_text=sql_text,
        capture_min_duration_ms=min_duration_ms,
        artifacts=artifacts,
    )
