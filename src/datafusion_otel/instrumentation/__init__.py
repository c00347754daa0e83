"""Auto-instrumentation: every DataFusion execution traced once, with no code change.

Usage:
    >>> from datafusion_otel import DataFusionInstrumentor
    >>> DataFusionInstrumentor().instrument()          # doctest: +SKIP
    >>> DataFusionInstrumentor().uninstrument()        # doctest: +SKIP

or, with no code change at all, ``opentelemetry-instrument python app.py`` (entry point
``datafusion`` in the ``opentelemetry_instrumentor`` group).

Each user call that executes a query (``collect``, ``to_pandas``, ``count``, ``write_parquet``,
streams, ``pa.table(df)``, DDL through ``SessionContext.sql``...) gives exactly one span named
after ``db.query.summary`` (``"SELECT lineitem orders"``), with the database semantic
convention attributes and ``datafusion.*`` attributes. See `_wrappers` for the list of
methods and `_execution` for where the spans go (child of the active run, or a run of its own).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Collection
from typing import Any

from datafusion import DataFrame, SessionContext
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,  # mypy does not see the class in 0.66b2; it is there at run time
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import TracerProvider

from datafusion_otel import config
from datafusion_otel._capture.stream_latch import run_pending
from datafusion_otel.instrumentation._execution import Tracing
from datafusion_otel.instrumentation._options import InstrumentationOptions, resolve_options
from datafusion_otel.instrumentation._query import clear_query_caches
from datafusion_otel.instrumentation._streams import TracedRecordBatchStream
from datafusion_otel.instrumentation._wrappers import (
    CONTEXT_METHODS,
    DATAFRAME_METHODS,
    make_wrapper,
)
from datafusion_otel.instrumentation.package import _instruments
from datafusion_otel.instrumentation.version import __version__
from datafusion_otel.sanitize import SqlTextPolicy

__all__ = [
    "DataFusionInstrumentationWarning",
    "DataFusionInstrumentor",
    "InstrumentationOptions",
    "TracedRecordBatchStream",
    "__version__",
]

_LOG = logging.getLogger("datafusion_otel.instrumentation")
_MISSING = object()
_NO_SDK_MESSAGE = (
    "datafusion-otel: DataFusionInstrumentor found no OpenTelemetry SDK TracerProvider (none "
    "passed, datafusion_otel.configure() not called, and the global provider is not an SDK "
    "provider): execution spans are recorded in the local diagnostics tables only and "
    "exported nowhere. With opentelemetry-instrument, install 'datafusion-otel[instrument]' "
    "(it brings opentelemetry-distro, which sets the SDK up); otherwise call "
    "datafusion_otel.configure(...) or pass tracer_provider=."
)
_warned_without_sdk = False


class DataFusionInstrumentationWarning(UserWarning):
    """Warns about an instrumentation call that was ignored or that exports nothing.

    For example a second ``instrument()``, or an ``instrument()`` with no OpenTelemetry SDK
    set up (``opentelemetry-instrument`` without ``opentelemetry-distro``).
    """


def _warn_without_sdk(options: InstrumentationOptions) -> None:
    """Warn once per process when execution spans can reach no SDK provider but the fallback."""
    global _warned_without_sdk  # noqa: PLW0603 - once per process
    if _warned_without_sdk or options.tracer_provider is not None:
        return
    if config._state["configured"] is not None:  # datafusion_otel.configure() was called
        return
    if isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        return
    _warned_without_sdk = True
    warnings.warn(_NO_SDK_MESSAGE, DataFusionInstrumentationWarning, stacklevel=3)


def _attach_diagnostics(options: InstrumentationOptions) -> None:
    """Give the instrumentor's own provider the package's diagnostics processor; never raises.

    Rows of the execution and operator spans it creates then reach the sink of the run they
    belong to even when that run's span comes from another provider (the processor of each
    provider delivers the rows of its own spans, so each row is delivered once), and the sink
    given to an earlier `datafusion_otel.configure` of another provider too. A provider
    that is not an SDK ``TracerProvider`` cannot carry it: warned once, its spans give no rows.
    """
    provider = options.tracer_provider
    if provider is None:
        return
    if isinstance(provider, SdkTracerProvider):
        try:
            processor = config.processor_for(provider)
            configured = config._state["configured"]
            main = config._processors.get(configured) if configured is not None else None
            if main is not None and main is not processor and processor.sink is None:
                processor.replace_sink(main.sink)  # the configure() sink gets every row
        except Exception:
            _LOG.exception("could not attach the diagnostics processor to tracer_provider")
        return
    warnings.warn(
        "datafusion-otel: the tracer_provider given to DataFusionInstrumentor is not an "
        f"OpenTelemetry SDK TracerProvider ({type(provider).__name__}): its execution spans "
        "give no diagnostics rows (no run rows, plan artifacts or operator metrics)",
        DataFusionInstrumentationWarning,
        stacklevel=3,
    )


class DataFusionInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor for Apache DataFusion (``datafusion`` Python bindings).

    A singleton, like every ``BaseInstrumentor``: ``DataFusionInstrumentor()`` always returns
    the same object.
    """

    _lock = threading.Lock()
    _tracing: Tracing | None = None
    _originals: dict[tuple[type, str], object]

    def instrumentation_dependencies(self) -> Collection[str]:
        """Return the instrumented library's requirement (``datafusion >= 55, < 56``)."""
        return _instruments

    @property
    def options(self) -> InstrumentationOptions | None:
        """The options in force, or None when not instrumented."""
        return self._tracing.options if self._tracing is not None else None

    def instrument(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_plan_artifacts: bool | None = None,
        sql_text: SqlTextPolicy | None = None,
        auto_run: bool | None = None,
        capture_min_duration_ms: float | None = None,
        artifacts: Collection[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Patch DataFusion so that every execution is traced.

        Options not given are read from the environment (see `_options`), then defaulted.

        Args:
            tracer_provider: Provider of execution spans and of their operator spans; default:
                the provider that creates runs (`datafusion_otel.config.resolve_provider`),
                resolved per execution. An SDK provider given here gets the package's
                diagnostics processor now, so that the rows of its spans reach their run's
                sink.
            meter_provider: Accepted for the ``BaseInstrumentor`` contract; unused for now.
            capture_plan_artifacts: Attach plan artifacts and operator metrics to each
                execution span (default False: span-only mode).
            sql_text: ``"sanitized"`` (default), ``"raw"`` or ``"off"`` for ``db.query.text``.
            auto_run: An execution outside any run or span becomes its own run (default True).
            capture_min_duration_ms: With capture on, capture only executions that took at
                least this long (default: every execution); the others are counted.
            artifacts: With capture on, the artifacts to capture (default
                `DEFAULT_ARTIFACTS`; `ALL_ARTIFACTS` or any subset of it).
            **kwargs: Passed to ``BaseInstrumentor.instrument`` (``skip_dep_check``...).

        Raises:
            ValueError: If an option has an invalid value (nothing is patched then).
        """
        if self.is_instrumented_by_opentelemetry:
            warnings.warn(
                "DataFusionInstrumentor is already instrumented; instrument() ignored "
                "(call uninstrument() first to change options)",
                DataFusionInstrumentationWarning,
                stacklevel=2,
            )
            return
        options = resolve_options(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            capture_plan_artifacts=capture_plan_artifacts,
            sql_text=sql_text,
            auto_run=auto_run,
            capture_min_duration_ms=capture_min_duration_ms,
            artifacts=artifacts,
        )
        super().instrument(options=options, **kwargs)
        if self.is_instrumented_by_opentelemetry:
            _warn_without_sdk(options)
            _attach_diagnostics(options)

    def _instrument(self, **kwargs: Any) -> None:
        options = kwargs.get("options")
        if not isinstance(options, InstrumentationOptions):
            options = resolve_options()
        with self._lock:
            tracing = Tracing(options)
            originals: dict[tuple[type, str], object] = {}
            patches: list[tuple[type, str]] = [(DataFrame, n) for n in DATAFRAME_METHODS]
            patches += [(SessionContext, n) for n in CONTEXT_METHODS]
            for cls, name in patches:
                original = cls.__dict__.get(name, _MISSING)
                if not callable(original):
                    _LOG.debug("%s.%s not found; not instrumented", cls.__name__, name)
                    continue
                originals[(cls, name)] = original
                setattr(cls, name, make_wrapper(cls, name, original, tracing))
            self._originals = originals
            self._tracing = tracing

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            if self._tracing is not None:
                self._tracing.active = False  # wrappers still referenced elsewhere pass through
            for (cls, name), original in getattr(self, "_originals", {}).items():
                setattr(cls, name, original)
            self._originals = {}
            self._tracing = None
        run_pending()  # the spans of streams collected before this call end now
        clear_query_caches()  # nothing of ours stays in the user's contexts
