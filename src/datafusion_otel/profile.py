"""Per-query operator profiles built from the diagnostics tables (read only, any store version).

A query is one execution of a run: the DATAFUSION_OPERATOR_METRICS_V1 rows sharing ``span_id``,
``plan_hash`` and ``event_time_unix_ms`` (several queries may share a span: the run's, when
run through `datafusion_otel.bridge`), one per operator and partition. An
operator's *own* time is its ``elapsed_compute_ns`` (DataFusion's time in the operator
itself, exclusive of its children) or, for a Parquet scan (which leaves ``elapsed_compute``
near zero), ``time_elapsed_processing`` from ``other_metrics``, summed over partitions.
A query's time is the sum of its operators' own times; an operator's *inclusive* time is
its own time plus its descendants'. A value DataFusion did not record stays None.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = [
    "OperatorProfile",
    "QueryProfile",
    "as_rows",
    "other_metrics",
    "plan_only_profiles",
    "query_profiles",
]

SCAN_TIME_METRIC = "time_elapsed_processing"
"""The own time of a Parquet scan (in ``other_metrics``)."""


def as_rows(table: pa.Table | Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Return the rows of an Arrow table or of row mappings (a sink's rows) as dicts."""
    if table is None:
        return []
    if isinstance(table, pa.Table):
        rows: list[dict[str, Any]] = table.to_pylist()
        return rows
    return [dict(row) for row in table]


def other_metrics(row: Mapping[str, Any]) -> dict[str, int | None]:
    """Return a row's ``other_metrics`` as a dict (Arrow gives a map as key/value pairs)."""
    value = row.get("other_metrics")
    if not value:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {str(k): v for k, v in value}


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if isinstance(v, int)]
    return sum(known) if known else None


def _spread(values: dict[int, int]) -> tuple[int, float, int] | None:
    if not values:
        return None
    ordered = list(values.values())
    return min(ordered), float(statistics.median(ordered)), max(ordered)


@dataclass
class OperatorProfile:
    """One operator of a query, its partitions summed.

    Attributes:
        path: Operator path (``"0"`` root, ``"0.1"`` its second child...).
        name: Operator name, for example ``HashJoinExec``.
        own_ns: Own (exclusive) time, ns; None when not recorded.
        inclusive_ns: Own time plus the descendants' own times; None when none recorded.
        output_rows: Output rows over all partitions; None when not recorded.
        output_bytes: ``output_bytes`` over all partitions; None when not recorded.
        spill_count: Spills; None when not recorded.
        spilled_bytes: Spilled bytes; None when not recorded.
        partition_time_ns: Partition -> own time (partitions that recorded one).
        partition_rows: Partition -> output rows (partitions that recorded them).
        partition_spans: Partition (None: a row without one) -> (start, end) Unix ns, from
            DataFusion's ``start_timestamp`` / ``end_timestamp`` (rows that recorded both).
        metrics: Every other metric, summed over partitions (None when not recorded).
        children: Paths of the child operators present in the rows.
    """

    path: str
    name: str
    own_ns: int | None = None
    inclusive_ns: int | None = None
    output_rows: int | None = None
    output_bytes: int | None = None
    spill_count: int | None = None
    spilled_bytes: int | None = None
    partition_time_ns: dict[int, int] = field(default_factory=dict)
    partition_rows: dict[int, int] = field(default_factory=dict)
    partition_spans: dict[int | None, tuple[int, int]] = field(default_factory=dict)
    metrics: dict[str, int | None] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Depth in the plan (root = 0)."""
        return self.path.count(".")

    def time_spread(self) -> tuple[int, float, int] | None:
        """(min, median, max) own time over partitions, ns; None when none recorded."""
        return _spread(self.partition_time_ns)

    def rows_spread(self) -> tuple[int, float, int] | None:
        """(min, median, max) output rows over partitions; None when none recorded."""
        return _spread(self.partition_rows)


@dataclass
class QueryProfile:
    """One query (execution span) of a run with its operators in plan order.

    Attributes:
        run_id: The run.
        span_id: The execution span (None in rows that carry none).
        plan_hash: The plan hash.
        operators: Path -> operator, in plan (pre-)order.
        plan_artifacts: The query's DATAFUSION_PLAN_ARTIFACTS_V1 row, when found.
    """

    run_id: str | None
    span_id: str | None
    plan_hash: str | None
    operators: dict[str, OperatorProfile] = field(default_factory=dict)
    plan_artifacts: dict[str, Any] | None = None

    @property
    def total_ns(self) -> int | None:
        """The query's time: the sum of its operators' own times (None if none recorded)."""
        return _sum(op.own_ns for op in self.operators.values())


def _path_key(path: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.split("."))
    except ValueError:
        return (1 << 30,)


def _own_time(row: Mapping[str, Any], other: Mapping[str, int | None]) -> int | None:
    scan = other.get(SCAN_TIME_METRIC)
    if isinstance(scan, int):
        return scan
    value = row.get("elapsed_compute_ns")
    return value if isinstance(value, int) else None


def _add(acc: OperatorProfile, row: Mapping[str, Any]) -> None:
    other = other_metrics(row)
    partition = row.get("partition")
    own = _own_time(row, other)
    rows = row.get("output_rows")
    acc.own_ns = _sum([acc.own_ns, own])
    acc.output_rows = _sum([acc.output_rows, rows if isinstance(rows, int) else None])
    for name in ("spill_count", "spilled_bytes"):
        value = row.get(name)
        setattr(acc, name, _sum([getattr(acc, name), value if isinstance(value, int) else None]))
    acc.output_bytes = _sum([acc.output_bytes, other.get("output_bytes")])
    for name in (
        "pruning_row_groups_total",
        "pruning_row_groups_matched",
        "pruning_pages_total",
        "pruning_pages_matched",
    ):
        value = row.get(name)
        if name in row:
            acc.metrics[name] = _sum([acc.metrics.get(name), value])
    for name, value in other.items():
        acc.metrics[name] = _sum([acc.metrics.get(name), value])
    start, end = row.get("start_time_unix_ns"), row.get("end_time_unix_ns")
    if isinstance(start, int) and isinstance(end, int):
        key = partition if isinstance(partition, int) else None
        known = acc.partition_spans.get(key)
        if known is not None:
            start, end = min(start, known[0]), max(end, known[1])
        acc.partition_spans[key] = (start, end)
    if isinstance(partition, int):
        if own is not None:
            acc.partition_time_ns[partition] = acc.partition_time_ns.get(partition, 0) + own
        if isinstance(rows, int):
            acc.partition_rows[partition] = acc.partition_rows.get(partition, 0) + rows


def _plan_for(
    artifacts: Sequence[Mapping[str, Any]], query: QueryProfile, event_time: object
) -> dict[str, Any] | None:
    """The query's plan-artifacts row: the closest match, most specific keys first."""
    wanted: dict[str, object] = {"span_id": query.span_id, "plan_hash": query.plan_hash}
    if event_time is not None:
        wanted["event_time_unix_ms"] = event_time
    tries = (
        ("span_id", "plan_hash", "event_time_unix_ms"),
        ("span_id", "plan_hash"),
        ("plan_hash",),
        ("span_id",),
    )
    for keys in tries:
        if any(wanted.get(k) is None for k in keys):
            continue
        for row in artifacts:
            if all(row.get(k) == wanted[k] for k in keys):
                return dict(row)
    return None


def query_profiles(
    operator_metrics: pa.Table | Iterable[Mapping[str, Any]],
    plan_artifacts: pa.Table | Iterable[Mapping[str, Any]] | None = None,
) -> list[QueryProfile]:
    """Group operator-metrics rows into one profile per query, in the order first seen.

    Args:
        operator_metrics: DATAFUSION_OPERATOR_METRICS_V1 rows (an Arrow table or mappings).
        plan_artifacts: DATAFUSION_PLAN_ARTIFACTS_V1 rows, matched to a query by ``span_id``
            then ``plan_hash`` (optional).

    Returns:
        The queries, each with its operators in plan order and inclusive times computed.
    """
    artifacts = as_rows(plan_artifacts)
    queries: dict[tuple[object, ...], QueryProfile] = {}
    for row in as_rows(operator_metrics):
        span_id, plan_hash = row.get("span_id"), row.get("plan_hash")
        # one execution's rows share their event time; several queries may share a span
        key = (row.get("run_id"), span_id, plan_hash, row.get("event_time_unix_ms"))
        query = queries.get(key)
        if query is None:
            query = queries[key] = QueryProfile(row.get("run_id"), span_id, plan_hash)
        path = str(row.get("operator_path"))
        op = query.operators.get(path)
        if op is None:
            op = query.operators[path] = OperatorProfile(path, str(row.get("operator_name")))
        _add(op, row)
    for (_run, _span, _plan, event_time), query in queries.items():
        query.operators = dict(sorted(query.operators.items(), key=lambda kv: _path_key(kv[0])))
        for path in query.operators:
            if "." in path:
                parent = query.operators.get(path.rsplit(".", 1)[0])
                if parent is not None:
                    parent.children.append(path)
        for path, op in query.operators.items():
            prefix = path + "."
            op.inclusive_ns = _sum(
                o.own_ns for p, o in query.operators.items() if p == path or p.startswith(prefix)
            )
        query.plan_artifacts = _plan_for(artifacts, query, event_time)
    return list(queries.values())


_ROW_KEYS = ("run_id", "span_id", "plan_hash", "event_time_unix_ms")


def plan_only_profiles(
    queries: Sequence[QueryProfile],
    plan_artifacts: pa.Table | Iterable[Mapping[str, Any]] | None,
) -> list[QueryProfile]:
    """Return a profile without operators for each plan-artifacts row no query matched.

    A query that failed while executing (or whose metrics were not captured) leaves a
    DATAFUSION_PLAN_ARTIFACTS_V1 row and no operator-metrics rows; it still has its SQL and
    plans. Each such row gives a `QueryProfile` with no operators and the row as its
    ``plan_artifacts``.

    Args:
        queries: The profiles `query_profiles` built (their matched rows are skipped).
        plan_artifacts: DATAFUSION_PLAN_ARTIFACTS_V1 rows.

    Returns:
        The unmatched rows' profiles, in row order.
    """
    used = {
        tuple(q.plan_artifacts.get(k) for k in _ROW_KEYS)
        for q in queries
        if q.plan_artifacts is not None
    }
    extra: list[QueryProfile] = []
    for row in as_rows(plan_artifacts):
        if tuple(row.get(k) for k in _ROW_KEYS) in used:
            continue
        extra.append(QueryProfile(row.get("run_id"), row.get("span_id"), row.get("plan_hash"),
                                  plan_artifacts=dict(row)))  # fmt: skip
    return extra
