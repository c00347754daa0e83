"""The ``plan_changed_and_slower`` finding: computed from a run store's history.

Among the executions in a `datafusion_otel.store.RunStore` of the same query (same literal-free
``plan_hash``), ordered by event time, consecutive executions with the same ``plan_shape_hash``
form a *segment*. For each query of the run being examined, the segment holding its execution is
compared with the segment just before it (another shape): when both have at least
``Thresholds.plan_change_min_runs`` executions and the median time of the new shape is >=
``Thresholds.plan_change_ratio`` x the previous shape's, the query gets one finding.

An execution's time is the query's time of `datafusion_otel.findings`: the sum of its
operators' own times (``elapsed_compute``, ``time_elapsed_processing`` for Parquet scans) over
partitions, from the stored operator metrics. It is used rather than the span's duration
because the plan-artifacts and operator-metrics rows, which carry the hashes, do not record the
span's duration, and it excludes Python-side time. Executions without a shape hash (older
stores, no physical plan captured), without recorded operator times, or not executed are left
out; a store without the ``plan_shape_hash`` column gives no finding.

It needs history, so it is computed only from a store (`datafusion_otel.findings.run_findings`
and the ``findings`` / ``show`` / ``report`` commands); the findings recorded when a run ends
(`DiagnosticsSpanProcessor`) see one run and do not include it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from datafusion_otel.profile import QueryProfile, query_profiles

if TYPE_CHECKING:
    from datafusion_otel.findings import Thresholds

__all__ = ["KIND", "plan_change_findings"]

KIND = "plan_changed_and_slower"
TIME_SOURCE = "sum of operator own times"

_Execution = tuple[int, str, str, str, int]  # event time, run id, span id, shape, time (ns)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _executions(store: Any, hashes: list[str]) -> dict[str, list[_Execution]]:
    """Every execution of the ``hashes`` with a shape and a time, per plan hash, in order."""
    in_list = ", ".join(_quote(h) for h in hashes)
    artifacts = store.sql(
        "SELECT run_id, span_id, plan_hash, plan_shape_hash, event_time_unix_ms "
        f"FROM plan_artifacts WHERE plan_hash IN ({in_list}) AND plan_shape_hash IS NOT NULL "
        "AND plan_executed"
    ).to_pylist()
    shapes = {
        (r["run_id"], r["span_id"], r["plan_hash"], r["event_time_unix_ms"]): r["plan_shape_hash"]
        for r in artifacts
    }
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in store.sql(
        f"SELECT * FROM operator_metrics WHERE plan_hash IN ({in_list})"
    ).to_pylist():
        row["other_metrics"] = dict(row.get("other_metrics") or [])
        key = (row["run_id"], row["span_id"], row["plan_hash"], row["event_time_unix_ms"])
        if key in shapes:
            grouped[key].append(row)
    out: dict[str, list[_Execution]] = defaultdict(list)
    for key, rows in grouped.items():
        total = query_profiles(rows)[0].total_ns
        run_id, span_id, plan_hash, event_time = key
        if total is not None and total > 0:
            out[plan_hash].append((event_time, run_id, span_id or "", shapes[key], total))
    for executions in out.values():
        executions.sort()
    return out


def _segments(executions: list[_Execution]) -> list[list[_Execution]]:
    segments: list[list[_Execution]] = []
    for execution in executions:
        if segments and segments[-1][-1][3] == execution[3]:
            segments[-1].append(execution)
        else:
            segments.append([execution])
    return segments


def _one(
    run_id: str,
    plan_hash: str,
    previous: list[_Execution],
    current: list[_Execution],
    t: Thresholds,
) -> dict[str, Any] | None:
    if len(previous) < t.plan_change_min_runs or len(current) < t.plan_change_min_runs:
        return None
    before = statistics.median(e[4] for e in previous)
    after = statistics.median(e[4] for e in current)
    ratio = after / before
    if ratio < t.plan_change_ratio:
        return None
    from datafusion_otel.findings import _finding  # findings imports this module lazily

    span_id = next(e[2] for e in current if e[1] == run_id) or None
    evidence = {
        "previous_plan_shape_hash": previous[0][3],
        "plan_shape_hash": current[0][3],
        "previous_median_ns": before,
        "median_ns": after,
        "previous_executions": len(previous),
        "executions": len(current),
        "previous_runs": len({e[1] for e in previous}),
        "runs": len({e[1] for e in current}),
        "first_event_time_unix_ms": current[0][0],
        "previous_last_event_time_unix_ms": previous[-1][0],
        "time": TIME_SOURCE,
    }
    message = (
        f"the plan shape changed ({previous[0][3][:12]} -> {current[0][3][:12]}) and the new "
        f"shape's median time {after / 1e6:.1f} ms over {len(current)} executions is "
        f"{ratio:.2f} x the previous shape's {before / 1e6:.1f} ms over {len(previous)}"
    )
    query = QueryProfile(run_id, span_id, plan_hash)
    return _finding(query, None, KIND, "warning", message, ratio, t.plan_change_ratio, evidence)


def plan_change_findings(store: Any, run_id: str, thresholds: Thresholds) -> list[dict[str, Any]]:
    """Return the ``plan_changed_and_slower`` findings of one run of ``store``.

    Args:
        store: A `datafusion_otel.store.RunStore`.
        run_id: The run's full id.
        thresholds: ``plan_change_ratio`` and ``plan_change_min_runs`` are read.

    Returns:
        DATAFUSION_FINDINGS_V1 rows, at most one per query (plan hash) of the run; none for a
        store without ``plan_shape_hash`` (written by an older version).
    """
    from datafusion_otel.store import StoreError  # the store imports DataFusion: lazily

    try:
        mine = store.sql(
            "SELECT DISTINCT plan_hash FROM plan_artifacts WHERE run_id = "
            f"{_quote(run_id)} AND plan_hash IS NOT NULL AND plan_shape_hash IS NOT NULL"
        ).to_pylist()
        hashes = sorted(str(r["plan_hash"]) for r in mine)
        history = _executions(store, hashes) if hashes else {}
    except StoreError:  # an older store: no plan_shape_hash column
        return []
    found = []
    for plan_hash in hashes:
        segments = _segments(history.get(plan_hash, []))
        for index, segment in enumerate(segments):
            if index == 0 or all(e[1] != run_id for e in segment):
                continue
            finding = _one(run_id, plan_hash, segments[index - 1], segment, thresholds)
            if finding is not None:
                found.append(finding)
    return found
