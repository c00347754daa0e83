"""Shared fixtures: real DataFusion, real OpenTelemetry SDK providers, TPC-H data (``tpch_dir``),
clean global state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from conftest_tpch import tpch_dir  # noqa: F401 - re-exported fixture
from datafusion_otel import config
from datafusion_otel._processing.delivery import dispatcher


@pytest.fixture(autouse=True)
def _clean_global_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test starts unconfigured, with no delivery failure left over from another test,
    and with the package's home (store, EXPLAIN files) in a temporary folder, never the cwd."""
    monkeypatch.setenv("DATAFUSION_OTEL_HOME", str(tmp_path_factory.mktemp("home")))
    config.reset()
    dispatcher.force_flush(10)  # drain the worker and consume earlier failure counts
    yield
    dispatcher.force_flush(10)
    config.reset()


@dataclass
class SdkSetup:
    """A user's SDK TracerProvider exporting to memory."""

    provider: TracerProvider
    exporter: InMemorySpanExporter


@pytest.fixture
def sdk() -> Iterator[SdkSetup]:
    """An SDK TracerProvider with an InMemorySpanExporter behind a SimpleSpanProcessor."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield SdkSetup(provider, exporter)
    provider.shutdown()


@pytest.fixture
def configured(sdk: SdkSetup) -> Iterator[SdkSetup]:
    """datafusion_otel configured with the user's provider (no package-wide sink)."""
    datafusion_otel.configure(tracer_provider=sdk.provider)
    yield sdk
    config.reset()


@pytest.fixture
def sink() -> datafusion_otel.DiagnosticsCollector:
    """A fresh in-memory sink."""
    return datafusion_otel.DiagnosticsCollector()


@pytest.fixture
def ctx() -> SessionContext:
    """A DataFusion context with a small in-memory table ``t(k, v)``."""
    context = SessionContext()
    context.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    return context


def _run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run code in a fresh interpreter with no OpenTelemetry environment configuration."""
    return _run_python
