"""Which TracerProvider creates run spans, and `configure` to set up export explicitly.

Resolution, for every run:

1. the provider given to (or built by) `configure`, if it was called;
2. otherwise the global provider, when it is an SDK ``TracerProvider`` (for example one set by
   ``opentelemetry-instrument`` or by the application): run spans then reach the user's
   exporters, and a `DiagnosticsSpanProcessor` is attached to it on first use;
3. otherwise a private SDK provider (never set globally) carrying the processor, so runs and
   diagnostics rows work with no configuration at all and nothing leaves the process.

Whatever the provider, its sampler is wrapped in `LocalRecordingSampler` when datafusion-otel
attaches to it: runs the sampler drops are still recorded (RECORD_ONLY) for the local tables,
only the sampled ones are exported. The settings `configure` reads from the environment are
listed in `datafusion_otel.export`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

from datafusion_otel import attributes as attr
from datafusion_otel._processing.delivery import dispatcher
from datafusion_otel.diagnostics import DiagnosticsSink
from datafusion_otel.export import (
    BatchOptions,
    Compression,
    Protocol,
    build_span_exporter,
    resolve_batch_options,
    resolve_otlp_settings,
)
from datafusion_otel.export_processor import ExportSpanProcessor
from datafusion_otel.processor import DiagnosticsSpanProcessor
from datafusion_otel.sampling import LocalRecordingSampler, resolve_sampler
from datafusion_otel.telemetry import Telemetry

__all__ = [
    "Telemetry",
    "configure",
    "exports_from",
    "force_flush",
    "processor_for",
    "reset",
    "resolve_provider",
]

_LOG = logging.getLogger("datafusion_otel.config")
_DEFAULT_SERVICE_NAME = "datafusion-otel"
_lock = threading.RLock()
_tracers: weakref.WeakKeyDictionary[TracerProvider, trace.Tracer] = weakref.WeakKeyDictionary()
_processors: weakref.WeakKeyDictionary[TracerProvider, DiagnosticsSpanProcessor] = (
    weakref.WeakKeyDictionary()
)
# Providers whose export path datafusion-otel knows: True if it attached an exporter.
_exports: weakref.WeakKeyDictionary[TracerProvider, bool] = weakref.WeakKeyDictionary()
# The export processors `configure` attached, per provider, keyed by what they export to.
_exporters: weakref.WeakKeyDictionary[
    TracerProvider, dict[tuple[str, ...], ExportSpanProcessor]
] = weakref.WeakKeyDictionary()
_state: dict[str, TracerProvider | None] = {"configured": None, "fallback": None}


def _record_unsampled(provider: TracerProvider, sampler: Sampler | float | None = None) -> None:
    """Install ``sampler`` (default: the provider's own) wrapped in `LocalRecordingSampler`."""
    current = provider.sampler
    if sampler is None and isinstance(current, LocalRecordingSampler):
        return
    provider.sampler = resolve_sampler(current if sampler is None else sampler)


def tracer_for(provider: TracerProvider) -> trace.Tracer:
    """Return the package's tracer of ``provider``, whose sampler records what it drops.

    An SDK tracer copies the provider's sampler when it is created: the provider's sampler is
    wrapped (`processor_for`) before the tracer is made, and the tracer is made again when the
    provider's sampler changed since, so that no path (a bridge query, the instrumentor's
    first query) can leave the package with a tracer holding the unwrapped sampler.
    """
    tracer = _tracers.get(provider)
    if tracer is None or getattr(tracer, "sampler", None) is not provider.sampler:
        with _lock:
            processor_for(provider)
            _record_unsampled(provider)  # the application may have replaced the sampler
            tracer = provider.get_tracer(attr.TRACER_NAME)
            _tracers[provider] = tracer
    return tracer


def processor_for(provider: TracerProvider) -> DiagnosticsSpanProcessor:
    """Return the diagnostics processor of ``provider``, attaching one on first use."""
    with _lock:
        processor = _processors.get(provider)
        if processor is None:
            processor = DiagnosticsSpanProcessor()
            processor.serves_runs = True  # the provider's one package processor
            provider.add_span_processor(processor)
            _processors[provider] = processor
            _record_unsampled(provider)
        return processor


def exports_from(provider: TracerProvider) -> bool:
    """Return whether sampled spans of ``provider`` leave the process.

    False for the private fallback and for providers `configure` built without an exporter;
    True otherwise (a provider set up by the application is assumed to export).
    """
    if provider is _state["fallback"]:
        return False
    return _exports.get(provider, True)


def resolve_provider() -> TracerProvider:
    """Return the SDK provider that creates run spans (see the module docstring)."""
    configured = _state["configured"]
    if configured is not None:
        return configured
    global_provider = trace.get_tracer_provider()
    if isinstance(global_provider, TracerProvider):
        if not isinstance(global_provider.sampler, LocalRecordingSampler):
            processor_for(global_provider)  # wrap the sampler before anyone makes a tracer
            _record_unsampled(global_provider)
        return global_provider
    with _lock:
        fallback = _state["fallback"]
        if fallback is None:
            fallback = TracerProvider(sampler=ALWAYS_ON)  # exports nothing: keep every run
            _state["fallback"] = fallback
            _LOG.debug("no SDK TracerProvider configured; using a private one for runs")
        return fallback


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    current = str(resource.attributes.get(SERVICE_NAME, ""))
    if not current or current.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _DEFAULT_SERVICE_NAME}))
    return resource


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    sink: DiagnosticsSink | None = None,
    set_global: bool = True,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    certificate_file: str | None = None,
    client_key_file: str | None = None,
    client_certificate_file: str | None = None,
    compression: Compression | None = None,
    timeout: float | None = None,
    sampler: Sampler | float | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    batch: BatchOptions | None = None,
) -> Telemetry:
    """Set up run spans, their export over OTLP, and the diagnostics processor.

    With no argument, everything comes from the standard ``OTEL_*`` environment variables
    (listed in `datafusion_otel.export`); with no endpoint anywhere, nothing is exported and
    no connection is opened. Every value is validated now, not on the export thread.

    If a provider is given, or the global provider is already an SDK ``TracerProvider`` (for
    example set by ``opentelemetry-instrument``), datafusion-otel attaches to it instead of
    building a second one; it then adds an OTLP exporter only for an ``endpoint`` given as an
    argument (the environment variables are assumed to be served by whoever set that provider
    up), and ``service_name`` is ignored (the provider's resource stays).

    Calling it again is safe: an endpoint (protocol and URL) or exporter object the provider
    already exports to through an earlier call is reused, never attached twice; a different
    endpoint adds a second exporter, with a warning. Call `force_flush` before the program
    exits or reads a backend.

    Args:
        tracer_provider: SDK provider to attach to.
        sink: Receives the diagnostics rows of every run.
        set_global: Make a newly built provider the global one.
        service_name: ``service.name`` resource attribute (env: ``OTEL_SERVICE_NAME``;
            default ``"datafusion-otel"``).
        endpoint: OTLP endpoint URL. http/protobuf: a base URL gets ``/v1/traces`` appended,
            a URL with a path is used as given; grpc: ``http(s)://host:port``.
        protocol: ``"http/protobuf"`` (default) or ``"grpc"``.
        headers: Extra headers (gRPC metadata) for every export.
        insecure: gRPC without TLS (default: True for ``http://`` endpoints).
        certificate_file: CA bundle (PEM) to verify the backend.
        client_key_file: Client key (PEM) for mutual TLS.
        client_certificate_file: Client certificate (PEM) for mutual TLS.
        compression: ``"gzip"``, ``"deflate"`` (http only) or ``"none"``.
        timeout: Seconds one export request (retries included) may take (default 10).
        sampler: Which runs are exported: a Sampler, or a rate in [0, 1] meaning
            ``ParentBased(TraceIdRatioBased(rate))``. Runs it drops are still recorded locally.
        span_exporters: More exporters, each behind its own batching `ExportSpanProcessor`.
        batch: Queue and batch sizes, delays and the exit timeout (default: ``OTEL_BSP_*``).

    Returns:
        A `Telemetry` handle with ``force_flush``, ``shutdown`` and ``delivery_stats``.

    Raises:
        TypeError: If ``tracer_provider`` is not an SDK ``TracerProvider``.
        ValueError: If a setting, given or from the environment, cannot be used.
    """
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(
            "tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, "
            f"got {type(tracer_provider).__name__}"
        )
    with _lock:
        provider = tracer_provider
        if provider is None:
            global_provider = trace.get_tracer_provider()
            if isinstance(global_provider, TracerProvider):
                provider = global_provider
        owns = provider is None
        settings = None
        if owns or endpoint is not None:  # attached: the env belongs to the provider's owner
            settings = resolve_otlp_settings(
                endpoint=endpoint,
                protocol=protocol,
                headers=headers,
                insecure=insecure,
                certificate_file=certificate_file,
                client_key_file=client_key_file,
                client_certificate_file=client_certificate_file,
                compression=compression,
                timeout=timeout,
            )
        options = resolve_batch_options(batch)
        wrapped = resolve_sampler(sampler) if owns else None  # validate before any change
        if provider is None:
            provider = TracerProvider(sampler=wrapped, resource=_resource(service_name))
            if set_global:
                trace.set_tracer_provider(provider)
        else:
            _record_unsampled(provider, sampler)
            if service_name is not None:
                _LOG.warning("service_name ignored: attaching to an existing TracerProvider")

        processor = _processors.get(provider)
        if processor is None:
            processor = DiagnosticsSpanProcessor(sink)
            processor.serves_runs = True  # the provider's one package processor
            provider.add_span_processor(processor)
            _processors[provider] = processor
        elif sink is not None:
            processor.replace_sink(sink)  # one diagnostics processor per provider

        wanted: list[tuple[tuple[str, ...], str, SpanExporter | None]] = []
        if settings is not None:  # an OTLP endpoint is known by its protocol and URL
            wanted.append((("otlp", settings.protocol, settings.endpoint), "otlp", None))
        for index, exporter in enumerate(span_exporters):  # kept alive by its processor
            wanted.append(
                (("exporter", str(id(exporter))), f"{type(exporter).__name__}#{index}", exporter)
            )
        attached = _exporters.setdefault(provider, {})
        processors: list[ExportSpanProcessor] = []
        fresh = False
        for key, default_name, given in wanted:
            existing = attached.get(key)
            if existing is not None:  # the same endpoint or exporter again: never twice
                processors.append(existing)
                continue
            name = default_name
            chosen: SpanExporter | None = given
            app_has_it = (
                chosen is None
                and settings is not None
                and not owns
                and _endpoint_key(settings.endpoint) in _app_export_endpoints(provider)
            )
            if app_has_it and settings is not None:
                _LOG.warning(
                    "configure(endpoint=%s): the application's TracerProvider already "
                    "exports to it; no second exporter added (spans would arrive twice)",
                    settings.endpoint,
                )
                continue
            if chosen is None and settings is not None:
                otlp = sum(k[0] == "otlp" for k in attached)
                if otlp:
                    _LOG.warning(
                        "configure(): adding OTLP exporter #%d (%s); spans are exported to "
                        "every endpoint configured so far",
                        otlp + 1,
                        settings.endpoint,
                    )
                    name = f"otlp#{otlp + 1}"
                chosen = build_span_exporter(settings)
            if chosen is None:  # pragma: no cover - wanted holds an exporter or settings
                continue
            export_processor = ExportSpanProcessor(
                chosen,
                name=name,
                max_queue_size=options.max_queue_size,
                max_export_batch_size=options.max_export_batch_size,
                schedule_delay=options.schedule_delay,
                exit_timeout=options.exit_timeout,
            )
            provider.add_span_processor(export_processor)
            attached[key] = export_processor
            processors.append(export_processor)
            fresh = True
        if owns:
            _exports[provider] = bool(processors)
        _state["configured"] = provider
        # the handle covers every exporter configured on this provider, earlier calls' too
        telemetry = Telemetry(provider, processor, tuple(attached.values()), owns)
        if fresh:
            atexit.register(telemetry._shutdown_at_exit)
        return telemetry


def _endpoint_key(url: str) -> str:
    """An OTLP endpoint without its scheme and trailing slash (gRPC exporters drop the scheme)."""
    return url.split("://", 1)[-1].rstrip("/")


def _app_export_endpoints(provider: TracerProvider) -> set[str]:
    """Endpoints of the OTLP exporters the application added to ``provider`` (best effort).

    Reads the SDK's span processors (``SimpleSpanProcessor.span_exporter``, the batch
    processor's exporter) and their exporters' ``_endpoint``; anything unexpected is skipped.
    """
    found: set[str] = set()
    try:
        active = getattr(provider, "_active_span_processor", None)
        for processor in getattr(active, "_span_processors", ()):
            exporter = getattr(processor, "span_exporter", None)
            if exporter is None:
                batch = getattr(processor, "_batch_processor", processor)
                exporter = getattr(batch, "_exporter", None)
            endpoint = getattr(exporter, "_endpoint", None)
            if isinstance(endpoint, str):
                found.add(_endpoint_key(endpoint))
    except Exception:  # SDK internals changed: no duplicate detection, never a failure
        _LOG.debug("could not read the application's exporters")
    return found


def _export_processors() -> list[ExportSpanProcessor]:
    """Every export processor `configure` attached, on any provider still alive."""
    with _lock:
        return [p for attached in list(_exporters.values()) for p in attached.values()]


_flush_marks = {"capture_lost": 0}


def force_flush(timeout: float = 30.0) -> bool:
    """Flush everything the package set up: the one call to make before the program exits.

    Waits at most ``timeout`` seconds in total until the spans of garbage-collected streams
    are ended, the plan artifacts of every query that ran are captured (the capture worker),
    every span queued for the exporters `configure` attached is exported, every queued
    diagnostics row reached its sink, and every sink rows were delivered to that has a
    ``force_flush(timeout)`` method (the `configure` sink, run sinks: a `ParquetSink` writes
    its buffered rows) has flushed.

    Returns:
        False if anything is still pending at the deadline, or was dropped or failed since the
        last flush (a capture skipped because the capture queue was full, or that failed,
        included), or if a
        sink's ``force_flush`` returned False.
    """
    from datafusion_otel._capture import queue as _capture_queue
    from datafusion_otel._capture.stream_latch import run_pending

    deadline = time.monotonic() + max(timeout, 0.0)
    run_pending()  # spans of garbage-collected streams, ended off the collector
    ok = _capture_queue.drain(timeout)  # the artifacts of queries that already ran
    lost = _capture_queue.skipped_count() + _capture_queue.failed_count()
    ok = ok and lost == _flush_marks["capture_lost"]
    _flush_marks["capture_lost"] = lost
    for export_processor in _export_processors():
        remaining = max(deadline - time.monotonic(), 0.0)
        ok = export_processor.force_flush(int(remaining * 1000)) and ok
    ok = dispatcher.force_flush(max(deadline - time.monotonic(), 0.0)) and ok
    return dispatcher.flush_sinks(max(deadline - time.monotonic(), 0.0)) and ok


def reset() -> None:
    """Forget the configured provider (for tests); the private fallback is kept."""
    with _lock:
        _state["configured"] = None
