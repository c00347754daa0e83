"""One traced execution: its span, its run (when it is one), its end, and artifact capture.

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

When the span is created: in span-only mode (no artifact capture, not a DataFrame compiled by
the bridge) an execution is *deferred*: the call only records its start and end time, its
parent context and its result figures, and `datafusion_otel._deferred` creates the span off
the query path, with those times, within about 0.1 s (or at the next flush). Such a span is
not made current during the call: nothing can be its child. A failing execution, or one with
artifact capture, creates its span at once (the exception event or the artifacts need it).
Successful span-only calls of the value-returning methods do not even build an `Execution` on
the query path: `datafusion_otel.instrumentation._recorded` records them as a tuple and calls
`Tracing.execution` and `Execution.end_recorded` when the record is materialized.

Nothing here raises into the user's program: instrumentation errors are logged once per site
on the ``datafusion_otel.instrumentation`` logger and the query runs untraced or half-traced.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from opentelemetry.util.types import AttributeValue

from datafusion_otel import _deferred
from datafusion_otel import attributes as attr
from datafusion_otel._coerce import json_dumps
from datafusion_otel._errors import error_text, record_exception
from datafusion_otel.bridge import is_self_capturing, record_execution_artifacts
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.config import exports_from, processor_for, resolve_provider
from datafusion_otel.instrumentation._options import InstrumentationOptions
from datafusion_otel.instrumentation._query import QueryInfo, cacheable, query_text, span_name
from datafusion_otel.instrumentation.version import __version__
from datafusion_otel.runs import current_run
from datafusion_otel.sanitize import QuerySummary, SqlTextPolicy

__all__ = [
    "INSIDE",
    "Execution",
    "Tracing",
    "internal_error",
    "start_attributes",
]

_LOG = logging.getLogger("datafusion_otel.instrumentation")
_PLAN_NOT_KEPT = "this execution path does not keep the executed plan: no runtime metrics"
_END_LOCK = threading.Lock()
_ROOT_CONTEXT = otel_context.Context()  # the parent of auto runs: none
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
        """Return the provider and tracer for a new execution span.

        The first time a provider is used it gets the `datafusion_otel._deferred.FlushHook`,
        so that its ``force_flush()`` creates the spans recorded so far.
        """
        provider = self.options.tracer_provider or resolve_provider()
        current = self._current
        if current is None or current[0] is not provider:
            tracer = provider.get_tracer(attr.TRACER_NAME, __version__)
            if isinstance(provider, SdkTracerProvider):
                _deferred.hook(provider)
            current = self._current = (provider, tracer)
        return current

    def begin(
        self,
        method: str,
        summary: QuerySummary,
        info: QueryInfo,
        parent: otel_context.Context,
        *,
        defer: bool,
        start_ns: int | None = None,
    ) -> Execution | None:
        """Start one execution; None if that failed (the query then runs untraced).

        Args:
            method: ``"DataFrame.collect"``...
            summary: What the query does (names the span).
            info: What is known about the query.
            parent: The context of the user's call.
            defer: Only record the span now and create it off the query path (see
                `datafusion_otel._deferred`), unless something needs it earlier (an error,
                artifact capture).
            start_ns: When the execution started (default: now).
        """
        try:
            return self.execution(
                self.tracer(),
                method,
                summary,
                info,
                parent,
                current_run() is not None,
                defer=defer,
                start_ns=time.time_ns() if start_ns is None else start_ns,
            )
        except Exception:
            internal_error("starting an execution span")
            return None

    def execution(
        self,
        current: tuple[trace.TracerProvider, trace.Tracer],
        method: str,
        summary: QuerySummary,
        info: QueryInfo,
        parent: otel_context.Context,
        in_run: bool,
        *,
        defer: bool,
        start_ns: int,
    ) -> Execution:
        """Return the `Execution` of a call made in ``parent``, inside a run or not.

        Args:
            current: The provider and tracer (`tracer`) at the time of the call.
            method: ``"DataFrame.collect"``...
            summary: What the query does (names the span).
            info: What is known about the query.
            parent: The context of the user's call.
            in_run: Whether a run (`current_run`) was current at the time of the call.
            defer: Create the span only when it is needed (see `begin`).
            start_ns: When the execution started.
        """
        provider, tracer = current
        is_run = (
            self.options.auto_run
            and not in_run
            and not trace.get_current_span(parent).get_span_context().is_valid
        )
        if is_run and provider is not self._with_processor:
            if isinstance(provider, SdkTracerProvider):
                processor_for(provider)  # rows of auto runs reach the diagnostics tables
            self._with_processor = provider
        return Execution(
            self,
            tracer,
            method,
            summary,
            _ROOT_CONTEXT if is_run else parent,
            info,
            run_provider=provider if is_run else None,
            defer=defer,
            start_ns=start_ns,
        )


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

    A deferred execution creates no span until it ends: it is then queued and its span is
    created later with the recorded start and end times (`materialize`). Reading `span`
    creates it at once (artifact capture and errors need it).
    """

    __slots__ = (
        "_end_ns",
        "_ended",
        "_ending",
        "_method",
        "_parent",
        "_run_provider",
        "_span",
        "_start_ns",
        "_summary",
        "_token",
        "_tracer",
        "info",
        "tracing",
    )

    def __init__(
        self,
        tracing: Tracing,
        tracer: trace.Tracer,
        method: str,
        summary: QuerySummary,
        parent: otel_context.Context,
        info: QueryInfo,
        *,
        run_provider: trace.TracerProvider | None,
        defer: bool,
        start_ns: int,
    ) -> None:
        self.tracing = tracing
        self.info = info
        self._tracer = tracer
        self._method = method
        self._summary = summary
        self._parent = parent
        self._run_provider = run_provider  # the span's provider if it is an auto run, else None
        self._token: object | None = None
        self._ended = False
        self._ending: dict[str, AttributeValue] | None = None
        self._end_ns: int | None = None
        self._start_ns = start_ns
        self._span: trace.Span | None = None
        if not defer:
            self._span = self._start()

    def _start(self) -> trace.Span:
        info = self.info
        sql = info.sql
        build = start_attributes if sql is None or cacheable(sql) else start_attributes.__wrapped__
        name, attributes = build(
            self._method, self._summary, sql, info.session_id, self.tracing.options.sql_text
        )
        return self._tracer.start_span(
            name,
            context=self._parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=self._start_ns,
        )

    @property
    def span(self) -> trace.Span:
        """The execution span (created now if it was deferred)."""
        span = self._span
        if span is None:
            span = self._span = self._start()
        return span

    @property
    def is_run(self) -> bool:
        """Whether the execution span is the root span of its own run (auto run)."""
        return self._run_provider is not None

    def activate(self) -> None:
        """Make the span current for the duration of the user's call (if it exists yet)."""
        if self._span is None:
            return  # deferred: nothing may parent to a span that does not exist yet
        try:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        except Exception:
            internal_error("activating an execution span")

    def deactivate(self) -> None:
        """Undo `activate`."""
        token, self._token = self._token, None
        if token is not None:
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:
                internal_error("deactivating an execution span")

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

    def end(
        self,
        *,
        rows: int | None = None,
        partitions: int | None = None,
        error: BaseException | None = None,
        extra: dict[str, AttributeValue] | None = None,
    ) -> None:
        """End the span once (later calls do nothing); never raises.

        Args:
            rows: ``db.response.returned_rows``, when known.
            partitions: ``datafusion.partition_count``, when known.
            error: The exception that ended the execution, if any.
            extra: More attributes to set.
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
            if error is None and self._span is None:
                self._ending = ending
                self._end_ns = time.time_ns()
                _deferred.queue.add(self)  # the span is created off the query path
                return
            self._finish(self.span, ending, error)
        except Exception:
            internal_error("ending an execution span")

    def materialize(self) -> None:
        """Create and end the deferred span with its recorded times (called off the query path)."""
        self._finish(self.span, self._ending or {}, None, end_ns=self._end_ns)

    def end_recorded(self, end_ns: int, rows: int | None, partitions: int | None) -> None:
        """End a successful execution that ended at ``end_ns`` (off the query path); may raise.

        Args:
            end_ns: When the user's call returned.
            rows: ``db.response.returned_rows``, when known.
            partitions: ``datafusion.partition_count``, when known.
        """
        self._ended = True
        ending: dict[str, AttributeValue] = {}
        if rows is not None:
            ending[attr.DB_RESPONSE_RETURNED_ROWS] = rows
        if partitions is not None:
            ending[attr.DATAFUSION_PARTITION_COUNT] = partitions
        self._finish(self.span, ending, None, end_ns=end_ns)

    def _finish(
        self,
        span: trace.Span,
        ending: dict[str, AttributeValue],
        error: BaseException | None,
        *,
        end_ns: int | None = None,
    ) -> None:
        provider = self._run_provider
        if provider is not None:
            # The run's label is the span name, its status "completed" unless it failed and
            # its metadata {"auto_run": true}: `run_row` derives them, so a successful auto
            # run costs two attributes, not five.
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
            message = error_text(str(error), policy)  # messages quote query literals
            record_exception(span, error, policy)
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
        if ending:
            span.set_attributes(ending)
        span.end(end_time=end_ns)


def _capture(
    df: Any,  # a datafusion.DataFrame
    span: trace.Span,
    sql: str | None,
    executed: bool,
    *,
    ctx: Any = None,  # a datafusion.SessionContext
    tracing: Tracing | None = None,
) -> None:
    """Hand an executed DataFrame to the plan-artifact bridge; never raises.

    A DataFrame compiled by ``datafusion_otel.bridge`` captures its own artifacts and is
    skipped here. Everything the bridge runs is marked as inside an instrumented call, so its
    own DataFusion calls are never traced.
    """
    token = INSIDE.set(True)
    try:
        options = _bridge_options(tracing.options.sql_text if tracing is not None else "sanitized")
        record_execution_artifacts(
            df, ctx=ctx, span=span, sql=sql, options=options, executed=executed
        )
    except Exception:
        internal_error("capturing plan artifacts")
    finally:
        INSIDE.reset(token)


@functools.lru_cache(maxsize=8)
def _bridge_options(sql_text: SqlTextPolicy) -> DataFusionCompileOptions:
    """Return the compile options for the instrumentation's ``sql_text`` policy."""
    return DataFusionCompileOptions(capture_plan_artifacts=True, sql_text=sql_text)
