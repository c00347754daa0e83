"""Replace query literals with ``?`` in SQL and in DataFusion plan texts.

Query literals are sensitive (emails, ids, secrets). Under the default ``sanitized`` policy
every text datafusion-otel stores or exports goes through these functions; table and column
names stay. Three kinds of text are handled:

* SQL (`sanitize_sql`): quoted strings, numbers and comments are replaced.
* Logical plans and graphviz (`sanitize_plan_text`): typed literals such as
  ``Utf8("alice@example.com")`` or ``Int64(424242)`` become ``Utf8(?)``, ``Int64(?)``.
* Physical plans print literals bare (``email@0 = alice@example.com``): pass the literal values
  found in the SQL and logical plan (`extract_literals`) so that they are replaced too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "QuerySummary",
    "SqlTextPolicy",
    "extract_literals",
    "normalize_sql",
    "query_summary",
    "sanitize_dot",
    "sanitize_plan_text",
    "sanitize_sql",
]

SqlTextPolicy = Literal["sanitized", "raw", "off"]

_SQL_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>[eEnNxXbB]?'(?:[^']|'')*'?)
    | (?P<ident>"(?:[^"]|"")*"|`[^`]*`)
    | (?P<number>(?<![\w.$@])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w]))
    """,
    re.VERBOSE | re.DOTALL,
)
_TYPED_LITERAL = re.compile(
    r"""\b(?P<type>Utf8View|LargeUtf8|Utf8|U?Int(?:8|16|32|64)|Float(?:16|32|64)
          |Decimal(?:32|64|128|256)|Date(?:32|64)|Time(?:32|64)\w*|Timestamp\w*
          |Interval\w*|Duration\w*|Boolean|Binary\w*|LargeBinary|FixedSizeBinary\w*)
        \(
        (?P<value>"(?:[^"\\]|\\.)*"|_[^\n]*?_(?=\))|[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)
        \)""",
    re.VERBOSE,
)
_QUOTED_VALUE = re.compile(r"""^(?:"(?P<dq>(?:[^"\\]|\\.)*)"|_(?P<us>.*)_)$""")
_QUOTED_STRING = re.compile(r"'(?:[^']|'')*'")
_LIMIT_VALUE = re.compile(r"\b(fetch|skip|limit|offset)=\d+", re.IGNORECASE)
_COMPARED_NUMBER = re.compile(
    r"(?<=[=<>] )(?<!-> )-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])"  # not DOT edges "a -> 3"
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
    """Return ``sql`` with string and numeric literals replaced by ``?`` and comments removed.

    Args:
        sql: SQL text.

    Returns:
        The sanitized text; identifiers (also quoted ones) are kept.
    """

    def repl(match: re.Match[str]) -> str:
        if match.group("comment") is not None:
            return ""
        if match.group("ident") is not None:
            return match.group("ident")
        return "?"

    return _SQL_TOKEN.sub(repl, sql).strip()


def normalize_sql(sql: str) -> str:
    """Return the parameterized form of ``sql``: sanitized, whitespace collapsed.

    Args:
        sql: SQL text.

    Returns:
        One line, literals as ``?``, no trailing semicolon.
    """
    return " ".join(sanitize_sql(sql).split()).rstrip(";").strip()


def _unquote(raw: str) -> str:
    match = _QUOTED_VALUE.match(raw)
    if match is None:
        return raw.strip()
    value = match.group("dq") if match.group("dq") is not None else match.group("us")
    return value.replace('\\"', '"')


def extract_literals(*sqls: str | None, plans: Iterable[str | None] = ()) -> set[str]:
    """Collect the literal values of SQL texts and logical-plan texts.

    Args:
        sqls: SQL texts (None entries are ignored).
        plans: Logical plan texts (None entries are ignored).

    Returns:
        The literal values as they may appear bare in a physical plan.
    """
    found: set[str] = set()
    for plan in plans:
        if not plan:
            continue
        for match in _TYPED_LITERAL.finditer(plan):
            value = _unquote(match.group("value"))
            if value and value.lower() not in {"null", "true", "false"}:
                found.add(value)
    for text in sqls:
        if not text:
            continue
        for match in _SQL_TOKEN.finditer(text):
            if match.group("string") is not None:
                body = match.group("string")
                body = body[body.index("'") + 1 :]
                body = body[:-1] if body.endswith("'") else body
                if body:
                    found.add(body.replace("''", "'"))
            elif match.group("number") is not None:
                found.add(match.group("number"))
    return found


def sanitize_plan_text(text: str, literals: Iterable[str] = ()) -> str:
    """Return a plan text (logical, physical, graphviz) with literals replaced by ``?``.

    Args:
        text: Plan text.
        literals: Literal values to replace where they appear bare (physical plans), usually
            from `extract_literals`.

    Returns:
        The sanitized text.
    """
    out = _TYPED_LITERAL.sub(_typed_repl, text)
    pattern = _literal_pattern(frozenset(v for v in literals if v))
    if pattern is not None:
        out = pattern.sub("?", out)
    if "'" in out:
        out = _QUOTED_STRING.sub("?", out)
    out = _LIMIT_VALUE.sub(r"\1=?", out)  # LIMIT / OFFSET values: fetch=424242
    return _COMPARED_NUMBER.sub("?", out)  # bare numbers compared in physical plans


def _typed_repl(match: re.Match[str]) -> str:
    return f"{match.group('type')}(?)"


_DOT_LABEL = re.compile(r'(label=")((?:[^"\\]|\\.)*)(")')


def sanitize_dot(text: str, literals: Iterable[str] = ()) -> str:
    """Return a graphviz DOT text with literals replaced inside its labels only.

    Node ids and edges (``2 -> 3``) are numbers too; they are left alone.
    """
    return _DOT_LABEL.sub(
        lambda m: m.group(1) + sanitize_plan_text(m.group(2), literals) + m.group(3), text
    )


@functools.lru_cache(maxsize=256)
def _literal_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    ordered = sorted(values, key=len, reverse=True)
    return re.compile(r"(?<![\w@=\[.])(?:" + "|".join(re.escape(v) for v in ordered) + r")(?![\w])")


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
