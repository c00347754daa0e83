r"""Which SQL dialect DataFusion parses a query text with, for the literal tokenizer.

``datafusion.sql_parser.dialect`` changes what a literal is: under ``MySQL`` or ``BigQuery``,
``"text"`` is a string and ``\'`` escapes a quote, where the default (``generic``) dialect
reads an identifier and no escape. `session_dialect` reads a context's setting once
(DataFusion 55's Python bindings have no getter: a raw context on a copy of the session's
configuration, with the information schema on, answers from ``df_settings``); `note_sql`
remembers, for the texts planned on a context of another dialect, the dialect to tokenize
them with (`text_dialect`); `tokenizer_dialect` names the matching sqlglot dialect.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["DEFAULT", "note_sql", "session_dialect", "text_dialect", "tokenizer_dialect"]

DEFAULT = "generic"
"""DataFusion's default dialect; sqlglot's postgres tokenizer reads it."""
_POSTGRES_LIKE = frozenset({"generic", "postgresql", "postgres", "ansi"})
_SQLGLOT = {
    "mysql": "mysql", "bigquery": "bigquery", "hive": "hive", "databricks": "databricks",
    "clickhouse": "clickhouse", "snowflake": "snowflake", "redshift": "redshift",
    "mssql": "tsql", "sqlite": "sqlite", "duckdb": "duckdb",
}  # fmt: skip
_SETTING = "datafusion.sql_parser.dialect"
_QUERY = f"SELECT value FROM information_schema.df_settings WHERE name = '{_SETTING}'"
_SIZE = 4096

_by_context: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_texts: OrderedDict[str, str] = OrderedDict()
_lock = threading.Lock()


def session_dialect(ctx: Any) -> str:
    """Return the lower-case ``datafusion.sql_parser.dialect`` of ``ctx`` (cached per context).

    ``generic`` when it cannot be read.
    """
    try:
        with _lock:
            found = _by_context.get(ctx)
        if found is not None:
            return found
    except TypeError:  # not weakly referenceable: read every time
        pass
    found = _read(ctx)
    try:
        with _lock:
            _by_context[ctx] = found
    except TypeError:
        pass
    return found


def _read(ctx: Any) -> str:
    try:
        from datafusion._internal import SessionContext as RawContext

        config = ctx.copied_config().with_information_schema(True)
        raw = RawContext(config.config_internal, None)  # not instrumented, not the user's
        batches = raw.sql_with_options(_QUERY, None, {}, {}).collect()
        values = [v for b in batches for v in b.column(0).to_pylist()]
        return str(values[0]).strip().lower() if values else DEFAULT
    except Exception:
        return DEFAULT


def note_sql(ctx: Any, sql: Any) -> None:
    """Remember that ``sql`` is parsed with ``ctx``'s dialect, when that is not the default.

    Never raises. A text seen under several dialects keeps the last non-default one (its
    tokenizer reads more strings: the safe side).
    """
    if not isinstance(sql, str) or ctx is None:
        return
    try:
        dialect = session_dialect(ctx)
    except Exception:
        return
    if dialect in _POSTGRES_LIKE:
        return
    with _lock:
        _texts[sql] = dialect
        _texts.move_to_end(sql)
        while len(_texts) > _SIZE:
            _texts.popitem(last=False)


def text_dialect(sql: str) -> str:
    """The dialect ``sql`` was planned with (`note_sql`), ``generic`` if none was noted."""
    with _lock:
        return _texts.get(sql, DEFAULT)


def tokenizer_dialect(dialect: str) -> str | None:
    """The sqlglot dialect that tokenizes ``dialect``'s SQL.

    ``postgres`` for the default, postgres and ANSI dialects; None for a dialect sqlglot does
    not match (then double-quoted tokens count as literal values too).
    """
    if dialect in _POSTGRES_LIKE:
        return "postgres"
    return _SQLGLOT.get(dialect)
