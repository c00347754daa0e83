"""The report's per-query timeline: one bar per operator and partition (HTML and CSS only).

Bars come from DataFusion's per-partition ``start_timestamp`` / ``end_timestamp`` metrics
(``start_time_unix_ns`` / ``end_time_unix_ns`` in the operator-metrics rows). The time axis of a
query runs from its earliest start to its latest end; each bar is placed with percentages, so
the timeline renders without JavaScript. An (operator, partition) that did not record both
timestamps has no bar; a query with none says "not recorded".
"""

from __future__ import annotations

import html

from datafusion_otel.profile import QueryProfile

__all__ = ["timeline"]

_MS = 1_000_000
_MIN_WIDTH = 0.15
"""Narrowest bar, % of the axis (an instant still shows)."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _partition_key(partition: int | None) -> int:
    return -1 if partition is None else partition


def timeline(query: QueryProfile, not_recorded: str) -> str:
    """Return the timeline section of ``query`` (a ``<div class="gantt">`` of rows).

    Every bar carries ``data-gantt="<operator path>:<partition>"`` (partition ``-`` for a row
    without one) and a ``title`` with its start offset and duration.
    """
    spans = [
        (op, partition, start, end)
        for op in query.operators.values()
        for partition, (start, end) in sorted(
            op.partition_spans.items(), key=lambda kv: _partition_key(kv[0])
        )
    ]
    if not spans:
        return f'<h3>Timeline</h3><p><span class="nr">{_e(not_recorded)}</span></p>'
    origin = min(start for _op, _p, start, _end in spans)
    finish = max(end for _op, _p, _start, end in spans)
    width = max(finish - origin, 1)
    rows = []
    for op, partition, start, end in spans:
        left = (start - origin) / width * 100
        size = max((end - start) / width * 100, _MIN_WIDTH)
        left = min(left, 100 - size)
        part = "-" if partition is None else str(partition)
        label = f"{op.name} {op.path} · p{part}"
        note = (
            f"{label}: starts at {(start - origin) / _MS:,.2f} ms, "
            f"lasts {(end - start) / _MS:,.2f} ms"
        )
        rows.append(
            f'<div class="grow"><span class="glabel">{_e(label)}</span>'
            f'<span class="gtrack"><span class="gbar" data-gantt="{_e(op.path)}:{part}" '
            f'style="left:{left:.2f}%;width:{size:.2f}%" title="{_e(note)}"></span></span>'
            f'<span class="gtime">{(end - start) / _MS:,.2f} ms</span></div>'
        )
    return (
        f"<h3>Timeline ({(finish - origin) / _MS:,.2f} ms from the first operator start to the "
        f"last end; one bar per operator and partition)</h3>"
        f'<div class="gantt">{"".join(rows)}</div>'
    )
