"""Test helpers for the capture worker: artifacts arrive on a ``datafusion.capture`` span.

Plan artifacts are captured off the query's thread and attached to a ``datafusion.capture``
child span of the span the query ran under; tests wait for the worker (`settle`) and look the
events up there (`capture_span_of`, `artifact_events`).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan

from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue


def settle(timeout: float = 30.0) -> None:
    """Wait until the capture worker has attached every pending capture."""
    assert _capture_queue.drain(timeout), "captures still pending"


def capture_spans_of(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The ``datafusion.capture`` spans whose parent is ``parent``."""
    return [
        s
        for s in spans
        if s.name == attr.CAPTURE_SPAN
        and s.parent is not None
        and s.parent.span_id == parent.context.span_id
    ]


def capture_span_of(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> ReadableSpan:
    """The one ``datafusion.capture`` span under ``parent``."""
    found = capture_spans_of(spans, parent)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def artifact_events(
    spans: Sequence[ReadableSpan], parent: ReadableSpan, name: str = attr.PLAN_ARTIFACTS_EVENT
) -> list[Event]:
    """Events named ``name`` on the capture spans under ``parent``."""
    return [e for s in capture_spans_of(spans, parent) for e in s.events if e.name == name]
