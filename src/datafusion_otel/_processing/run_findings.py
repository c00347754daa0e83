"""Findings recorded as rows when a run ends (used by `DiagnosticsSpanProcessor`).

While a run is live, the processor hands each span's operator-metrics and plan-artifacts rows
to a `FindingsRecorder`, which keeps a compact copy of the fields `datafusion_otel.findings`
reads (never the sinks' row objects). When the run's root span ends, `FindingsRecorder.finish`
computes the run's findings from those rows alone (`datafusion_otel.findings.find`) and the
processor delivers them as DATAFUSION_FINDINGS_V1 rows to the run's sinks.

Memory is bounded: at most `MAX_ROWS_PER_RUN` operator rows are held per run (a run with more
gets no recorded findings, counted in `FindingsRecorder.skipped_runs`; its findings can still be
computed from the store), and at most `MAX_PENDING_RUNS` runs are held at once (the oldest is
dropped, counted the same way). Rows of a trace whose root is not a run (the application's own
span around instrumented calls) are dropped when that root ends. Spans that end after their
run's root (a stream drained later) are not part of the recorded findings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datafusion_otel import attributes as attr
from datafusion_otel.findings import find

__all__ = ["MAX_PENDING_RUNS", "MAX_ROWS_PER_RUN", "FindingsRecorder"]

MAX_ROWS_PER_RUN = 100_000
"""Operator-metrics rows held per run; a run with more gets no recorded findings."""
MAX_PENDING_RUNS = 256
"""Runs held at once; beyond, the oldest is dropped (no recorded findings for it)."""

_METRIC_FIELDS = (
    "event_time_unix_ms",
    "run_id",
    "span_id",
    "plan_hash",
    "operator_path",
    "operator_name",
    "partition",
    "output_rows",
    "elapsed_compute_ns",
    "spill_count",
    "spilled_bytes",
    "pruning_row_groups_total",
    "pruning_row_groups_matched",
    "pruning_pages_total",
    "pruning_pages_matched",
)
_OTHER_METRICS = ("time_elapsed_processing", "output_bytes", "spilled_rows")
_ARTIFACT_FIELDS = ("event_time_unix_ms", "run_id", "span_id", "plan_hash", "physical_plan")


def _compact_metrics(row: Mapping[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {name: row[name] for name in _METRIC_FIELDS if name in row}
    other = row.get("other_metrics")
    if isinstance(other, Mapping):
        out["other_metrics"] = {k: other[k] for k in _OTHER_METRICS if k in other}
    return out


@dataclass
class _Pending:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    over_cap: bool = False


class FindingsRecorder:
    """Holds the rows of live runs and computes a run's findings when its root ends.

    Thread-safe; `finish` computes outside the lock.

    Args:
        max_rows_per_run: Operator-metrics rows held per run (default `MAX_ROWS_PER_RUN`).
        max_pending_runs: Runs held at once (default `MAX_PENDING_RUNS`).
    """

    def __init__(
        self, max_rows_per_run: int | None = None, max_pending_runs: int | None = None
    ) -> None:
        self._max_rows = MAX_ROWS_PER_RUN if max_rows_per_run is None else max_rows_per_run
        self._max_runs = MAX_PENDING_RUNS if max_pending_runs is None else max_pending_runs
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self.skipped_runs = 0
        """Runs that got no recorded findings (over the row cap, or dropped as the oldest)."""

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self, run_id: str, tables: Sequence[tuple[str, Sequence[Mapping[str, object]]]]
    ) -> None:
        """Keep the operator-metrics and plan-artifacts rows among ``tables`` for ``run_id``."""
        metrics = [rows for table, rows in tables if table == attr.OPERATOR_METRICS_TABLE and rows]
        artifacts = [rows for table, rows in tables if table == attr.PLAN_ARTIFACTS_TABLE and rows]
        if not metrics and not artifacts:
            return
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is None:
                pending = self._pending[run_id] = _Pending()
                while len(self._pending) > self._max_runs:
                    self._pending.popitem(last=False)
                    self.skipped_runs += 1
            if pending.over_cap:
                return
            count = len(pending.metrics) + sum(len(rows) for rows in metrics)
            if count > self._max_rows:
                pending.over_cap = True
                pending.metrics.clear()
                pending.artifacts.clear()
                return
            for rows in metrics:
                pending.metrics.extend(_compact_metrics(row) for row in rows)
            for rows in artifacts:
                pending.artifacts.extend(
                    {k: row[k] for k in _ARTIFACT_FIELDS if k in row} for row in rows
                )

    def discard(self, run_id: str) -> None:
        """Forget the rows of ``run_id`` (its trace's root ended and was not a run)."""
        with self._lock:
            self._pending.pop(run_id, None)

    def finish(self, run_id: str) -> list[dict[str, Any]] | None:
        """Return the findings of ``run_id`` (its root ended) and forget its rows.

        Returns:
            DATAFUSION_FINDINGS_V1 rows (possibly empty), or None when the run's rows went over
            the cap or had no operator metrics.
        """
        with self._lock:
            pending = self._pending.pop(run_id, None)
            if pending is not None and pending.over_cap:
                self.skipped_runs += 1
                return None
        if pending is None or not pending.metrics:
            return None
        return find(pending.metrics, pending.artifacts)
