"""OTLP export settings: resolved from arguments and environment variables, validated eagerly.

Every setting is taken from the `configure` argument if given, else from the environment, else
from the default; a value that cannot be used raises ValueError when `configure` is called,
never later on the export thread. The signal-specific variable (``..._TRACES_...``) wins over the
generic one. This table is the one place where the variables datafusion-otel reads are listed:

========================================  ==========================================================
variable                                  meaning
========================================  ==========================================================
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT        full URL of the traces endpoint, used as given
OTEL_EXPORTER_OTLP_ENDPOINT               base URL; ``/v1/traces`` is appended for http/protobuf.
                                          No endpoint at all: nothing is exported, no traffic.
OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL      ``http/protobuf`` (default) or ``grpc``
OTEL_EXPORTER_OTLP_(TRACES_)HEADERS       ``key=value,key2=value2`` (values URL-decoded)
OTEL_EXPORTER_OTLP_(TRACES_)INSECURE      ``true``: plain-text gRPC even without ``http://``
OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE   CA bundle (PEM) to verify the backend's certificate
OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY    client key (PEM) for mutual TLS
OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE  client certificate (PEM) for mutual TLS
OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION   ``gzip``, ``deflate`` (http only) or ``none`` (default)
OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT       per-export timeout in **milliseconds**, as the
                                          specification says (default 10000); the ``timeout``
                                          argument is in seconds
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES  the ``service.name`` and other resource attributes
OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG the sampler (standard names), when no ``sampler``
                                          argument is given
OTEL_BSP_MAX_QUEUE_SIZE                   spans buffered per exporter (default 2048)
OTEL_BSP_MAX_EXPORT_BATCH_SIZE            spans per export request (default 512)
OTEL_BSP_SCHEDULE_DELAY                   milliseconds between exports (default 1000)
========================================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlparse

from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "BatchOptions",
    "OtlpSettings",
    "Protocol",
    "build_span_exporter",
    "resolve_batch_options",
    "resolve_otlp_settings",
]

Protocol = Literal["grpc", "http/protobuf"]
Compression = Literal["gzip", "deflate", "none"]

_PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")
_COMPRESSIONS: tuple[str, ...] = ("gzip", "deflate", "none")
_DEFAULT_TIMEOUT_S = 10.0
_TRACES_PATH = "v1/traces"


@dataclass(frozen=True)
class OtlpSettings:
    """Resolved settings of the OTLP trace exporter.

    Attributes:
        endpoint: URL of the traces endpoint (http/protobuf: with its path; grpc: the scheme
            and ``host:port``).
        protocol: ``"grpc"`` or ``"http/protobuf"``.
        headers: Headers (gRPC metadata) sent with every export.
        insecure: gRPC only: plain text instead of TLS.
        certificate_file: CA bundle (PEM) used to verify the backend.
        client_key_file: Client key (PEM) for mutual TLS.
        client_certificate_file: Client certificate (PEM) for mutual TLS.
        compression: ``"gzip"``, ``"deflate"`` or ``"none"``.
        timeout: Seconds one export (retries included) may take.
    """

    endpoint: str
    protocol: Protocol = "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = False
    certificate_file: str | None = None
    client_key_file: str | None = None
    client_certificate_file: str | None = None
    compression: Compression = "none"
    timeout: float = _DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class BatchOptions:
    """How each exporter's batching processor buffers spans.

    Attributes:
        max_queue_size: Spans buffered per exporter; when full, new spans are dropped and
            counted.
        max_export_batch_size: Spans per export request.
        schedule_delay: Seconds between two exports when the batch is not full.
        exit_timeout: Seconds a flush at process exit may take, after which whatever is still
            queued is counted as dropped.
    """

    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay: float = 1.0
    exit_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if not 1 <= self.max_export_batch_size <= self.max_queue_size:
            raise ValueError(
                "max_export_batch_size must be between 1 and max_queue_size "
                f"({self.max_queue_size}), got {self.max_export_batch_size}"
            )
        if self.schedule_delay <= 0:
            raise ValueError(f"schedule_delay must be > 0 seconds, got {self.schedule_delay}")
        if self.exit_timeout < 0:
            raise ValueError(f"exit_timeout must be >= 0 seconds, got {self.exit_timeout}")


def _env(name: str) -> str | None:
    """Return ``OTEL_EXPORTER_OTLP_TRACES_<name>`` or ``OTEL_EXPORTER_OTLP_<name>``, if set."""
    for key in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(key, "").strip()
        if value:
            return value
    return None


def _env_name(name: str) -> str:
    if os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", "").strip():
        return f"OTEL_EXPORTER_OTLP_TRACES_{name}"
    return f"OTEL_EXPORTER_OTLP_{name}"


def parse_headers(text: str, *, source: str) -> dict[str, str]:
    """Parse ``key=value,key2=value2`` (W3C baggage-like, URL-encoded values).

    Raises:
        ValueError: If an entry has no ``=`` or an empty key.
    """
    headers: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{source}: header entry {entry!r} is not key=value")
        headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _parse_bool(text: str, *, source: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"{source} must be true or false, got {text!r}")


def _check_file(path: str | None, what: str) -> str | None:
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} is not a readable file")
    return path


def _resolve_endpoint(endpoint: str | None, protocol: Protocol) -> str | None:
    if endpoint is not None:
        source, signal_specific = "endpoint", False
        url = endpoint.strip()
    elif value := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        source, signal_specific, url = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True, value
    elif value := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        source, signal_specific, url = "OTEL_EXPORTER_OTLP_ENDPOINT", False, value
    else:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{source} must be an http:// or https:// URL with a host, got {url!r}")
    try:
        _ = parsed.port
    except ValueError as exc:
        raise ValueError(f"{source} has an invalid port: {url!r}") from exc
    if protocol == "grpc":
        return f"{parsed.scheme}://{parsed.netloc}"
    if signal_specific:
        return url
    if source == "endpoint" and parsed.path not in ("", "/"):
        return url  # an argument with a path is the full traces URL
    return f"{url.rstrip('/')}/{_TRACES_PATH}"


def resolve_otlp_settings(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    certificate_file: str | None = None,
    client_key_file: str | None = None,
    client_certificate_file: str | None = None,
    compression: str | None = None,
    timeout: float | None = None,
) -> OtlpSettings | None:
    """Resolve the exporter settings: argument > environment variable > default.

    Returns:
        The settings, or None when no endpoint is configured at all (then nothing is exported
        and no connection is ever opened).

    Raises:
        ValueError: If a value (argument or environment variable) cannot be used.
    """
    proto_text = protocol if protocol is not None else _env("PROTOCOL") or "http/protobuf"
    if proto_text not in _PROTOCOLS:
        source = "protocol" if protocol is not None else _env_name("PROTOCOL")
        raise ValueError(f"{source} must be one of {_PROTOCOLS}, got {proto_text!r}")
    proto: Protocol = "grpc" if proto_text == "grpc" else "http/protobuf"

    url = _resolve_endpoint(endpoint, proto)

    comp_text = (compression if compression is not None else _env("COMPRESSION") or "none").lower()
    if comp_text not in _COMPRESSIONS or (proto == "grpc" and comp_text == "deflate"):
        source = "compression" if compression is not None else _env_name("COMPRESSION")
        allowed = ("gzip", "none") if proto == "grpc" else _COMPRESSIONS
        raise ValueError(f"{source} must be one of {allowed} for {proto}, got {comp_text!r}")
    comp: Compression = "none"
    if comp_text in ("gzip", "deflate"):
        comp = "gzip" if comp_text == "gzip" else "deflate"

    if timeout is not None:
        seconds = float(timeout)
        source = "timeout"
    elif (raw := _env("TIMEOUT")) is not None:
        source = _env_name("TIMEOUT")
        try:
            seconds = float(raw) / 1000
        except ValueError as exc:
            raise ValueError(f"{source} must be a number of milliseconds, got {raw!r}") from exc
    else:
        seconds, source = _DEFAULT_TIMEOUT_S, "timeout"
    if not seconds > 0:
        raise ValueError(f"{source} must be positive, got {seconds}")

    merged: dict[str, str] = {}
    if (raw := _env("HEADERS")) is not None:
        merged.update(parse_headers(raw, source=_env_name("HEADERS")))
    if headers is not None:
        merged.update({str(k).lower(): str(v) for k, v in headers.items()})

    if insecure is None and (raw := _env("INSECURE")) is not None:
        insecure = _parse_bool(raw, source=_env_name("INSECURE"))
    cert = _check_file(
        certificate_file if certificate_file is not None else _env("CERTIFICATE"),
        "certificate_file",
    )
    key = _check_file(
        client_key_file if client_key_file is not None else _env("CLIENT_KEY"), "client_key_file"
    )
    chain = _check_file(
        client_certificate_file
        if client_certificate_file is not None
        else _env("CLIENT_CERTIFICATE"),
        "client_certificate_file",
    )
    if (key is None) != (chain is None):
        raise ValueError("client_key_file and client_certificate_file must be given together")
    if url is None:
        return None
    scheme = urlparse(url).scheme
    if insecure is None:
        insecure = scheme == "http"
    if scheme == "https" and insecure:
        raise ValueError(f"insecure=True contradicts the https endpoint {url!r}")
    return OtlpSettings(
        endpoint=url,
        protocol=proto,
        headers=merged,
        insecure=insecure,
        certificate_file=cert,
        client_key_file=key,
        client_certificate_file=chain,
        compression=comp,
        timeout=seconds,
    )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def resolve_batch_options(options: BatchOptions | None) -> BatchOptions:
    """Return ``options``, or the options read from the ``OTEL_BSP_*`` variables.

    Raises:
        ValueError: If a variable is not an integer or the values do not fit together.
    """
    if options is not None:
        return options
    return BatchOptions(
        max_queue_size=_env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        max_export_batch_size=_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        schedule_delay=_env_int("OTEL_BSP_SCHEDULE_DELAY", 1000) / 1000,
    )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def build_span_exporter(settings: OtlpSettings) -> SpanExporter:
    """Build the SDK OTLP span exporter for ``settings`` (no connection is opened yet).

    Every value is passed explicitly, so the exporter reads no environment variable itself.
    """
    if settings.protocol == "grpc":
        # imported here: grpc costs ~100 ms at import, and only gRPC users need it
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        credentials = None
        if not settings.insecure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.certificate_file),
                private_key=_read(settings.client_key_file),
                certificate_chain=_read(settings.client_certificate_file),
            )
        return GrpcSpanExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            credentials=credentials,
            headers=dict(settings.headers),
            timeout=settings.timeout,
            compression=(
                grpc.Compression.Gzip
                if settings.compression == "gzip"
                else grpc.Compression.NoCompression
            ),
        )
    from opentelemetry.exporter.otlp.proto.http import (
        Compression as HttpCompression,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(
        endpoint=settings.endpoint,
        certificate_file=settings.certificate_file,
        client_key_file=settings.client_key_file,
        client_certificate_file=settings.client_certificate_file,
        headers=dict(settings.headers),
        timeout=settings.timeout,
        compression=HttpCompression(settings.compression),
    )
