"""Which TracerProvider creates run spans, and `configure` to set that up explicitly.

Resolution, for every run:

1. the provider given to `configure`, if any;
2. otherwise the global provider, when it is an SDK ``TracerProvider`` (for example one set by
   ``opentelemetry-instrument`` or by the application): run spans then reach the user's
   exporters, and a `DiagnosticsSpanProcessor` is attached to it on first use;
3. otherwise a private SDK provider (never set globally) carrying the processor, so runs and
   diagnostics rows work with no configuration at all and nothing leaves the process.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from datafusion_otel._delivery import DeliveryStats, dispatcher
from datafusion_otel.diagnostics import DiagnosticsSink
from datafusion_otel.processor import DiagnosticsSpanProcessor

__all__ = ["Telemetry", "configure", "force_flush", "reset", "resolve_provider"]

_LOG = logging.getLogger("datafusion_otel.config")
_lock = threading.RLock()
_processors: weakref.WeakKeyDictionary[TracerProvider, DiagnosticsSpanProcessor] = (
    weakref.WeakKeyDictionary()
)
_state: dict[str, TracerProvider | None] = {"configured": None, "fallback": None}


@dataclass(frozen=True)
class Telemetry:
    """Handle returned by `configure`.

    Attributes:
        tracer_provider: The SDK provider that creates run spans.
        processor: The diagnostics processor attached to it.
    """

    tracer_provider: TracerProvider
    processor: DiagnosticsSpanProcessor

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Flush spans and diagnostics rows, waiting at most ``timeout`` seconds.

        Returns:
            False if anything was not delivered.
        """
        provider_ok = self.tracer_provider.force_flush(int(timeout * 1000))
        return bool(provider_ok) and dispatcher.force_flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout`` seconds and shut the provider down.

        Returns:
            False if anything was not delivered.
        """
        flushed = self.force_flush(timeout)
        self.tracer_provider.shutdown()
        return flushed

    def delivery_stats(self) -> DeliveryStats:
        """Return the sink delivery counters."""
        return dispatcher.stats()


def processor_for(provider: TracerProvider) -> DiagnosticsSpanProcessor:
    """Return the diagnostics processor of ``provider``, attaching one on first use."""
    with _lock:
        processor = _processors.get(provider)
        if processor is None:
            processor = DiagnosticsSpanProcessor()
            provider.add_span_processor(processor)
            _processors[provider] = processor
        return processor


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
            fallback = TracerProvider()
            _state["fallback"] = fallback
            _LOG.debug("no SDK TracerProvider configured; using a private one for runs")
        return fallback


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    sink: DiagnosticsSink | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Attach datafusion-otel to a TracerProvider, building one if needed.

    Args:
        tracer_provider: SDK provider to attach to. Default: the global provider when it is
            an SDK provider, else a new ``TracerProvider``.
        sink: Receives the diagnostics rows of every run.
        set_global: Make a newly built provider the global one (ignored when a provider is
            given or already set globally).

    Returns:
        A `Telemetry` handle to flush and shut down.

    Raises:
        TypeError: If ``tracer_provider`` is not an SDK ``TracerProvider``.
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
            else:
                provider = TracerProvider()
                if set_global:
                    trace.set_tracer_provider(provider)
        processor = _processors.get(provider)
        if processor is None or (sink is not None and processor.sink is not sink):
            processor = DiagnosticsSpanProcessor(sink)
            provider.add_span_processor(processor)
            _processors[provider] = processor
        _state["configured"] = provider
        return Telemetry(provider, processor)


def force_flush(timeout: float = 30.0) -> bool:
    """Wait at most ``timeout`` seconds until every queued diagnostics row reached its sink.

    Returns:
        False if rows are pending, or were dropped or failed since the last flush.
    """
    return dispatcher.force_flush(timeout)


def reset() -> None:
    """Forget the configured provider (for tests); the private fallback is kept."""
    with _lock:
        _state["configured"] = None
