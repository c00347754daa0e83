"""Hand an execution over to the capture worker: what the query's thread does, and no more.

On the query's thread `schedule_capture` only decides whether to capture
(``capture_min_duration_ms``), takes references (the DataFrame, its executed plan, the span
the query ran under, the run it belongs to) and queues a job (`datafusion_otel._capture.queue`;
a full queue skips the capture, counted, and marks the span ``datafusion.capture.skipped``).
On the worker the job captures the artifacts (`datafusion_otel._capture.artifacts`) and
attaches them (`datafusion_otel._spans.emit`): a ``datafusion.capture`` child span of the span
the query ran under carries the ``datafusion.plan_artifacts`` / ``datafusion.operator_metrics``
events, and the operator spans nest under that span as before.

A failed execution's exception is given its SQL text and its plan's literals (`remember_sql`,
`remember_frame`) on the query's thread, before it propagates: the caller records it at once
(`tracked_run`'s exception event and error metadata), and an exception that reached the caller
before the worker remembered them was sanitized without its query's literals.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from datafusion_otel import attributes as attr
from datafusion_otel import config
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._capture.artifacts import capture_artifacts
from datafusion_otel._sanitize.errors import remember_frame, remember_sql
from datafusion_otel._spans.emit import emit_artifacts, note_nowhere, resolve_target
from datafusion_otel.artifacts import DataFusionPlanArtifacts
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.config import resolve_provider, tracer_for

__all__ = ["capture_and_attach", "foreign_provider_count", "operator_tracer", "schedule_capture"]

_LOG = logging.getLogger("datafusion_otel.capture")
_foreign = {"count": 0}
"""Operator spans made by the provider of runs because their span's provider was unknown."""


def foreign_provider_count() -> int:
    """Return how many captures put their spans on the provider of runs.

    That happens when the span a query ran under comes from a provider the package does not
    know (warned once).
    """
    return _foreign["count"]


def operator_tracer(span: Any) -> trace.Tracer:
    """The package's tracer of the provider that created ``span``: its capture's tracer.

    The capture span and the operator spans are children of the span the query ran under: they
    come from the same provider, so they reach the same exporters and processors (an
    instrumentor given its own ``tracer_provider`` included). An SDK span is matched to its
    provider by the provider's span processor it holds, among the providers the package knows
    (configured, global, private fallback, and every provider it attached a diagnostics
    processor to). A span of another provider falls back to the provider of runs: counted
    (`foreign_provider_count`) and warned once.
    """
    held = getattr(span, "_span_processor", None)
    if held is not None:
        state = config._state
        with config._lock:  # a copy: another thread may attach a processor meanwhile
            attached = list(config._processors.keys())
        known = [state["configured"], trace.get_tracer_provider(), state["fallback"]]
        for provider in [*known, *attached]:
            if (
                isinstance(provider, SdkTracerProvider)
                and getattr(provider, "_active_span_processor", None) is held
            ):
                return tracer_for(provider)
        _foreign["count"] += 1
        if _foreign["count"] == 1:
            _LOG.warning(
                "the capture and operator spans of a query are made by the provider of runs, "
                "not by the unknown TracerProvider of the span it ran under: pass that provider "
                "to datafusion_otel.configure(tracer_provider=...) or to "
                "DataFusionInstrumentor().instrument(tracer_provider=...) (counted in "
                "datafusion_otel.bridge.foreign_provider_count())"
            )
    return tracer_for(resolve_provider())


def _below_threshold(options: DataFusionCompileOptions, duration_ms: float | None) -> bool:
    threshold = options.capture_min_duration_ms
    return threshold is not None and duration_ms is not None and duration_ms < threshold


def _sampled_out(target: trace.Span | None) -> bool:
    """Whether ``target``'s trace was dropped by the sampler (neither recorded nor sampled)."""
    if target is None:
        return False
    context = target.get_span_context()
    return context.is_valid and not context.trace_flags.sampled and not target.is_recording()


def schedule_capture(
    df: Any,
    *,
    ctx: Any,
    options: DataFusionCompileOptions,
    span: trace.Span,
    run_id: str | None,
    sql: str | None = None,
    ibis_sql: str | None = None,
    executed: bool = True,
    error: BaseException | None = None,
    note: str | None = None,
    duration_ms: float | None = None,
) -> None:
    """Queue the capture of one execution of ``df``; never raises, never waits.

    Args:
        df: The DataFrame that ran.
        ctx: Its SessionContext.
        options: What to capture.
        span: The span the query ran under (its execution span, or the current span).
        run_id: Run the artifacts belong to, when known (else the span's trace id).
        sql: Its SQL text, when it came from SQL.
        ibis_sql: The SQL Ibis generated, when it came from Ibis.
        executed: Whether ``df`` ran to completion (its plan holds runtime metrics).
        error: The error it failed with.
        note: Why the executed plan is not available.
        duration_ms: How long the execution took (for ``capture_min_duration_ms``).
    """
    if error is not None:  # now: the caller records the error as soon as it propagates
        remember_sql(error, sql)
        remember_frame(error, df)
    try:
        if error is None and _below_threshold(options, duration_ms):
            _capture_queue.note_below_threshold()
            return
        target, run_gone = resolve_target(span, options.run_id)
        if options.plan_artifacts_hook is None:
            if _sampled_out(target):
                return  # the application's sampler dropped its trace: nothing to attach to
            if target is None or not target.get_span_context().is_valid:
                note_nowhere(options.run_id)  # counted and warned, as the capture would be
                return
        plan = df.execution_plan() if executed else None  # the executed plan: a reference
        queued_ns = time.time_ns()
        context = target.get_span_context() if target is not None else None
        trace_id = context.trace_id if context is not None and context.is_valid else 0

        def job() -> None:
            _capture_job(
                df, ctx, options, target, run_gone, run_id, sql, ibis_sql, executed,
                error, note, plan, queued_ns,
            )  # fmt: skip

        if not _capture_queue.submit(trace_id, job) and span.is_recording():
            span.set_attribute(attr.CAPTURE_SKIPPED, "capture queue full")
    except Exception:  # capture must never break the query
        _LOG.exception("could not queue plan-artifact capture; the query is not affected")


def capture_and_attach(
    df: Any,
    *,
    ctx: Any,
    options: DataFusionCompileOptions,
    span: trace.Span | None,
    run_id: str | None,
    sql: str | None = None,
    ibis_sql: str | None = None,
    executed: bool = True,
    error: BaseException | None = None,
    note: str | None = None,
    plan: Any = None,
    queued_ns: int | None = None,
    run_gone: bool | None = None,
) -> DataFusionPlanArtifacts:
    """Capture the artifacts of ``df`` and attach them under ``span`` (`emit_artifacts`).

    The capture worker's job, and `datafusion_otel.bridge.record_execution_artifacts` on the
    caller's thread. ``run_gone`` None resolves the routing of ``options.run_id`` here.
    """
    art = capture_artifacts(
        df,
        ctx=ctx,
        options=options,
        sql=sql,
        ibis_sql=ibis_sql,
        run_id=run_id,
        executed=executed,
        execution_error=error,
        allow_real_explain_analyze=False,
        plan_note=note,
        plan=plan,
    )
    valid = span is not None and span.get_span_context().is_valid
    tracer = operator_tracer(span) if valid else None  # nothing is attached to an invalid span
    emit_artifacts(art, options, span, tracer, queued_ns=queued_ns, run_gone=run_gone)
    return art


def _capture_job(
    df: Any,
    ctx: Any,
    options: DataFusionCompileOptions,
    target: trace.Span | None,
    run_gone: bool,
    run_id: str | None,
    sql: str | None,
    ibis_sql: str | None,
    executed: bool,
    error: BaseException | None,
    note: str | None,
    plan: Any,
    queued_ns: int,
) -> None:
    """Capture and attach on the worker; DataFusion calls made here are never traced.

    A failure propagates to the worker, which logs it and counts the capture as failed.
    """
    from datafusion_otel.instrumentation._execution import INSIDE

    token = INSIDE.set(True)
    try:
        capture_and_attach(
            df,
            ctx=ctx,
            options=options,
            span=target if target is not None else trace.INVALID_SPAN,  # run gone: hook only
            run_id=run_id,
            sql=sql,
            ibis_sql=ibis_sql,
            executed=executed,
            error=error,
            note=note,
            plan=plan,
            queued_ns=queued_ns,
            run_gone=run_gone,
        )
    finally:
        INSIDE.reset(token)
