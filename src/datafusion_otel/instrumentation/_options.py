"""Typed options of `DataFusionInstrumentor.instrument`, resolved argument > env var > default.

Environment variables (for ``opentelemetry-instrument``, which calls ``instrument()`` with no
arguments):

=========================================== ====================================== ==========
variable                                    values                                 default
=========================================== ====================================== ==========
``DATAFUSION_OTEL_SQL_TEXT``                ``sanitized``, ``raw``, ``off``        sanitized
``DATAFUSION_OTEL_CAPTURE_PLAN_ARTIFACTS``  ``true`` / ``false`` (also 1/0, yes/no) false
``DATAFUSION_OTEL_AUTO_RUN``                ``true`` / ``false``                   true
``DATAFUSION_OTEL_CAPTURE_MIN_DURATION_MS`` a number of milliseconds >= 0          (none)
=========================================== ====================================== ==========
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import cast

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from datafusion_otel.compile_options import ALL_ARTIFACTS, DEFAULT_ARTIFACTS
from datafusion_otel.sanitize import SqlTextPolicy

__all__ = [
    "ENV_AUTO_RUN",
    "ENV_CAPTURE_MIN_DURATION_MS",
    "ENV_CAPTURE_PLAN_ARTIFACTS",
    "ENV_SQL_TEXT",
    "InstrumentationOptions",
    "resolve_options",
]

ENV_SQL_TEXT = "DATAFUSION_OTEL_SQL_TEXT"
ENV_CAPTURE_PLAN_ARTIFACTS = "DATAFUSION_OTEL_CAPTURE_PLAN_ARTIFACTS"
ENV_AUTO_RUN = "DATAFUSION_OTEL_AUTO_RUN"
ENV_CAPTURE_MIN_DURATION_MS = "DATAFUSION_OTEL_CAPTURE_MIN_DURATION_MS"

_SQL_TEXT_POLICIES = ("sanitized", "raw", "off")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class InstrumentationOptions:
    """How executions are traced; built by `DataFusionInstrumentor.instrument`.

    Attributes:
        tracer_provider: Provider of execution spans. None: the provider that creates runs
            (`datafusion_otel.config.resolve_provider`), resolved at each execution so that a
            later `datafusion_otel.configure` is honoured.
        meter_provider: Accepted for the ``BaseInstrumentor`` contract; no metrics are
            recorded yet.
        capture_plan_artifacts: After each execution, attach plan artifacts and per-operator
            metrics to the execution span (``datafusion_otel.bridge``). Off by default: it
            costs about a millisecond per query.
        sql_text: ``"sanitized"`` (default): ``db.query.text`` holds the SQL with literals
            replaced by ``?``; ``"raw"``: the SQL as written (opt-in, may expose data);
            ``"off"``: no ``db.query.text``.
        auto_run: An execution outside any run or active span becomes its own run: the
            execution span is then the run's root span (run id = trace id).
        capture_min_duration_ms: With capture on, capture only executions that took at
            least this long (None: every execution).
        artifacts: With capture on, the artifacts to capture (`DEFAULT_ARTIFACTS`, or
            `ALL_ARTIFACTS` or any subset of it; ``"explain"`` writes no file: the
            instrumentor takes no ``artifact_dir``).
    """

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    capture_plan_artifacts: bool = False
    sql_text: SqlTextPolicy = "sanitized"
    auto_run: bool = True
    capture_min_duration_ms: float | None = None
    artifacts: frozenset[str] = DEFAULT_ARTIFACTS

    def __post_init__(self) -> None:
        """Validate eagerly.

        Raises:
            ValueError: If ``sql_text`` is not one of the policies,
                ``capture_min_duration_ms`` is not a finite number >= 0, or an artifact name
                is unknown.
            TypeError: If a flag is not a bool.
        """
        threshold = self.capture_min_duration_ms
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold < float("inf")
        ):
            raise ValueError(
                f"capture_min_duration_ms must be a finite number >= 0, got {threshold!r}"
            )
        if isinstance(self.artifacts, str):
            raise ValueError(f"artifacts must be a set of artifact names, got {self.artifacts!r}")
        object.__setattr__(self, "artifacts", frozenset(self.artifacts))
        unknown = sorted(self.artifacts - ALL_ARTIFACTS)
        if unknown:
            raise ValueError(
                f"unknown artifacts {unknown}; known: {', '.join(sorted(ALL_ARTIFACTS))}"
            )
        if self.sql_text not in _SQL_TEXT_POLICIES:
            raise ValueError(f"sql_text must be one of {_SQL_TEXT_POLICIES}, got {self.sql_text!r}")
        for name in ("capture_plan_artifacts", "auto_run"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def resolve_options(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_plan_artifacts: bool | None = None,
    sql_text: SqlTextPolicy | None = None,
    auto_run: bool | None = None,
    capture_min_duration_ms: float | None = None,
    artifacts: Collection[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> InstrumentationOptions:
    """Resolve every option: the argument if given, else its env var, else the default.

    Args:
        tracer_provider: See `InstrumentationOptions`.
        meter_provider: See `InstrumentationOptions`.
        capture_plan_artifacts: See `InstrumentationOptions`.
        sql_text: See `InstrumentationOptions`.
        auto_run: See `InstrumentationOptions`.
        capture_min_duration_ms: See `InstrumentationOptions`.
        artifacts: See `InstrumentationOptions`.
        environ: Environment to read (default ``os.environ``).

    Returns:
        The validated options.

    Raises:
        ValueError: If an argument or environment variable has an invalid value.
    """
    env = os.environ if environ is None else environ
    if sql_text is None:
        raw = env.get(ENV_SQL_TEXT, "").strip().lower() or "sanitized"
        if raw not in _SQL_TEXT_POLICIES:
            raise ValueError(f"{ENV_SQL_TEXT} must be one of {_SQL_TEXT_POLICIES}, got {raw!r}")
        sql_text = cast("SqlTextPolicy", raw)
    return InstrumentationOptions(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_plan_artifacts=(
            _env_flag(env, ENV_CAPTURE_PLAN_ARTIFACTS, False)
            if capture_plan_artifacts is None
            else capture_plan_artifacts
        ),
        sql_text=sql_text,
        auto_run=_env_flag(env, ENV_AUTO_RUN, True) if auto_run is None else auto_run,
        capture_min_duration_ms=(
            _env_number(env, ENV_CAPTURE_MIN_DURATION_MS)
            if capture_min_duration_ms is None
            else capture_min_duration_ms
        ),
        artifacts=frozenset(artifacts) if artifacts is not None else DEFAULT_ARTIFACTS,
    )


def _env_number(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value
