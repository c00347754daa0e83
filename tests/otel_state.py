"""A fixture that gives each test a clean OpenTelemetry global state and shuts down handles."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.util._once import Once

from datafusion_otel import config
from datafusion_otel.telemetry import Telemetry


def _forget_global_provider() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    config.reset()


class Handles:
    """Collects the `Telemetry` handles a test creates, shut down after it."""

    def __init__(self) -> None:
        self.items: list[Telemetry] = []

    def add(self, telemetry: Telemetry) -> Telemetry:
        self.items.append(telemetry)
        return telemetry


@pytest.fixture(name="handles")
def handles_fixture() -> Iterator[Handles]:
    """No global provider, no configured provider; handles shut down (0.5 s) afterwards."""
    _forget_global_provider()
    handles = Handles()
    yield handles
    for telemetry in handles.items:
        telemetry.shutdown(0.5)
    _forget_global_provider()
