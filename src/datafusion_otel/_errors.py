"""Exceptions recorded on spans and in run metadata without the query's literals.

Error messages quote what they failed on, and DataFusion's quote the query's literals
(``Cannot cast string 'alice@example.com' to value of Int32 type``). Under the default policy
their text goes through `sanitize.sanitize_sql` before it reaches a span, a row or a file. The
policy for runs comes from ``DATAFUSION_OTEL_SQL_TEXT`` (``sanitized`` by default, ``raw`` to
keep texts as they are); the auto-instrumentation uses its own ``sql_text`` option.
"""

from __future__ import annotations

import os
import re
import traceback

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from datafusion_otel.sanitize import SqlTextPolicy, sanitize_sql

__all__ = ["error_text", "record_exception", "run_policy"]

SQL_TEXT_ENV = "DATAFUSION_OTEL_SQL_TEXT"
_FRAME = '  File "'
"""Traceback frame location lines (file, line number, function) are kept as they are."""
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def run_policy() -> SqlTextPolicy:
    """Return the text policy for runs: ``DATAFUSION_OTEL_SQL_TEXT``, default sanitized."""
    value = os.environ.get(SQL_TEXT_ENV, "").strip().lower()
    return "raw" if value == "raw" else "sanitized"


def error_text(text: str, policy: SqlTextPolicy) -> str:
    """Return ``text`` with literals replaced by ``?`` unless ``policy`` is ``raw``."""
    return text if policy == "raw" else sanitize_sql(text)


def _lines_text(text: str, policy: SqlTextPolicy) -> str:
    """`error_text` line by line, keeping each line's indentation and line break."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.strip()
        if not body:
            out.append(line)
            continue
        start = line.index(body[0])
        out.append(line[:start] + error_text(body, policy) + line[start + len(body) :])
    return "".join(out)


def _frame_text(entry: str, policy: SqlTextPolicy) -> str:
    """Keep a frame's location line (file, line number, function); treat everything else."""
    if entry.startswith(_FRAME):
        location, newline, rest = entry.partition("\n")
        if policy != "raw":  # source lines are Python: "..." is a string there, not a name
            rest = _DOUBLE_QUOTED.sub("?", rest)
        return location + newline + _lines_text(rest, policy)
    return _lines_text(entry, policy)


def record_exception(span: trace.Span, exc: BaseException, policy: SqlTextPolicy) -> None:
    """Add the standard ``exception`` event to ``span``, its texts treated under ``policy``."""
    if policy == "raw":
        span.record_exception(exc, escaped=True)
        return
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    stack = "".join(_frame_text(line, policy) for line in lines)
    attributes: dict[str, AttributeValue] = {
        "exception.type": type(exc).__qualname__,
        "exception.message": error_text(str(exc), policy),
        "exception.stacktrace": stack,
        "exception.escaped": "True",
    }
    span.add_event("exception", attributes)
