"""Run-level OpenTelemetry metrics, recorded when a run's root span ends.

`RunMetricsSpanProcessor` is a small SDK span processor. For every span of a run it sums
the figures of the ``datafusion_operator_metrics_v1`` payload events (root operators'
output rows, scan ``bytes_scanned``, ``spill_count``); when the run's root span ends it
records, through the MeterProvider (the global one unless given):

=====================================  =========  ======================================
instrument                             kind       attributes
=====================================  =========  ======================================
``datafusion.run.duration`` (ms)       histogram  ``datafusion.run.label``, ``...status``
``datafusion.runs``                    counter    ``datafusion.run.label``, ``...status``
``datafusion.run.failures``            counter    ``datafusion.run.label``, ``error.type``
``datafusion.run.output_rows``         counter    ``datafusion.run.label``
``datafusion.run.bytes_scanned`` (By)  counter    ``datafusion.run.label``
``datafusion.run.spill_count``         counter    ``datafusion.run.label``
=====================================  =========  ======================================

The last three are added only for runs whose operator metrics were captured. A run's root
operators are, per query (span and plan hash), the operator-metrics rows with the shortest
``operator_path``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from datafusion_otel import attributes as attr
from datafusion_otel._processing.delivery import describe_exception
from datafusion_otel._processing.span_rows import is_run_root, run_row
from datafusion_otel._spans.payloads import PayloadEvent
from datafusion_otel.config import resolve_provider

__all__ = ["RunMetricsSpanProcessor", "RunTotals", "enable_run_metrics", "operator_totals"]

_LOG = logging.getLogger("datafusion_otel.metrics")
_MAX_PENDING_RUNS = 10_000
_BYTES_SCANNED = "bytes_scanned"


@dataclass
class RunTotals:
    """Figures summed over a run's operator-metrics rows (None: nothing was reported).

    Attributes:
        output_rows: Rows produced by the root operators of the run's queries.
        bytes_scanned: Sum of the scan operators' ``bytes_scanned``.
        spill_count: Sum of the operators' ``spill_count``.
    """

    output_rows: int | None = None
    bytes_scanned: int | None = None
    spill_count: int | None = None

    def add(self, other: RunTotals) -> None:
        """Add ``other``'s figures to these."""
        for name in ("output_rows", "bytes_scanned", "spill_count"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, (mine or 0) + theirs)


def _other(row: Mapping[str, object], name: str) -> int | None:
    other = row.get("other_metrics")
    if isinstance(other, Mapping):
        value = other.get(name)
    elif isinstance(other, list):
        value = next((v for k, v in other if k == name), None)
    else:
        value = None
    return value if isinstance(value, int) else None


def operator_totals(rows: Iterable[Mapping[str, object]]) -> RunTotals:
    """Sum DATAFUSION_OPERATOR_METRICS_V1 rows into `RunTotals`."""
    totals = RunTotals()
    rows = list(rows)
    shortest: dict[tuple[object, object], int] = {}
    for row in rows:
        key = (row.get("span_id"), row.get("plan_hash"))
        length = len(str(row.get("operator_path", "")))
        shortest[key] = min(shortest.get(key, length), length)
    for row in rows:
        key = (row.get("span_id"), row.get("plan_hash"))
        value = row.get("output_rows")
        if isinstance(value, int) and len(str(row.get("operator_path", ""))) == shortest[key]:
            totals.output_rows = (totals.output_rows or 0) + value
        scanned = _other(row, _BYTES_SCANNED)
        if scanned is not None:
            totals.bytes_scanned = (totals.bytes_scanned or 0) + scanned
        spills = row.get("spill_count")
        if isinstance(spills, int):
            totals.spill_count = (totals.spill_count or 0) + spills
    return totals


class RunMetricsSpanProcessor(SpanProcessor):
    """SDK span processor recording run-level metrics when a run's root span ends.

    Args:
        meter_provider: Provider of the instruments (default: the global MeterProvider,
            looked up when the processor is built).
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(attr.TRACER_NAME)
        self._duration = meter.create_histogram(
            attr.METRIC_RUN_DURATION, unit="ms", description="Duration of finished runs"
        )
        self._runs = meter.create_counter(attr.METRIC_RUNS, description="Finished runs")
        self._failures = meter.create_counter(attr.METRIC_RUN_FAILURES, description="Failed runs")
        self._rows = meter.create_counter(
            attr.METRIC_OUTPUT_ROWS, description="Rows produced by the runs' queries"
        )
        self._bytes = meter.create_counter(
            attr.METRIC_BYTES_SCANNED, unit="By", description="Bytes read by scan operators"
        )
        self._spills = meter.create_counter(
            attr.METRIC_SPILLS, description="Spills reported by the runs' operators"
        )
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, RunTotals] = OrderedDict()
        self._logged_error = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Do nothing: metrics are recorded when spans end."""

    def on_end(self, span: ReadableSpan) -> None:
        """Accumulate the span's operator metrics; record the run's metrics at its root span."""
        try:
            self._process(span)
        except Exception as exc:  # instrumentation must never break the observed program
            if not self._logged_error:
                self._logged_error = True
                _LOG.error("could not record run metrics: %s", describe_exception(exc))

    def _process(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        rows = [
            row
            for event in span.events
            if isinstance(event, PayloadEvent) and event.table == attr.OPERATOR_METRICS_TABLE
            for row in event.rows
        ]
        with self._lock:
            totals = self._pending.pop(trace_id, None)
            if rows:
                totals = totals or RunTotals()
                totals.add(operator_totals(rows))
            if not is_run_root(span):
                if totals is not None:
                    self._pending[trace_id] = totals
                    while len(self._pending) > _MAX_PENDING_RUNS:
                        self._pending.popitem(last=False)
                return
        self._record(run_row(span), totals or RunTotals(), span)

    def _record(self, row: Mapping[str, object], totals: RunTotals, span: ReadableSpan) -> None:
        label = str(row["label"])
        status = str(row["status"])
        by_run = {attr.METRIC_ATTR_LABEL: label, attr.METRIC_ATTR_STATUS: status}
        duration = row.get("duration_ms")
        if isinstance(duration, int):
            self._duration.record(duration, by_run)
        self._runs.add(1, by_run)
        if status == "failed":
            failure = {attr.METRIC_ATTR_LABEL: label}
            error_type = (span.attributes or {}).get(attr.ERROR_TYPE)
            if isinstance(error_type, str):
                failure[attr.ERROR_TYPE] = error_type
            self._failures.add(1, failure)
        by_label = {attr.METRIC_ATTR_LABEL: label}
        if totals.output_rows is not None:
            self._rows.add(totals.output_rows, by_label)
        if totals.bytes_scanned is not None:
            self._bytes.add(totals.bytes_scanned, by_label)
        if totals.spill_count is not None:
            self._spills.add(totals.spill_count, by_label)

    def shutdown(self) -> None:
        """Forget runs whose root span has not ended."""
        with self._lock:
            self._pending.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here (the MeterProvider's readers export).

        Returns:
            Always True.
        """
        return True


def enable_run_metrics(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> RunMetricsSpanProcessor:
    """Record run-level metrics for every run from now on.

    Args:
        meter_provider: Provider of the instruments (default: the global one).
        tracer_provider: Provider whose spans are observed (default: the one that creates
            run spans, see `datafusion_otel.config`).

    Returns:
        The processor, attached to the tracer provider.
    """
    processor = RunMetricsSpanProcessor(meter_provider)
    (tracer_provider or resolve_provider()).add_span_processor(processor)
    return processor
