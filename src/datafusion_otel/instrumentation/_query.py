"""What an execution span is named after: the SQL a DataFrame came from, or its logical plan.

``SessionContext.sql`` returns plain Python ``DataFrame`` wrappers; the SQL text, the session
id and the context are remembered per DataFrame object in a ``WeakKeyDictionary`` (nothing is
kept alive, nothing is added to the user's objects). DataFrames built with the DataFrame API
(or derived from a SQL DataFrame by ``filter``, ``select``...) are named from the ``TableScan``
nodes of their logical plan, for example ``"SELECT t"``.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from datafusion_otel.sanitize import QuerySummary, SqlTextPolicy, normalize_sql, query_summary

__all__ = [
    "QueryInfo",
    "info_for",
    "is_eager_statement",
    "plan_summary",
    "query_text",
    "remember",
    "sql_summary",
]

# Statements that ``SessionContext.sql`` executes before returning (measured on DataFusion 55):
# DDL and session statements. INSERT, COPY, SELECT, EXPLAIN... are lazy: they run when the
# returned DataFrame is executed.
_EAGER_KEYWORDS = frozenset({"CREATE", "DROP", "ALTER", "SET", "RESET", "PREPARE", "DEALLOCATE"})
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_TABLE_SCAN = re.compile(r"^\s*TableScan: (\S+)", re.MULTILINE)
_DML_OPERATION = re.compile(r"^Dml: op=\[(\w+)")
_MAX_SUMMARY = 255


@dataclass(slots=True)
class QueryInfo:
    """What is known about the query behind one DataFrame.

    Attributes:
        sql: The SQL text, when the DataFrame came from ``SessionContext.sql``.
        session_id: ``SessionContext.session_id()`` of the planning context, when known.
        ctx_ref: Weak reference to that context, when known.
        summary: Cached summary of the query (computed on first execution).
    """

    sql: str | None = None
    session_id: str | None = None
    ctx_ref: weakref.ReferenceType[Any] | None = None
    summary: QuerySummary | None = field(default=None)

    @property
    def ctx(self) -> Any | None:
        """The planning context, if known and still alive."""
        return self.ctx_ref() if self.ctx_ref is not None else None


_infos: weakref.WeakKeyDictionary[Any, QueryInfo] = weakref.WeakKeyDictionary()


def remember(df: object, info: QueryInfo) -> None:
    """Remember ``info`` for the DataFrame ``df`` (for as long as ``df`` lives)."""
    _infos[df] = info


def info_for(df: object) -> QueryInfo:
    """Return what is known about ``df``, creating an empty record on first use."""
    info = _infos.get(df)
    if info is None:
        info = QueryInfo()
        _infos[df] = info
    return info


@lru_cache(maxsize=1024)
def is_eager_statement(sql: str) -> bool:
    """Return True if ``SessionContext.sql(sql)`` executes the statement before returning."""
    rest = _LEADING_NOISE.sub("", sql, count=1)
    match = _FIRST_WORD.match(rest)
    return match is not None and match.group(0).upper() in _EAGER_KEYWORDS


@lru_cache(maxsize=1024)
def sql_summary(sql: str) -> QuerySummary:
    """Return the (cached) summary of ``sql``; parsing costs ~0.1-0.3 ms for TPC-H texts."""
    return query_summary(sql)


@lru_cache(maxsize=1024)
def _normalized(sql: str) -> str:
    return normalize_sql(sql)


def query_text(sql: str | None, policy: SqlTextPolicy) -> str | None:
    """Return ``db.query.text`` for ``sql`` under ``policy`` (None when it must be absent)."""
    if sql is None or policy == "off":
        return None
    if policy == "raw":
        return sql
    return _normalized(sql)


def plan_summary(df: Any) -> QuerySummary:
    """Summarize a DataFrame without SQL from its logical plan's ``TableScan`` nodes.

    Args:
        df: A ``datafusion.DataFrame``.

    Returns:
        ``SELECT`` (or the DML operation) and the scanned tables in plan order.
    """
    text: str = df.logical_plan().display_indent()
    tables: list[str] = []
    for match in _TABLE_SCAN.finditer(text):
        name = match.group(1).rstrip(",")
        if name not in tables:
            tables.append(name)
    operation = "SELECT"
    dml = _DML_OPERATION.match(text)
    if dml is not None:
        operation = dml.group(1).upper()
    elif text.startswith("CopyTo:"):
        operation = "COPY"
    return QuerySummary(operation, tuple(tables))


def summary_for(df: Any, info: QueryInfo) -> QuerySummary:
    """Return (and cache in ``info``) the summary of the query behind ``df``."""
    summary = info.summary
    if summary is None:
        summary = sql_summary(info.sql) if info.sql is not None else plan_summary(df)
        info.summary = summary
    return summary


def span_name(summary: QuerySummary) -> str:
    """Return the span name for ``summary`` (at most 255 characters)."""
    return summary.text[:_MAX_SUMMARY]
