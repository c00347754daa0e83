"""Span events that carry their full diagnostics rows in-process.

Span events exported over OTLP hold only bounded previews; the full rows ride along on the
event object itself (`PayloadEvent`), so the in-process `DiagnosticsSpanProcessor` turns
them into complete table rows while exporters see only the previews. The payload lives
exactly as long as the span does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event
from opentelemetry.util.types import AttributeValue

__all__ = ["PayloadEvent", "add_payload_event", "payload_stats"]

_LOG = logging.getLogger("datafusion_otel.payloads")
_lock = threading.Lock()
_counts = {"attached": 0, "event_limit_reached": 0, "not_recording": 0}
_warned: set[str] = set()


class PayloadEvent(Event):
    """An SDK span event carrying the full diagnostics rows of one table."""

    def __init__(
        self,
        name: str,
        attributes: BoundedAttributes,
        *,
        table: str,
        rows: Sequence[Mapping[str, object]],
    ) -> None:
        super().__init__(name=name, attributes=attributes)
        self.table = table
        self.rows = list(rows)


def _count(what: str) -> None:
    with _lock:
        _counts[what] += 1


def payload_stats() -> dict[str, int]:
    """Return counters: events attached, and events lost to span limits or non-recording spans."""
    with _lock:
        return dict(_counts)


def add_payload_event(
    span: trace.Span,
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    table: str,
    rows: Sequence[Mapping[str, object]],
) -> bool:
    """Add the event ``name`` with ``attributes`` to ``span``, carrying ``rows`` of ``table``.

    Args:
        span: The span to annotate (an SDK span; other spans get the plain event only).
        name: Event name.
        attributes: Event attributes (previews), as exported.
        table: Diagnostics table the rows belong to.
        rows: Full rows for the in-process span processor.

    Returns:
        True when the rows were attached; False when the span is not recording, is not an SDK
        span, or already holds as many events as its limits allow (warned once and counted:
        the SDK would otherwise silently evict the oldest event).
    """
    if not span.is_recording():
        _count("not_recording")
        return False
    limits = getattr(span, "_limits", None)
    events = getattr(span, "_events", None)
    add = getattr(span, "_add_event", None)
    if limits is None or events is None or add is None:
        span.add_event(name, dict(attributes))
        _count("not_recording")
        return False
    queue = getattr(events, "_dq", None)
    maxlen = (
        getattr(queue, "maxlen", None) if queue is not None else getattr(events, "maxlen", None)
    )
    if maxlen is not None and len(events) >= maxlen:
        _count("event_limit_reached")
        if name not in _warned:
            _warned.add(name)
            _LOG.warning(
                "span %r holds %d events, its limit: %s event not added and counted "
                "(raise OTEL_SPAN_EVENT_COUNT_LIMIT to keep more)",
                getattr(span, "name", "?"),
                maxlen,
                name,
            )
        return False
    bounded = BoundedAttributes(
        limits.max_event_attributes,
        dict(attributes),
        max_value_len=limits.max_attribute_length,
        immutable=True,
    )
    add(PayloadEvent(name, bounded, table=table, rows=rows))
    _count("attached")
    return True
