"""What an execution span is named after: the SQL a DataFrame came from, or its logical plan.

``SessionContext.sql`` returns plain Python ``DataFrame`` wrappers. What is known about a
query (`QueryInfo`: the SQL text, the session id, a weak reference to the context) is built
once per context and SQL text, cached in the context (attribute ``_datafusion_otel_queries``,
at most `MAX_QUERIES` texts, none longer than `MAX_CACHED_TEXT`, dropped by ``uninstrument()``),
and stored in each DataFrame it returns (attribute ``_datafusion_otel_query``): two dictionary
reads on the query path instead of a session-id call and a weak mapping. Neither attribute
keeps anything else alive. DataFrames built with the DataFrame API (or derived from a SQL
DataFrame by ``filter``, ``select``...) are named from the ``TableScan`` nodes of their logical
plan, for example ``"SELECT t"``.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from datafusion_otel.sanitize import QuerySummary, SqlTextPolicy, normalize_sql, query_summary

__all__ = [
    "INFO_ATTR",
    "MAX_CACHED_TEXT",
    "MAX_QUERIES",
    "QUERIES_ATTR",
    "QueryInfo",
    "cacheable",
    "clear_query_caches",
    "info_for",
    "is_eager_statement",
    "plan_summary",
    "query_info",
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
INFO_ATTR = "_datafusion_otel_query"
"""The DataFrame attribute holding its `QueryInfo`."""
QUERIES_ATTR = "_datafusion_otel_queries"
"""The SessionContext attribute holding its `QueryInfo` cache (SQL text -> info)."""
MAX_QUERIES = 256
"""SQL texts cached per context (so at most 4 MiB of text, see `MAX_CACHED_TEXT`); the cache
starts over when full."""
MAX_CACHED_TEXT = 16_384
"""Longer SQL texts (in characters) are never cached, here or in the name and attribute
caches: 1024 multi-megabyte ``INSERT ... VALUES`` texts would otherwise stay in memory."""


@dataclass(slots=True)
class QueryInfo:
    """What is known about the query behind one DataFrame.

    Attributes:
        sql: The SQL text, when the DataFrame came from ``SessionContext.sql``.
        session_id: ``SessionContext.session_id()`` of the planning context, when known.
        ctx_ref: Weak reference to that context, when known.
        eager: ``SessionContext.sql`` executes the statement before returning (DDL).
        summary: Cached summary of the query (computed on first execution).
    """

    sql: str | None = None
    session_id: str | None = None
    ctx_ref: weakref.ReferenceType[Any] | None = None
    eager: bool = False
    summary: QuerySummary | None = field(default=None)

    @property
    def named(self) -> bool:
        """Whether the query can be named without its DataFrame (SQL text or a summary)."""
        return self.sql is not None or self.summary is not None

    @property
    def ctx(self) -> Any | None:
        """The planning context, if known and still alive."""
        return self.ctx_ref() if self.ctx_ref is not None else None


def query_info(ctx: Any, query: object) -> QueryInfo | None:
    """Return the (cached) `QueryInfo` of ``ctx.sql(query)``; None if ``query`` is not text.

    Args:
        ctx: A ``datafusion.SessionContext``.
        query: The query argument of ``SessionContext.sql``.
    """
    if not isinstance(query, str):
        return None
    namespace = ctx.__dict__
    queries: dict[str, QueryInfo] | None = namespace.get(QUERIES_ATTR)
    if queries is None:
        queries = namespace[QUERIES_ATTR] = {}
        _cached_contexts.add(ctx)
    info = queries.get(query)
    if info is None:
        if len(queries) >= MAX_QUERIES:
            queries.clear()  # texts with inlined literals would grow it forever
        info = QueryInfo(
            sql=query,
            session_id=ctx.session_id(),
            ctx_ref=weakref.ref(ctx),
            eager=is_eager_statement(query),
        )
        if cacheable(query):
            queries[query] = info
    return info


_cached_contexts: weakref.WeakSet[Any] = weakref.WeakSet()


def clear_query_caches() -> None:
    """Drop the query cache of every context (``uninstrument()`` calls this)."""
    for ctx in list(_cached_contexts):
        ctx.__dict__.pop(QUERIES_ATTR, None)
    _cached_contexts.clear()


def remember(df: Any, info: QueryInfo) -> None:
    """Remember ``info`` for the DataFrame ``df`` (for as long as ``df`` lives)."""
    df.__dict__[INFO_ATTR] = info


def info_for(df: Any) -> QueryInfo:
    """Return what is known about ``df``, creating an empty record on first use."""
    namespace = df.__dict__
    info: QueryInfo | None = namespace.get(INFO_ATTR)
    if info is None:
        info = namespace[INFO_ATTR] = QueryInfo()
    return info


def is_eager_statement(sql: str) -> bool:
    """Return True if ``SessionContext.sql(sql)`` executes the statement before returning."""
    noise = _LEADING_NOISE.match(sql)
    match = _FIRST_WORD.match(sql, noise.end() if noise is not None else 0)
    return match is not None and match.group(0).upper() in _EAGER_KEYWORDS


def cacheable(sql: str) -> bool:
    """Whether results derived from ``sql`` may be cached (`MAX_CACHED_TEXT`)."""
    return len(sql) <= MAX_CACHED_TEXT


@lru_cache(maxsize=1024)
def _cached_summary(sql: str) -> QuerySummary:
    return query_summary(sql)


def sql_summary(sql: str) -> QuerySummary:
    """Return the summary of ``sql`` (cached); parsing costs ~0.1-0.3 ms for TPC-H texts."""
    return _cached_summary(sql) if cacheable(sql) else query_summary(sql)


@lru_cache(maxsize=1024)
def _cached_normalized(sql: str) -> str:
    return normalize_sql(sql)


def _normalized(sql: str) -> str:
    return _cached_normalized(sql) if cacheable(sql) else normalize_sql(sql)


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
    """Return (and cache in ``info``) the summary of the query behind ``df``.

    ``df`` may be None when ``info.named``.
    """
    summary = info.summary
    if summary is None:
        summary = sql_summary(info.sql) if info.sql is not None else plan_summary(df)
        info.summary = summary
    return summary


def span_name(summary: QuerySummary) -> str:
    """Return the span name for ``summary`` (at most 255 characters)."""
    return summary.text[:_MAX_SUMMARY]
