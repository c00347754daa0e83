"""Literal values remembered on an exception, for its error texts (`errors`).

An error message may quote a literal that no SQL text holds: a DataFrame-API ``lit(...)``, a
parameter bound by ``SessionContext.sql(..., param_values=...)``. On the error path (rare, so a
plan walk is affordable) the failing DataFrame's logical plan is walked (`remember_frame`) and
the parameters of a failed call are kept (`remember_params`); `remembered_literals` hands them
to the error texts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datafusion_otel._sanitize.literals import plan_literals

__all__ = [
    "NO_LITERALS",
    "Literals",
    "remember_frame",
    "remember_literals",
    "remember_params",
    "remembered_literals",
]

_LITERALS_ATTRIBUTE = "__datafusion_otel_literals__"
_WALKED_ATTRIBUTE = "__datafusion_otel_walked__"


@dataclass(frozen=True, eq=False)  # hashed by identity: values may be lists
class Literals:
    """Literal values and names remembered on an exception (plan walk, parameters)."""

    values: tuple[Any, ...] = ()
    names: frozenset[str] = frozenset()


NO_LITERALS = Literals()


def remember_literals(exc: BaseException, values: Iterable[Any], names: Iterable[str] = ()) -> None:
    """Remember on ``exc`` literal values of the failing query (plan walk, parameters).

    `exception_text` and `record_exception` redact them with the SQL text's literals.
    """
    with contextlib.suppress(Exception):  # no attributes: the SQL literals only
        known = remembered_literals(exc)
        setattr(
            exc,
            _LITERALS_ATTRIBUTE,
            Literals((*known.values, *values), known.names | frozenset(names)),
        )


def remember_frame(exc: BaseException | None, df: Any) -> None:
    """Remember on ``exc`` the literals of ``df``'s logical plan; never raises.

    For the error path only (a plan walk per failure): DataFrame-API literals
    (``lit("...")``) and parameter values bound into the plan are not in any SQL text.
    """
    if exc is None or df is None or getattr(exc, _WALKED_ATTRIBUTE, False):
        return
    try:
        plan = df.logical_plan()
    except Exception:  # not a DataFrame, or a plan that cannot be built
        return
    try:
        found = plan_literals(plan)
        remember_literals(exc, found.values, found.identifiers)
        setattr(exc, _WALKED_ATTRIBUTE, True)
    except Exception:  # noqa: S110 - the error texts fall back to the SQL literals
        pass


def remember_params(exc: BaseException, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Remember on ``exc`` the parameters of a failed ``SessionContext.sql`` call; never raises.

    ``param_values`` (scalars bound after parsing) and the named parameters (texts substituted
    into the query) are literal values that the SQL text does not hold.
    """
    try:
        params = kwargs.get("param_values", args[2] if len(args) > 2 else None)
        values: list[Any] = []
        if isinstance(params, Mapping):
            values.extend(_param_value(v) for v in params.values())
        values.extend(v for k, v in kwargs.items() if k not in ("options", "param_values"))
        if values:
            remember_literals(exc, [v for v in values if isinstance(v, (str, int, float, bytes))])
    except Exception:  # noqa: S110 - the error texts fall back to the SQL literals
        pass


def _param_value(value: Any) -> Any:
    as_py = getattr(value, "as_py", None)  # a pyarrow scalar
    if callable(as_py):
        with contextlib.suppress(Exception):
            return as_py()
    return value


def remembered_literals(exc: BaseException | None) -> Literals:
    """The literals remembered on ``exc`` (`NO_LITERALS` when none)."""
    value = getattr(exc, _LITERALS_ATTRIBUTE, None)
    return value if isinstance(value, Literals) else NO_LITERALS
