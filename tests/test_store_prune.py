"""Retention: ``prune --older-than`` removes whole days, every table of a run together."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datafusion_otel import DATAFUSION_RUNS_V1
from datafusion_otel import attributes as attr
from datafusion_otel._coerce import coerce_rows
from datafusion_otel.cli import main
from datafusion_otel.store import ParquetSink, RunStore, compact_store, prune_store
from datafusion_otel.store._fs import open_location, resolve_location
from datafusion_otel.store._layout import LEASE_KEY
from datafusion_otel.store.maintenance import parse_age
from s3_support import moto_server_fixture, s3_store_fixture  # noqa: F401

_DAY_MS = 86_400_000
_TABLES = (
    "SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM operator_metrics) AS ops, "
    "(SELECT count(*) FROM artifacts) AS artifacts"
)


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on a local folder, and the same on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    uri: str = request.getfixturevalue("s3_store")
    return uri


def _now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def _record_run(sink: ParquetSink, run_id: str, start_ms: int) -> None:
    """A run as the package records it: started artifact, operator rows, run row, finished."""
    sink.record_artifact(
        attr.RUN_STARTED_ARTIFACT, {"run_id": run_id, "start_time_unix_ms": start_ms}
    )
    sink.record_events(
        attr.OPERATOR_METRICS_TABLE,
        [{"event_time_unix_ms": start_ms, "run_id": run_id, "span_id": f"{i:016x}",
          "operator_path": "0", "operator_name": "X",
          "output_rows": i} for i in range(3)],
    )  # fmt: skip
    sink.record_events(
        attr.RUNS_TABLE,
        [{"run_id": run_id, "label": "daily", "start_time_unix_ms": start_ms,
          "end_time_unix_ms": start_ms + 10, "status": "completed", "duration_ms": 10,
          "metadata": "{}"}],
    )  # fmt: skip
    sink.record_artifact(attr.RUN_FINISHED_ARTIFACT, {"run_id": run_id})


def _store_with_ages(uri: str, ages_days: list[int]) -> dict[int, str]:
    """One run per age (days before now), written today; returns age -> run id."""
    ids = {age: f"{age:032x}" for age in ages_days}
    with ParquetSink(uri, flush_interval=60) as sink:
        for age, run_id in ids.items():
            _record_run(sink, run_id, _now_ms() - age * _DAY_MS)
        assert sink.force_flush(30) and sink.dropped_rows == 0
    return ids


class TestPrune:
    """Exactly the old days go, with all of their runs' rows in every table."""

    def test_removes_exactly_the_old_days(self, store_uri: str) -> None:
        ids = _store_with_ages(store_uri, [45, 31, 29, 2, 0])
        assert RunStore(store_uri).sql(_TABLES).to_pylist() == [
            {"runs": 5, "ops": 15, "artifacts": 10}
        ]
        report = prune_store(store_uri, older_than=dt.timedelta(days=30))
        assert len(report.days) == 2 and report.kept_days == 3
        store = RunStore(store_uri)
        left = set(store.sql("SELECT run_id FROM runs").column(0).to_pylist())
        assert left == {ids[29], ids[2], ids[0]}
        for table in ("operator_metrics", "artifacts"):  # every table of a run together
            rows = set(store.sql(f"SELECT DISTINCT run_id FROM {table}").column(0).to_pylist())
            assert rows == left, table
        assert store.sql(_TABLES).to_pylist() == [{"runs": 3, "ops": 9, "artifacts": 6}]
        fs = open_location(resolve_location(store_uri))
        assert fs.get(LEASE_KEY) is None

    def test_after_compaction_and_by_the_cli(
        self, store_uri: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ids = _store_with_ages(store_uri, [40, 10, 1])
        compact_store(store_uri)
        capsys.readouterr()
        assert main(["prune", "--older-than", "30d", "--dry-run", "--store", store_uri]) == 0
        assert "would delete" in capsys.readouterr().out
        assert RunStore(store_uri).run_count() == 3
        assert main(["prune", "--older-than", "30d", "--json", "--store", store_uri]) == 0
        report = json.loads(capsys.readouterr().out)
        old_day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)).strftime("%Y-%m-%d")
        assert report["days"] == [old_day]
        store = RunStore(store_uri)
        assert set(store.sql("SELECT run_id FROM runs").column(0).to_pylist()) == {ids[10], ids[1]}
        assert main(["prune", "--older-than", "30x", "--store", store_uri]) == 2

    def test_version_one_files_are_kept_and_counted(self, tmp_path: Path) -> None:
        folder = tmp_path / attr.RUNS_TABLE
        folder.mkdir(parents=True)
        row = {"run_id": "ab" * 16, "label": "v1", "start_time_unix_ms": 1_600_000_000_000,
               "end_time_unix_ms": 1_600_000_000_001, "status": "completed", "duration_ms": 1,
               "metadata": "{}"}  # fmt: skip
        pq.write_table(coerce_rows([row], DATAFUSION_RUNS_V1), folder / "1-1-000000.parquet")
        report = prune_store(tmp_path, older_than=dt.timedelta(days=1))
        assert (report.days, report.undated_files) == ([], 1)
        assert RunStore(tmp_path).run_count() == 1


def test_ages() -> None:
    assert parse_age("30d") == dt.timedelta(days=30)
    assert parse_age("12h") == dt.timedelta(hours=12)
    assert parse_age("2w") == dt.timedelta(weeks=2)
    for bad in ("30", "d", "-1d", "0d", "1y"):
        with pytest.raises(ValueError):
            parse_age(bad)


@pytest.mark.parametrize("text", ["99999999999d", "999999999d", "36501d", "99999999999999w"])
def test_an_age_out_of_range_is_a_usage_error(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="at most 36500d"):
        parse_age(text)
    assert main(["prune", "--older-than", text, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at most 36500d" in err and "Traceback" not in err
    assert parse_age("36500d") == dt.timedelta(days=36500)


def test_prune_touches_only_table_folders_and_skips_a_bad_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _store_with_ages(str(tmp_path), [45, 1])
    stray = tmp_path / attr.RUNS_TABLE / "day=9999-99-99" / "x.parquet"
    stray.parent.mkdir()
    stray.write_bytes(b"not a store file")
    mine = tmp_path / "tpch" / "day=2001-01-01" / "lineitem.parquet"  # not a table folder
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"a user's file")
    assert main(["prune", "--older-than", "30d", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "deleted 4 files of 1 days" in out, out
    assert "day=9999-99-99" in out
    assert stray.exists() and mine.exists()
    store = RunStore(tmp_path)
    assert set(store.sql("SELECT run_id FROM runs").column(0).to_pylist()) == {ids[1]}
