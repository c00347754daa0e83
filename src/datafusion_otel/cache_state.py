"""What DataFusion exposes about its caches, recorded per run.

DataFusion 55 keeps three runtime caches: the Parquet metadata cache, the list-files cache
and the file-statistics cache. From Python only their CONFIGURATION is reachable
(``datafusion.runtime.*_cache_limit`` and ``list_files_cache_ttl``, read with ``SHOW ALL``).
No hit, miss, eviction or entry counters are exposed, so those DATAFUSION_CACHE_STATE_V1
columns are always NULL here; they are never estimated.

The per-query signals closest to cache behaviour are the scan operators' metrics
(``files_opened``, ``metadata_load_time``, ``bytes_scanned``, pruning counters,
``predicate_cache_records``; see ``attributes.SCAN_CACHE_METRICS``). They are kept with the
run in the operator-metrics rows (``other_metrics``); `scan_cache_metrics` sums them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from datafusion import SessionContext
from opentelemetry.instrumentation.utils import suppress_instrumentation

from datafusion_otel import attributes as attr
from datafusion_otel._spans.payloads import add_payload_event
from datafusion_otel.diagnostics import DiagnosticsSink
from datafusion_otel.runs import DataFusionRun, current_run

__all__ = ["cache_settings", "cache_state_rows", "record_cache_state", "scan_cache_metrics"]

_LOG = logging.getLogger("datafusion_otel.cache_state")


def cache_settings(ctx: SessionContext) -> dict[str, str | None]:
    """Return every ``datafusion.runtime.*`` setting of ``ctx`` (name -> value or None).

    The ``SHOW ALL`` query is the package's own, so the auto-instrumentation does not trace it.
    """
    with suppress_instrumentation():
        table = ctx.sql("SHOW ALL").to_pydict()
    return {
        str(name): (None if value is None else str(value))
        for name, value in zip(table["name"], table["value"], strict=True)
        if str(name).startswith("datafusion.runtime.")
    }


def cache_state_rows(ctx: SessionContext, run_id: str | None) -> list[dict[str, object]]:
    """Return one DATAFUSION_CACHE_STATE_V1 row per DataFusion cache of ``ctx``.

    Args:
        ctx: The session whose cache configuration is read.
        run_id: Run the rows belong to.

    Returns:
        Rows with ``cache_name``, ``event_time_unix_ms``, ``config_limit``, ``config_ttl``
        (null when unset) and ``run_id``; ``entry_count``, ``hit_count``, ``miss_count`` and
        ``eviction_count`` are None because DataFusion 55 does not expose them.
    """
    settings = cache_settings(ctx)
    now_ms = time.time_ns() // 1_000_000
    rows: list[dict[str, object]] = []
    for cache_name, (limit_key, ttl_key) in attr.CACHE_SETTINGS.items():
        rows.append(
            {
                "cache_name": cache_name,
                "event_time_unix_ms": now_ms,
                "entry_count": None,
                "hit_count": None,
                "miss_count": None,
                "eviction_count": None,
                "config_ttl": settings.get(ttl_key) if ttl_key else None,
                "config_limit": settings.get(limit_key),
                "run_id": run_id,
            }
        )
    return rows


def record_cache_state(
    ctx: SessionContext,
    *,
    run: DataFusionRun | None = None,
    sink: DiagnosticsSink | None = None,
) -> list[dict[str, object]]:
    """Record the cache state of ``ctx`` for ``run`` (default: the current run).

    With a running run, the rows ride on a ``datafusion.cache_state`` event of the run's span,
    and the span processor delivers them (table ``datafusion_cache_state_v1``) to the run's
    sinks when the run ends. Without a run, or with an explicit ``sink``, they are given to
    ``sink`` directly. Never raises: a failure is logged and yields no rows.

    Args:
        ctx: The session whose caches are described.
        run: The run to attach the rows to.
        sink: Receives the rows directly instead of through the run's span.

    Returns:
        The rows recorded.
    """
    target = run if run is not None else current_run()
    run_id = target.run_id if target is not None else None
    try:
        rows = cache_state_rows(ctx, run_id)
    except Exception:  # instrumentation must never break the observed program
        _LOG.exception("could not read the cache configuration of %r", ctx)
        return []
    span = target.span if target is not None else None
    if sink is None and span is not None and target is not None and target.status == "running":
        attached = add_payload_event(
            span,
            attr.CACHE_STATE_EVENT,
            _event_attributes(rows),
            table=attr.CACHE_STATE_TABLE,
            rows=rows,
        )
        if attached:
            return rows
        sink = target._sink  # the span could not carry them: hand them to the run's sink
    if sink is not None:
        sink.record_events(attr.CACHE_STATE_TABLE, rows)
    return rows


def _event_attributes(rows: Iterable[Mapping[str, object]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in rows:
        name = str(row["cache_name"])
        if row.get("config_limit") is not None:
            out[f"{attr.CACHE_EVENT_ATTR_PREFIX}{name}.limit"] = str(row["config_limit"])
        if row.get("config_ttl") is not None:
            out[f"{attr.CACHE_EVENT_ATTR_PREFIX}{name}.ttl"] = str(row["config_ttl"])
    return out


def scan_cache_metrics(operator_metrics: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Sum the cache-related scan metrics over operator-metrics rows.

    Args:
        operator_metrics: DATAFUSION_OPERATOR_METRICS_V1 rows (``other_metrics`` a mapping or
            a list of (name, value) pairs).

    Returns:
        Metric name -> total, only for the metrics present with a value.
    """
    totals: dict[str, int] = {}
    for row in operator_metrics:
        other = row.get("other_metrics") or {}
        if isinstance(other, Mapping):
            items: Iterable[tuple[object, object]] = other.items()
        elif isinstance(other, list):
            items = [tuple(pair) for pair in other]
        else:
            continue
        for name, value in items:
            if name in attr.SCAN_CACHE_METRICS and isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
    return totals
