"""Findings: why a run was slow, computed from its diagnostics tables alone.

Pure functions over DATAFUSION_OPERATOR_METRICS_V1 and DATAFUSION_PLAN_ARTIFACTS_V1 rows (a
`RunStore`'s Arrow tables, or a `DiagnosticsCollector`'s rows) that return rows of
``datafusion_findings_v1`` (`datafusion_otel.schema_registry.DATAFUSION_FINDINGS_V1`).
Times are as in `datafusion_otel.profile`: an operator's own time is ``elapsed_compute_ns``
(``time_elapsed_processing`` for Parquet scans) summed over partitions; a query's time is the
sum of its operators' own times. Kinds (thresholds in `Thresholds`, all overridable):

* ``slow_operator``: own time >= 10 / 40 / 90 % of the query's (info / warning / critical),
  only for queries whose time is >= ``slow_min_query_ns`` (shares of a trivial query are noise).
* ``partition_skew``: max partition own time >= 4 x the median and >= 10 ms; or max
  partition output rows >= 4 x the median and >= 10,000 (the partition is named). A median
  of 0 (most partitions idle) defines no ratio and gives no finding.
* ``spill``: a spill count or spilled bytes > 0 (the memory limit is not readable from
  DataFusion 55's Python API: the evidence says so with a null).
* ``row_explosion``: a join whose output rows are >= 10 x its larger input's.
* ``filter_drops_most``: a ``FilterExec`` removing >= 99 % of >= 1,000 input rows whose
  predicate the scan below did not receive (absent from its ``predicate=``; read from the
  stored physical plan text): a pushdown candidate.
* ``poor_pruning``: a Parquet scan whose predicate kept >= 90 % of >= 2 row groups (or
  pages) it tested (``pruning_*`` columns).

Every finding cites the values it was computed from (``evidence``); a value DataFusion did not
record, or a column missing from an older store, never produces a finding.

``plan_changed_and_slower`` needs history: among the store's executions of the same query
(``plan_hash``) the plan shape (``plan_shape_hash``) changed and the new shape's median time is
>= 1.2 x the previous shape's, each shape with >= 3 executions
(`datafusion_otel._processing.plan_change`). Only `run_findings` (a store) computes it; `find`
(one run's rows) and the findings recorded when a run ends do not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datafusion_otel.profile import OperatorProfile, QueryProfile, as_rows, query_profiles
from datafusion_otel.schema_registry import DATAFUSION_FINDINGS_V1, table_for

__all__ = [
    "KINDS",
    "SEVERITIES",
    "Thresholds",
    "find",
    "findings_table",
    "plan_change_findings",
    "plan_lines",
    "run_findings",
]

KINDS = (
    "slow_operator",
    "partition_skew",
    "spill",
    "row_explosion",
    "filter_drops_most",
    "poor_pruning",
    "plan_changed_and_slower",
)
"""Every finding kind computed (the last only from a store's history, by `run_findings`)."""
SEVERITIES = ("critical", "warning", "info")
"""Severities, most severe first."""

_MS = 1_000_000


@dataclass(frozen=True)
class Thresholds:
    """When a finding is raised (override any field: ``Thresholds(skew_ratio=8.0)``).

    Attributes:
        slow_info: Share of the query's time making an operator ``slow_operator`` (info).
        slow_warning: Share making it a warning.
        slow_critical: Share making it critical.
        slow_min_query_ns: Queries faster than this (sum of own times) get no
            ``slow_operator`` finding.
        skew_ratio: Max partition value / median partition value for ``partition_skew``.
        skew_min_ns: Minimum max-partition own time for a time skew.
        skew_min_rows: Minimum max-partition output rows for a row skew.
        explosion_ratio: Join output rows / larger input's rows for ``row_explosion``.
        filter_drop_fraction: Share of input rows a filter removes for ``filter_drops_most``.
        filter_min_input_rows: Minimum filter input rows for ``filter_drops_most``.
        pruning_kept_fraction: Share of tested row groups / pages kept for ``poor_pruning``.
        pruning_min_total: Minimum row groups / pages tested for ``poor_pruning``.
        plan_change_ratio: New shape's median time / previous shape's for
            ``plan_changed_and_slower``.
        plan_change_min_runs: Minimum executions of each shape for ``plan_changed_and_slower``.
    """

    slow_info: float = 0.10
    slow_warning: float = 0.40
    slow_critical: float = 0.90
    slow_min_query_ns: int = 100 * _MS
    skew_ratio: float = 4.0
    skew_min_ns: int = 10 * _MS
    skew_min_rows: int = 10_000
    explosion_ratio: float = 10.0
    filter_drop_fraction: float = 0.99
    filter_min_input_rows: int = 1_000
    pruning_kept_fraction: float = 0.90
    pruning_min_total: int = 2
    plan_change_ratio: float = 1.20
    plan_change_min_runs: int = 3


def _finding(
    query: QueryProfile,
    op: OperatorProfile | None,
    kind: str,
    severity: str,
    message: str,
    measured: float | None,
    threshold: float | None,
    evidence: Mapping[str, object],
    partition: int | None = None,
) -> dict[str, Any]:
    return {
        "run_id": query.run_id,
        "span_id": query.span_id,
        "plan_hash": query.plan_hash,
        "operator_path": None if op is None else op.path,
        "operator_name": None if op is None else op.name,
        "partition": partition,
        "kind": kind,
        "severity": severity,
        "message": message,
        "measured_value": measured,
        "threshold": threshold,
        "evidence": json.dumps(dict(evidence), sort_keys=True),
    }


def _slow(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    total = query.total_ns
    if total is None or total <= 0 or total < t.slow_min_query_ns:
        return []
    out = []
    levels = (
        ("critical", t.slow_critical),
        ("warning", t.slow_warning),
        ("info", t.slow_info),
    )
    for op in query.operators.values():
        if op.own_ns is None:
            continue
        share = op.own_ns / total
        for severity, level in levels:
            if share >= level:
                message = (
                    f"{op.name} ({op.path}) took {op.own_ns / _MS:.1f} ms of the query's "
                    f"{total / _MS:.1f} ms ({share:.0%} >= {level:.0%})"
                )
                evidence = {"own_time_ns": op.own_ns, "query_time_ns": total}
                out.append(
                    _finding(query, op, "slow_operator", severity, message, share, level, evidence)
                )
                break
    return out


def _skew_one(
    query: QueryProfile,
    op: OperatorProfile,
    values: dict[int, int],
    what: str,
    minimum: float,
    t: Thresholds,
) -> dict[str, Any] | None:
    if len(values) < 2:
        return None
    spread = sorted(values.values())
    median = float(
        spread[len(spread) // 2]
        if len(spread) % 2
        else (spread[len(spread) // 2 - 1] + spread[len(spread) // 2]) / 2
    )
    partition, top = max(values.items(), key=lambda kv: (kv[1], -kv[0]))
    if median <= 0 or top < minimum or top < t.skew_ratio * median:
        return None  # a median of 0 (idle partitions) gives no ratio: no finding
    ratio = top / median
    if what == "time":
        top_text, median_text = f"{top / _MS:,.1f} ms of own time", f"{median / _MS:,.1f} ms"
    else:
        top_text, median_text = f"{top:,} output rows", f"{median:,.0f}"
    message = (
        f"{op.name} ({op.path}): partition {partition} has {top_text}, "
        f"{ratio:.1f}x the median {median_text} over {len(values)} partitions"
    )
    key = "own_time_ns" if what == "time" else "output_rows"
    evidence = {
        f"partition_{key}": {str(p): v for p, v in sorted(values.items())},
        "median": median,
        "max": top,
        "max_partition": partition,
        "what": what,
    }
    return _finding(
        query, op, "partition_skew", "warning", message, ratio, t.skew_ratio, evidence, partition
    )


def _skew(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for op in query.operators.values():
        for found in (
            _skew_one(query, op, op.partition_time_ns, "time", t.skew_min_ns, t),
            _skew_one(query, op, op.partition_rows, "rows", t.skew_min_rows, t),
        ):
            if found is not None:
                out.append(found)
    return out


def _spill(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for op in query.operators.values():
        count, size = op.spill_count, op.spilled_bytes
        if not ((count or 0) > 0 or (size or 0) > 0):
            continue
        message = (
            f"{op.name} ({op.path}) spilled to disk: {count if count is not None else '?'} "
            f"spill(s), {size if size is not None else '?'} bytes"
        )
        evidence = {
            "spill_count": count,
            "spilled_bytes": size,
            "spilled_rows": op.metrics.get("spilled_rows"),
            "memory_limit_bytes": None,
        }
        measured = float(size if size is not None else count or 0)
        out.append(_finding(query, op, "spill", "warning", message, measured, 0.0, evidence))
    return out


def _explosion(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    out = []
    for op in query.operators.values():
        if "Join" not in op.name or op.output_rows is None or not op.children:
            continue
        inputs = [query.operators[c].output_rows for c in op.children]
        if any(rows is None for rows in inputs):
            continue
        larger = max(rows for rows in inputs if rows is not None)
        if larger <= 0 or op.output_rows < t.explosion_ratio * larger:
            continue
        ratio = op.output_rows / larger
        message = (
            f"{op.name} ({op.path}) produced {op.output_rows:,} rows from inputs of "
            f"{', '.join(f'{r:,}' for r in inputs if r is not None)} rows ({ratio:.1f}x the larger)"
        )
        evidence = {
            "output_rows": op.output_rows,
            "input_rows": dict(zip(op.children, inputs, strict=True)),
        }
        out.append(
            _finding(
                query, op, "row_explosion", "warning", message, ratio, t.explosion_ratio, evidence
            )
        )
    return out


_INDEX = re.compile(r"@\d+")
_SCAN_PREDICATE = re.compile(
    r"(?:^|[ ,])predicate=(.*?)(?:, pruning_predicate=|, required_guarantees=|$)"
)


def plan_lines(physical_plan: str) -> dict[str, str]:
    """Return operator path -> display line of an indented physical plan text."""
    lines: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    counts: dict[str, int] = {}
    for raw in physical_plan.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:
            path = "0" if not lines else f"{len(lines)}!"  # a second root: not a plan tree
        else:
            parent = stack[-1][1]
            path = f"{parent}.{counts.get(parent, 0)}"
            counts[parent] = counts.get(parent, 0) + 1
        lines[path] = raw.strip()
        stack.append((indent, path))
    return lines


def _normal(predicate: str) -> str:
    return "".join(_INDEX.sub("", predicate).split())


def _filter_predicate(line: str) -> str | None:
    if not line.startswith("FilterExec:"):
        return None
    text = line.split(":", 1)[1]
    return text.split(", projection=", 1)[0].strip() or None


def _scan_below(lines: dict[str, str], path: str) -> str | None:
    current = f"{path}.0"
    while current in lines:
        if f"{current}.1" in lines:
            return None  # two inputs below: no single scan
        if f"{current}.0" not in lines:
            return lines[current]
        current = f"{current}.0"
    return None


def _physical_lines(query: QueryProfile) -> dict[str, str]:
    """Operator path -> display line of the query's stored physical plan ({} when none)."""
    plan = (query.plan_artifacts or {}).get("physical_plan")
    if not isinstance(plan, str) or not plan.strip():
        return {}
    return plan_lines(plan)


def _filters(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    lines = _physical_lines(query)
    if not lines:
        return []
    out = []
    for op in query.operators.values():
        line = lines.get(op.path, "")
        predicate = _filter_predicate(line)
        child = query.operators.get(f"{op.path}.0")
        if predicate is None or child is None or child.output_rows is None:
            continue
        if op.output_rows is None or child.output_rows < max(t.filter_min_input_rows, 1):
            continue
        dropped = 1 - op.output_rows / child.output_rows
        scan = _scan_below(lines, op.path)
        if dropped < t.filter_drop_fraction or scan is None:
            continue
        match = _SCAN_PREDICATE.search(scan)
        received = match[1] if match else None
        if received is not None and _normal(predicate) in _normal(received):
            continue
        message = (
            f"{op.name} ({op.path}) removed {dropped:.2%} of {child.output_rows:,} rows, but "
            f"the scan below did not receive its predicate: a pushdown candidate"
        )
        evidence = {
            "input_rows": child.output_rows,
            "output_rows": op.output_rows,
            "filter_predicate": predicate,
            "scan_predicate": received,
            "scan": scan.split(":", 1)[0],
        }
        out.append(
            _finding(
                query,
                op,
                "filter_drops_most",
                "info",
                message,
                dropped,
                t.filter_drop_fraction,
                evidence,
            )
        )
    return out


def _pruning(query: QueryProfile, t: Thresholds) -> list[dict[str, Any]]:
    # DataFusion 55 reports "N total -> N matched" for scans WITHOUT a predicate too: only a
    # scan whose plan line shows a predicate can have pruned poorly (no plan text: no finding)
    lines = _physical_lines(query)
    if not lines:
        return []
    out = []
    for op in query.operators.values():
        if not _SCAN_PREDICATE.search(lines.get(op.path, "")):
            continue
        for unit in ("row_groups", "pages"):
            total = op.metrics.get(f"pruning_{unit}_total")
            matched = op.metrics.get(f"pruning_{unit}_matched")
            if total is None or matched is None or total < max(t.pruning_min_total, 1):
                continue
            kept = matched / total
            if kept < t.pruning_kept_fraction:
                continue
            label = unit.replace("_", " ")
            message = (
                f"{op.name} ({op.path}): its predicate kept {matched:,} of {total:,} {label} "
                f"({kept:.0%}): the data is not laid out for this predicate"
            )
            evidence = {f"pruning_{unit}_total": total, f"pruning_{unit}_matched": matched}
            out.append(
                _finding(
                    query,
                    op,
                    "poor_pruning",
                    "info",
                    message,
                    kept,
                    t.pruning_kept_fraction,
                    evidence,
                )
            )
    return out


_RULES = (_slow, _skew, _spill, _explosion, _filters, _pruning)


def find(
    operator_metrics: pa.Table | Iterable[Mapping[str, Any]],
    plan_artifacts: pa.Table | Iterable[Mapping[str, Any]] | None = None,
    *,
    thresholds: Thresholds | None = None,
) -> list[dict[str, Any]]:
    """Return the findings of the queries in ``operator_metrics``.

    Args:
        operator_metrics: DATAFUSION_OPERATOR_METRICS_V1 rows (Arrow table or mappings), of
            one run or several.
        plan_artifacts: DATAFUSION_PLAN_ARTIFACTS_V1 rows; needed for ``filter_drops_most``
            (the physical plan text), optional otherwise.
        thresholds: Thresholds (default `Thresholds()`).

    Returns:
        DATAFUSION_FINDINGS_V1 rows, most severe first, then in plan order.
    """
    limits = thresholds or Thresholds()
    found: list[dict[str, Any]] = []
    for query in query_profiles(operator_metrics, plan_artifacts):
        for rule in _RULES:
            found.extend(rule(query, limits))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: rank.get(str(f["severity"]), len(rank)))
    return found


def run_findings(
    store: Any, run_id: str, *, thresholds: Thresholds | None = None
) -> list[dict[str, Any]]:
    """Return the findings of one run of a `datafusion_otel.store.RunStore`.

    The run's own findings (`find`) plus ``plan_changed_and_slower``, computed from the store's
    history of the run's queries (`plan_change_findings`).

    Args:
        store: The run store.
        run_id: Run id or a unique prefix.
        thresholds: Thresholds (default `Thresholds()`).

    Raises:
        StoreError: If the run is not in the store.
    """
    limits = thresholds or Thresholds()
    details = store.run(run_id)
    found = find(details.operator_metrics, details.plan_artifacts, thresholds=limits)
    found.extend(plan_change_findings(store, str(details.run["run_id"]), limits))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: rank.get(str(f["severity"]), len(rank)))
    return found


def plan_change_findings(
    store: Any, run_id: str, thresholds: Thresholds | None = None
) -> list[dict[str, Any]]:
    """Return the ``plan_changed_and_slower`` findings of one run (from the store's history).

    Args:
        store: The run store.
        run_id: Run id or a unique prefix.
        thresholds: Thresholds (default `Thresholds()`).

    Raises:
        StoreError: If the run is not in the store.
    """
    from datafusion_otel._processing.plan_change import plan_change_findings as compute

    return compute(store, store.resolve_run_id(run_id), thresholds or Thresholds())


def findings_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a DATAFUSION_FINDINGS_V1 table from `find` rows."""
    table = table_for(DATAFUSION_FINDINGS_V1.metadata[b"table_name"].decode(), as_rows(rows))
    return table
