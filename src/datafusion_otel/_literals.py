r"""Collect the literal values of a query: from its SQL text and from its plans.

* SQL text (`sql_literals`): sqlglot's postgres tokenizer reads strings (also ``E'...'``,
  ``$$...$$``, ``N'...'``), numbers, hex and bit strings; the result is cached per text. A text
  planned under another ``datafusion.sql_parser.dialect`` (`_dialect`) is read by that
  dialect's sqlglot tokenizer (MySQL: ``"..."`` is a string, ``\'`` an escape).
* Plans (`plan_literals`): each logical plan node (``to_variant()``) is asked for its
  expressions, and each expression is walked (``rex_call_operands()``, ``to_variant()``) down to
  its literals (``python_value()``); an expression kind the bindings cannot convert (window
  functions) is read from its display text (typed literals and bare numbers). The optimized
  plan holds folded constants (``upper('x')`` becomes ``'X'``), so it is walked too. A node or
  an expression the walk cannot read makes the result *incomplete*: the caller then withholds
  the plan texts. A subquery the bindings do not expose is read from the plan's display text.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from datafusion_otel._dialect import text_dialect, tokenizer_dialect

__all__ = [
    "PlanLiterals",
    "SqlLiterals",
    "plan_literals",
    "recent_literals",
    "recent_texts",
    "sql_literals",
    "tokenize",
]

_MAX_DEPTH = 200
_SKIP_METHODS = frozenset({
    "schema", "display", "display_indent", "display_indent_schema", "display_graphviz",
    "to_bytes", "to_proto", "from_bytes", "from_proto", "to_variant", "inputs", "input",
    "canonical_name", "variant_name", "types", "data_type", "rex_type", "python_value",
    "alias", "name", "table_name", "fqn", "projection", "column_name", "schema_name",
    "qualified_name", "get_type", "null_treatment", "produce_one_row",
})  # fmt: skip
"""Methods of plan / expression variants that return no expressions (or are costly)."""
_NAME = re.compile(r"\w+")
_JOINING_NAMES = ("VAR", "IDENTIFIER", "NUMBER", "R_PAREN", "R_BRACKET", "STAR")


@functools.lru_cache(maxsize=1)
def _joining() -> frozenset[Any]:
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    return frozenset(getattr(TokenType, name) for name in _JOINING_NAMES)


_SUBQUERY_KINDS = frozenset({"InSubquery", "Exists", "ScalarSubquery"})
_TEXT_KINDS = frozenset({"WindowFunction", "AggregateFunction"})


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

    The dialect defaults to the one noted for the text (`_dialect.text_dialect`).

    Raises:
        Exception: sqlglot's error for a text it cannot read.
    """
    sqlglot_dialect = tokenizer_dialect(dialect if dialect is not None else text_dialect(sql))
    kind = _tokenizer_types(sqlglot_dialect)[0]
    return list(kind.tokenizer_class().tokenize(sql))


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
            it by `_dialect.note_sql`, else ``generic``); its sqlglot tokenizer reads the text.

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


@dataclass
class PlanLiterals:
    """Literals and identifiers found by walking logical plans.

    Attributes:
        values: Literal values as Python objects (plus raw integers of temporal scalars).
        identifiers: Table and column names the plans read.
        complete: False when a node or an expression could not be read.
        unread: What could not be read (exception type names), for diagnostics.
    """

    values: list[Any] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)
    complete: bool = True
    unread: list[str] = field(default_factory=list)


def plan_literals(*plans: Any) -> PlanLiterals:
    """Walk ``plans`` (LogicalPlan objects; None entries are ignored) for their literals.

    Args:
        plans: Logical plans, for example the logical and the optimized plan of a query.

    Returns:
        The literals found; never raises (an unreadable part makes it incomplete).
    """
    found = PlanLiterals()
    walker = _Walker(found)
    for plan in plans:
        if plan is None:
            continue
        walker.opaque = False
        try:
            walker.plan(plan, 0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # also a Rust panic (pyo3 PanicException)
            found.complete = False
            found.unread.append(type(exc).__name__)
        if walker.opaque:  # a subquery the bindings do not expose: read the plan's text
            try:
                found.values.extend(_text_values(plan.display_indent()))
            except Exception as exc:
                found.complete = False
                found.unread.append(type(exc).__name__)
    return found


class _Walker:
    def __init__(self, found: PlanLiterals) -> None:
        self.found = found
        self.opaque = False

    def plan(self, plan: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.found.complete = False
            return
        variant = plan.to_variant()
        self._identifiers(variant)
        self.members(variant, depth)
        for child in plan.inputs():
            self.plan(child, depth + 1)

    def _identifiers(self, variant: Any) -> None:
        if type(variant).__name__ != "TableScan":  # output names: aliases of projections...
            with contextlib.suppress(Exception):  # identifiers are a readability aid only
                for name in variant.schema().field_names():
                    if isinstance(name, str) and _NAME.fullmatch(name.rsplit(".", 1)[-1]):
                        self.found.identifiers.add(name.rsplit(".", 1)[-1])
            return
        for part in variant.fqn():
            if isinstance(part, str):
                self.found.identifiers.add(part)
        for item in variant.projection():
            for part in item if isinstance(item, tuple) else (item,):
                if isinstance(part, str):
                    self.found.identifiers.add(part)
        try:  # all columns of the table, not only the projected ones
            for name in variant.schema().field_names():
                if isinstance(name, str):
                    self.found.identifiers.add(name.rsplit(".", 1)[-1])
        except Exception:  # noqa: S110 - identifiers are a readability aid only
            pass

    def members(self, obj: Any, depth: int, *, plan_variant: bool = True) -> None:
        """Ask every zero-argument method of a variant for expressions and plans.

        A plan node's inputs are walked by `plan`; an expression's (a subquery's) are not.
        """
        for name in dir(obj):
            skipped = name.startswith("_") or name in _SKIP_METHODS
            if skipped and (plan_variant or name not in ("input", "inputs")):
                continue
            try:
                result = getattr(obj, name)()
            except TypeError:  # needs arguments: not an accessor
                continue
            self.value(result, depth + 1)

    def value(self, result: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.found.complete = False
            return
        if result is None or isinstance(result, (str, int, float, bool, bytes)):
            return
        if isinstance(result, (list, tuple)):
            for item in result:
                self.value(item, depth + 1)
            return
        kind = type(result).__name__
        if kind in ("RawExpr", "Expr"):
            self.expr(result, depth)
        elif kind in ("LogicalPlan", "RawLogicalPlan"):
            self.plan(result, depth)
        elif type(result).__module__.startswith("datafusion"):
            if hasattr(result, "to_variant") and hasattr(result, "inputs"):
                self.plan(result, depth)
            elif kind in ("DFSchema", "SqlSchema", "SqlTable", "DataTypeMap"):
                return
            else:  # Subquery, SortExpr, WindowFrame...
                if kind == "Subquery" and not result.input():
                    self.opaque = True
                self.members(result, depth, plan_variant=False)

    def expr(self, raw: Any, depth: int) -> None:
        from datafusion.expr import Expr

        expr = raw if isinstance(raw, Expr) else Expr(raw)
        kind = str(expr.rex_type()).rsplit(".", 1)[-1]
        if kind == "Literal":
            self.found.values.extend(_scalar_values(expr.python_value()))
            return
        if kind == "Reference" and expr.variant_name() == "Column":
            return
        if kind == "Call":
            try:
                operands = expr.rex_call_operands()
            except Exception:  # EXISTS: its variant below holds the subquery
                operands = []
            for operand in operands:
                self.expr(operand, depth + 1)
            if expr.variant_name() in _TEXT_KINDS:  # frame bounds are not expressions
                self.found.values.extend(_text_values(expr.canonical_name()))
            if operands and expr.variant_name() not in _SUBQUERY_KINDS:
                return  # the operands are the whole expression: walking both doubles the work
        try:
            variant = expr.to_variant()
        except Exception:  # a kind the bindings cannot convert (window functions): read its text
            self.found.values.extend(_text_values(expr.canonical_name()))
            return
        self.members(variant, depth, plan_variant=False)


_TYPED_VALUE = re.compile(r'\b[A-Z][A-Za-z0-9]*\((?:"(?P<quoted>[^"]*)"|(?P<bare>[^()]*))\)')
_BARE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])")


def _text_values(text: str) -> list[str]:
    """Literal values printed in an expression's text: typed literals and bare numbers."""
    out = [m.group("quoted") or m.group("bare") or "" for m in _TYPED_VALUE.finditer(text)]
    out += [m.group(0) for m in _BARE_NUMBER.finditer(text)]
    return [v for v in out if v]


def _scalar_values(scalar: Any) -> Iterator[Any]:
    """The Python value of a pyarrow scalar, plus its raw integer for temporal types."""
    import pyarrow as pa

    if scalar is None:
        return
    if not isinstance(scalar, pa.Scalar):
        yield scalar
        return
    try:
        yield scalar.as_py()
    except Exception:  # for example a nanosecond timestamp without pandas
        yield str(scalar)
    kind = scalar.type
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind) and scalar.is_valid:
        with contextlib.suppress(Exception):  # the value above is kept
            yield scalar.cast(pa.int64()).as_py()
    if pa.types.is_decimal(kind) and scalar.is_valid:
        value = scalar.as_py()
        if isinstance(value, decimal.Decimal):
            yield int(value.scaleb(kind.scale))
