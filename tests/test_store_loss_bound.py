"""ParquetSink keeps its loss bound under any load: capped buffer, bounded files, counted drops."""

from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.store import ParquetSink, RunStore, StoreError

RUN_ROW: dict[str, object] = {
    "run_id": "0" * 32, "label": "loop", "start_time_unix_ms": 1_700_000_000_000,
    "end_time_unix_ms": 1_700_000_000_250, "status": "completed", "duration_ms": 250,
    "metadata": "{}",
}  # fmt: skip

_COUNTER = struct.Struct("<qq")  # rows handed to the sink, sink.dropped_rows

# The writer: a tight loop handing 10 run rows and 1 artifact per step to the sink, each row
# carrying its sequence number as run id. After each step it stores, in a shared memory-mapped
# file that survives SIGKILL, how many rows it handed over and how many the sink dropped.
_WRITER = textwrap.dedent("""
    import mmap, struct, sys
    from datafusion_otel.store import ParquetSink
    path, counter, bound = sys.argv[1], sys.argv[2], int(sys.argv[3])
    template = {row!r}
    step = {step}
    with open(counter, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 16)
    sink = ParquetSink(path, batch_rows=50, flush_interval=0.01, fsync=False,
                       max_buffer_rows=bound)
    print("ready", flush=True)
    seq = 0
    while True:
        rows = []
        for i in range(step):
            row = dict(template)
            row["run_id"] = format(seq + i, "032x")
            rows.append(row)
        sink.record_events("datafusion_runs_v1", rows)
        sink.record_artifact("loop_step", {{"run_id": format(seq + step, "032x")}})
        seq += step + 1
        struct.pack_into("<qq", shared, 0, seq, sink.dropped_rows)
""")


def _stored_sequence_numbers(store: Path) -> list[int]:
    opened = RunStore(store)
    assert opened.damaged_files() == []
    ids = opened.sql("SELECT run_id FROM runs").column(0).to_pylist()
    ids += opened.sql("SELECT run_id FROM artifacts").column(0).to_pylist()
    return [int(str(value), 16) for value in ids]


class TestLossBoundUnderSigkill:
    """A writer SIGKILLed in a tight loop loses at most 2 x ``max_buffer_rows`` rows.

    Run rows and the other rows (artifacts here) have a pool of ``max_buffer_rows`` each.
    """

    BOUND = 200
    STEP = 10

    def test_repeated_sigkills_stay_within_the_bound(self, tmp_path: Path) -> None:
        code = _WRITER.format(row=RUN_ROW, step=self.STEP)
        losses: list[int] = []
        for attempt, wait in enumerate((0.4, 0.9, 1.3, 0.6, 1.7)):
            store = tmp_path / f"store{attempt}"
            counter = tmp_path / f"counter{attempt}"
            counter.write_bytes(bytes(_COUNTER.size))
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(store), str(counter), str(self.BOUND)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(wait)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            proc.stdout.close()
            assert proc.returncode == -signal.SIGKILL
            with open(counter, "rb") as handle:
                shared = mmap.mmap(handle.fileno(), _COUNTER.size, access=mmap.ACCESS_READ)
                reported, dropped = _COUNTER.unpack_from(shared, 0)
                shared.close()
            # ``dropped`` counts exactly the drops among the ``reported`` rows (the sink drops
            # on arrival); the step in progress at the kill is left out of the count
            stored = _stored_sequence_numbers(store)
            assert reported > 0 and stored
            assert len(set(stored)) == len(stored), "a row was stored twice"
            assert max(stored) < reported + self.STEP + 1
            losses.append(reported - dropped - sum(1 for seq in stored if seq < reported))
        assert all(loss <= 2 * self.BOUND for loss in losses), (losses, self.BOUND)


class TestBoundedBuffer:
    """Files hold at most ``batch_rows`` rows; rows over the cap are dropped, counted, logged."""

    def test_a_file_holds_at_most_batch_rows(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=50, flush_interval=60, max_buffer_rows=5000)
        rows = [{**RUN_ROW, "run_id": format(i, "032x")} for i in range(1000)]
        sink.record_events(attr.RUNS_TABLE, rows)
        assert sink.force_flush(10)
        sizes = [
            pq.read_metadata(p).num_rows for p in (tmp_path / attr.RUNS_TABLE).rglob("*.parquet")
        ]
        assert sum(sizes) == 1000
        assert max(sizes) <= 50
        sink.close()

    def test_rows_over_the_row_cap_are_dropped_counted_and_logged_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        sink = ParquetSink(tmp_path, batch_rows=10, flush_interval=60, max_buffer_rows=20)
        rows = [{**RUN_ROW, "run_id": format(i, "032x")} for i in range(25)]
        with caplog.at_level(logging.ERROR, logger="datafusion_otel.store"):
            sink.record_events(attr.RUNS_TABLE, rows)  # one call: 20 fit, 5 do not
            assert sink.force_flush(10) is False
            assert (sink.dropped_rows, sink.overflow_rows) == (5, 5)
            assert RunStore(tmp_path).run_count() == 20
            assert sink.force_flush(10) is True  # nothing dropped since the last flush
            sink.record_events(attr.RUNS_TABLE, rows * 4)  # 100 rows: 20 fit again
            assert sink.force_flush(10) is False
        assert sink.dropped_rows == 85
        assert RunStore(tmp_path).run_count() == 40
        overflow_logs = [r for r in caplog.records if "dropped rows" in r.getMessage()]
        assert len(overflow_logs) == 1
        assert "dropped_rows" in overflow_logs[0].getMessage()
        sink.close()

    def test_rows_over_the_byte_cap_are_dropped_and_counted(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=100, flush_interval=60, max_buffer_bytes=10_000)
        big = [{**RUN_ROW, "run_id": format(i, "032x"), "metadata": "x" * 3000} for i in range(10)]
        sink.record_events(attr.RUNS_TABLE, big)
        assert sink.force_flush(10) is False
        stored = RunStore(tmp_path).run_count()
        assert 1 <= stored <= 3
        assert sink.dropped_rows == sink.overflow_rows == 10 - stored
        sink.close()

    def test_bad_settings_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="max_buffer_rows"):
            ParquetSink(tmp_path, batch_rows=100, max_buffer_rows=99)
        with pytest.raises(ValueError, match="max_buffer_bytes"):
            ParquetSink(tmp_path, max_buffer_bytes=0)


class TestArtifactSnapshots:
    """An artifact is stored as it was when recorded; a bad one never takes others with it."""

    def test_a_value_that_is_not_json_becomes_a_note_and_nothing_is_dropped(
        self, tmp_path: Path
    ) -> None:
        sink = ParquetSink(tmp_path, flush_interval=60)
        sink.record_artifact("a", {"run_id": "01", "n": 1})
        sink.record_artifact("a", {"run_id": "02", "n": object(), "m": float("nan")})
        sink.record_artifact("a", {"run_id": "03", "n": 3})
        assert sink.force_flush(10) is True
        assert sink.dropped_rows == 0
        rows = RunStore(tmp_path).sql("SELECT run_id, payload FROM artifacts ORDER BY run_id")
        assert rows.column(0).to_pylist() == ["01", "02", "03"]
        bad = json.loads(rows.column(1).to_pylist()[1])  # valid JSON: no NaN
        assert bad["n"] is None and bad["m"] is None
        notes = bad["datafusion_otel.notes"]
        assert any("['n']" in note for note in notes) and any("['m']" in note for note in notes)
        sink.close()

    def test_a_payload_changed_after_recording_is_stored_as_recorded(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, flush_interval=60)
        items: list[object] = [1]
        sink.record_artifact("a", {"run_id": "01", "items": items})
        items.append(object())  # not JSON, and too late to matter
        assert sink.force_flush(10) is True
        rows = RunStore(tmp_path).sql("SELECT payload FROM artifacts").to_pylist()
        assert rows == [{"payload": '{"items":[1],"run_id":"01"}'}]
        sink.close()


class TestUriSchemes:
    """A remote URI is a clear error, never a local folder named after the scheme."""

    def test_other_schemes_are_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ValueError, match="gs:// scheme is not supported"):
            ParquetSink("gs://bucket/x")
        with pytest.raises(StoreError, match="az:// scheme is not supported"):
            RunStore("az://bucket/x")
        with pytest.raises(ValueError, match="names a bucket"):
            ParquetSink("s3:///x")
        assert list(tmp_path.iterdir()) == []

    def test_file_uri_is_a_local_folder(self, tmp_path: Path) -> None:
        with ParquetSink(f"file://{tmp_path}/runs") as sink:
            assert sink.path == tmp_path / "runs"


class TestRunRowsAreNeverStarved:
    """A run's row arrives after its many operator-metric rows; it has a pool of its own."""

    GROUP_BY = "SELECT column2, count(*) FROM t GROUP BY column2"

    @staticmethod
    def _context(partitions: int | None = None) -> SessionContext:
        config = SessionConfig()
        if partitions is not None:
            config = config.with_target_partitions(partitions)
        ctx = SessionContext(config)
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'a')").collect()
        return ctx

    def test_one_row_batches(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=1, flush_interval=60)
        ctx = self._context()
        with tracked_run(label="tiny", sink=sink) as run:
            sql_to_datafusion(self.GROUP_BY, ctx=ctx).to_arrow_table()
        sink.force_flush(10)  # operator-metric rows may be dropped: the cap is 10 rows
        store = RunStore(tmp_path)
        assert store.run_count() == 1
        assert store.run(run.run_id).run["status"] == "completed"
        sink.close()

    def test_twenty_queries_on_64_partitions(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=100, flush_interval=60)
        ctx = self._context(64)
        runs = []
        for _ in range(3):
            with tracked_run(label="wide", sink=sink) as run:
                for _ in range(20):
                    sql_to_datafusion(self.GROUP_BY, ctx=ctx).to_arrow_table()
            runs.append(run.run_id)
            sink.force_flush(10)
        assert sink.dropped_rows > 0, "the run's other rows should have gone over the cap"
        store = RunStore(tmp_path)
        assert store.run_count() == 3
        assert {store.run(run_id).run["run_id"] for run_id in runs} == set(runs)
        sink.close()
