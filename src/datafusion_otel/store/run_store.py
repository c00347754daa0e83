"""`RunStore`: a run store folder opened as DataFusion tables.

Tables registered on `RunStore.ctx` (each a Parquet listing table over its folder, declared
with the schema from `datafusion_otel.schema_registry`, so an empty folder is an empty
table and a column missing from older files reads as null):

=====================  ====================================  ==============================
table                  folder                                schema
=====================  ====================================  ==============================
``runs``               ``datafusion_runs_v1/``               ``DATAFUSION_RUNS_V1``
``plan_artifacts``     ``datafusion_plan_artifacts_v1/``     ``DATAFUSION_PLAN_ARTIFACTS_V1``
``operator_metrics``   ``datafusion_operator_metrics_v1/``   ``DATAFUSION_OPERATOR_METRICS_V1``
``cache_state``        ``datafusion_cache_state_v1/``        ``DATAFUSION_CACHE_STATE_V1``
``artifacts``          ``artifacts/artifact=<name>/``        run_id, payload (JSON), artifact
=====================  ====================================  ==============================

The session's list-files cache is disabled, so files written after the store was opened
are seen by the next query.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel.rollups import summarize_runs
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._layout import ARTIFACTS_SCHEMA, data_files, resolve_home

__all__ = ["STORE_TABLES", "RunDetails", "RunNotFoundError", "RunStore", "StoreError"]

STORE_TABLES: dict[str, str] = {
    "runs": attr.RUNS_TABLE,
    "plan_artifacts": attr.PLAN_ARTIFACTS_TABLE,
    "operator_metrics": attr.OPERATOR_METRICS_TABLE,
    "cache_state": attr.CACHE_STATE_TABLE,
}
"""SQL table name -> diagnostics table (and folder) name."""


class StoreError(Exception):
    """A problem with the store a user can act on; the message is one line."""


class RunNotFoundError(StoreError, KeyError):
    """No run (or more than one, for a prefix) matches the requested run id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class RunDetails:
    """One run with everything the store holds about it.

    Attributes:
        run: The DATAFUSION_RUNS_V1 row, ``metadata`` parsed from JSON.
        plan_artifacts: Its DATAFUSION_PLAN_ARTIFACTS_V1 rows, oldest first.
        operator_metrics: Its DATAFUSION_OPERATOR_METRICS_V1 rows.
        cache_state: Its DATAFUSION_CACHE_STATE_V1 rows.
        artifacts: Its artifacts (``artifact`` name, ``payload`` parsed), oldest first.
    """

    run: dict[str, Any]
    plan_artifacts: list[dict[str, Any]] = field(default_factory=list)
    operator_metrics: list[dict[str, Any]] = field(default_factory=list)
    cache_state: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class RunStore:
    """Open a run store (as written by `ParquetSink`) for SQL queries.

    Args:
        path: Store folder. Default: ``$DATAFUSION_OTEL_HOME``, else ``./.datafusion-otel``.
        must_exist: Raise `StoreError` if the folder does not exist (instead of opening an
            empty store).

    Raises:
        StoreError: If ``must_exist`` and there is no folder at ``path``.

    Example:
        >>> store = RunStore("/tmp/my-runs")  # doctest: +SKIP
        >>> store.sql("SELECT label, count(*) FROM runs GROUP BY label")  # doctest: +SKIP
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, must_exist: bool = False
    ) -> None:
        self.path = resolve_home(path)
        if must_exist and not self.path.is_dir():
            raise StoreError(f"no run store at {self.path}")
        self._ctx = SessionContext()
        self._ctx.sql("SET datafusion.runtime.list_files_cache_limit = '0'").collect()
        self.refresh()

    def refresh(self) -> None:
        """Register the store's tables again (needed only for folders created since)."""
        for sql_name, folder in STORE_TABLES.items():
            self._register(sql_name, self.path / folder, SCHEMAS[folder])
        self._register(
            "artifacts",
            self.path / attr.ARTIFACTS_FOLDER,
            ARTIFACTS_SCHEMA,
            partition=(attr.ARTIFACT_PARTITION, pa.string()),
        )

    def _register(
        self,
        name: str,
        folder: Path,
        schema: pa.Schema,
        partition: tuple[str, pa.DataType] | None = None,
    ) -> None:
        if self._ctx.table_exist(name):
            self._ctx.deregister_table(name)
        if not folder.is_dir():  # nothing written yet: an empty table of the right shape
            if partition is not None:
                schema = schema.append(pa.field(*partition))
            self._ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema)]])
            return
        self._ctx.register_parquet(
            name,
            str(folder) + os.sep,
            schema=schema,
            table_partition_cols=[partition] if partition else None,
        )

    @property
    def ctx(self) -> SessionContext:
        """The DataFusion session with the store's tables registered."""
        return self._ctx

    # -- queries -----------------------------------------------------------------------------
    def sql(self, query: str) -> pa.Table:
        """Run ``query`` over the store's tables.

        Returns:
            The result as an Arrow table.

        Raises:
            StoreError: For invalid SQL, or for a damaged file (the message names it).
        """
        try:
            return self._ctx.sql(query).to_arrow_table()
        except Exception as exc:
            raise self._explain(exc) from exc

    def _explain(self, exc: Exception) -> StoreError:
        damaged = self.damaged_files()
        if damaged:
            path, reason = damaged[0]
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            return StoreError(f"damaged store file {path}: {reason}{more}")
        message = " ".join(str(exc).split())
        return StoreError(message.removeprefix("DataFusion error: "))

    def damaged_files(self) -> list[tuple[Path, str]]:
        """Return every store file that is not a readable Parquet file, with the reason.

        Only the store's table and artifact folders are checked (other folders, such as the
        demo's cached TPC-H data, are not part of the store).
        """
        damaged: list[tuple[Path, str]] = []
        folders = [*STORE_TABLES.values(), attr.ARTIFACTS_FOLDER]
        for path in [f for folder in folders for f in data_files(self.path / folder)]:
            try:
                pq.read_metadata(path)
            except Exception as exc:  # any reader failure means the file is unusable
                damaged.append((path, " ".join(str(exc).split()) or type(exc).__name__))
        return damaged

    def run_count(self) -> int:
        """Return the number of runs in the store."""
        return int(self.sql("SELECT count(*) AS n FROM runs").column(0)[0].as_py())

    def recent_runs(self, limit: int = 20) -> pa.Table:
        """Return the most recent runs, newest first.

        Args:
            limit: Maximum number of runs.

        Returns:
            DATAFUSION_RUNS_V1 columns plus ``output_rows`` (sum of the root operators' output
            rows when operator metrics exist, else the ``output_rows`` metadata entry, else
            null).
        """
        runs = self.sql(
            f"SELECT * FROM runs ORDER BY start_time_unix_ms DESC, run_id LIMIT {int(limit)}"
        )
        ids = [str(v) for v in runs.column("run_id").to_pylist()]
        rows_by_run = self._output_rows(ids)
        values: list[int | None] = []
        for run_id, metadata in zip(ids, runs.column("metadata").to_pylist(), strict=True):
            value = rows_by_run.get(run_id)
            if value is None:
                parsed = _parse_json(metadata)
                candidate = parsed.get("output_rows") if isinstance(parsed, dict) else None
                value = candidate if isinstance(candidate, int) else None
            values.append(value)
        return runs.append_column("output_rows", pa.array(values, pa.int64()))

    def _output_rows(self, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        listed = ", ".join(_quote(r) for r in run_ids)
        table = self.sql(
            "WITH m AS (SELECT run_id, span_id, plan_hash, operator_path, output_rows, "
            "min(length(operator_path)) OVER (PARTITION BY run_id, span_id, plan_hash) AS top "
            f"FROM operator_metrics WHERE run_id IN ({listed})) "
            "SELECT run_id, sum(output_rows) AS n FROM m WHERE length(operator_path) = top "
            "AND output_rows IS NOT NULL GROUP BY run_id"
        )
        return {r["run_id"]: int(r["n"]) for r in table.to_pylist()}

    def resolve_run_id(self, run_id: str) -> str:
        """Return the full run id of ``run_id`` or of a unique prefix of one.

        Raises:
            RunNotFoundError: If no run matches, or a prefix matches several runs.
        """
        wanted = run_id.strip().lower()
        if not wanted or any(c not in "0123456789abcdef" for c in wanted):
            raise RunNotFoundError(f"unknown run id {run_id!r} (run ids are hex)")
        matches = self.sql(
            f"SELECT DISTINCT run_id FROM runs WHERE starts_with(run_id, {_quote(wanted)}) "
            "ORDER BY run_id LIMIT 3"
        ).column(0)
        if len(matches) == 0:
            raise RunNotFoundError(f"unknown run id {run_id!r} in {self.path}")
        if len(matches) > 1:
            raise RunNotFoundError(f"run id prefix {run_id!r} matches several runs")
        return str(matches[0].as_py())

    def run(self, run_id: str) -> RunDetails:
        """Return one run (by id or unique id prefix) with its artifacts and metrics.

        Raises:
            RunNotFoundError: If no single run matches.
        """
        full = self.resolve_run_id(run_id)
        where = f"WHERE run_id = {_quote(full)}"
        run = self.sql(f"SELECT * FROM runs {where} LIMIT 1").to_pylist()[0]
        run["metadata"] = _parse_json(run.get("metadata"))
        artifacts = self.sql(
            f"SELECT artifact, event_time_unix_ms, payload FROM artifacts {where} "
            "ORDER BY event_time_unix_ms, CASE artifact "
            f"WHEN {_quote(attr.RUN_STARTED_ARTIFACT)} THEN 0 "
            f"WHEN {_quote(attr.RUN_FINISHED_ARTIFACT)} THEN 2 ELSE 1 END, artifact"
        ).to_pylist()
        for artifact in artifacts:
            artifact["payload"] = _parse_json(artifact["payload"])
        metrics = self.sql(f"SELECT * FROM operator_metrics {where}").to_pylist()
        for row in metrics:
            row["other_metrics"] = dict(row.get("other_metrics") or [])
        return RunDetails(
            run=run,
            plan_artifacts=self.sql(
                f"SELECT * FROM plan_artifacts {where} ORDER BY event_time_unix_ms"
            ).to_pylist(),
            operator_metrics=metrics,
            cache_state=self.sql(
                f"SELECT * FROM cache_state {where} ORDER BY cache_name"
            ).to_pylist(),
            artifacts=artifacts,
        )

    def stats_by_label(self) -> pa.Table:
        """Return one row per label over all time.

        Columns: ``label``, ``count``, ``failures``, ``error_rate``, ``p50_ms``, ``p95_ms``,
        ``p99_ms``; percentiles are exact (see `datafusion_otel.rollups`).
        """
        return self.summarize(bucket=None)

    def summarize(self, *, bucket: dt.timedelta | None = None) -> pa.Table:
        """Return `datafusion_otel.rollups.summarize_runs` over this store's runs.

        Raises:
            StoreError: For a damaged file.
        """
        try:
            return summarize_runs(self._ctx, bucket=bucket)
        except ValueError:
            raise
        except Exception as exc:
            raise self._explain(exc) from exc


def _parse_json(value: object) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
