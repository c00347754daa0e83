"""Which file a `ParquetSink` row goes to: its table, its run's start day, its schema.

A row goes to the ``day=YYYY-MM-DD`` folder of the UTC day its run started, so that
retention (`datafusion_otel.store._prune`) removes a run's rows of every table together.
The run row carries its start; the other rows of a run find it in `RunDays`, which the sink
fills from run rows and ``datafusion_run_started_v1`` artifacts as they are recorded (that
artifact comes first, but only to a sink passed to ``tracked_run(sink=...)``). A row of a run
the sink has not seen start is looked up among the runs live in this process
(`datafusion_otel._spans.routing.live_root`: a sink configured with ``configure(sink=...)`` gets
the run row only when the run ends). A row whose run started in another process (work
attached with ``attached_run``) goes to the day it is written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

import pyarrow as pa

from datafusion_otel._coerce import coerce_rows
from datafusion_otel._spans import routing as _routing
from datafusion_otel.attributes import RUNS_TABLE
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._buffer import Key
from datafusion_otel.store._layout import (
    ARTIFACTS_SCHEMA,
    artifact_prefix,
    day_of,
    new_data_key,
    table_prefix,
)

__all__ = ["RunDays", "rows_to_table", "split_by_day"]

_REMEMBERED = 100_000


class RunDays:
    """Run id -> start day of the runs a sink saw start (the most recent 100,000)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: OrderedDict[str, str] = OrderedDict()

    def note(self, run_id: object, start_ms: object) -> None:
        """Remember that run ``run_id`` started at ``start_ms`` (ignored if not str / int)."""
        if not isinstance(run_id, str) or not isinstance(start_ms, int):
            return
        day = day_of(start_ms)
        with self._lock:
            self._days[run_id] = day
            self._days.move_to_end(run_id)
            while len(self._days) > _REMEMBERED:
                self._days.popitem(last=False)

    def saw(self, table: str, rows: list[dict[str, object]]) -> None:
        """Note the runs of ``rows`` of ``table``: their start if run rows, else `learn`."""
        if table == RUNS_TABLE:
            for row in rows:
                self.note(row.get("run_id"), row.get("start_time_unix_ms"))
            return
        for run_id in {row.get("run_id") for row in rows if isinstance(row.get("run_id"), str)}:
            self.learn(run_id)

    def learn(self, run_id: object) -> None:
        """Note the start of ``run_id`` if it is a run started in this process and still live."""
        if not isinstance(run_id, str):
            return
        with self._lock:
            if run_id in self._days:
                return
        if _routing.is_attached(run_id):
            return  # its live span here is where the work attached, not the run's start
        start_ns = getattr(_routing.live_root(run_id), "start_time", None)
        if isinstance(start_ns, int):
            self.note(run_id, start_ns // 1_000_000)

    def day(self, row: Mapping[str, object], key: Key) -> str:
        """Return the day folder of ``row`` of table or artifact ``key``."""
        start = row.get("start_time_unix_ms")
        if key == ("table", RUNS_TABLE) and isinstance(start, int):
            return day_of(start)
        run_id = row.get("run_id")
        with self._lock:
            day = self._days.get(run_id) if isinstance(run_id, str) else None
        return day or day_of(None)


def split_by_day(
    key: Key, rows: list[dict[str, object]], days: RunDays
) -> list[tuple[str, list[dict[str, object]]]]:
    """Return ``rows`` grouped by day folder, each group with a new data file key."""
    kind, name = key
    prefix = artifact_prefix(name) if kind == "artifact" else table_prefix(name)
    by_day: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_day.setdefault(days.day(row, key), []).append(row)
    return [(new_data_key(prefix, day), group) for day, group in sorted(by_day.items())]


def rows_to_table(key: Key, rows: list[dict[str, object]]) -> tuple[pa.Table, int]:
    """Return ``rows`` as an Arrow table of their schema, and how many rows did not fit.

    A table this package does not know keeps its rows with inferred types.

    Raises:
        ValueError: If a row does not fit an artifact's schema.
    """
    kind, name = key
    if kind == "artifact":
        return coerce_rows(rows, ARTIFACTS_SCHEMA), 0
    schema = SCHEMAS.get(name)
    if schema is None:
        return pa.Table.from_pylist(rows), 0
    try:
        return coerce_rows(rows, schema), 0
    except ValueError:  # keep the rows that fit; report the others
        good: list[dict[str, object]] = []
        for row in rows:
            try:
                coerce_rows([row], schema)
            except ValueError:
                continue
            good.append(row)
        return coerce_rows(good, schema), len(rows) - len(good)
