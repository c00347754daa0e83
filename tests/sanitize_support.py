"""Collect every text the package emits, and look in it for renderings of literals.

The oracle (what a leak looks like) is written here and in the tests, per DataFusion 55's
display formats; it does not use the package's own rendering generator.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow.ipc as ipc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datafusion_otel import DiagnosticsCollector

MIN_LENGTH = 3
"""The documented rule: renderings shorter than 3 characters are not checked."""


def _values(value: object, out: list[str]) -> None:
    """Flatten ``value`` into its texts; a JSON text also counts decoded (readers decode it)."""
    if isinstance(value, dict):
        for item in value.values():
            _values(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _values(item, out)
    elif isinstance(value, str):
        out.append(value)
        if value[:1] in ("{", "["):
            try:
                decoded = json.loads(value)
            except ValueError:
                return
            _values(decoded, out)
    # numbers and booleans are metrics and flags, not texts: a literal cannot hide there


def span_texts(exporter: InMemorySpanExporter) -> list[str]:
    """Span names, attribute values, status descriptions, event names and attributes."""
    out: list[str] = []
    for span in exporter.get_finished_spans():
        out.append(span.name)
        _values(dict(span.attributes or {}), out)
        if span.status.description:
            out.append(span.status.description)
        for event in span.events:
            out.append(event.name)
            _values(dict(event.attributes or {}), out)
    return out


def row_texts(sink: DiagnosticsCollector) -> list[str]:
    """Every value of every row of every table, as text (JSON columns decoded too)."""
    out: list[str] = []
    for rows in sink.events_snapshot().values():
        for row in rows:
            _values(row, out)
    return out


def file_texts(directory: Path) -> list[str]:
    """Every file under ``directory``: Arrow IPC files as their values, others as bytes."""
    out: list[str] = []
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".arrow":
            _values(ipc.open_file(path).read_all().to_pydict(), out)
        out.append(path.read_bytes().decode("utf-8", errors="replace"))
    return out


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Messages and tracebacks of the package's log records."""
    out: list[str] = []
    for record in records:
        if not record.name.startswith("datafusion_otel"):
            continue
        out.append(record.getMessage())
        if record.exc_info:
            out.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            out.append(record.exc_text)
    return out


_FRAME_LOCATION = re.compile(r'File "[^"\n]*", line \d+,')


def leaks(texts: Iterable[str], renderings: Iterable[str], names: Iterable[str] = ()) -> list[str]:
    """Return the renderings found in ``texts`` on token boundaries (names exempt)."""
    exempt = set(names)
    found: list[str] = []
    # a traceback's frame locations are the program's, not the query's: a literal 406 is not
    # leaked by 'File ".../runs.py", line 406, in tracked_run'
    body = _FRAME_LOCATION.sub('File "?", line ?,', "\n".join(texts))
    for rendering in set(renderings):
        if len(rendering) < MIN_LENGTH or rendering in exempt:
            continue
        pattern = re.escape(rendering)
        if rendering[0].isalnum() or rendering[0] == "_":
            pattern = r"(?<!\w)" + pattern
        if rendering[-1].isalnum() or rendering[-1] == "_":
            pattern += r"(?!\w)"
        if re.search(pattern, body):
            found.append(rendering)
    return sorted(found)


def where(texts: Iterable[str], rendering: str) -> list[str]:
    """Snippets of ``texts`` around each occurrence of ``rendering`` (for failure messages)."""
    out: list[str] = []
    for text in texts:
        start = text.find(rendering)
        while start >= 0 and len(out) < 5:
            out.append(text[max(0, start - 200) : start + len(rendering) + 80])
            start = text.find(rendering, start + 1)
    return out
