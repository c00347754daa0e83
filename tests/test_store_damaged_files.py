"""Damaged store files (Rust panics included) are skipped, named once, and never stop a query."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from datafusion_otel import DATAFUSION_RUNS_V1
from datafusion_otel import attributes as attr
from datafusion_otel._coerce import coerce_rows
from datafusion_otel.cli import main
from datafusion_otel.store import RunStore

# Found by a bit-flip trial over a runs file written like `_runs_file(0)` (2,827 bytes with
# the pinned pyarrow): each flip leaves a file on which DataFusion 55 panics.
DATA_PAGE_PANIC = (242, 5)  # footer intact: only a full read finds it
FOOTER_PANIC = (2688, 2)  # pyarrow already refuses the footer


def _runs_file(first: int, count: int = 40) -> bytes:
    rows = [
        {
            "run_id": f"{first + i:032x}",
            "label": f"label{i % 3}",
            "start_time_unix_ms": 1_700_000_000_000 + first + i,
            "end_time_unix_ms": 1_700_000_000_100 + first + i,
            "status": "completed",
            "duration_ms": 100,
            "metadata": "{}",
        }
        for i in range(count)
    ]
    buffer = io.BytesIO()
    pq.write_table(coerce_rows(rows, DATAFUSION_RUNS_V1), buffer, compression="zstd")
    return buffer.getvalue()


def _flipped(data: bytes, position: int, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    return bytes(damaged)


def _store(tmp_path: Path, damaged: bytes) -> tuple[Path, Path]:
    """A store with one intact runs file (40 runs) and ``damaged`` as a second runs file."""
    folder = tmp_path / attr.RUNS_TABLE
    folder.mkdir(parents=True)
    (folder / "1-intact.parquet").write_bytes(_runs_file(1000))
    bad = folder / "2-damaged.parquet"
    bad.write_bytes(damaged)
    return tmp_path, bad


def _datafusion_read_error(path: Path) -> BaseException | None:
    ctx = SessionContext()
    ctx.register_parquet("t", str(path), schema=DATAFUSION_RUNS_V1)
    try:
        ctx.sql("SELECT * FROM t").collect()
    except BaseException as exc:  # a Rust panic is a BaseException
        return exc
    return None


class TestRunStoreSkipsDamagedFiles:
    """RunStore answers from the intact files and names each damaged one once."""

    def test_empty_garbage_and_wrong_schema_files(self, tmp_path: Path) -> None:
        folder = tmp_path / attr.RUNS_TABLE
        folder.mkdir()
        (folder / "a.parquet").write_bytes(_runs_file(0))
        (folder / "b.parquet").write_bytes(_runs_file(100))
        (folder / "empty.parquet").write_bytes(b"")
        (folder / "garbage.parquet").write_bytes(b"PAR1 not really")
        pq.write_table(pa.table({"x": [1, 2]}), folder / "other-table.parquet")
        wrong_type = pa.table({"run_id": pa.array([7], pa.int64())})
        pq.write_table(wrong_type, folder / "wrong-type.parquet")
        skipped: list[tuple[Path, str]] = []
        store = RunStore(tmp_path, on_skip=lambda path, why: skipped.append((path, why)))
        assert store.run_count() == 80
        assert store.stats_by_label().column("count").to_pylist() == [28, 26, 26]
        reasons = {path.name: why for path, why in skipped}
        assert set(reasons) == {
            "empty.parquet", "garbage.parquet", "other-table.parquet", "wrong-type.parquet",
        }  # fmt: skip
        assert reasons["empty.parquet"] == "empty file (0 bytes)"
        assert reasons["other-table.parquet"] == "wrong schema: no column 'run_id'"
        assert reasons["wrong-type.parquet"].startswith("wrong schema: column 'run_id' is int64")
        assert all("\n" not in why for why in reasons.values())

    def test_a_file_whose_read_panics(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        damaged = _flipped(_runs_file(0), *DATA_PAGE_PANIC)
        path, bad = _store(tmp_path, damaged)
        pq.read_metadata(bad)  # the footer is intact: only reading the rows finds the damage
        error = _datafusion_read_error(bad)
        assert error is not None and not isinstance(error, Exception), error  # a Rust panic
        capfd.readouterr()
        store = RunStore(path, on_skip=lambda *_: None)
        recent = store.recent_runs(100)
        assert recent.num_rows == 40
        assert [p for p, _ in store.skipped_files] == [bad]
        assert store.skipped_files[0][1].startswith("Rust panic: ")
        assert store.summarize().column("count").to_pylist() == [14, 13, 13]

    def test_sql_is_read_only(self, tmp_path: Path) -> None:
        path, _ = _store(tmp_path, _runs_file(0))
        store = RunStore(path)
        target = tmp_path / "written"
        for statement in (
            f"COPY (SELECT * FROM runs) TO '{target}' STORED AS PARQUET",
            f"CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{target}'",
            "CREATE TABLE t AS SELECT * FROM runs",
            "CREATE VIEW v AS SELECT 1",
            "INSERT INTO runs SELECT * FROM runs",
            "SET datafusion.execution.batch_size = 1",
            "PREPARE p AS SELECT 1",
            "DROP TABLE runs",
        ):
            with pytest.raises(Exception, match="the store is read-only") as info:
                store.sql(statement)
            assert "\n" not in str(info.value), statement
        assert not target.exists()
        assert store.run_count() == 80


class TestCommandLine:
    """The commands warn once per damaged file, answer from the rest, never show a traceback."""

    def test_bit_flips_in_a_runs_file_footer(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        data = _runs_file(0)
        footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
        rng = random.Random(14)
        flips = [(rng.randrange(footer_start, len(data)), rng.randrange(8)) for _ in range(30)]
        skipped_runs = 0
        for trial, (position, bit) in enumerate([FOOTER_PANIC, *flips]):
            path, bad = _store(tmp_path / f"t{trial}", _flipped(data, position, bit))
            for command in (["runs", "--limit", "500"], ["stats"]):
                code = main([*command, "--store", str(path), "--json"])
                out, err = capfd.readouterr()
                assert code == 0, (position, bit, err)
                lines = err.splitlines()
                assert len(lines) <= 1, (position, bit, err)
                for line in lines:
                    assert line.startswith(
                        f"datafusion-otel: warning: skipped damaged file {bad}: "
                    )
                answer = json.loads(out)
                total = len(answer) if command[0] == "runs" else sum(r["count"] for r in answer)
                assert total in (40, 80), (position, bit)  # intact file alone, or both
                assert (total == 40) == bool(lines), (position, bit, err)
                skipped_runs += total == 40
        assert skipped_runs > 0

    def test_panic_in_a_subprocess_prints_one_line(self, tmp_path: Path) -> None:
        # a limit above the row count: no top-k filter can prune the damaged file unread
        path, bad = _store(tmp_path, _flipped(_runs_file(0), *DATA_PAGE_PANIC))
        done = subprocess.run(
            [sys.executable, "-m", "datafusion_otel.cli", "runs", "--limit", "500", "--store",
             str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [
            f"datafusion-otel: warning: skipped damaged file {bad}: "
            + done.stderr.split(f"{bad}: ", 1)[1].strip()
        ]
        assert "panicked" not in done.stderr.split(": Rust panic: ")[0]
        assert len(done.stdout.splitlines()) == 1 + 40  # header + the intact file's runs

    def test_nothing_readable_left_exits_1(self, tmp_path: Path) -> None:
        folder = tmp_path / attr.RUNS_TABLE
        folder.mkdir()
        (folder / "empty.parquet").write_bytes(b"")
        done = subprocess.run(
            [sys.executable, "-m", "datafusion_otel.cli", "stats", "--store", str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"datafusion-otel: warning: skipped damaged file {folder / 'empty.parquet'}: "
            "empty file (0 bytes)",
            f"datafusion-otel: error: the run store at {tmp_path} holds no readable runs yet",
        ]
