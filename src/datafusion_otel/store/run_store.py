"""`RunStore`: a run store (a local folder or ``s3://bucket/prefix``) opened as DataFusion tables.

Tables registered on `RunStore.ctx` (each over the live files of its folder, declared with
the schema from `datafusion_otel.schema_registry`, so an empty folder is an empty table and
a column missing from older files reads as null; see `datafusion_otel.store._tables`):

=====================  ====================================  ==============================
table                  folder                                schema
=====================  ====================================  ==============================
``runs``               ``datafusion_runs_v1/``               ``DATAFUSION_RUNS_V1``
``plan_artifacts``     ``datafusion_plan_artifacts_v1/``     ``DATAFUSION_PLAN_ARTIFACTS_V1``
``operator_metrics``   ``datafusion_operator_metrics_v1/``   ``DATAFUSION_OPERATOR_METRICS_V1``
``cache_state``        ``datafusion_cache_state_v1/``        ``DATAFUSION_CACHE_STATE_V1``
``findings``           ``datafusion_findings_v1/``           ``DATAFUSION_FINDINGS_V1``
``artifacts``          ``artifacts/artifact=<name>/``        run_id, payload (JSON), artifact
=====================  ====================================  ==============================

The store is listed again before every query, so files written after it was opened are
seen by the next query, and rows a compaction merged are read once (the merged file, not
its sources). Stores of format version 1 (local folders written before the ``day=``
layout) and 2 are read; a newer version is refused with a `StoreError`.

Damaged files never stop a query: on a local folder every file's footer is read
(`footer_problem`: empty, truncated, not Parquet, wrong schema); when a query fails anyway,
every file is read in full (`read_problem`, Rust panics included). A damaged file is
skipped, reported once (``on_skip``, by default a warning on the ``datafusion_otel.store``
logger) and listed in `RunStore.skipped_files`; the query is then run again on the intact
files. `RunStore.sql` is read-only: DataFusion's `SQLOptions` refuse DDL, DML and
statements (``COPY``, ``CREATE``, ``INSERT``, ``SET``, ``PREPARE``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from datafusion import SessionContext, SQLOptions

from datafusion_otel import attributes as attr
from datafusion_otel.rollups import summarize_runs
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._checks import must_propagate, one_line
from datafusion_otel.store._fs import LocalFS, StoreFS, open_location, resolve_location
from datafusion_otel.store._layout import (
    ARTIFACTS_SCHEMA,
    FORMAT_KEY,
    FORMAT_VERSION,
    parse_format,
    table_prefix,
)
from datafusion_otel.store._tables import StorePath, StoreTables, TableSpec

__all__ = ["STORE_TABLES", "RunDetails", "RunNotFoundError", "RunStore", "StoreError"]

_REFUSED = re.compile(r"(?:DDL|DML|Statement) not supported: (.+)$")

STORE_TABLES: dict[str, str] = {
    "runs": attr.RUNS_TABLE,
    "plan_artifacts": attr.PLAN_ARTIFACTS_TABLE,
    "operator_metrics": attr.OPERATOR_METRICS_TABLE,
    "cache_state": attr.CACHE_STATE_TABLE,
    "findings": attr.FINDINGS_TABLE,
}
"""SQL table name -> diagnostics table (and folder) name."""


def _read_only() -> SQLOptions:
    return SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


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
        path: Store folder (or a ``file://`` URI), or ``s3://bucket/prefix`` (settings from
            the ``AWS_*`` environment variables). Default: ``$DATAFUSION_OTEL_HOME``, else
            ``./.datafusion-otel``.
        must_exist: Raise `StoreError` if the folder does not exist, or no object is under
            the S3 prefix (instead of opening an empty store).
        on_skip: Called once with the path (an ``s3://`` URI on S3) and the reason of each
            damaged file skipped (default: a warning on the ``datafusion_otel.store``
            logger).
        quiet_panics: Keep the message Rust prints when DataFusion panics on a damaged file
            off stderr (redirects file descriptor 2 while a query runs; for command-line
            programs).

    Raises:
        StoreError: If ``must_exist`` and there is no store at ``path``, ``path`` is a URI
            whose scheme the store does not support, the store cannot be reached, or it was
            written in a newer format version.

    Example:
        >>> store = RunStore("/tmp/my-runs")  # doctest: +SKIP
        >>> store.sql("SELECT label, count(*) FROM runs GROUP BY label")  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        must_exist: bool = False,
        on_skip: Callable[[StorePath, str], None] | None = None,
        quiet_panics: bool = False,
    ) -> None:
        try:
            location = resolve_location(path)
            self._fs: StoreFS = open_location(location)
        except (ValueError, ImportError) as exc:
            raise StoreError(str(exc)) from exc
        self.path: Path | str = location if isinstance(location, Path) else location.uri
        """The store: a local folder, or an ``s3://`` URI."""
        if isinstance(self._fs, LocalFS) and must_exist and not self._fs.root.is_dir():
            what = "is not a folder" if self._fs.root.exists() else "does not exist"
            raise StoreError(f"no run store at {self.path} (it {what})")
        self.format_version = self._check_format(must_exist=must_exist)
        tables = [
            TableSpec(sql_name, table_prefix(folder), SCHEMAS[folder])
            for sql_name, folder in STORE_TABLES.items()
        ]
        partition = (attr.ARTIFACT_PARTITION, pa.string())
        tables.append(
            TableSpec("artifacts", f"{attr.ARTIFACTS_FOLDER}/", ARTIFACTS_SCHEMA, partition)
        )
        self._ctx = SessionContext()
        self._ctx.sql("SET datafusion.runtime.list_files_cache_limit = '0'").collect()
        self._tables = StoreTables(
            self._ctx,
            self._fs,
            tables,
            on_skip=on_skip,
            quiet_panics=quiet_panics,
            error=StoreError,
        )
        self._refresh()

    def _check_format(self, *, must_exist: bool) -> int:
        """Return the store's format version (1: a folder written before ``_format.json``)."""
        try:
            data = self._fs.get(FORMAT_KEY)
            remote = not isinstance(self._fs, LocalFS)
            if data is None and must_exist and remote and not self._fs.list():
                raise StoreError(f"no run store at {self.path} (no object under it)")
            version = parse_format(data)
        except StoreError:
            raise
        except Exception as exc:  # unreachable endpoint, bad credentials, a bad document
            raise StoreError(f"cannot read the run store at {self.path}: {one_line(exc)}") from exc
        if version > FORMAT_VERSION:
            raise StoreError(
                f"the run store at {self.path} has format version {version}; this "
                f"datafusion-otel reads versions 1 to {FORMAT_VERSION} (upgrade it)"
            )
        return version

    def _refresh(self) -> None:
        try:
            self._tables.refresh()
        except StoreError:
            raise
        except Exception as exc:  # an S3 listing failed
            raise StoreError(f"cannot list the run store at {self.path}: {one_line(exc)}") from exc

    @property
    def skipped_files(self) -> list[tuple[StorePath, str]]:
        """The damaged files skipped so far, with the reason, in the order found."""
        return self._tables.skipped

    def refresh(self) -> None:
        """List the store again and register changed tables (every query does this too)."""
        self._refresh()

    @property
    def ctx(self) -> SessionContext:
        """The DataFusion session with the store's tables registered.

        Queries run on it directly are not re-run when a compaction or prune removes files
        under them (`sql` is); call `refresh` first to see new files.
        """
        return self._ctx

    # -- queries -----------------------------------------------------------------------------
    def sql(self, query: str) -> pa.Table:
        """Run ``query`` (one read-only statement) over the store's tables.

        Damaged files are skipped (see the module docstring); the answer comes from the
        intact files.

        Returns:
            The result as an Arrow table.

        Raises:
            StoreError: For invalid SQL, a statement that is not a query (DDL, DML, ``SET``,
                ...), or a failure no damaged file explains.
        """
        options = _read_only()
        try:
            self._ctx.sql_with_options(query, options)  # plan once: SQL errors are the user's
        except BaseException as exc:
            if must_propagate(exc):
                raise
            raise StoreError(_sql_message(exc)) from exc
        self._refresh()
        return self._tables.recovering(
            lambda: self._ctx.sql_with_options(query, options).to_arrow_table()
        )

    def damaged_files(self) -> list[tuple[StorePath, str]]:
        """Return every store file whose footer shows damage, and every file skipped so far.

        Only the store's table and artifact folders are checked (other folders, such as the
        demo's cached TPC-H data, are not part of the store).
        """
        return self._tables.damaged_files()

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

    def stored_findings(self, run_id: str) -> list[dict[str, Any]]:
        """Return the findings rows recorded for a run when it ended (most severe first).

        Empty for a run recorded with findings off, by an older version, or with no finding.

        Raises:
            RunNotFoundError: If no single run matches ``run_id``.
        """
        full = self.resolve_run_id(run_id)
        rows: list[dict[str, Any]] = self.sql(
            f"SELECT * FROM findings WHERE run_id = {_quote(full)} ORDER BY CASE severity "
            "WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, span_id, operator_path, kind"
        ).to_pylist()
        return rows

    def stats_by_label(self) -> pa.Table:
        """Return one row per label over all time.

        Columns: ``label``, ``count``, ``failures``, ``error_rate``, ``p50_ms``, ``p95_ms``,
        ``p99_ms``; percentiles are exact (see `datafusion_otel.rollups`).
        """
        return self.summarize(bucket=None)

    def summarize(self, *, bucket: dt.timedelta | None = None) -> pa.Table:
        """Return `datafusion_otel.rollups.summarize_runs` over this store's runs.

        Raises:
            StoreError: When a failure no damaged file explains stops the query.
            ValueError: If ``bucket`` is not positive.
        """
        if bucket is not None and bucket.total_seconds() * 1000 < 1:
            return summarize_runs(self._ctx, bucket=bucket)  # raises its ValueError
        self._refresh()
        return self._tables.recovering(lambda: summarize_runs(self._ctx, bucket=bucket))


def _sql_message(exc: BaseException) -> str:
    message = one_line(exc).removeprefix("Error during planning: ")
    refused = _REFUSED.search(message)
    if refused:
        return f"the store is read-only: only queries are allowed ({refused.group(1)} refused)"
    return message


def _parse_json(value: object) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
