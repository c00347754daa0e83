"""The library this instrumentation instruments (read by ``BaseInstrumentor``)."""

from __future__ import annotations

_instruments = ("datafusion >= 55, < 56",)
_supports_metrics = False
