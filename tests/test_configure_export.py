"""configure(): settings, attaching to an existing provider, sampling with full local tables."""

from __future__ import annotations

import json
import socket

import pytest
from datafusion import SessionContext
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel.export import BatchOptions, resolve_otlp_settings
from datafusion_otel.sampling import LocalRecordingSampler
from listeners import ReceiverProcess
from otel_state import Handles, handles_fixture  # noqa: F401

pytestmark = pytest.mark.usefixtures("handles")

OTLP_VARS = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTLP_VARS:
        monkeypatch.delenv(name, raising=False)


def _query_runs(count: int, label: str = "q") -> list[str]:
    ctx = SessionContext()
    ids = []
    for _ in range(count):
        with tracked_run(label=label) as run:
            ctx.sql("SELECT 1 AS x").to_arrow_table()
        ids.append(run.run_id)
    return ids


def _rows(sink: DiagnosticsCollector) -> dict[str, dict[str, object]]:
    assert datafusion_otel.force_flush(5)
    return {str(r["run_id"]): r for r in sink.events_snapshot()["datafusion_runs_v1"]}


class TestSettings:
    """Argument > signal-specific env > generic env > default, checked when configure() runs."""

    def test_no_endpoint_means_no_exporter(self, handles: Handles) -> None:
        telemetry = handles.add(datafusion_otel.configure())
        assert telemetry.exporters == ()
        assert telemetry.delivery_stats().exporters == {}

    def test_generic_env_endpoint_gets_the_traces_path(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=a%20b,x=1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
        settings = resolve_otlp_settings()
        assert settings is not None
        assert settings.endpoint == "http://127.0.0.1:4318/v1/traces"
        assert settings.headers == {"api-key": "a b", "x": "1"}
        assert settings.timeout == 2.5
        assert settings.protocol == "http/protobuf"

    def test_traces_env_wins_and_argument_wins_over_env(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:2/custom")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        settings = resolve_otlp_settings()
        assert settings is not None
        assert settings.endpoint == "http://127.0.0.1:2/custom"
        assert settings.protocol == "http/protobuf"
        settings = resolve_otlp_settings(endpoint="https://example.invalid:4317", protocol="grpc")
        assert settings is not None
        assert (settings.endpoint, settings.protocol, settings.insecure) == (
            "https://example.invalid:4317",
            "grpc",
            False,
        )

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "OTEL_EXPORTER_OTLP_TIMEOUT"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "OTEL_EXPORTER_OTLP_COMPRESSION"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "OTEL_EXPORTER_OTLP_HEADERS"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "OTEL_EXPORTER_OTLP_INSECURE"),
            ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
        ],
    )
    def test_bad_env_values_fail_at_configure(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValueError, match=message):
            datafusion_otel.configure()

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"endpoint": "ftp://host"},
            {"endpoint": "http://127.0.0.1:1", "timeout": 0},
            {"endpoint": "http://127.0.0.1:1", "protocol": "grpc", "compression": "deflate"},
            {"endpoint": "https://127.0.0.1:1", "insecure": True},
            {"endpoint": "http://127.0.0.1:1", "certificate_file": "/nonexistent.pem"},
            {"sampler": 1.5},
            {"batch": None, "endpoint": "http://[::1"},
        ],
    )
    def test_bad_arguments_raise_value_error(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            datafusion_otel.configure(**kwargs)  # type: ignore[arg-type]

    def test_bad_batch_options(self) -> None:
        with pytest.raises(ValueError, match="max_export_batch_size"):
            BatchOptions(max_queue_size=4, max_export_batch_size=8)

    def test_service_name_from_argument_env_and_default(
        self, monkeypatch: pytest.MonkeyPatch, handles: Handles
    ) -> None:
        telemetry = handles.add(datafusion_otel.configure(set_global=False))
        assert telemetry.tracer_provider.resource.attributes["service.name"] == "datafusion-otel"
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        telemetry = handles.add(datafusion_otel.configure(set_global=False))
        assert telemetry.tracer_provider.resource.attributes["service.name"] == "from-env"
        telemetry = handles.add(datafusion_otel.configure(set_global=False, service_name="arg"))
        assert telemetry.tracer_provider.resource.attributes["service.name"] == "arg"

    def test_env_only_configure_exports(
        self, monkeypatch: pytest.MonkeyPatch, handles: Handles
    ) -> None:
        receiver = ReceiverProcess()
        receiver.start()
        try:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
            monkeypatch.setenv("OTEL_SERVICE_NAME", "env-only")
            telemetry = handles.add(datafusion_otel.configure())
            assert trace.get_tracer_provider() is telemetry.tracer_provider
            ids = _query_runs(3)
            assert telemetry.force_flush(5) is True
            assert receiver.wait_for(set(ids)) == set(ids)
            stats = telemetry.delivery_stats().exporters["otlp"]
            assert (stats.queued, stats.exported, stats.failed, stats.dropped) == (3, 3, 0, 0)
        finally:
            receiver.kill()


class TestExistingProvider:
    """An SDK provider already in place is used, never a second one."""

    def test_attaches_to_the_global_provider_without_adding_an_env_exporter(
        self, monkeypatch: pytest.MonkeyPatch, handles: Handles
    ) -> None:
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        sink = DiagnosticsCollector()
        telemetry = handles.add(datafusion_otel.configure(sink=sink))
        assert telemetry.tracer_provider is provider
        assert telemetry.owns_provider is False
        assert telemetry.exporters == ()  # the env belongs to whoever set the provider up
        ids = _query_runs(2)
        assert {format(s.context.trace_id, "032x") for s in memory.get_finished_spans()} == set(ids)
        assert set(_rows(sink)) == set(ids)

    def test_explicit_endpoint_adds_an_exporter_to_an_existing_provider(
        self, handles: Handles
    ) -> None:
        provider = TracerProvider()
        receiver = ReceiverProcess()
        receiver.start()
        try:
            telemetry = handles.add(
                datafusion_otel.configure(tracer_provider=provider, endpoint=receiver.endpoint)
            )
            assert telemetry.tracer_provider is provider
            ids = _query_runs(2)
            assert telemetry.force_flush(5)
            assert receiver.wait_for(set(ids)) == set(ids)
        finally:
            receiver.kill()


class TestSampling:
    """Dropped runs are recorded locally (RECORD_ONLY) and marked; only sampled ones export."""

    def test_sampled_out_runs_stay_in_the_local_table(self, handles: Handles) -> None:
        memory = InMemorySpanExporter()
        sink = DiagnosticsCollector()
        telemetry = handles.add(
            datafusion_otel.configure(sink=sink, sampler=ALWAYS_OFF, span_exporters=[memory])
        )
        assert isinstance(telemetry.tracer_provider.sampler, LocalRecordingSampler)
        ids = _query_runs(10)
        assert telemetry.force_flush(5) is True
        assert memory.get_finished_spans() == ()
        rows = _rows(sink)
        assert set(rows) == set(ids)
        assert all(
            json.loads(str(r["metadata"]))["datafusion_otel.exported"] is False
            for r in rows.values()
        )

    def test_ratio_sampling_marks_exactly_the_exported_runs(self, handles: Handles) -> None:
        memory = InMemorySpanExporter()
        sink = DiagnosticsCollector()
        telemetry = handles.add(
            datafusion_otel.configure(sink=sink, sampler=0.5, span_exporters=[memory])
        )
        ids = _query_runs(200)
        assert telemetry.force_flush(5) is True
        exported = {format(s.context.trace_id, "032x") for s in memory.get_finished_spans()}
        assert 40 < len(exported) < 160
        rows = _rows(sink)
        assert set(rows) == set(ids)
        marked = {
            rid
            for rid, r in rows.items()
            if json.loads(str(r["metadata"]))["datafusion_otel.exported"]
        }
        assert marked == exported
        for span in memory.get_finished_spans():
            assert span.attributes is not None
            assert span.attributes[attr.RUN_EXPORTED] is True
        stats = telemetry.delivery_stats().exporters
        (name,) = stats
        assert stats[name].exported == len(exported)

    def test_env_sampler_is_wrapped(
        self, monkeypatch: pytest.MonkeyPatch, handles: Handles
    ) -> None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
        sink = DiagnosticsCollector()
        handles.add(datafusion_otel.configure(sink=sink))
        ids = _query_runs(5)
        assert set(_rows(sink)) == set(ids)

    def test_runs_without_any_exporter_are_not_marked_exported(self, handles: Handles) -> None:
        sink = DiagnosticsCollector()
        handles.add(datafusion_otel.configure(sink=sink))
        _query_runs(2)
        rows = _rows(sink)
        assert all(
            json.loads(str(r["metadata"]))["datafusion_otel.exported"] is False
            for r in rows.values()
        )


def test_no_connection_is_opened_without_an_endpoint(handles: Handles) -> None:
    """A listener on a port configure() could guess (4317/4318 are taken by nobody here) sees
    nothing: with no endpoint, the exporters list is empty and runs open no socket."""
    opened: list[object] = []
    original = socket.socket.connect

    def spy(self: socket.socket, address: object) -> None:
        opened.append(address)
        original(self, address)  # type: ignore[arg-type]

    socket.socket.connect = spy  # type: ignore[method-assign]
    try:
        telemetry = handles.add(datafusion_otel.configure())
        _query_runs(3)
        assert telemetry.force_flush(2)
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    assert opened == []
