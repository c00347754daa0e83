"""Real per-operator metrics rows of an executed DataFrame (DATAFUSION_OPERATOR_METRICS_V1 shape).

The lead's bridge produces these rows in the package; tests of the store, CLI and metrics
build them here from a real executed plan so they do not depend on the bridge.
"""

from __future__ import annotations

import time
from typing import Any

from datafusion import DataFrame

_STANDARD = {"output_rows", "elapsed_compute", "spill_count", "spilled_bytes"}


def operator_metric_rows(df: DataFrame, *, plan_hash: str = "test-plan") -> list[dict[str, Any]]:
    """Walk the executed plan of ``df``; one row per operator (all partitions summed)."""
    now_ms = time.time_ns() // 1_000_000
    rows: list[dict[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        _text, metrics = node.collect_metrics()[0]
        other: dict[str, int] = {}
        for metric in metrics.metrics():
            if metric.name not in _STANDARD and isinstance(metric.value, int):
                other[metric.name] = other.get(metric.name, 0) + metric.value
        rows.append(
            {
                "event_time_unix_ms": now_ms,
                "span_id": None,
                "plan_hash": plan_hash,
                "operator_path": path,
                "operator_name": node.display().split(":")[0].strip(),
                "partition": None,
                "output_rows": metrics.output_rows,
                "elapsed_compute_ns": metrics.elapsed_compute,
                "spill_count": metrics.spill_count,
                "spilled_bytes": metrics.spilled_bytes,
                "other_metrics": other,
            }
        )
        for index, child in enumerate(node.children()):
            walk(child, f"{path}.{index}")

    walk(df.execution_plan(), "0")
    return rows
