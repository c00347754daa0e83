"""The run envelope: a unit of work recorded as an OpenTelemetry root span.

A run's id is its root span's trace id in 32 lowercase hex characters, so a run can be
opened by its id in any trace UI, and ``uuid.UUID(hex=run.run_id)`` still parses it.
"""

from __future__ import annotations

import contextvars
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Link, Status, StatusCode, format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._capture.stream_latch import run_pending
from datafusion_otel._coerce import json_dumps
from datafusion_otel._processing import run_metadata as meta
from datafusion_otel._processing.delivery import describe_exception, dispatcher
from datafusion_otel._processing.span_rows import RunRecord, forget_run, register_run
from datafusion_otel._sanitize.errors import exception_text, record_exception, run_policy
from datafusion_otel._spans import routing as _routing
from datafusion_otel.config import exports_from, processor_for, resolve_provider, tracer_for
from datafusion_otel.diagnostics import DiagnosticsSink

__all__ = [
    "DataFusionRun",
    "DataFusionRunWarning",
    "RunStatus",
    "current_run",
    "finish_run",
    "start_run",
    "tracked_run",
]

_LOG = logging.getLogger("datafusion_otel.runs")
_NS_PER_MS = 1_000_000
_STATUSES = ("running", "completed", "failed")
_FINAL_STATUSES = ("completed", "failed")

RunStatus = Literal["running", "completed", "failed"]
_active_runs: contextvars.ContextVar[tuple[DataFusionRun, ...]] = contextvars.ContextVar(
    "datafusion_otel_active_runs", default=()
)
RUN_STACK = _active_runs
"""The context variable holding this context's run stack, for hot paths that only need to
know it is empty (then `current_run` is None); read it, never set it."""


class DataFusionRunWarning(UserWarning):
    """Warns about a misuse of the run API that was ignored (for example a second finish)."""


@dataclass
class DataFusionRun:
    """One run: a unit of work with a correlation id, timestamps, status and metadata.

    Attributes:
        run_id: 32 lowercase hex characters, the trace id of the run's root span.
        label: Human-readable label, for example ``"incremental_rebuild"``.
        start_time_unix_ms: Start time, Unix milliseconds.
        end_time_unix_ms: End time, Unix milliseconds; None while running.
        status: ``"running"``, ``"completed"`` or ``"failed"``.
        metadata: Free-form metadata, the user's. Keys starting with ``datafusion_otel.`` are
            reserved for the package. When the run ends, a JSON snapshot is taken: later
            changes do not reach the row, and values that cannot be kept become notes (see
            `datafusion_otel._processing.run_metadata`).
    """

    run_id: str
    label: str
    start_time_unix_ms: int
    end_time_unix_ms: int | None = None
    status: RunStatus = "running"
    metadata: dict[str, object] = field(default_factory=dict)
    _span: trace.Span | None = field(default=None, repr=False, compare=False)
    _sink: DiagnosticsSink | None = field(default=None, repr=False, compare=False)
    _tokens: tuple[contextvars.Token[tuple[DataFusionRun, ...]], object] | None = field(
        default=None, repr=False, compare=False
    )
    _previous_context: otel_context.Context | None = field(default=None, repr=False, compare=False)
    _exported: bool | None = field(default=None, repr=False, compare=False)
    _owner: SpanProcessor | None = field(default=None, repr=False, compare=False)
    _metadata_json: str | None = field(default=None, repr=False, compare=False)

    @property
    def span(self) -> trace.Span | None:
        """The run's root span (None for a run built by hand)."""
        return self._span

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from start to end; None while running."""
        if self.end_time_unix_ms is None:
            return None
        return self.end_time_unix_ms - self.start_time_unix_ms

    def payload(self) -> dict[str, object]:
        """Return the run as a DATAFUSION_RUNS_V1 row (``metadata`` as a JSON string).

        Once the run has ended, ``metadata`` is the exact text of the run's row.
        """
        return {
            "run_id": self.run_id,
            "label": self.label,
            "start_time_unix_ms": self.start_time_unix_ms,
            "end_time_unix_ms": self.end_time_unix_ms,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "metadata": self._metadata_json or meta.to_text(self._snapshot()),
        }

    def _repr_html_(self) -> str | None:
        """The run's HTML profile in a notebook (`datafusion_otel.report`); None while running."""
        from datafusion_otel.report._notebook import run_html

        return run_html(self)

    def _snapshot(self) -> dict[str, object]:
        """The metadata as recorded: a JSON-safe copy with the package's keys; never raises."""
        snap = meta.snapshot(self.metadata)
        if self._exported is not None:
            snap[meta.EXPORTED] = self._exported
        return snap


def current_run() -> DataFusionRun | None:
    """Return the innermost active run of the current context, if any.

    A run is active from `start_run` to `finish_run` in the context that started it, and in
    the body of `tracked_run`. Asyncio tasks inherit it; threads see it when the caller
    runs them in a copied context (``contextvars.copy_context().run``).
    """
    runs = _settle()
    return runs[-1] if runs else None


def start_run(
    *,
    label: str,
    sink: DiagnosticsSink | None = None,
    metadata: Mapping[str, object] | None = None,
) -> DataFusionRun:
    """Start a run: a new root span, and the run made current in this context.

    The span is never a child of the active span; when a span is active, the run's span
    links to it.

    Args:
        label: Human-readable label of the run.
        sink: Receives ``datafusion_run_started_v1`` now, ``datafusion_run_finished_v1`` at
            the end, and every diagnostics row of this run, each exactly once. Must have
            ``record_events`` and ``record_artifact`` (a `DiagnosticsSink`).
        metadata: JSON-serializable metadata (keys starting with ``datafusion_otel.`` are
            reserved).

    Returns:
        The running `DataFusionRun`.

    Raises:
        TypeError: If ``label`` is not a string, ``metadata`` is not a mapping or ``sink`` is
            not a `DiagnosticsSink`.
        ValueError: If ``label`` is empty or ``metadata`` is not JSON serializable.
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    if not label:
        raise ValueError("label must not be empty")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    if sink is not None and not isinstance(sink, DiagnosticsSink):
        raise TypeError(
            "sink must be a DiagnosticsSink (with record_events and record_artifact), "
            f"got {type(sink).__name__}"
        )
    user_meta = dict(metadata or {})
    json_dumps(user_meta)  # raises ValueError early for unserializable metadata

    provider = resolve_provider()
    owner = processor_for(provider)
    _settle()  # runs finished elsewhere stop being current before we link to "the active span"
    active = trace.get_current_span()
    links = [Link(active.get_span_context())] if active.get_span_context().is_valid else []
    start_ns = time.time_ns()
    span = tracer_for(provider).start_span(
        label,
        context=otel_context.Context(),
        links=links,
        start_time=start_ns,
        attributes={attr.RUN_LABEL: label, attr.RUN_STATUS: "running"},
    )
    run_id = format_trace_id(span.get_span_context().trace_id)
    span.set_attribute(attr.RUN_ID, run_id)
    _routing.run_started(run_id, span)  # found by id for DataFusionCompileOptions(run_id=...)
    # sampled out runs are recorded only (RECORD_ONLY): the run row says so
    exported = span.get_span_context().trace_flags.sampled and exports_from(provider)
    span.set_attribute(attr.RUN_EXPORTED, exported)
    run = DataFusionRun(
        run_id=run_id,
        label=label,
        start_time_unix_ms=start_ns // _NS_PER_MS,
        metadata=user_meta,
        _span=span,
        _sink=sink,
        _exported=bool(exported),
        _owner=owner,
    )
    started = meta.snapshot(user_meta)  # the user's, copied now
    started_json = meta.to_text({**started, meta.EXPORTED: run._exported})
    span.set_attribute(attr.RUN_METADATA, started_json)  # a preview: the row reads the record
    register_run(span, RunRecord(run_id, label, "running", started_json))
    if sink is not None:
        _routing.register(run_id, sink, owner)
        dispatcher.record_artifact(
            sink,
            attr.RUN_STARTED_ARTIFACT,
            {
                "run_id": run_id,
                "label": label,
                "start_time_unix_ms": run.start_time_unix_ms,
                "status": "running",
                "metadata": started,
            },
        )
    run._previous_context = otel_context.get_current()
    run_token = _active_runs.set((*_active_runs.get(), run))
    otel_token = otel_context.attach(trace.set_span_in_context(span))
    run._tokens = (run_token, otel_token)
    return run


def _settle() -> tuple[DataFusionRun, ...]:
    """Unwind the finished runs at the top of this context's run stack; return the stack.

    A run finished out of order, or from another thread, stays on the stack of the context
    that started it until the runs above it finish; it is unwound here, lazily, the next time
    that context starts or asks for a run. Its context tokens are reset when this is the
    context that created them; in a copied context the OTel context that was current before
    the run is attached again instead.
    """
    runs = _active_runs.get()
    while runs and runs[-1].status != "running":
        top = runs[-1]
        tokens = top._tokens
        if tokens is None:
            _active_runs.set(runs[:-1])
        else:
            run_token, otel_token = tokens
            try:
                _active_runs.reset(run_token)
            except ValueError:  # a copied context: the tokens belong to the starting one
                _active_runs.set(runs[:-1])
                if top._previous_context is not None:
                    otel_context.attach(top._previous_context)
            else:
                top._tokens = None
                otel_context.detach(otel_token)  # type: ignore[arg-type]
        runs = _active_runs.get()
    return runs


def _deactivate(run: DataFusionRun) -> None:
    """Make ``run`` (already finished) stop being current, if this context started it."""
    if run in _active_runs.get():
        _settle()


def finish_run(
    run: DataFusionRun,
    *,
    sink: DiagnosticsSink | None = None,
    status: RunStatus = "completed",
    metadata: Mapping[str, object] | None = None,
) -> DataFusionRun:
    """Finish ``run``: set its end time, status and metadata, and end its span.

    A second call on a finished run changes nothing and emits a `DataFusionRunWarning`.

    Args:
        run: The run to finish.
        sink: Receives ``datafusion_run_finished_v1``; defaults to the sink the run was started
            with.
        status: ``"completed"`` or ``"failed"``.
        metadata: Merged into the run's metadata. The merged metadata is then snapshotted:
            a value that cannot be kept as JSON becomes ``null`` with a note under
            ``datafusion_otel.notes`` in the row; it never fails the finish.

    Returns:
        ``run``, finished.

    Raises:
        ValueError: If ``status`` is not ``"completed"`` or ``"failed"`` (the run is then
            left running, unchanged).
    """
    if run.status != "running":  # a second call never raises, whatever its arguments
        warnings.warn(
            f"run {run.run_id} ({run.label!r}) is already {run.status}; finish_run ignored",
            DataFusionRunWarning,
            stacklevel=2,
        )
        return run
    if status not in _FINAL_STATUSES:
        raise ValueError(f"status must be one of {_FINAL_STATUSES}, got {status!r}")
    if sink is not None and not isinstance(sink, DiagnosticsSink):
        raise TypeError(f"sink must be a DiagnosticsSink, got {type(sink).__name__}")
    # streams garbage-collected during the run end their spans (and capture) before it ends
    run_pending()
    end_ns = time.time_ns()
    # the captures of the run's queries (on the capture worker) land before its root ends;
    # an interrupt while waiting still finishes the run first, then propagates
    interrupted: BaseException | None = None
    try:
        _capture_queue.wait_trace(int(run.run_id, 16), _capture_queue.capture_wait_seconds())
    except BaseException as exc:
        interrupted = exc
    try:
        if metadata:
            run.metadata.update(metadata)
    except Exception:  # a mapping failing while read: noted below by the snapshot
        _LOG.warning("run %s: metadata passed to finish_run could not be read", run.run_id)
    snap = run._snapshot()  # never raises: unkeepable values become notes
    run._metadata_json = meta.to_text(snap)
    run.end_time_unix_ms = end_ns // _NS_PER_MS
    run.status = status
    _routing.run_ended(run.run_id)
    _deactivate(run)
    target = sink if sink is not None else run._sink
    if target is not None:
        finished = run.payload()
        finished["metadata"] = snap
        dispatcher.record_artifact(target, attr.RUN_FINISHED_ARTIFACT, finished)
    span = run._span
    if span is not None:
        _end_span(run, span, snap, end_ns)
    if interrupted is not None:
        raise interrupted
    return run


def _end_span(run: DataFusionRun, span: trace.Span, snap: dict[str, object], end_ns: int) -> None:
    """End the run's span, its row carried in-process (`RunRecord`); never raises."""
    try:
        text = run._metadata_json or "{}"
        register_run(span, RunRecord(run.run_id, run.label, run.status, text))
        span.set_attribute(attr.RUN_STATUS, run.status)
        span.set_attribute(attr.RUN_METADATA, text)  # an export preview, maybe cut by limits
        if run.status == "failed":
            error_type = meta.error_value(snap, meta.ERROR_TYPE)
            if isinstance(error_type, str):
                span.set_attribute(attr.ERROR_TYPE, error_type)
            message = meta.error_value(snap, meta.ERROR_MESSAGE)
            span.set_status(Status(StatusCode.ERROR, str(message) if message else None))
        else:
            span.set_status(Status(StatusCode.OK))
    except Exception as exc:  # never raise into the user's program from our bookkeeping
        _LOG.error("could not annotate the span of run %s: %s", run.run_id, describe_exception(exc))
    try:
        span.end(end_time=end_ns)
    except Exception as exc:  # an application processor raised before ours could run
        _LOG.error("could not end the span of run %s: %s", run.run_id, describe_exception(exc))
    finally:
        record = forget_run(span)
        if record is not None and not record.seen and run._owner is not None:
            register_run(span, record)  # the row, read by the processor once more
            try:
                run._owner.on_end(span)  # type: ignore[arg-type]  # an ended SDK span
            finally:
                forget_run(span)


@contextmanager
def tracked_run(
    *,
    label: str,
    sink: DiagnosticsSink | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Iterator[DataFusionRun]:
    """Run the body of a ``with`` block as a run.

    On any exception (``KeyboardInterrupt`` included) the run is finished with status
    ``"failed"``, the span gets status ERROR and the exception event, ``error_type`` and
    ``error_message`` go into the run's metadata (under ``datafusion_otel.error_type`` /
    ``datafusion_otel.error_message`` when the user's metadata already has that key), and the
    exception is re-raised unchanged.
    The message (in the metadata and the span's exception event) has its literals replaced by
    ``?`` unless ``DATAFUSION_OTEL_SQL_TEXT=raw``: error messages quote query values.

    Args:
        label: Human-readable label of the run.
        sink: As for `start_run`.
        metadata: As for `start_run`.

    Yields:
        The running `DataFusionRun`.
    """
    run = start_run(label=label, sink=sink, metadata=metadata)
    try:
        yield run
    except BaseException as exc:
        if run.status == "running":
            _fail(run, exc)
        raise
    else:
        if run.status == "running":
            finish_run(run)


def _fail(run: DataFusionRun, exc: BaseException) -> None:
    """Finish ``run`` as failed by ``exc``; never raises (the caller re-raises ``exc``)."""
    errors: dict[str, object] = {}
    try:
        policy = run_policy()
        if run._span is not None:
            record_exception(run._span, exc, policy)
        errors = meta.error_metadata(
            run.metadata, type(exc).__qualname__, exception_text(exc, policy)
        )
    except Exception as error:  # str(exc) may raise: the run still fails, without a message
        _LOG.error(
            "could not describe the exception of run %s: %s", run.run_id, describe_exception(error)
        )
        errors = meta.error_metadata(run.metadata, type(exc).__qualname__, "")
    try:
        finish_run(run, status="failed", metadata=errors)
    except Exception as error:
        _LOG.error("could not finish run %s: %s", run.run_id, describe_exception(error))
