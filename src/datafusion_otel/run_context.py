"""Runs across processes: `run_context` where the run lives, `attached_run` in each worker.

The process that owns a run (it called `tracked_run` / `start_run`) takes a carrier with
`run_context` and ships it to its workers with the task (a process pool's arguments, a Dask
task's arguments...); each worker wraps its DataFusion work in ``with attached_run(carrier):``.

The carrier is a small JSON-serializable ``dict[str, str]``:

================  ===============================================================================
``traceparent``   W3C trace context of the dispatching span (the span current where
                  `run_context` was called, or the run's root span): its trace id is the run id
``tracestate``    W3C trace state, when the dispatching span has one
``baggage``       W3C baggage, when the dispatching context has some
``run_id``        the run id (32 lowercase hex)
``label``         the run's label
================  ===============================================================================

Inside `attached_run` the worker's DataFusion work is part of the run: execution spans of
`DataFusionInstrumentor` are children of the dispatching span in the run's trace, and the plan
artifact / operator metric / cache rows they carry (and those of queries compiled by
`datafusion_otel.bridge`) have the run's id, because a row's run id is the trace id of the span
it was recorded on. The rows go to the sinks configured in the worker's own process (call
`datafusion_otel.configure` there, and `datafusion_otel.force_flush` before the worker
returns), never to the run's sink object in the owning process. The run's own
``datafusion_runs_v1`` row is written once, by the owning process: no span made in a worker is
a trace root, so no worker span is ever taken for a run (no auto run starts inside
`attached_run`).

Forked workers: a forked child owns none of its parent's runs (their routes are forgotten in
the child, see `datafusion_otel._spans.routing`), and DataFusion's async runtime does not survive a
fork once the parent has used it; fork workers before the parent runs a query or registers a
file, or use the ``spawn`` / ``forkserver`` start methods.

Naming: the package attribute ``datafusion_otel.run_context`` is the function; this module's
other names are imported from it by path (``from datafusion_otel.run_context import
AttachedRun``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from datafusion_otel import attributes as attr
from datafusion_otel import config
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._sanitize.errors import record_exception, run_policy
from datafusion_otel._spans import routing as _routing
from datafusion_otel.runs import DataFusionRun, DataFusionRunWarning, current_run

__all__ = [
    "CARRIER_KEYS",
    "AttachedRun",
    "attached_run",
    "run_context",
]

CARRIER_KEYS = ("traceparent", "tracestate", "baggage", "run_id", "label")
"""Every key a carrier may hold (``tracestate`` and ``baggage`` only when present)."""
_REQUIRED = ("traceparent", "run_id", "label")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
_NO_PROVIDER_MESSAGE = (
    "datafusion-otel: attached_run() found no OpenTelemetry SDK TracerProvider in this process "
    "(datafusion_otel.configure() not called and the global provider is not an SDK provider): "
    "the run's spans made here are exported nowhere and their rows reach no sink. Call "
    "datafusion_otel.configure(sink=..., endpoint=...) in each worker process."
)
_warned = {"no_provider": False}
_warn_lock = threading.Lock()


@dataclass(frozen=True)
class AttachedRun:
    """The run a worker is attached to, as `attached_run` yields it.

    Attributes:
        run_id: The run id (the trace id of the run's spans).
        label: The run's label.
        parent: The dispatching span's context (remote: it lives in the owning process).
        span: The span `attached_run` opened for the block, or None when it opened none.
    """

    run_id: str
    label: str
    parent: trace.SpanContext
    span: trace.Span | None


def run_context(run: DataFusionRun | None = None) -> dict[str, str]:
    """Return the carrier that lets other processes work inside ``run``.

    The dispatching span is the span current here when it belongs to the run (a child span
    the caller opened around the dispatch, or the run's root span), else the run's root span.

    Args:
        run: The run (default: `datafusion_otel.current_run`).

    Returns:
        A JSON-serializable ``dict[str, str]`` with ``traceparent``, ``run_id`` and ``label``,
        plus ``tracestate`` and ``baggage`` when present (see the module docstring).

    Raises:
        RuntimeError: Called outside any run (no ``run`` given and no current run), for a run
            that already finished, or for a run built by hand (no span).
    """
    target = run if run is not None else current_run()
    if target is None:
        raise RuntimeError(
            "run_context() was called outside a run: call it inside tracked_run(...) (or "
            "between start_run and finish_run), or pass the run: run_context(run)"
        )
    if target.status != "running":
        raise RuntimeError(
            f"run {target.run_id} ({target.label!r}) is already {target.status}: work "
            "attached to it now would arrive after its run row"
        )
    root = target.span
    if root is None:
        raise RuntimeError(f"run {target.run_id} has no span (built by hand): no trace to join")
    current = otel_context.get_current()
    here = trace.get_current_span(current).get_span_context()
    if not (here.is_valid and format_trace_id(here.trace_id) == target.run_id):
        current = trace.set_span_in_context(root, current)  # keeps the caller's baggage
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=current)
    carrier["run_id"] = target.run_id
    carrier["label"] = target.label
    return carrier


def _parsed(carrier: object) -> tuple[str, str, otel_context.Context]:
    """Validate ``carrier``; return its run id, label and the context it holds."""
    if isinstance(carrier, (str, bytes)):
        try:
            carrier = json.loads(carrier)
        except ValueError as exc:
            raise ValueError(f"carrier text is not valid JSON: {exc}") from None
    if not isinstance(carrier, Mapping):
        raise TypeError(
            "carrier must be the dict returned by run_context() (or its JSON text), "
            f"got {type(carrier).__name__}"
        )
    for key in _REQUIRED:
        if key not in carrier:
            raise ValueError(
                f"carrier has no {key!r}: pass the dict returned by run_context() unchanged "
                f"(keys found: {sorted(map(str, carrier))})"
            )
    values: dict[str, str] = {}
    for key in CARRIER_KEYS:
        value = carrier.get(key)
        if value is None and key not in _REQUIRED:
            continue
        if not isinstance(value, str):
            raise TypeError(f"carrier[{key!r}] must be a str, got {type(value).__name__}")
        values[key] = value
    run_id, label = values["run_id"], values["label"]
    if _RUN_ID.fullmatch(run_id) is None:
        raise ValueError(f"carrier['run_id'] must be 32 lowercase hex characters, got {run_id!r}")
    if not label:
        raise ValueError("carrier['label'] must not be empty")
    extracted = _PROPAGATOR.extract(values, context=otel_context.Context())
    parent = trace.get_current_span(extracted).get_span_context()
    if not parent.is_valid:
        raise ValueError(
            "carrier['traceparent'] is not a valid W3C traceparent "
            f"('00-<32 hex trace id>-<16 hex span id>-<2 hex flags>'): {values['traceparent']!r}"
        )
    if format_trace_id(parent.trace_id) != run_id:
        raise ValueError(
            f"carrier['traceparent'] is in trace {format_trace_id(parent.trace_id)} but "
            f"carrier['run_id'] is {run_id}: the carrier was altered or mixes two runs"
        )
    return run_id, label, extracted


def _warn_without_provider() -> None:
    """Warn once per process when no SDK provider would record the worker's spans."""
    if _warned["no_provider"] or config._state["configured"] is not None:
        return
    if isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        return
    with _warn_lock:
        if _warned["no_provider"]:
            return
        _warned["no_provider"] = True
    warnings.warn(_NO_PROVIDER_MESSAGE, DataFusionRunWarning, stacklevel=4)


def _instrumented() -> bool:
    """Whether `DataFusionInstrumentor` traces executions in this process."""
    from datafusion_otel.instrumentation import DataFusionInstrumentor

    return bool(DataFusionInstrumentor().is_instrumented_by_opentelemetry)


@contextmanager
def attached_run(
    carrier: Mapping[str, object] | str, *, span: bool | None = None
) -> Iterator[AttachedRun]:
    """Do the body's DataFusion work as part of the run the carrier came from.

    The carrier's context (trace context and baggage) replaces the current one for the
    block, so execution spans made in the block are children of the dispatching span and
    their rows carry the run id. Threads started in the block see it only when run in a
    copied context (``contextvars.copy_context().run``), as for any OpenTelemetry context.

    Call `datafusion_otel.configure` in the worker process first (a worker without an SDK
    provider gets a one-time `DataFusionRunWarning`, its spans would go nowhere), and
    `datafusion_otel.force_flush` before the worker process returns or exits: rows then reach
    the worker's sinks. The run row is never written here: it is the owning process's.

    Args:
        carrier: The dict returned by `run_context` in the owning process, or its JSON text.
            Keys other than `CARRIER_KEYS` are ignored.
        span: Open a span of the worker's for the block (``datafusion.run.attached``, a child
            of the dispatching span; execution spans are then its children). Default: only
            when `DataFusionInstrumentor` is not on, so that queries compiled by
            `datafusion_otel.bridge` have a recording span for their artifacts; with the
            instrumentor on, each execution span is a direct child of the dispatching span.
            While that span is open, a query compiled with ``DataFusionCompileOptions(run_id=
            ...)`` of this run and executed on another thread of the worker lands under it.

    Yields:
        The `AttachedRun`.

    Raises:
        TypeError: If the carrier is not a mapping (or JSON text of one) or a value is not a
            string.
        ValueError: If a required key (``traceparent``, ``run_id``, ``label``) is missing,
            the traceparent is not valid W3C trace context, the run id is not 32 lowercase hex
            or is not the traceparent's trace id, or the label is empty.
    """
    run_id, label, extracted = _parsed(carrier)
    _warn_without_provider()
    parent = trace.get_current_span(extracted).get_span_context()
    opened: trace.Span | None = None
    context = extracted
    own_span = span if span is not None else not _instrumented()
    if own_span:
        provider = config.resolve_provider()
        opened = config.tracer_for(provider).start_span(
            attr.ATTACHED_RUN_SPAN,
            context=extracted,
            kind=SpanKind.INTERNAL,
            attributes={attr.ATTACHED_RUN_LABEL: label, attr.PROCESS_PID: os.getpid()},
        )
        context = trace.set_span_in_context(opened, extracted)
    elsewhere = _routing.live_root(run_id) is None  # not a live run of this process
    if elsewhere:  # its root never ends here: no rows held for its findings
        _routing.mark_attached(run_id)
    registered = opened is not None and elsewhere
    if registered and opened is not None:  # the run is not live here: this span stands for it
        _routing.run_started(run_id, opened)
    token = otel_context.attach(context)
    try:
        yield AttachedRun(run_id=run_id, label=label, parent=parent, span=opened)
    except BaseException as exc:
        if opened is not None:
            record_exception(opened, exc, run_policy())  # literals sanitized by default
            opened.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        raise
    finally:
        otel_context.detach(token)
        # the captures of the work done here land before the attached span ends (bounded)
        try:
            _capture_queue.wait_trace(int(run_id, 16), _capture_queue.capture_wait_seconds())
        finally:  # an interrupt while waiting still ends the attached span
            if registered and _routing.live_root(run_id) is opened:
                _routing.run_ended(run_id)
            if opened is not None:
                opened.end()
