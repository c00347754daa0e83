"""Run roll-ups: count, error rate and exact duration percentiles per label and time bucket.

Computed with DataFusion SQL over a ``runs`` table (DATAFUSION_RUNS_V1). Percentiles are
EXACT and match ``numpy.percentile(..., method="linear")`` to float precision: each is
interpolated from the two ranked durations around rank ``(n - 1) * p`` with window functions.
(DataFusion's ``percentile_cont`` rounds the interpolation fraction to 6 digits and
``approx_percentile_cont`` is a t-digest estimate, so neither is used.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa
from datafusion import SessionContext

__all__ = ["PERCENTILES", "summarize_runs"]

PERCENTILES: tuple[tuple[str, float], ...] = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))
"""Percentile columns of the roll-up tables: (column name, fraction)."""


def _percentile_sql(column: str, fraction: float) -> str:
    rank = f"(n - 1) * {fraction!r}"
    low = f"max(CASE WHEN i = floor({rank}) THEN v END)"
    high = f"max(CASE WHEN i = ceil({rank}) THEN v END)"
    weight = f"max({rank} - floor({rank}))"
    return f"{low} + {weight} * ({high} - {low}) AS {column}"


def summarize_runs(
    ctx: SessionContext,
    *,
    table: str = "runs",
    bucket: dt.timedelta | None = None,
    labels: Sequence[str] | None = None,
) -> pa.Table:
    """Return the roll-up table of the finished runs in ``table``.

    Args:
        ctx: Session where ``table`` is registered (for example ``RunStore(...).ctx``).
        table: Name of a table with the DATAFUSION_RUNS_V1 columns.
        bucket: Time bucket width; None gives one row per label over all time. Buckets are
            aligned on the Unix epoch and keyed by the runs' start time.
        labels: Only these labels (default: all).

    Returns:
        Columns ``label``, ``bucket_start_unix_ms`` (only with ``bucket``), ``count``,
        ``failures``, ``error_rate`` (failed / count), ``p50_ms``, ``p95_ms``, ``p99_ms``
        (exact, over runs with a duration; null when none has one); sorted by label and
        bucket.

    Raises:
        ValueError: If ``bucket`` is not positive or a whole number of milliseconds is
            not reached.
    """
    keys = ["label"]
    bucket_expr = ""
    if bucket is not None:
        bucket_ms = int(bucket.total_seconds() * 1000)
        if bucket_ms <= 0:
            raise ValueError(f"bucket must be at least 1 ms, got {bucket!r}")
        bucket_expr = f", (start_time_unix_ms / {bucket_ms}) * {bucket_ms} AS bucket_start_unix_ms"
        keys.append("bucket_start_unix_ms")
    where = ""
    if labels is not None:
        quoted = ", ".join("'" + label.replace("'", "''") + "'" for label in labels)
        where = f"WHERE label IN ({quoted})" if quoted else "WHERE false"
    group = ", ".join(keys)
    percentiles = ",\n  ".join(_percentile_sql(name, p) for name, p in PERCENTILES)
    query = f"""
WITH base AS (
  SELECT label, status, duration_ms{bucket_expr} FROM {table} {where}
),
counts AS (
  SELECT {group}, count(*) AS count,
         sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failures
  FROM base GROUP BY {group}
),
ranked AS (
  SELECT {group}, CAST(duration_ms AS DOUBLE) AS v,
         row_number() OVER (PARTITION BY {group} ORDER BY duration_ms) - 1 AS i,
         count(*) OVER (PARTITION BY {group}) AS n
  FROM base WHERE duration_ms IS NOT NULL
),
pct AS (
  SELECT {group},
  {percentiles}
  FROM ranked GROUP BY {group}
)
SELECT {", ".join("c." + k for k in keys)}, c.count, c.failures,
       CAST(c.failures AS DOUBLE) / CAST(c.count AS DOUBLE) AS error_rate,
       {", ".join("pct." + name for name, _ in PERCENTILES)}
FROM counts c LEFT JOIN pct ON {" AND ".join(f"c.{k} = pct.{k}" for k in keys)}
ORDER BY {", ".join("c." + k for k in keys)}
"""
    return ctx.sql(query).to_arrow_table()
