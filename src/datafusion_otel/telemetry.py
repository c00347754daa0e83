"""`Telemetry`: the handle `configure` returns, to flush, shut down and read delivery counters."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import TracerProvider

from datafusion_otel._exit import exit_remaining
from datafusion_otel._processing.delivery import DeliveryStats, FlushMark, dispatcher
from datafusion_otel.export_processor import ExporterStats, ExportSpanProcessor
from datafusion_otel.processor import DiagnosticsSpanProcessor

__all__ = ["Telemetry", "TelemetryStats"]


@dataclass(frozen=True)
class TelemetryStats:
    """Delivery counters: per exporter, and for the diagnostics sinks.

    Attributes:
        exporters: Counters per exporter name (``"otlp"`` for the OTLP exporter), each with
            ``queued``, ``exported``, ``dropped``, ``failed`` and ``pending``.
        sinks: Counters of rows and artifacts delivered to diagnostics sinks.
    """

    exporters: Mapping[str, ExporterStats]
    sinks: DeliveryStats

    @property
    def delivered(self) -> int:
        """Sink records delivered (shortcut for ``sinks.delivered``)."""
        return self.sinks.delivered

    @property
    def failed(self) -> int:
        """Sink records whose sink raised (shortcut for ``sinks.failed``)."""
        return self.sinks.failed

    @property
    def dropped(self) -> int:
        """Sink records dropped (shortcut for ``sinks.dropped``)."""
        return self.sinks.dropped

    @property
    def pending(self) -> int:
        """Sink records waiting (shortcut for ``sinks.pending``)."""
        return self.sinks.pending


@dataclass(frozen=True)
class Telemetry:
    """Handle returned by `configure`.

    Attributes:
        tracer_provider: The SDK provider that creates run spans.
        processor: The diagnostics processor attached to it.
        exporters: The batching export processors `configure` attached, one per exporter.
        owns_provider: True when `configure` built the provider (then `shutdown` shuts it
            down too); False when it attached to an existing one.
    """

    tracer_provider: TracerProvider
    processor: DiagnosticsSpanProcessor
    exporters: tuple[ExportSpanProcessor, ...] = field(default=())
    owns_provider: bool = False
    _flush_mark: FlushMark = field(default_factory=dispatcher.new_mark, repr=False, compare=False)

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export queued spans and deliver queued rows, waiting at most ``timeout`` seconds.

        Only the processors datafusion-otel attached are flushed (another processor on a
        shared provider may not honour a timeout).

        Returns:
            False if anything is still pending at the deadline, or was dropped or failed
            since the previous flush.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        ok = True
        for exporter in self.exporters:
            remaining = max(deadline - time.monotonic(), 0.0)
            ok = exporter.force_flush(int(remaining * 1000)) and ok
        remaining = max(deadline - time.monotonic(), 0.0)
        return dispatcher.force_flush(remaining, mark=self._flush_mark) and ok

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout`` seconds, then stop the exporters (and an owned provider).

        Never takes much longer than ``timeout``: spans still queued at the deadline are
        counted as dropped.

        Returns:
            False if anything was not delivered.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        ok = True
        for exporter in self.exporters:
            remaining = max(deadline - time.monotonic(), 0.0)
            ok = exporter.shutdown(int(remaining * 1000)) and ok
        ok = (
            dispatcher.force_flush(max(deadline - time.monotonic(), 0.0), mark=self._flush_mark)
            and ok
        )
        if self.owns_provider:
            self.tracer_provider.shutdown()  # our processors are shut down: returns at once
        return ok

    def delivery_stats(self) -> TelemetryStats:
        """Return the counters per exporter and for the diagnostics sinks."""
        return TelemetryStats(
            exporters={exporter.name: exporter.stats() for exporter in self.exporters},
            sinks=dispatcher.stats(),
        )

    def _shutdown_at_exit(self) -> None:
        """Shut the exporters down within the exit budget (registered with atexit)."""
        for exporter in self.exporters:
            exporter.shutdown(int(min(exporter.exit_timeout, exit_remaining()) * 1000))
