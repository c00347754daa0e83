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
import weakref
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

from datafusion_otel import attributes as attr
from datafusion_otel._delivery import dispatcher
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
_state: dict[str, TracerProvider | None] = {"configured": None, "fallback": None}


def _record_unsampled(provider: TracerProvider, sampler: Sampler | float | None = None) -> None:
    """Install ``sampler`` (default: the provider's own) wrapped in `LocalRecordingSampler`."""
    current = provider.sampler
    if sampler is None and isinstance(current, LocalRecordingSampler):
        return
    provider.sampler = resolve_sampler(current if sampler is None else sampler)


def tracer_for(provider: TracerProvider) -> trace.Tracer:
    """Return the package's tracer of ``provider`` (created once per provider)."""
    tracer = _tracers.get(provider)
    if tracer is None:
        tracer = provider.get_tracer(attr.TRACER_NAME)
        _tracers[provider] = tracer
    return tracer


def processor_for(provider: TracerProvider) -> DiagnosticsSpanProcessor:
    """Return the diagnostics processor of ``provider``, attaching one on first use."""
    with _lock:
        processor = _processors.get(provider)
        if processor is None:
            processor = DiagnosticsSpanProcessor()
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
            provider.add_span_processor(processor)
            _processors[provider] = processor
        elif sink is not None:
            processor.replace_sink(sink)  # one diagnostics processor per provider

        exporters: list[tuple[str, SpanExporter]] = []
        if settings is not None:
            exporters.append(("otlp", build_span_exporter(settings)))
        for index, exporter in enumerate(span_exporters):
            exporters.append((f"{type(exporter).__name__}#{index}", exporter))
        processors = tuple(
            ExportSpanProcessor(
                exporter,
                name=name,
                max_queue_size=options.max_queue_size,
                max_export_batch_size=options.max_export_batch_size,
                schedule_delay=options.schedule_delay,
                exit_timeout=options.exit_timeout,
            )
            for name, exporter in exporters
        )
        for export_processor in processors:
            provider.add_span_processor(export_processor)
        if owns:
            _exports[provider] = bool(processors)
        _state["configured"] = provider
        telemetry = Telemetry(provider, processor, processors, owns)
        if processors:
            atexit.register(telemetry._shutdown_at_exit)
        return telemetry


def force_flush(timeout: float = 30.0) -> bool:
    """Wait at most ``timeout`` seconds until every queued diagnostics row reached its sink.

    Returns:
        False if rows are pending, or were dropped or failed since the last flush.
    """
    from datafusion_otel._stream_latch import run_pending

    run_pending()  # spans of garbage-collected streams, ended off the collector
    return dispatcher.force_flush(timeout)


def reset() -> None:
    """Forget the configured provider (for tests); the private fallback is kept."""
    with _lock:
        _state["configured"] = None
