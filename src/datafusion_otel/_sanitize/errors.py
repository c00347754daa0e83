"""Exceptions recorded on spans and in run metadata without the query's literals.

Error messages quote what they failed on, and DataFusion's quote the query's literals
(``Cannot cast string 'alice@example.com' to value of Int32 type``). Under the default policy
their text goes through the same machinery as plan texts (`redact`): when the SQL text of the
failing query is known (passed as ``sql``, or remembered on the exception with `remember_sql`)
every rendering of its literals is redacted and names stay readable (``table 'orders' not
found``) and every number of 3 characters or more becomes ``?`` (DataFusion also quotes
constants it computed: ``Can't cast value 8675309123000``); when it is not known, the literals
of the most recently seen SQL texts are redacted, and every quoted text that is not one of
their names and every number becomes ``?``. Literals that no SQL text holds are remembered on
the exception on the error path: those of the failing DataFrame's logical plan
(`remember_frame`: ``lit("...")`` of the DataFrame API, bound parameters) and the parameters
of a failed ``SessionContext.sql`` call (`remember_params`).
A message that still holds a rendering is withheld. The policy for runs comes from
``DATAFUSION_OTEL_SQL_TEXT`` (``sanitized`` by default, ``raw`` to keep texts as they are); the
auto-instrumentation uses its own ``sql_text`` option.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import traceback
from collections import OrderedDict
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from datafusion_otel._sanitize.dialect import text_dialect
from datafusion_otel._sanitize.literals import recent_texts, sql_literals
from datafusion_otel._sanitize.redact import (
    WITHHELD,
    Redactor,
    count_withheld,
    error_blocks,
    hide_numbers,
)
from datafusion_otel._sanitize.remember import (
    NO_LITERALS,
    Literals,
    remember_frame,
    remember_literals,
    remember_params,
    remembered_literals,
)
from datafusion_otel.sanitize import SqlTextPolicy

__all__ = [
    "SanitizingFilter",
    "error_text",
    "exception_text",
    "protect_package_loggers",
    "record_exception",
    "remember_frame",
    "remember_literals",
    "remember_params",
    "remember_sql",
    "run_policy",
]

SQL_TEXT_ENV = "DATAFUSION_OTEL_SQL_TEXT"
_FRAME = '  File "'
"""Traceback frame location lines (file, line number, function) are kept as they are."""
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_SQL_ATTRIBUTE = "__datafusion_otel_sql__"
_UNKNOWN_LITERAL = re.compile(
    r"""\$\w*\$.*?\$\w*\$
    |(?<![\w.@])-?(?:0[xX][0-9A-Fa-f]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w])""",
    re.VERBOSE,
)


_MULTILINE_QUOTED = re.compile(r"'(?:[^'\n]|'')*\n(?:[^']|'')*'(?!\w)")
"""A single-quoted text that spans lines: in an error message, a quoted data value."""


def run_policy() -> SqlTextPolicy:
    """Return the text policy for runs: ``DATAFUSION_OTEL_SQL_TEXT``, default sanitized."""
    value = os.environ.get(SQL_TEXT_ENV, "").strip().lower()
    return "raw" if value == "raw" else "sanitized"


def remember_sql(exc: BaseException, sql: str | None) -> None:
    """Remember on ``exc`` the SQL text of the query it failed, for `exception_text`."""
    if sql is None:
        return
    with contextlib.suppress(Exception):  # no attributes: the message is sanitized blindly
        setattr(exc, _SQL_ATTRIBUTE, sql)


def _remembered(exc: BaseException) -> str | None:
    value = getattr(exc, _SQL_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


def _sql_redactor(sql: str) -> Redactor:
    return _dialect_redactor(sql, text_dialect(sql))


@functools.lru_cache(maxsize=64)
def _dialect_redactor(sql: str, dialect: str) -> Redactor:
    found = sql_literals(sql, dialect)
    return Redactor(found.values, found.identifiers)


def _redactor(sql: str, extra: Literals) -> Redactor:
    """The redactor of an error: the SQL text's literals plus those remembered on it."""
    if not extra.values:
        return _sql_redactor(sql)
    return _extra_redactor(sql, extra)


@functools.lru_cache(maxsize=16)
def _extra_redactor(sql: str | None, extra: Literals) -> Redactor:
    found = sql_literals(sql) if sql is not None else None
    values = [*(found.values if found else ()), *extra.values]
    texts = {v for v in extra.values if isinstance(v, str)}  # a plan's string is no name
    names = ((found.identifiers if found else frozenset()) - texts) | extra.names
    return Redactor(values, names)


def error_text(
    text: str, policy: SqlTextPolicy, sql: str | None = None, extra: Literals | None = None
) -> str:
    """Return ``text`` without the query's literals unless ``policy`` is ``raw``.

    Args:
        text: An error message.
        policy: The text policy.
        sql: The SQL text of the failing query, when known: its literals are redacted and
            everything else stays but numbers of 3 characters or more (DataFusion quotes
            constants it computed, ``Can't cast value 8675309123000``); unknown, every quoted
            string and number becomes ``?``.
        extra: Literals remembered on the exception (`remember_frame`, `remember_params`).

    Returns:
        The sanitized message, or ``redact.WITHHELD`` when it could not be sanitized.
    """
    if policy == "raw":
        return text
    protect_package_loggers()
    extra = extra or NO_LITERALS
    if sql is None or not sql_literals(sql).ok:
        return _unknown_query_text(text, numbers=True, extra=extra)
    out = _redactor(sql, extra).clean(text, plan=False)
    if out is None:
        count_withheld()
        return WITHHELD
    return hide_numbers(out)


def _unknown_query_text(text: str, *, numbers: bool, extra: Literals | None = None) -> str:
    """Treat a message whose query is unknown.

    The literals of the recent SQL texts are redacted, and so are quoted texts that are not
    their names (a quoted text spanning lines always), and (with ``numbers``) every number.
    """
    redactor = _recent_redactor(extra or NO_LITERALS)
    out = _MULTILINE_QUOTED.sub("?", text)  # a value holding a newline: no name does
    out = redactor.redact(out, plan=False)
    if numbers:
        out = _UNKNOWN_LITERAL.sub("?", out)
    if redactor.leaks(out, plan=False):
        count_withheld()
        return WITHHELD
    return out


_RECENT_REDACTORS: OrderedDict[tuple[int, ...], tuple[list[Any], Redactor]] = OrderedDict()
_RECENT_LOCK = threading.Lock()


def _recent_redactor(extra: Literals) -> Redactor:
    """The redactor of the recent SQL texts' literals (and ``extra``), built once per set.

    Log records and the lines of a traceback are treated one by one: the set of recent texts
    rarely changes between them. The key holds the objects' ids; the entry keeps the objects
    alive, so that an id cannot be reused while it is a key.
    """
    recent = recent_texts()  # the failing query is likely among the recent ones
    holders: list[Any] = [*recent, extra]
    key = tuple(id(h) for h in holders)
    with _RECENT_LOCK:
        found = _RECENT_REDACTORS.get(key)
        if found is not None:
            _RECENT_REDACTORS.move_to_end(key)
            return found[1]
    values = [v for item in recent for v in item.values] + list(extra.values)
    names = frozenset(n for item in recent for n in item.identifiers) | extra.names
    redactor = Redactor(values, names)
    with _RECENT_LOCK:
        _RECENT_REDACTORS[key] = (holders, redactor)
        while len(_RECENT_REDACTORS) > 4:
            _RECENT_REDACTORS.popitem(last=False)
    return redactor


def exception_text(exc: BaseException, policy: SqlTextPolicy, sql: str | None = None) -> str:
    """`error_text` of ``str(exc)``, with the SQL text remembered on ``exc`` when not given."""
    sql = sql if sql is not None else _remembered(exc)
    return error_text(str(exc), policy, sql, remembered_literals(exc))


def _lines_text(
    text: str, policy: SqlTextPolicy, sql: str | None, extra: Literals | None = None
) -> str:
    """`error_text` line by line, keeping each line's indentation and line break."""
    if policy != "raw":
        text = error_blocks(text)  # formats that span lines
        text = _MULTILINE_QUOTED.sub("?", text)  # a quoted value holding a newline
    out = []
    for line in text.splitlines(keepends=True):
        body = line.strip()
        if not body:
            out.append(line)
            continue
        start = line.index(body[0])
        out.append(line[:start] + error_text(body, policy, sql, extra) + line[start + len(body) :])
    return "".join(out)


def _frame_text(
    entry: str, policy: SqlTextPolicy, sql: str | None, extra: Literals | None = None
) -> str:
    """Keep a frame's location line (file, line number, function); treat everything else."""
    if entry.startswith(_FRAME):
        location, newline, rest = entry.partition("\n")
        if policy != "raw":  # source lines are Python: "..." is a string there, not a name
            rest = _DOUBLE_QUOTED.sub("?", rest)
        return location + newline + _lines_text(rest, policy, sql, extra)
    return _lines_text(entry, policy, sql, extra)


def record_exception(
    span: trace.Span, exc: BaseException, policy: SqlTextPolicy, sql: str | None = None
) -> None:
    """Add the standard ``exception`` event to ``span``, its texts treated under ``policy``.

    Args:
        span: The span.
        exc: The exception.
        policy: The text policy.
        sql: The SQL text of the failing query (default: the one remembered on ``exc``).
    """
    if policy == "raw":
        span.record_exception(exc, escaped=True)
        return
    sql = sql if sql is not None else _remembered(exc)
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    extra = remembered_literals(exc)
    stack = "".join(_frame_text(line, policy, sql, extra) for line in lines)
    if sql is not None and _redactor(sql, extra).leaks(stack, plan=False):  # split over lines
        count_withheld()
        stack = WITHHELD
    attributes: dict[str, AttributeValue] = {
        "exception.type": type(exc).__qualname__,
        "exception.message": error_text(str(exc), policy, sql, extra),
        "exception.stacktrace": stack,
        "exception.escaped": "True",
    }
    span.add_event("exception", attributes)


class SanitizingFilter(logging.Filter):
    """A logging filter that treats a record's message and traceback like an error text.

    Attach it to each of the package's loggers (``logger.addFilter(SanitizingFilter())``):
    the message is treated like `error_text` (the query is not known: the literals of the
    recently seen SQL texts are redacted and every quoted text that is not one of their names
    becomes ``?``; numbers stay),
    and a traceback is formatted now, treated, and kept as ``exc_text``; ``exc_info`` keeps
    the type with a copy of the exception that holds the treated message (no traceback), so
    that no handler formats the raw exception again. Under
    ``DATAFUSION_OTEL_SQL_TEXT=raw`` records pass unchanged. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Treat ``record`` in place; always keep it."""
        policy = run_policy()
        if policy == "raw":
            return True
        try:
            message, sql = record.getMessage(), _remembered_of(record)
            if sql is None:  # the package's own numbers (counts, times) stay readable
                record.msg = _unknown_query_text(message, numbers=False)
            else:
                extra = remembered_literals(record.exc_info[1] if record.exc_info else None)
                record.msg = error_text(message, policy, sql, extra)
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                kind, exc, tb = record.exc_info
                lines = traceback.format_exception(kind, exc, tb)
                sql = _remembered(exc)
                extra = remembered_literals(exc)
                record.exc_text = "".join(_frame_text(line, policy, sql, extra) for line in lines)
                record.exc_info = _treated_exc_info(kind, exc, policy, sql)
        except Exception:  # a record that cannot be treated keeps only its logger and level
            record.msg, record.args, record.exc_info, record.exc_text = WITHHELD, None, None, None
            count_withheld()
        return True


def _treated_exc_info(
    kind: type[BaseException], exc: BaseException, policy: SqlTextPolicy, sql: str | None
) -> Any:
    """``exc_info`` whose exception is a copy of ``exc`` holding only its treated message.

    No traceback: its source lines may quote the caller's SQL (``exc_text`` has it, treated).
    """
    try:
        copy = kind.__new__(kind)
        copy.args = (error_text(str(exc), policy, sql, remembered_literals(exc)),)
    except Exception:  # a type that cannot be copied: handlers get no exception at all
        return None
    return (kind, copy, None)


def _remembered_of(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return _remembered(record.exc_info[1])
    return None


_FILTER = SanitizingFilter()
_PACKAGE = "datafusion_otel"
_protected = {"count": -1}


def protect_package_loggers() -> None:
    """Attach `SanitizingFilter` to every logger of the package that exists now (idempotent).

    Called when texts are captured or errors recorded, so every package logger that could
    carry a query's text has the filter before it does; cheap when nothing changed.
    """
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(_PACKAGE)]
    if len(names) == _protected["count"]:
        return
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SanitizingFilter) for f in logger.filters):
            logger.addFilter(_FILTER)
    _protected["count"] = len(names)
