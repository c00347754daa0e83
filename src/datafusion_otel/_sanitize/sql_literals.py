r"""Literals of SQL texts, read with sqlglot's tokenizer (cached per text and dialect).

sqlglot's postgres tokenizer reads strings (also ``E'...'``, ``$$...$$``, ``N'...'``),
numbers, hex and bit strings. A text planned under another ``datafusion.sql_parser.dialect``
(`dialect`) is read by that dialect's sqlglot tokenizer (MySQL: ``"..."`` is a string,
``\'`` an escape). A number written with a leading dot (``.5e3``) is one literal, though
sqlglot reads ``.`` and ``5e3``. Re-exported by `literals`.
"""

from __future__ import annotations

import decimal
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from datafusion_otel._sanitize.dialect import text_dialect, tokenizer_dialect

__all__ = ["RECENT", "SqlLiterals", "recent_literals", "recent_texts", "sql_literals", "tokenize"]

_JOINING_NAMES = ("VAR", "IDENTIFIER", "NUMBER", "R_PAREN", "R_BRACKET", "STAR")


@functools.lru_cache(maxsize=1)
def _joining() -> frozenset[Any]:
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    return frozenset(getattr(TokenType, name) for name in _JOINING_NAMES)


@dataclass
class SqlLiterals:
    """Literals and identifiers of one SQL text.

    Attributes:
        values: Literal values (str, int, float, Decimal, bytes).
        identifiers: Names used in the text (tables, columns, functions, aliases).
        spans: ``(start, end)`` character ranges of the literal tokens (end exclusive).
        comments: Whether the text holds comments.
        ok: False when the text could not be tokenized.
    """

    values: list[Any] = field(default_factory=list)
    identifiers: frozenset[str] = frozenset()
    spans: list[tuple[int, int]] = field(default_factory=list)
    comments: bool = False
    ok: bool = True


@functools.lru_cache(maxsize=16)
def _tokenizer_types(dialect: str | None) -> tuple[Any, frozenset[Any], frozenset[Any]]:
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    strings = frozenset({
        TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.HEREDOC_STRING,
        TokenType.BYTE_STRING, TokenType.RAW_STRING, TokenType.UNICODE_STRING,
    })  # fmt: skip
    names = frozenset({TokenType.VAR, TokenType.IDENTIFIER})
    return Dialect.get_or_raise(dialect or "postgres"), strings, names


def tokenize(sql: str, dialect: str | None = None) -> list[Any]:
    """Return sqlglot's tokens of ``sql`` under DataFusion dialect ``dialect``.

    The dialect defaults to the one noted for the text (`dialect.text_dialect`).

    Raises:
        Exception: sqlglot's error for a text it cannot read.
    """
    sqlglot_dialect = tokenizer_dialect(dialect if dialect is not None else text_dialect(sql))
    kind = _tokenizer_types(sqlglot_dialect)[0]
    return list(_statement_tokenizer(kind.tokenizer_class)().tokenize(sql))


@functools.lru_cache(maxsize=64)
def _statement_tokenizer(base: type[Any]) -> type[Any]:
    """``base`` without its "command" shortcut, so every statement is read token by token.

    sqlglot reads the rest of a statement after a command word (``EXPLAIN``, ``EXECUTE``,
    ``PREPARE``, ``CALL``, ``SHOW``...) as one string token whose positions are wrong, which
    hid the literals of ``EXPLAIN SELECT ... 'x'`` from redaction.
    """
    return type(f"Statement{base.__name__}", (base,), {"COMMANDS": set()})


_CACHE_SIZE = 1024
RECENT = 64
"""How many recent SQL texts `recent_literals` draws from."""
_cache: OrderedDict[tuple[str, str], SqlLiterals] = OrderedDict()
_cache_lock = threading.Lock()


def sql_literals(sql: str, dialect: str | None = None) -> SqlLiterals:
    """Return the literals of ``sql`` (cached per text, least recently used dropped first).

    Args:
        sql: SQL text.
        dialect: DataFusion's ``sql_parser.dialect`` for the text (default: the one noted for
            it by `dialect.note_sql`, else ``generic``); its sqlglot tokenizer reads the text.

    Returns:
        What the tokenizer found; ``ok`` is False when it failed.
    """
    key = (dialect if dialect is not None else text_dialect(sql), sql)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    found = _tokenize(sql, key[0])
    with _cache_lock:
        _cache[key] = found
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def recent_texts() -> list[SqlLiterals]:
    """What the tokenizer found in the `RECENT` most recently used SQL texts."""
    with _cache_lock:
        return list(_cache.values())[-RECENT:]


def recent_literals() -> tuple[list[Any], frozenset[str]]:
    """Literal values and identifiers of the `RECENT` most recently tokenized SQL texts.

    For an error message whose query is not known: its literals are likely among these.
    """
    recent = recent_texts()
    values = [v for found in recent for v in found.values]
    names = frozenset(n for found in recent for n in found.identifiers)
    return values, names


def _tokenize(sql: str, dialect: str) -> SqlLiterals:
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    matched = tokenizer_dialect(dialect)
    _, strings, names = _tokenizer_types(matched)
    if matched is None:  # a dialect sqlglot does not match: "..." may be a string too
        strings = strings | {TokenType.IDENTIFIER}
    try:
        tokens = tokenize(sql, dialect)
    except Exception:
        return SqlLiterals(ok=False)
    found = SqlLiterals()
    idents: set[str] = set()
    for index, token in enumerate(tokens):
        if token.comments:
            found.comments = True
        kind = token.token_type
        if kind in strings:
            found.values.append(token.text)
        elif kind == TokenType.NUMBER:
            found.values.extend(_number_values(token.text))
            dot = _leading_dot(tokens, index)
            if dot is not None:  # ".5e3": sqlglot reads "." and "5e3", DataFusion 500
                found.values.extend(_number_values("." + token.text))
                found.spans.append((dot.start, token.end + 1))
                continue
        elif kind == TokenType.HEX_STRING:
            found.values.extend(_hex_values(token.text))
        elif kind == TokenType.BIT_STRING:
            found.values.extend(_bit_values(token.text))
        elif kind in names:
            idents.add(token.text)
            continue
        else:
            continue
        found.spans.append((token.start, token.end + 1))
    found.identifiers = frozenset(idents)
    return found


def _leading_dot(tokens: list[Any], index: int) -> Any:
    """The ``.`` token right before the number at ``index`` when it starts the number.

    Not after a name, a number or a closing bracket (``t.5`` would be a qualified name).
    """
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    if index == 0:
        return None
    dot = tokens[index - 1]
    if dot.token_type != TokenType.DOT or dot.end + 1 != tokens[index].start:
        return None
    if index >= 2:
        before = tokens[index - 2]
        joined = before.end + 1 == dot.start
        if joined and before.token_type in _joining():
            return None
    return dot


def _number_values(text: str) -> list[Any]:
    out: list[Any] = [text]
    try:
        if text.isdigit():
            out.append(int(text))
        else:
            out.append(float(text))
            out.append(decimal.Decimal(text))
    except (ValueError, decimal.InvalidOperation):
        pass
    return out


def _hex_values(text: str) -> list[Any]:
    out: list[Any] = [text]
    digits = text if len(text) % 2 == 0 else "0" + text
    try:
        out.append(bytes.fromhex(digits))
        out.append(int(text, 16))
    except ValueError:
        pass
    return out


def _bit_values(text: str) -> list[Any]:
    try:
        return [text, int(text, 2)]
    except ValueError:
        return [text]
