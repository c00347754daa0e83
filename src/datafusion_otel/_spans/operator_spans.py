"""Operator spans: one child span per physical operator, timed by DataFusion's own metrics.

Nothing is re-run: each operator's span starts at the earliest ``start_timestamp`` and ends at
the latest ``end_timestamp`` its partitions recorded, both read from the executed plan's
metrics (the operator-metrics rows). Spans nest as the plan does; an operator that recorded no
start/end time (an in-memory scan, an operator that never ran) gets no span, its children nest
under its nearest timed ancestor, and it is counted (``datafusion.operator_spans.untimed``,
on the ``datafusion.capture`` span). At most ``limit`` spans are made, in plan pre-order so
parents come before their children; the rest are counted (``datafusion.operator_spans.dropped``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from datafusion_otel import attributes as attr

__all__ = ["OperatorTotals", "emit_operator_spans", "operator_totals"]

_SUMMED = ("output_rows", "elapsed_compute_ns", "spill_count", "spilled_bytes")
_SUMMED_OTHER = ("time_elapsed_processing", "bytes_scanned", "output_bytes")


@dataclass
class OperatorTotals:
    """One operator's metrics over all its partitions.

    Attributes:
        start: Earliest recorded start, Unix ns (None when no partition recorded one).
        end: Latest recorded end, Unix ns.
        timed_partitions: Partitions that recorded both a start and an end.
        sums: Summed metrics (only those some partition recorded).
    """

    start: int | None = None
    end: int | None = None
    timed_partitions: int = 0
    sums: dict[str, int] = field(default_factory=dict)


def _add(sums: dict[str, int], key: str, value: object) -> None:
    if type(value) is int:  # not bool; rows hold plain ints (this runs per row and metric)
        sums[key] = sums.get(key, 0) + value


def operator_totals(rows: Sequence[Mapping[str, object]]) -> dict[str, OperatorTotals]:
    """Return the totals of DATAFUSION_OPERATOR_METRICS_V1 ``rows`` per operator path."""
    totals: dict[str, OperatorTotals] = {}
    for row in rows:
        path = str(row.get("operator_path"))
        acc = totals.get(path)
        if acc is None:
            acc = totals[path] = OperatorTotals()
        sums = acc.sums
        for key in _SUMMED:
            _add(sums, key, row.get(key))
        other = row.get("other_metrics")
        if type(other) is dict or isinstance(other, Mapping):
            for key in _SUMMED_OTHER:
                _add(sums, key, other.get(key))
        start, end = row.get("start_time_unix_ns"), row.get("end_time_unix_ns")
        timed_start = type(start) is int
        timed_end = type(end) is int
        if timed_start and (acc.start is None or start < acc.start):  # type: ignore[operator]
            acc.start = start  # type: ignore[assignment]
        if timed_end and (acc.end is None or end > acc.end):  # type: ignore[operator]
            acc.end = end  # type: ignore[assignment]
        if timed_start and timed_end:
            acc.timed_partitions += 1
    return totals


def _attributes(name: str, path: str, acc: OperatorTotals) -> dict[str, AttributeValue]:
    sums = acc.sums
    attrs: dict[str, AttributeValue] = {
        attr.OPERATOR_NAME: name,
        attr.OPERATOR_PATH: path,
        attr.OPERATOR_DERIVED: True,
        attr.OPERATOR_PARTITIONS: acc.timed_partitions,
    }
    if "." in path:
        attrs[attr.OPERATOR_PARENT_PATH] = path.rsplit(".", 1)[0]
    if "output_rows" in sums:
        attrs[attr.OPERATOR_OUTPUT_ROWS] = sums["output_rows"]
    if sums.get("time_elapsed_processing"):  # file scans: their compute is in this metric,
        attrs[attr.OPERATOR_ELAPSED_COMPUTE_NS] = sums["time_elapsed_processing"]  # not in
        attrs[attr.OPERATOR_ELAPSED_COMPUTE_METRIC] = "time_elapsed_processing"  # the other
    elif "elapsed_compute_ns" in sums:
        attrs[attr.OPERATOR_ELAPSED_COMPUTE_NS] = sums["elapsed_compute_ns"]
        attrs[attr.OPERATOR_ELAPSED_COMPUTE_METRIC] = "elapsed_compute"
    for key, name_ in (
        ("spill_count", attr.OPERATOR_SPILL_COUNT),
        ("spilled_bytes", attr.OPERATOR_SPILLED_BYTES),
        ("output_bytes", attr.OPERATOR_OUTPUT_BYTES),
        ("bytes_scanned", attr.OPERATOR_BYTES_SCANNED),
    ):
        if key in sums:
            attrs[name_] = sums[key]
    return attrs


def emit_operator_spans(
    parent: trace.Span,
    nodes: Sequence[Any],
    rows: Sequence[Mapping[str, object]],
    tracer: trace.Tracer,
    *,
    limit: int,
    counts_on: trace.Span | None = None,
) -> tuple[int, int, int]:
    """Make the operator spans of one execution under ``parent`` and count them on it.

    Args:
        parent: The span the query ran under (its execution span, or the run's root span
            when there is none); it may have ended.
        nodes: The executed plan's operators in pre-order (``_capture.plan_walk.OperatorNode``).
        rows: Its operator-metrics rows (one per operator and partition).
        tracer: Tracer of the run's provider.
        limit: At most this many spans are made.
        counts_on: The span the counts are set on (the capture span; default ``parent``).

    Returns:
        ``(made, untimed, dropped)``; the same counts are added to ``counts_on``'s
        attributes.
    """
    totals = operator_totals(rows)
    anchors: dict[str, trace.Span] = {}  # operator path -> span its children nest under
    made: list[tuple[trace.Span, int]] = []
    untimed = dropped = 0
    for node in nodes:
        path: str = node.path
        parent_path = path.rsplit(".", 1)[0] if "." in path else None
        anchor = anchors.get(parent_path, parent) if parent_path is not None else parent
        acc = totals.get(path)
        if acc is None or acc.start is None or acc.end is None:
            untimed += 1
            anchors[path] = anchor
            continue
        time.sleep(0)  # let a query thread waiting for the GIL run (see _capture.queue)
        if len(made) >= limit:
            dropped += 1
            anchors[path] = anchor
            continue
        span = tracer.start_span(
            node.name,
            context=trace.set_span_in_context(anchor),
            start_time=acc.start,
            attributes=_attributes(node.name, path, acc),
        )
        anchors[path] = span
        made.append((span, max(acc.end, acc.start)))
    for span, end_ns in reversed(made):  # children end before their parents
        span.end(end_time=end_ns)
    counts = {
        attr.OPERATOR_SPANS_COUNT: len(made),
        attr.OPERATOR_SPANS_UNTIMED: untimed,
        attr.OPERATOR_SPANS_DROPPED: dropped,
    }
    holder = counts_on if counts_on is not None else parent
    previous = getattr(holder, "attributes", None) or {}  # a span holding several queries
    holder.set_attributes({key: value + _int(previous.get(key)) for key, value in counts.items()})
    return len(made), untimed, dropped


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
