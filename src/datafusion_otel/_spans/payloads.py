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
_counts = {
    "attached": 0,
    "event_limit_reached": 0,
    "rows_lost": 0,
    "attribute_limit_reached": 0,
    "not_recording": 0,
}
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
        self.overflow: list[tuple[str, list[Mapping[str, object]]]] = []
        """Rows of events the span had no room for: not exported, still made into rows."""

    def tables(self) -> list[tuple[str, list[Mapping[str, object]]]]:
        """Return ``(table, rows)`` of this event and of the events it carries for others."""
        return [(self.table, self.rows), *self.overflow]


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
        return _overflow(span, events, name, table, rows, maxlen)
    _check_attribute_limits(name, attributes, limits)
    bounded = BoundedAttributes(
        limits.max_event_attributes,
        dict(attributes),
        max_value_len=limits.max_attribute_length,
        immutable=True,
    )
    add(PayloadEvent(name, bounded, table=table, rows=rows))
    _count("attached")
    return True


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        _LOG.warning(message, *args)


def _overflow(
    span: trace.Span,
    events: Sequence[object],
    name: str,
    table: str,
    rows: Sequence[Mapping[str, object]],
    maxlen: int,
) -> bool:
    """The span is full: keep the rows on its latest payload event instead (not exported).

    The SDK would otherwise evict the oldest event silently. The event is not exported (warned
    once, counted); its rows still reach the diagnostics tables when the span has a payload
    event to carry them, else they are lost and counted.
    """
    _count("event_limit_reached")
    _warn_once(
        "events:" + name,
        "span %r holds %d events, its limit: %s event not exported, counted "
        "(raise OTEL_SPAN_EVENT_COUNT_LIMIT to keep more)",
        getattr(span, "name", "?"),
        maxlen,
        name,
    )
    carrier = next((e for e in reversed(list(events)) if isinstance(e, PayloadEvent)), None)
    if carrier is None:
        _count("rows_lost")
        return False
    carrier.overflow.append((table, list(rows)))
    return True


def _check_attribute_limits(
    name: str, attributes: Mapping[str, AttributeValue], limits: object
) -> None:
    """Warn once and count when the SDK limits would cut this event's attributes."""
    max_count = getattr(limits, "max_event_attributes", None)
    max_len = getattr(limits, "max_attribute_length", None)
    too_many = max_count is not None and len(attributes) > max_count
    too_long = max_len is not None and any(
        isinstance(v, str) and len(v) > max_len for v in attributes.values()
    )
    if too_many or too_long:
        _count("attribute_limit_reached")
        _warn_once(
            "attributes:" + name,
            "span limits cut the attributes of %s events (%d attributes, limit %s; value "
            "length limit %s): previews are incomplete, full rows are kept",
            name,
            len(attributes),
            max_count,
            max_len,
        )
