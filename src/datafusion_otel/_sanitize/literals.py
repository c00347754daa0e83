r"""Collect the literal values of a query: from its SQL text and from its plans.

* SQL text (`sql_literals`, in module `sql_literals`): sqlglot's postgres tokenizer reads strings
  (also ``E'...'``, ``$$...$$``, ``N'...'``), numbers, hex and bit strings; the result is
  cached per text. A text
  planned under another ``datafusion.sql_parser.dialect`` (`dialect`) is read by that
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
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from datafusion_otel._sanitize.sql_literals import (
    RECENT,
    SqlLiterals,
    recent_literals,
    recent_texts,
    sql_literals,
    tokenize,
)

__all__ = [
    "RECENT",
    "PlanLiterals",
    "SqlLiterals",
    "plan_literals",
    "recent_literals",
    "recent_texts",
    "sql_literals",
    "tokenize",
]

_MAX_DEPTH = 200
_MAX_NODES = 20_000
"""Most plan nodes, expressions and values one walk visits: some expression variants (grouping
sets) hand back expressions that lead to themselves, and without a budget the walk branched
exponentially and never ended. Over budget the walk is incomplete: the texts are withheld."""


class _OverBudget(Exception):
    """The walk visited `_MAX_NODES` nodes."""


_SKIP_METHODS = frozenset({
    "schema", "display", "display_indent", "display_indent_schema", "display_graphviz",
    "to_bytes", "to_proto", "from_bytes", "from_proto", "to_variant", "inputs", "input",
    "canonical_name", "variant_name", "types", "data_type", "rex_type", "python_value",
    "alias", "name", "table_name", "fqn", "projection", "column_name", "schema_name",
    "qualified_name", "get_type", "null_treatment", "produce_one_row",
})  # fmt: skip
"""Methods of plan / expression variants that return no expressions (or are costly)."""
_NAME = re.compile(r"\w+")
_SUBQUERY_KINDS = frozenset({"InSubquery", "Exists", "ScalarSubquery"})
_TEXT_KINDS = frozenset({"WindowFunction", "AggregateFunction"})


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
        self.visited = 0

    def _visit(self) -> None:
        self.visited += 1
        if self.visited > _MAX_NODES:
            raise _OverBudget

    def plan(self, plan: Any, depth: int) -> None:
        self._visit()
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
        self._visit()
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

        self._visit()
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
