"""Replace query literals with ``?`` in SQL texts; summarize a statement for span names.

Query literals are sensitive (emails, ids, secrets). `sanitize_sql` reads the text with
sqlglot's postgres tokenizer (strings also as ``E'...'``, ``$$...$$``, ``N'...'``; numbers;
hex and bit strings), so every literal token becomes ``?`` and comments are removed; table and
column names stay. A text the tokenizer cannot read is sanitized by a conservative fallback.
Plan texts, error texts and files are treated by `datafusion_otel._sanitize.redact` (see README
"Sanitizing").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from datafusion_otel._sanitize.dialect import text_dialect, tokenizer_dialect
from datafusion_otel._sanitize.literals import sql_literals, tokenize

__all__ = [
    "QuerySummary",
    "SqlTextPolicy",
    "normalize_sql",
    "query_summary",
    "sanitize_sql",
]

SqlTextPolicy = Literal["sanitized", "raw", "off"]

_FALLBACK_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|$))
    | (?P<string>[eE]'(?:[^'\\]|\\.|'')*'?|[nNxXbBuU]?&?'(?:[^']|'')*'?)
    | (?P<ident>"(?:[^"]|"")*"?|`[^`]*`?)
    | (?P<number>(?<![\w.$@])(?:0[xX][0-9A-Fa-f]+|\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w]))
    """,
    re.VERBOSE | re.DOTALL,
)
_WORD = re.compile(r"[A-Za-z_][\w$]*")
_STATEMENT_KEYWORDS = {
    "select", "insert", "update", "delete", "create", "drop", "alter", "with", "explain",
    "copy", "set", "show", "describe", "values", "merge", "truncate", "prepare", "execute",
}  # fmt: skip
_TABLE_INTRO = re.compile(
    r"\b(?:from|join|into|update|table|view)\s+(?P<name>(?:\"[^\"]+\"|[A-Za-z_][\w$.]*))",
    re.IGNORECASE,
)
_NOT_TABLES = {"select", "lateral", "unnest", "values", "if", "exists", "not", "or", "replace"}


def sanitize_sql(sql: str) -> str:
    """Return ``sql`` with every literal replaced by ``?`` and comments removed.

    A text planned on a context whose ``datafusion.sql_parser.dialect`` is not the default is
    read with that dialect's tokenizer (``"..."`` is a string under MySQL), see README
    "Sanitizing".

    Args:
        sql: SQL text.

    Returns:
        The sanitized text; identifiers (also quoted ones) are kept.
    """
    return _sanitize(sql, text_dialect(sql))


@functools.lru_cache(maxsize=1024)
def _sanitize(sql: str, dialect: str) -> str:
    found = sql_literals(sql, dialect)
    if not found.ok:  # under another dialect "..." may be a string: not kept then
        return _fallback(sql, keep_quoted=tokenizer_dialect(dialect) == "postgres")
    out: list[str] = []
    position = 0
    spans = iter(found.spans)
    # Literal spans are known; comments sit in the gaps between tokens.
    tokens = tokenize(sql, dialect) if found.comments else None
    if tokens is not None:
        return _rebuild(sql, tokens, set(found.spans))
    for start, end in spans:
        out.append(sql[position:start])
        out.append("?")
        position = end
    out.append(sql[position:])
    return "".join(out).strip()


def _rebuild(sql: str, tokens: Sequence[object], literal_spans: set[tuple[int, int]]) -> str:
    out: list[str] = []
    position = 0
    span_ends = dict(literal_spans)  # a literal may span tokens (".5": "." and "5")
    for token in tokens:
        start, end = token.start, token.end + 1  # type: ignore[attr-defined]
        if start < position:  # inside a literal already replaced
            continue
        gap = sql[position:start]
        out.append(gap if not gap.strip() else " ")  # a gap that is not blank is a comment
        if start in span_ends:
            out.append("?")
            end = max(end, span_ends[start])
        else:
            out.append(sql[start:end])
        position = end
    tail = sql[position:]
    out.append(tail if not tail.strip() else "")
    return "".join(out).strip()


def _fallback(sql: str, *, keep_quoted: bool = True) -> str:
    """Conservative sanitizing for a text the tokenizer cannot read (unterminated quotes...)."""

    def repl(match: re.Match[str]) -> str:
        if match.group("comment") is not None:
            return ""
        if match.group("ident") is not None and (keep_quoted or match.group(0)[0] == "`"):
            return match.group("ident")
        return "?"

    return _FALLBACK_TOKEN.sub(repl, sql).strip()


def normalize_sql(sql: str) -> str:
    """Return the parameterized form of ``sql``: sanitized, whitespace collapsed.

    Args:
        sql: SQL text.

    Returns:
        One line, literals as ``?``, no trailing semicolon.
    """
    return " ".join(sanitize_sql(sql).split()).rstrip(";").strip()


@dataclass(frozen=True)
class QuerySummary:
    """Low-cardinality summary of a statement, for span names.

    Attributes:
        operation: Upper-case first keyword (``SELECT``, ``CREATE``...), or None.
        tables: Table names in order of first appearance.
    """

    operation: str | None
    tables: tuple[str, ...]

    @functools.cached_property
    def text(self) -> str:
        """``"{operation} {table} {table}..."``, at most 255 characters."""
        parts = [self.operation or "QUERY", *self.tables]
        return " ".join(parts)[:255]


def query_summary(sql: str) -> QuerySummary:
    """Summarize ``sql`` as its operation and the tables it reads or writes.

    Args:
        sql: SQL text.

    Returns:
        The summary; CTE names are not counted as tables.
    """
    clean = sanitize_sql(sql)
    first = _WORD.search(clean)
    operation = first.group(0).upper() if first else None
    if operation is not None and operation.lower() not in _STATEMENT_KEYWORDS:
        operation = None
    ctes = {
        m.group(1).lower()
        for m in re.finditer(r"(?:\bwith|,)\s*([A-Za-z_]\w*)\s+as\s*\(", clean, re.IGNORECASE)
    }
    tables: list[str] = []
    for match in _TABLE_INTRO.finditer(clean):
        name = match.group("name").strip('"')
        if name.lower() in _NOT_TABLES or name.lower() in ctes or name in tables:
            continue
        tables.append(name)
    # comma-separated FROM lists: "from a, b, c"
    for match in re.finditer(
        r"\bfrom\s+([A-Za-z_][\w.]*(?:\s+\w+)?(?:\s*,\s*[A-Za-z_][\w.]*(?:\s+\w+)?)+)",
        clean,
        re.IGNORECASE,
    ):
        for item in match.group(1).split(","):
            name = item.split()[0] if item.split() else ""
            if name and name.lower() not in ctes and name not in tables:
                tables.append(name)
    return QuerySummary(operation, tuple(tables))
