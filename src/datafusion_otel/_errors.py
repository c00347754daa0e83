"""Exceptions recorded on spans and in run metadata without the query's literals.

Error messages quote what they failed on, and DataFusion's quote the query's literals
(``Cannot cast string 'alice@example.com' to value of Int32 type``). Under the default policy
their text goes through `sanitize.sanitize_sql` before it reaches a span, a row or a file. The
policy for runs comes from ``DATAFUSION_OTEL_SQL_TEXT`` (``sanitized`` by default, ``raw`` to
keep texts as they are); the auto-instrumentation uses its own ``sql_text`` option.
"""

from __future__ import annotations

import os
import traceback

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from datafusion_otel.sanitize import SqlTextPolicy, sanitize_sql

__all__ = ["error_text", "record_exception", "run_policy"]

SQL_TEXT_ENV = "DATAFUSION_OTEL_SQL_TEXT"


def run_policy() -> SqlTextPolicy:
    """Return the text policy for runs: ``DATAFUSION_OTEL_SQL_TEXT``, default sanitized."""
    value = os.environ.get(SQL_TEXT_ENV, "").strip().lower()
    return "raw" if value == "raw" else "sanitized"


def error_text(text: str, policy: SqlTextPolicy) -> str:
    """Return ``text`` with literals replaced by ``?`` unless ``policy`` is ``raw``."""
    return text if policy == "raw" else sanitize_sql(text)


def record_exception(span: trace.Span, exc: BaseException, policy: SqlTextPolicy) -> None:
    """Add the standard ``exception`` event to ``span``, its texts treated under ``policy``."""
    if policy == "raw":
        span.record_exception(exc, escaped=True)
        return
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    attributes: dict[str, AttributeValue] = {
        "exception.type": type(exc).__qualname__,
        "exception.message": error_text(str(exc), policy),
        "exception.stacktrace": error_text(stack, policy),
        "exception.escaped": "True",
    }
    span.add_event("exception", attributes)
