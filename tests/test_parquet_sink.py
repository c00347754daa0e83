"""ParquetSink: durable, atomic, batched Parquet files per table, read back by RunStore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from datafusion_otel import DATAFUSION_RUNS_V1, schema_for, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel.schema_registry import table_for
from datafusion_otel.store import ParquetSink, RunStore

RUN_ID = "0af7651916cd43dd8448eb211c80319c"

SAMPLE_ROWS = {
    attr.RUNS_TABLE: {
        "run_id": RUN_ID, "label": "nightly", "start_time_unix_ms": 1_700_000_000_000,
        "end_time_unix_ms": 1_700_000_000_250, "status": "completed", "duration_ms": 250,
        "metadata": '{"owner":"etl"}',
    },
    attr.PLAN_ARTIFACTS_TABLE: {
        "event_time_unix_ms": 1_700_000_000_100, "run_id": RUN_ID, "plan_hash": "abc",
        "sql": "SELECT ?", "partition_count": 4, "join_operators": ["HashJoinExec"],
        "plan_executed": True, "capture_duration_ms": 1.5,
    },
    attr.OPERATOR_METRICS_TABLE: {
        "event_time_unix_ms": 1_700_000_000_200, "run_id": RUN_ID, "span_id": "00f067aa0ba902b7",
        "plan_hash": "abc", "operator_path": "0.1", "operator_name": "DataSourceExec",
        "partition": 0, "output_rows": 10, "elapsed_compute_ns": 1234,
        "other_metrics": {"bytes_scanned": 2048, "files_opened": 1},
    },
    attr.CACHE_STATE_TABLE: {
        "cache_name": "metadata_cache", "event_time_unix_ms": 1_700_000_000_300,
        "config_limit": "50M", "run_id": RUN_ID,
    },
}  # fmt: skip


def _expected(table: str) -> list[dict[str, object]]:
    return table_for(table, [SAMPLE_ROWS[table]]).to_pylist()


class TestRoundTrip:
    """Every diagnostics table and artifacts come back from the store exactly as written."""

    def test_every_table_round_trips(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path)
        for table, row in SAMPLE_ROWS.items():
            sink.record_events(table, [row])
        assert sink.close()
        store = RunStore(tmp_path)
        for sql_name, table in {
            "runs": attr.RUNS_TABLE,
            "plan_artifacts": attr.PLAN_ARTIFACTS_TABLE,
            "operator_metrics": attr.OPERATOR_METRICS_TABLE,
            "cache_state": attr.CACHE_STATE_TABLE,
        }.items():
            got = store.sql(f"SELECT * FROM {sql_name}")
            assert got.schema.names == schema_for(table).names
            assert got.to_pylist() == _expected(table), sql_name

    def test_artifacts_are_stored_as_json_per_name(self, tmp_path: Path) -> None:
        with ParquetSink(tmp_path) as sink:
            sink.record_artifact("my_artifact", {"run_id": RUN_ID, "n": 1, "nested": {"a": [1]}})
        assert (tmp_path / "artifacts" / "artifact=my_artifact").is_dir()
        rows = RunStore(tmp_path).sql("SELECT artifact, run_id, payload FROM artifacts").to_pylist()
        assert rows == [
            {"artifact": "my_artifact", "run_id": RUN_ID,
             "payload": '{"n":1,"nested":{"a":[1]},"run_id":"0af7651916cd43dd8448eb211c80319c"}'}
        ]  # fmt: skip

    def test_real_runs_reach_the_store(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path)
        ctx = SessionContext()
        with tracked_run(label="real", sink=sink) as run:
            ctx.sql("SELECT 1 AS x").to_arrow_table()
        assert sink.force_flush(5)
        details = RunStore(tmp_path).run(run.run_id)
        assert details.run["status"] == "completed"
        assert {a["artifact"] for a in details.artifacts} == {
            attr.RUN_STARTED_ARTIFACT,
            attr.RUN_FINISHED_ARTIFACT,
        }
        sink.close()


class TestBatching:
    """Rows are written off the query thread by size or age, and on flush/close."""

    def test_nothing_is_written_on_the_recording_thread(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=1000, flush_interval=60)
        sink.record_events(attr.RUNS_TABLE, [SAMPLE_ROWS[attr.RUNS_TABLE]])
        assert list(tmp_path.rglob("*.parquet")) == []
        assert sink.force_flush(5)
        assert len(list(tmp_path.rglob("*.parquet"))) == 1
        sink.close()

    def test_full_batch_is_written_by_the_writer_thread(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=10, flush_interval=60)
        sink.record_events(attr.RUNS_TABLE, [SAMPLE_ROWS[attr.RUNS_TABLE]] * 10)
        deadline = time.monotonic() + 5
        while not list(tmp_path.rglob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert RunStore(tmp_path).run_count() == 10
        sink.close()

    def test_old_rows_are_written_after_the_interval(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=1000, flush_interval=0.1)
        sink.record_events(attr.RUNS_TABLE, [SAMPLE_ROWS[attr.RUNS_TABLE]])
        deadline = time.monotonic() + 5
        while not list(tmp_path.rglob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert RunStore(tmp_path).run_count() == 1
        sink.close()

    def test_rows_after_close_are_refused_and_reported(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path)
        assert sink.close()
        sink.record_events(attr.RUNS_TABLE, [SAMPLE_ROWS[attr.RUNS_TABLE]])
        assert sink.force_flush(1) is False

    def test_rows_not_matching_the_schema_are_dropped_and_reported(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path)
        good = SAMPLE_ROWS[attr.RUNS_TABLE]
        sink.record_events(attr.RUNS_TABLE, [good, {**good, "start_time_unix_ms": "soon"}])
        assert sink.force_flush(5) is False
        assert RunStore(tmp_path).run_count() == 1
        sink.close()

    def test_default_folder_comes_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(attr.HOME_ENV, str(tmp_path / "home"))
        sink = ParquetSink()
        assert sink.path == tmp_path / "home"
        sink.close()

    def test_exit_flushes_buffered_rows(self, tmp_path: Path) -> None:
        code = textwrap.dedent(f"""
            from datafusion_otel import tracked_run
            from datafusion_otel.store import ParquetSink
            sink = ParquetSink({str(tmp_path)!r}, flush_interval=3600)
            with tracked_run(label="at-exit", sink=sink):
                pass
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert RunStore(tmp_path).run_count() == 1


class TestCrashSafety:
    """A writer killed with SIGKILL at any moment leaves a store that opens and reads."""

    def test_sigkill_while_writing_leaves_a_readable_store(self, tmp_path: Path) -> None:
        code = textwrap.dedent(f"""
            import sys
            from datafusion_otel.store import ParquetSink
            row = {SAMPLE_ROWS[attr.RUNS_TABLE]!r}
            sink = ParquetSink({str(tmp_path)!r}, batch_rows=500, flush_interval=0.01, fsync=False)
            print("ready", flush=True)
            while True:
                sink.record_events("datafusion_runs_v1", [row] * 50)
        """)
        for wait in (0.3, 0.7, 1.1):
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(wait)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
        store = RunStore(tmp_path)
        assert store.damaged_files() == []
        count = store.run_count()
        assert count > 0
        assert count % 50 == 0  # only whole batches: no partial file was read
        assert store.stats_by_label().to_pylist()[0]["count"] == count


class TestSchemaEvolution:
    """Files written before a column existed read that column as null."""

    def test_old_file_missing_a_column_reads_null(self, tmp_path: Path) -> None:
        old_schema = pa.schema([f for f in DATAFUSION_RUNS_V1 if f.name != "metadata"])
        folder = tmp_path / attr.RUNS_TABLE
        folder.mkdir(parents=True)
        old = {k: v for k, v in SAMPLE_ROWS[attr.RUNS_TABLE].items() if k != "metadata"}
        pq.write_table(pa.Table.from_pylist([old], schema=old_schema), folder / "old.parquet")
        with ParquetSink(tmp_path) as sink:
            sink.record_events(attr.RUNS_TABLE, [{**SAMPLE_ROWS[attr.RUNS_TABLE], "run_id": "ff"}])
        store = RunStore(tmp_path)
        rows = store.sql("SELECT run_id, metadata FROM runs ORDER BY run_id").to_pylist()
        assert rows == [
            {"run_id": RUN_ID, "metadata": None},
            {"run_id": "ff", "metadata": '{"owner":"etl"}'},
        ]
        assert store.run(RUN_ID).run["metadata"] is None

    def test_empty_store_has_every_table(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "nothing-here")
        for table in ("runs", "plan_artifacts", "operator_metrics", "cache_state", "artifacts"):
            assert store.sql(f"SELECT count(*) AS n FROM {table}").to_pylist() == [{"n": 0}]
