"""RunStore: recent runs, one run with its rows, exact statistics, and clear errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from datafusion_otel import attributes as attr
from datafusion_otel.rollups import summarize_runs
from datafusion_otel.store import ParquetSink, RunNotFoundError, RunStore, StoreError


def _write_runs(path: Path, count: int, seed: int = 7) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for index in range(count):
        start = 1_700_000_000_000 + int(rng.integers(0, 6 * 3_600_000))
        duration = int(rng.lognormal(4, 1))
        rows.append(
            {
                "run_id": f"{index:032x}",
                "label": str(rng.choice(["etl", "report", "adhoc"])),
                "start_time_unix_ms": start,
                "end_time_unix_ms": start + duration,
                "status": "failed" if rng.random() < 0.15 else "completed",
                "duration_ms": duration,
                "metadata": "{}",
            }
        )
    with ParquetSink(path, batch_rows=97) as sink:  # several files
        for row in rows:
            sink.record_events(attr.RUNS_TABLE, [row])
    return rows


class TestStats:
    """stats_by_label and summarize_runs agree with numpy's percentiles exactly."""

    def test_stats_by_label_match_numpy(self, tmp_path: Path) -> None:
        rows = _write_runs(tmp_path, 600)
        stats = RunStore(tmp_path).stats_by_label().to_pylist()
        assert [s["label"] for s in stats] == ["adhoc", "etl", "report"]
        for stat in stats:
            mine = [r for r in rows if r["label"] == stat["label"]]
            durations = np.array([r["duration_ms"] for r in mine], dtype=float)
            failed = sum(r["status"] == "failed" for r in mine)
            assert stat["count"] == len(mine)
            assert stat["error_rate"] == pytest.approx(failed / len(mine), abs=1e-12)
            for column, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
                assert stat[column] == pytest.approx(np.percentile(durations, q), rel=1e-12)

    def test_time_buckets_match_numpy(self, tmp_path: Path) -> None:
        rows = _write_runs(tmp_path, 300, seed=3)
        table = summarize_runs(RunStore(tmp_path).ctx, bucket=dt.timedelta(hours=1))
        out = table.to_pylist()
        assert sum(r["count"] for r in out) == 300
        for row in out:
            start = row["bucket_start_unix_ms"]
            mine = [
                r["duration_ms"]
                for r in rows
                if r["label"] == row["label"]
                and start <= r["start_time_unix_ms"] < start + 3_600_000
            ]
            assert row["count"] == len(mine)
            assert row["p95_ms"] == pytest.approx(np.percentile(mine, 95), rel=1e-12)

    def test_labels_filter_and_bad_bucket(self, tmp_path: Path) -> None:
        _write_runs(tmp_path, 50)
        ctx = RunStore(tmp_path).ctx
        assert {r["label"] for r in summarize_runs(ctx, labels=["etl"]).to_pylist()} == {"etl"}
        with pytest.raises(ValueError, match="bucket"):
            summarize_runs(ctx, bucket=dt.timedelta(0))


class TestQueries:
    """Recent runs, single runs by id or prefix, and the errors a user can act on."""

    def test_recent_runs_newest_first(self, tmp_path: Path) -> None:
        rows = _write_runs(tmp_path, 40)
        recent = RunStore(tmp_path).recent_runs(5).to_pylist()
        expected = sorted(rows, key=lambda r: -int(r["start_time_unix_ms"]))[:5]  # type: ignore[call-overload]
        assert [r["run_id"] for r in recent] == [r["run_id"] for r in expected]
        assert "output_rows" in recent[0]

    def test_unknown_and_ambiguous_run_ids(self, tmp_path: Path) -> None:
        _write_runs(tmp_path, 20)
        store = RunStore(tmp_path)
        assert store.run("0" * 31 + "5").run["run_id"] == "0" * 31 + "5"
        with pytest.raises(RunNotFoundError, match="unknown run id"):
            store.run("f" * 32)
        with pytest.raises(RunNotFoundError, match="several runs"):
            store.run("0000")
        with pytest.raises(RunNotFoundError, match="hex"):
            store.run("not-hex'; DROP")

    def test_missing_store_and_bad_sql(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match="no run store"):
            RunStore(tmp_path / "missing", must_exist=True)
        store = RunStore(tmp_path)
        with pytest.raises(StoreError) as info:
            store.sql("SELEC nonsense")
        assert "\n" not in str(info.value)

    def test_damaged_file_is_skipped_and_named(self, tmp_path: Path) -> None:
        _write_runs(tmp_path, 10)
        bad = tmp_path / attr.RUNS_TABLE / "00000000000000000000-1-000000.parquet"
        bad.write_bytes(b"not a parquet file at all")
        skipped: list[tuple[Path, str]] = []
        store = RunStore(tmp_path, on_skip=lambda path, reason: skipped.append((path, reason)))
        assert store.run_count() == 10
        assert [path for path, _ in skipped] == [bad]
        assert store.skipped_files == skipped
