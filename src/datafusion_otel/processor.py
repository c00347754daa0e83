"""`DiagnosticsSpanProcessor`: the adapter from finished spans to diagnostics rows.

When a run's root span ends, the processor records one DATAFUSION_RUNS_V1 row; every
diagnostics payload event (``datafusion.plan_artifacts`` and friends) on any span of the run
becomes rows of its table. Conversion is a few microseconds of pure Python on the span's
thread; delivery goes through the package's dispatcher, which calls slow sinks on a worker.

With ``findings=True`` (the default), the run's findings (`datafusion_otel.findings`) are
computed from its own operator-metrics and plan-artifacts rows when its root span ends and
delivered as DATAFUSION_FINDINGS_V1 rows, before the run's row (see
`datafusion_otel._processing.run_findings` for the memory bound). When captures of the run are
still on the capture worker at that moment (an auto run: its root is the execution span, which
ends before its capture), the findings are computed and delivered once they have landed, after
the run's row.
"""

from __future__ import annotations

import logging
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._exit import bounded_at_exit
from datafusion_otel._processing.delivery import DeliveryStats, describe_exception, dispatcher
from datafusion_otel._processing.run_findings import FindingsRecorder
from datafusion_otel._processing.span_rows import event_rows, root_run_id, run_row
from datafusion_otel._spans import routing as _routing
from datafusion_otel._spans.payloads import PayloadEvent
from datafusion_otel.diagnostics import DiagnosticsSink

__all__ = ["DiagnosticsSpanProcessor"]

_LOG = logging.getLogger("datafusion_otel.processor")


class DiagnosticsSpanProcessor(SpanProcessor):
    """SDK span processor that records diagnostics rows of finished spans into a sink.

    Args:
        sink: Receives every diagnostics row of every run this processor sees. May be None
            when the processor only delivers to the sinks passed to `start_run`.
        findings: Record each run's findings as DATAFUSION_FINDINGS_V1 rows when its root span
            ends (computed from the run's rows on the ending thread; errors are logged once,
            never raised).

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from datafusion_otel import DiagnosticsCollector
        >>> provider = TracerProvider()
        >>> provider.add_span_processor(DiagnosticsSpanProcessor(DiagnosticsCollector()))
    """

    def __init__(self, sink: DiagnosticsSink | None = None, *, findings: bool = True) -> None:
        self._sink = sink
        self._findings = FindingsRecorder() if findings else None
        self._findings_errors = 0
        self._flush_mark = dispatcher.new_mark()
        self._errors = 0
        self._errors_reported = 0
        self._logged_error = False
        self.serves_runs = False
        """Set by `datafusion_otel.config` on the one processor it attaches to a provider: it
        delivers the rows of the spans of that provider to their run's sink even when the
        run's span is another provider's (see `_process`)."""

    @property
    def sink(self) -> DiagnosticsSink | None:
        """The sink that receives every row this processor produces."""
        return self._sink

    def replace_sink(self, sink: DiagnosticsSink | None) -> None:
        """Send the rows of spans ending from now on to ``sink`` instead (None: no sink)."""
        self._sink = sink

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Do nothing: rows are made when spans end."""

    def on_end(self, span: ReadableSpan) -> None:
        """Turn ``span`` into diagnostics rows and hand them to the sinks; never raises."""
        try:
            self._process(span)
        except Exception as exc:  # instrumentation must never break the observed program
            self._errors += 1
            if not self._logged_error:
                self._logged_error = True
                _LOG.error(  # the message may quote row values: type and frames only
                    "could not turn a span into diagnostics rows: %s", describe_exception(exc)
                )

    def _process(self, span: ReadableSpan) -> None:
        # this runs for every span of the process: read the SDK's fields without the copies
        # that the public properties make (events -> tuple, attributes -> mapping proxy)
        events = getattr(span, "_events", None)
        if events is None:
            events = span.events
        found = root_run_id(span)
        root = found is not None
        if found is not None:
            run_id = found
        elif any(isinstance(e, PayloadEvent) for e in events):
            run_id = format_trace_id(span.context.trace_id)
        else:
            if span.parent is None and self._findings:  # a trace root that is not a run
                trace_run = format_trace_id(span.context.trace_id)
                discard = self._findings.discard
                if not _capture_queue.after_trace(
                    span.context.trace_id, lambda: discard(trace_run)
                ):
                    discard(trace_run)
            return
        route = _routing.lookup(run_id)
        # Only the owner (the package's processor of the provider that made the run span)
        # and the package's processors of other providers deliver to the run's sink: each
        # span is seen by the processors of one provider, which has one package processor, so
        # the sink gets each row once however many processors the user added.
        owns_route = route is not None and (route.owner is self or self.serves_runs)
        targets: list[DiagnosticsSink] = []
        if self._sink is not None and (route is None or route.sink is not self._sink):
            targets.append(self._sink)
        if route is not None and owns_route:
            targets.append(route.sink)
        if targets:  # rows are built only when someone receives them
            tables = event_rows(span)
            # the package's processor of another provider never sees this run's root: it
            # holds no rows for the run's findings
            foreign = route is not None and route.owner is not self and self.serves_runs
            # nor the processor of a worker attached to a run of another process
            foreign = foreign or _routing.is_attached(run_id)
            if self._findings is not None and not foreign:
                late = root and _capture_queue.after_trace(
                    span.context.trace_id, lambda: self._late_findings(run_id, targets)
                )  # an auto run's root ends before its capture: findings once it landed
                found_rows = self._run_findings(run_id, tables, root and not late)
                if found_rows:
                    tables.append((attr.FINDINGS_TABLE, found_rows))
            if root:
                tables.append((attr.RUNS_TABLE, [run_row(span)]))
            for table, rows in tables:
                for sink in targets:
                    dispatcher.record_events(sink, table, rows)
        if root and owns_route:
            _routing.release(run_id)

    def _run_findings(
        self, run_id: str, tables: list[tuple[str, list[dict[str, object]]]], root: bool
    ) -> list[dict[str, object]]:
        """Hold the span's rows; at the run's root, return its findings rows. Never raises."""
        if self._findings is None:
            return []
        try:
            self._findings.add(run_id, tables)
            return (self._findings.finish(run_id) or []) if root else []
        except Exception as exc:  # findings never cost the run its rows
            self._findings_errors += 1
            if self._findings_errors == 1:
                _LOG.error(  # type only: a message could quote row values
                    "could not compute the findings of a run: %s",
                    f"{type(exc).__module__}.{type(exc).__qualname__}",
                )
            return []

    def _late_findings(self, run_id: str, targets: list[DiagnosticsSink]) -> None:
        """Deliver the findings of a run whose captures landed after its root span ended."""
        found_rows = self._run_findings(run_id, [], True)
        if found_rows:
            for sink in targets:
                dispatcher.record_events(sink, attr.FINDINGS_TABLE, found_rows)

    @property
    def findings_skipped_runs(self) -> int:
        """Runs whose findings were not recorded: too many rows (the cap) or a failure."""
        recorder = self._findings
        return (0 if recorder is None else recorder.skipped_runs) + self._findings_errors

    def delivery_stats(self) -> DeliveryStats:
        """Return the package's sink delivery counters."""
        return dispatcher.stats()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait up to ``timeout_millis`` for queued rows to reach their sinks.

        Returns:
            False if rows are still pending, or were dropped or failed since the last flush,
            or if a span could not be turned into rows since the last flush.
        """
        started = time.monotonic()
        flushed = dispatcher.force_flush(timeout_millis / 1000, mark=self._flush_mark)
        _LOG.debug("flushed sinks in %.1f ms", (time.monotonic() - started) * 1000)
        errors = self._errors
        clean = errors == self._errors_reported
        self._errors_reported = errors
        return flushed and clean

    def shutdown(self, timeout_millis: int = 5_000) -> bool:  # type: ignore[override]
        """Flush queued rows, waiting at most ``timeout_millis``.

        At interpreter exit the wait is also cut to what is left of the package's exit budget
        (``DATAFUSION_OTEL_EXIT_TIMEOUT``).

        Returns:
            False if rows were not all delivered.
        """
        return self.force_flush(int(bounded_at_exit(timeout_millis / 1000) * 1000))
