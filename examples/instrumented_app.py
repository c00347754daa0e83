"""An unchanged DataFusion program, traced by ``opentelemetry-instrument``.

    OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
        uv run opentelemetry-instrument python examples/instrumented_app.py

Each execution becomes its own run (``auto_run``); set ``OTEL_EXPORTER_OTLP_ENDPOINT`` and
``OTEL_TRACES_EXPORTER=otlp`` to send the spans to a collector instead of the console.
"""

from __future__ import annotations

from datafusion import SessionContext

ctx = SessionContext()
ctx.from_pydict({"city": ["Oslo", "Lima", "Oslo"], "temp": [3, 19, 5]}, name="weather")
print(ctx.sql("SELECT city, avg(temp) AS t FROM weather GROUP BY city ORDER BY city").to_pylist())
