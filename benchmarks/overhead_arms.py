"""The arms of ``overhead.py``: what each one runs, toggling the instrumentor, one measurement.

Options the package may or may not have yet are feature-detected: ``artifacts`` and
``capture_min_duration_ms`` as named parameters of ``DataFusionInstrumentor.instrument``,
``capture_min_duration_ms`` as a field of ``DataFusionCompileOptions``.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from datafusion import SessionContext
from overhead_stats import Sample

import datafusion_otel
from datafusion_otel import DataFusionInstrumentor
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions

TPCH_ARMS = ("plain", "control", "span", "default", "full", "naive")
TINY_ARMS = ("plain", "control", "span", "default", "default_min")
TINY_SQL = "SELECT b, count(*) AS n, sum(a) AS s FROM thousand WHERE a > 100 GROUP BY b"
MIN_DURATION_MS = 10.0
"""Threshold of the ``default_min`` arm: well above the tiny query's ~1 ms."""

_INSTRUMENT_PARAMS = {
    name
    for name, p in inspect.signature(DataFusionInstrumentor.instrument).parameters.items()
    if p.kind is not inspect.Parameter.VAR_KEYWORD
}
_OPTION_FIELDS = {f.name for f in dataclasses.fields(DataFusionCompileOptions)}
FULL_VIA_INSTRUMENTOR = "artifacts" in _INSTRUMENT_PARAMS
MIN_VIA_INSTRUMENTOR = "capture_min_duration_ms" in _INSTRUMENT_PARAMS
MIN_VIA_BRIDGE = "capture_min_duration_ms" in _OPTION_FIELDS
FULL_OPTIONS = DataFusionCompileOptions(artifacts=ALL_ARTIFACTS)

Call = Callable[[SessionContext, str], object]


def _collect(ctx: SessionContext, sql: str) -> object:
    return ctx.sql(sql).collect()


def _naive(ctx: SessionContext, sql: str) -> object:
    ctx.sql(sql).collect()
    return ctx.sql("EXPLAIN ANALYZE " + sql).collect()


def _full_bridge(ctx: SessionContext, sql: str) -> object:
    return sql_to_datafusion(sql, ctx=ctx, options=FULL_OPTIONS).collect()


def _min_bridge(ctx: SessionContext, sql: str) -> object:
    options = DataFusionCompileOptions(capture_min_duration_ms=MIN_DURATION_MS)  # type: ignore[call-arg]
    return sql_to_datafusion(sql, ctx=ctx, options=options).collect()


def arm_available(arm: str) -> bool:
    """False for ``default_min`` when the package has no ``capture_min_duration_ms``."""
    return arm != "default_min" or MIN_VIA_INSTRUMENTOR or MIN_VIA_BRIDGE


def arm_setup(arm: str) -> tuple[dict[str, Any] | None, Call]:
    """``instrument()`` keyword arguments (None: not instrumented) and the call of ``arm``."""
    if arm in ("plain", "control"):
        return None, _collect
    if arm == "naive":
        return None, _naive
    if arm == "span":
        return {"capture_plan_artifacts": False}, _collect
    if arm == "default":
        return {"capture_plan_artifacts": True}, _collect
    if arm == "full":
        if FULL_VIA_INSTRUMENTOR:
            return {"capture_plan_artifacts": True, "artifacts": ALL_ARTIFACTS}, _collect
        return {"capture_plan_artifacts": True}, _full_bridge
    if arm == "default_min":
        if MIN_VIA_INSTRUMENTOR:
            kwargs = {"capture_plan_artifacts": True, "capture_min_duration_ms": MIN_DURATION_MS}
            return kwargs, _collect
        return {"capture_plan_artifacts": False}, _min_bridge
    raise ValueError(arm)


def describe_arms(arms: tuple[str, ...]) -> list[str]:
    """One line per arm: what exactly it runs."""
    lines = []
    for arm in arms:
        if not arm_available(arm):
            lines.append(f"  {arm:<12} n/a (option not available)")
            continue
        kwargs, call = arm_setup(arm)
        how = "no instrumentor" if kwargs is None else f"instrument({_kw(kwargs)})"
        runs = {
            _collect: "ctx.sql(q).collect()",
            _naive: "ctx.sql(q).collect(); ctx.sql('EXPLAIN ANALYZE ' + q).collect()",
            _full_bridge: "sql_to_datafusion(q, ctx, options=ALL_ARTIFACTS).collect()",
            _min_bridge: f"sql_to_datafusion(q, ctx, capture_min_duration_ms={MIN_DURATION_MS})"
            ".collect()",
        }[call]
        lines.append(f"  {arm:<12} {how}; {runs}")
    return lines


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}=ALL_ARTIFACTS" if k == "artifacts" else f"{k}={v!r}" for k, v in kwargs.items()
    )


@contextmanager
def armed(arm: str, provider: Any = None) -> Iterator[Call]:
    """Instrument as ``arm`` needs (on ``provider`` if given) for the block; yield its call."""
    kwargs, call = arm_setup(arm)
    instrumentor = DataFusionInstrumentor()
    if kwargs is not None:
        if provider is not None:
            kwargs = {**kwargs, "tracer_provider": provider}
        instrumentor.instrument(skip_dep_check=True, **kwargs)
    try:
        yield call
    finally:
        if kwargs is not None:
            instrumentor.uninstrument()


def measure(call: Call, ctx: SessionContext, sql: str, times: int, *, flush: bool) -> Sample:
    """Wall ns of ``times`` calls; process CPU ns of the calls and the flush after them."""
    cpu0 = time.process_time_ns()
    wall0 = time.perf_counter_ns()
    for _ in range(times):
        call(ctx, sql)
    wall = time.perf_counter_ns() - wall0
    if flush:
        datafusion_otel.force_flush()
    return wall, time.process_time_ns() - cpu0


def rotated(arms: tuple[str, ...], index: int) -> tuple[str, ...]:
    """``arms`` rotated by ``index``: every arm takes every position over the rounds."""
    shift = index % len(arms)
    return arms[shift:] + arms[:shift]
