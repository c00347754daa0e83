"""Redact a query's literals from any text, and withhold a text that still holds one.

A `Redactor` knows the literal values of one query (`literals`) and every rendering of them
(`renderings`). `Redactor.clean` treats one text in three steps:

1. every known rendering (3 characters or more) standing on token boundaries becomes ``?``,
   unless the matched text is one of the schema's identifiers (a table or column name);
2. structural redaction where DataFusion's format is known: typed literals (``Utf8("...")``,
   ``Int64(...)``, ``TimestampNanosecond(...)``, ``List([...])``), interval structs, IN sets,
   ``fetch=`` / ``skip=`` / ``limit=`` / ``offset=`` values and, in plan texts, quoted strings
   and numbers compared with ``=``, ``<``, ``>``;
   Error messages (``plan=False``) quote parts of a value (``unknown token: secret`` for
   ``'secret('``): there the words of string values (3 characters or more) are redacted too;
3. fail closed: a text that still holds a rendering (or whose query could not be read
   completely) is replaced by `WITHHELD`.

Renderings shorter than 3 characters (``LIMIT 1``, ``status = 1``) are only redacted
structurally: matching them everywhere would garble every plan (``@1``, ``RoundRobinBatch(2)``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from datafusion_otel._sanitize.literals import plan_literals, sql_literals
from datafusion_otel._sanitize.matcher import RENDERING, WORD, Matcher
from datafusion_otel._sanitize.renderings import renderings

__all__ = [
    "MIN_RENDERING",
    "WITHHELD",
    "Redactor",
    "count_withheld",
    "error_blocks",
    "hide_numbers",
    "query_redactor",
    "withheld_count",
]

WITHHELD = "-- withheld: could not be sanitized"
"""What replaces a text that could not be sanitized."""
MIN_RENDERING = 3
"""Renderings shorter than this are not matched outside the structural rules."""

_TYPED = re.compile(
    r"""\b(?P<type>Utf8View|LargeUtf8|Utf8|U?Int(?:8|16|32|64)|Float(?:16|32|64)
          |Decimal(?:32|64|128|256)|Date(?:32|64)|Time(?:32|64)\w*|Timestamp\w*
          |Interval\w*|Duration\w*|Boolean|Binary\w*|LargeBinary|FixedSizeBinary\w*
          |BinaryView|LargeList|FixedSizeList|List|Struct|Map|Dictionary|Literal)
        \(
        (?P<value>"(?:[^"\\]|\\.)*"|_[^\n]*?_(?=\))|[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)
        \)""",
    re.VERBOSE,
)
_STRUCT = re.compile(r"\b(Interval\w*|MonthDayNano|DayTime) ?\{[^{}]*\}")
_IN_SET = re.compile(r"(IN \(SET\) \()\[[^\]\n]*\]")
_LIMIT = re.compile(r"\b(fetch|skip|limit|offset)=\d+", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\n]|'')*'")
_QUOTED_NAME = re.compile(
    r"""'(?P<body>(?:[^'\n]|'(?=\w))*)'(?!\w)|"(?P<dbody>(?:[^"\n]|"(?=\w))*)"(?!\w)"""
)
"""A quoted text in an error message; a quote followed by a letter is part of it (``it's``)."""
_WORD_SPLIT = re.compile(r"[^\w]+")
_CATALOG_WORDS = frozenset({"datafusion", "public", "information_schema"})
_COMPARED_NUMBER = re.compile(r"(?<=[=<>] )(?<!-> )-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])")

_NUMBER = re.compile(r"(?<![\w.@$])-?(?:0[xX][0-9A-Fa-f]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?!\w)")
# DataFusion error formats that quote a value bare: the regex crate's parse error (the
# pattern on its own lines) and arrow's type parser ("Error unknown token: <text>").
_REGEX_ERROR = re.compile(r"(regex parse error:\n)(?:[^\n]*\n)*?(?=error: )")
_UNKNOWN_TOKEN = re.compile(r"(unknown token: )\S+")

_CLEANED_SIZE = 64
_lock = threading.Lock()
_withheld = {"count": 0}


def count_withheld() -> None:
    """Count one span or log text withheld (see `withheld_count`)."""
    with _lock:
        _withheld["count"] += 1


def withheld_count() -> int:
    """How many span / log texts were withheld because they could not be sanitized."""
    return _withheld["count"]


def hide_numbers(text: str) -> str:
    """Replace every standalone number of 3 characters or more in an error text by ``?``.

    DataFusion's errors quote constants it computed from the query's literals (``Can't cast
    value 8675309123000``), which no literal's rendering predicts.
    """
    return _NUMBER.sub(lambda m: m.group(0) if len(m.group(0)) < MIN_RENDERING else "?", text)


def error_blocks(text: str) -> str:
    r"""Redact the values DataFusion's error formats quote bare, over lines.

    The regex crate's parse error prints the pattern on its own lines (``regex parse
    error:\n    secret(\n    ^\nerror: unclosed group``); arrow's type parser prints
    ``Error unknown token: secret``. Apply to a whole message before splitting it into lines.
    """
    if "regex parse error:" in text:
        text = _REGEX_ERROR.sub(r"\1    ?\n", text)
    return _UNKNOWN_TOKEN.sub(r"\1?", text)


def structural(text: str, *, plan: bool, identifiers: frozenset[str] | None = None) -> str:
    """Apply the structural rules (typed literals, IN sets, limits; quotes and numbers in plans).

    Args:
        text: Any text.
        plan: Whether ``text`` is a plan or SQL text (also redacts quoted strings and numbers
            after comparison operators); False for error messages.
        identifiers: For error messages: quoted texts that are not one of these names (or a
            dotted path of them, ``'datafusion.public.orders'``) become ``?``, since errors
            also quote data values; None leaves quoted texts of error messages alone.

    Returns:
        The redacted text.
    """
    out = _TYPED.sub(lambda m: f"{m.group('type')}(?)", text)
    out = _STRUCT.sub(lambda m: f"{m.group(1)} {{ ? }}", out)
    out = _IN_SET.sub(r"\1[?]", out)
    out = _LIMIT.sub(r"\1=?", out)
    if plan:
        if "'" in out:
            out = _QUOTED.sub("?", out)
        out = _COMPARED_NUMBER.sub("?", out)
    else:
        out = error_blocks(out)
    if not plan and identifiers is not None:
        names = identifiers | _CATALOG_WORDS
        out = _QUOTED_NAME.sub(lambda m: m.group(0) if _is_name(m, names) else "?", out)
    return out


def _is_name(match: re.Match[str], names: frozenset[str]) -> bool:
    body = match.group("body") if match.group("body") is not None else match.group("dbody")
    return bool(body) and all(part in names for part in body.split("."))


class Redactor:
    """The literals of one query and how to remove them from any text.

    Args:
        values: Literal values (`literals.sql_literals` / `literals.plan_literals`).
        identifiers: Table and column names that stay readable even when a literal equals one.
        complete: False when the plans could not be read completely; plan texts are then
            withheld (`clean` with ``plan=True``).
    """

    def __init__(
        self, values: Iterable[Any], identifiers: Iterable[str] = (), *, complete: bool = True
    ) -> None:
        found: set[str] = set()
        words: set[str] = set()
        seen: set[str] = set()
        for value in values:
            key = f"{type(value).__name__}:{value!r}"
            if key in seen:
                continue
            seen.add(key)
            found.update(r for r in renderings(value) if len(r) >= MIN_RENDERING)
            if isinstance(value, str):  # error messages quote the tokens of a value
                words.update(w for w in _WORD_SPLIT.split(value) if len(w) >= MIN_RENDERING)
        self.identifiers = frozenset(identifiers)
        self.renderings = frozenset(found - self.identifiers)
        self.complete = complete
        self.words = frozenset(words - self.identifiers - found)
        self._matcher = Matcher(
            [(r, RENDERING) for r in self.renderings] + [(w, WORD) for w in self.words]
        )
        self._cleaned: dict[tuple[str, bool], str | None] = {}  # a repeated query's texts
        self._lock = threading.Lock()

    def redact(self, text: str, *, plan: bool = True) -> str:
        """Return ``text`` with every rendering and every structural literal replaced by ``?``.

        Args:
            text: Any text.
            plan: Whether ``text`` is a plan / SQL text (see `structural`).

        Returns:
            The redacted text (not checked: see `clean`).
        """
        out = self._matcher.sub(text, self._kinds(plan), self._replace)
        return structural(out, plan=plan, identifiers=self.identifiers)

    def _replace(self, match: str) -> str:
        return match if match in self.identifiers else "?"

    @staticmethod
    def _kinds(plan: bool) -> int:
        return RENDERING if plan else RENDERING | WORD

    def leaks(self, text: str, *, plan: bool = True) -> bool:
        """Whether ``text`` holds a rendering of a literal on token boundaries.

        One pass over the text (`matcher`), whatever the number of renderings.

        Args:
            text: Any text.
            plan: False for error messages: the words of string values count too.
        """
        return any(
            text[start:end] not in self.identifiers
            for start, end in self._matcher.spans(text, self._kinds(plan))
        )

    def clean(self, text: str, *, plan: bool = True) -> str | None:
        """Redact ``text`` and check it; None when it must be withheld.

        Args:
            text: Any text.
            plan: Whether ``text`` is a plan / SQL text; plan texts are withheld when the
                query's plans could not be read completely.

        Returns:
            The sanitized text, or None when it still holds a rendering.
        """
        if plan and not self.complete:
            return None
        key = (text, plan)
        with self._lock:
            if key in self._cleaned:
                return self._cleaned[key]
        out: str | None = self.redact(text, plan=plan)
        if out is not None and self.leaks(out, plan=plan):
            out = None
        with self._lock:
            if len(self._cleaned) >= _CLEANED_SIZE:
                self._cleaned.clear()
            self._cleaned[key] = out
        return out

    def text(self, text: str, *, plan: bool = True) -> str:
        """`clean`, with `WITHHELD` in place of a text that must be withheld."""
        out = self.clean(text, plan=plan)
        return WITHHELD if out is None else out


_REDACTORS: OrderedDict[tuple[str | None, ...], Redactor] = OrderedDict()
_REDACTORS_LOCK = threading.Lock()
_REDACTORS_SIZE = 256


def query_redactor(
    sqls: tuple[str | None, ...],
    logical: Any,
    logical_text: str | None,
    optimized: Any = None,
    *,
    folded_key: str | None = None,
) -> Redactor:
    """The `Redactor` of one query: the literals of its SQL texts and of its plans.

    Args:
        sqls: SQL texts (the SQL, the Ibis SQL); None entries are ignored.
        logical: The unoptimized LogicalPlan (None if unavailable).
        logical_text: Its indented text, the cache key with ``sqls``.
        optimized: The optimized LogicalPlan, or a callable returning it (called only when the
            redactor is built, not on a cache hit), or None for a redactor without the
            optimizer's folded constants (enough for texts of the unoptimized plan).
        folded_key: A text holding the folded constants the redactor must know (the executed
            physical plan's text), part of the cache key when ``optimized`` is given: the same
            logical plan may fold to other constants (a volatile function, another session's
            UDF), and those print in the physical plan.

    Returns:
        A redactor built once per (SQL texts, logical plan text, and, with the optimized plan,
        the physical plan text): a repeated query costs no optimizer run, no plan walk, no
        renderings and no pattern again. A redactor whose optimized plan could not be made is
        not cached.
    """
    with_folded = optimized is not None
    digest = hashlib.sha256(folded_key.encode()).hexdigest() if folded_key else None
    key = (*sqls, logical_text, "optimized" if with_folded else None, digest)
    failed: list[bool] = []

    def build() -> Redactor:
        folded = optimized() if callable(optimized) else optimized
        if with_folded and folded is None:
            failed.append(True)
        return _build(sqls, (logical, folded))

    if logical_text is None:  # no plan text to key the plan literals on
        return build()
    return _cached(key, build, keep=lambda: not failed)


def _cached(
    key: tuple[str | None, ...],
    build: Callable[[], Redactor],
    keep: Callable[[], bool] = lambda: True,
) -> Redactor:
    with _REDACTORS_LOCK:
        found = _REDACTORS.get(key)
        if found is not None:
            _REDACTORS.move_to_end(key)
            return found
    built = build()
    if not keep():
        return built
    with _REDACTORS_LOCK:
        _REDACTORS[key] = built
        while len(_REDACTORS) > _REDACTORS_SIZE:
            _REDACTORS.popitem(last=False)
    return built


def _build(sqls: tuple[str | None, ...], plans: tuple[Any, ...]) -> Redactor:
    """Build the redactor of SQL texts and plans.

    The names exempt from redaction are the plans' names (tables, columns, aliases) and the
    SQL text's name tokens that are no literal value: under a dialect the tokenizer does not
    read as DataFusion does, a token it took for a name may be a string of the plan.
    """
    values: list[Any] = []
    words: set[str] = set()
    for source in sqls:
        if source:
            found = sql_literals(source)
            values.extend(found.values)
            words |= found.identifiers
    walked = plan_literals(*plans)
    values.extend(walked.values)
    texts = {v for v in values if isinstance(v, str)}
    identifiers = (words - texts) | walked.identifiers
    return Redactor(values, identifiers, complete=walked.complete)
