"""One traced execution: its span, its run (when it is one), its end, and artifact capture.

Span placement:

* Inside a run (`datafusion_otel.runs.current_run`) or under any active span, the execution
  span is a child of the current context.
* Otherwise, with ``auto_run=True``, the execution span itself is the root span of a new run:
  it carries the run attributes (`attributes.RUN_ID` = its trace id, the label = the query
  summary, the status), so the diagnostics processor records a ``datafusion_runs_v1`` row for
  it like for any run. One span instead of a run span plus a child keeps span-only overhead
  under 0.1 ms; `current_run` stays None during such an execution (there is no
  `DataFusionRun` object).

Nothing here raises into the user's program: instrumentation errors are logged once per site
on the ``datafusion_otel.instrumentation`` logger and the query runs untraced or half-traced.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from opentelemetry.util.types import AttributeValue

from datafusion_otel import attributes as attr
from datafusion_otel._coerce import json_dumps
from datafusion_otel._errors import error_text, record_exception
from datafusion_otel.bridge import is_self_capturing, record_execution_artifacts
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.config import exports_from, processor_for, resolve_provider
from datafusion_otel.instrumentation._options import InstrumentationOptions
from datafusion_otel.instrumentation._query import QueryInfo, query_text, span_name
from datafusion_otel.instrumentation.version import __version__
from datafusion_otel.runs import current_run
from datafusion_otel.sanitize import QuerySummary, SqlTextPolicy

__all__ = [
    "Execution",
    "Tracing",
    "internal_error",
    "mark_inside",
    "unmark_inside",
]

_LOG = logging.getLogger("datafusion_otel.instrumentation")
_PLAN_NOT_KEPT = "this execution path does not keep the executed plan: no runtime metrics"
_AUTO_RUN_METADATA = json_dumps({"auto_run": True})
_OK = Status(StatusCode.OK)
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "datafusion_otel_inside_instrumented_call", default=False
)
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


def is_inside() -> bool:
    """Return True inside an instrumented call (nested calls must not trace again)."""
    return _inside.get()


def mark_inside() -> contextvars.Token[bool]:
    """Mark the current context as inside an instrumented call; returns the reset token."""
    return _inside.set(True)


def unmark_inside(token: contextvars.Token[bool]) -> None:
    """Undo `mark_inside`."""
    _inside.reset(token)


class Tracing:
    """What the instrumented methods need while instrumentation is on.

    Args:
        options: The resolved options.
    """

    def __init__(self, options: InstrumentationOptions) -> None:
        self.options = options
        self.active = True
        self._provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._with_processor: trace.TracerProvider | None = None
        self._lock = threading.Lock()

    def tracer(self) -> tuple[trace.TracerProvider, trace.Tracer]:
        """Return the provider and tracer for a new execution span."""
        provider = self.options.tracer_provider or resolve_provider()
        tracer = self._tracer
        if provider is not self._provider or tracer is None:
            tracer = provider.get_tracer(attr.TRACER_NAME, __version__)
            with self._lock:
                self._provider, self._tracer = provider, tracer
        return provider, tracer

    def begin(self, method: str, summary: QuerySummary, info: QueryInfo) -> Execution | None:
        """Start the span of one execution; None if that failed (the query runs untraced)."""
        try:
            return self._begin(method, summary, info)
        except Exception:
            internal_error("starting an execution span")
            return None

    def _begin(self, method: str, summary: QuerySummary, info: QueryInfo) -> Execution:
        provider, tracer = self.tracer()
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
        text = query_text(info.sql, self.options.sql_text)
        if text is not None:
            attributes[attr.DB_QUERY_TEXT] = text
        if info.session_id is not None:
            attributes[attr.DATAFUSION_SESSION_ID] = info.session_id
        is_run = (
            self.options.auto_run
            and current_run() is None
            and not trace.get_current_span().get_span_context().is_valid
        )
        if is_run:
            attributes[attr.RUN_LABEL] = name
            if provider is not self._with_processor and isinstance(provider, SdkTracerProvider):
                processor_for(provider)  # rows of auto runs reach the diagnostics tables
                self._with_processor = provider
        span = tracer.start_span(
            name,
            context=otel_context.Context() if is_run else None,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        run_attributes: dict[str, AttributeValue] | None = None
        if is_run:  # set with the ending attributes: one attribute update per span, not two
            context = span.get_span_context()
            run_attributes = {
                attr.RUN_ID: format_trace_id(context.trace_id),
                attr.RUN_EXPORTED: bool(context.trace_flags.sampled)
                and isinstance(provider, SdkTracerProvider)
                and exports_from(provider),
                attr.RUN_METADATA: _AUTO_RUN_METADATA,
            }
        return Execution(self, span, info, run_attributes=run_attributes)


class Execution:
    """The span of one execution, from the user's call to the end of its result."""

    @property
    def is_run(self) -> bool:
        """Whether the execution span is the root span of its own run (auto run)."""
        return self.run_attributes is not None

    __slots__ = ("_ended", "_lock", "_token", "info", "run_attributes", "span", "tracing")

    def __init__(
        self,
        tracing: Tracing,
        span: trace.Span,
        info: QueryInfo,
        *,
        run_attributes: dict[str, AttributeValue] | None,
    ) -> None:
        self.tracing = tracing
        self.span = span
        self.info = info
        self.run_attributes = run_attributes  # set when the span ends; None unless an auto run
        self._token: object | None = None
        self._ended = False
        self._lock = threading.Lock()

    def activate(self) -> None:
        """Make the span current for the duration of the user's call."""
        try:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
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
        with self._lock:
            if self._ended:
                return
            self._ended = True
        try:
            span = self.span
            ending: dict[str, AttributeValue] = dict(extra) if extra else {}
            if self.run_attributes is not None:
                ending.update(self.run_attributes)
            if rows is not None:
                ending[attr.DB_RESPONSE_RETURNED_ROWS] = rows
            if partitions is not None:
                ending[attr.DATAFUSION_PARTITION_COUNT] = partitions
            if error is not None:
                error_type = type(error).__qualname__
                policy = self.tracing.options.sql_text
                message = error_text(str(error), policy)  # messages quote query literals
                record_exception(span, error, policy)
                ending[attr.ERROR_TYPE] = error_type
                span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
                if self.is_run:
                    ending[attr.RUN_STATUS] = "failed"
                    ending[attr.RUN_METADATA] = json_dumps(
                        {"auto_run": True, "error_type": error_type, "error_message": message}
                    )
            elif self.is_run:
                ending[attr.RUN_STATUS] = "completed"
                span.set_status(_OK)
            if ending:
                span.set_attributes(ending)
            span.end()
        except Exception:
            internal_error("ending an execution span")


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
    token = _inside.set(True)
    try:
        options = _bridge_options(tracing.options.sql_text if tracing is not None else "sanitized")
        record_execution_artifacts(
            df, ctx=ctx, span=span, sql=sql, options=options, executed=executed
        )
    except Exception:
        internal_error("capturing plan artifacts")
    finally:
        _inside.reset(token)


@functools.lru_cache(maxsize=8)
def _bridge_options(sql_text: SqlTextPolicy) -> DataFusionCompileOptions:
    """Return the compile options for the instrumentation's ``sql_text`` policy."""
    return DataFusionCompileOptions(capture_plan_artifacts=True, sql_text=sql_text)
