"""The datafusion-otel command line on a real store made by real TPC-H runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datafusion import SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel import config, tpch, tracked_run
from datafusion_otel._spans.payloads import add_payload_event
from datafusion_otel.cli import main
from datafusion_otel.store import ParquetSink, RunStore
from operator_metrics_helper import operator_metric_rows

CLI = Path(sys.executable).parent / "datafusion-otel"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tpch_dir: Path) -> Path:
    """A store with 4 TPC-H demo runs, one run with operator metrics, one failed run."""
    path = tmp_path_factory.mktemp("store")
    argv = ["demo", "--store", str(path), "--data-dir", str(tpch_dir), "--queries", "1,3,6,15"]
    assert main([*argv, "--scale", "0.01"]) == 0
    config.reset()
    ctx = SessionContext()
    tpch.register_tables(ctx, tpch_dir)
    with ParquetSink(path) as sink:
        with tracked_run(label="with-metrics", sink=sink) as run:
            df = ctx.sql(tpch.query_statements(3)[0])
            df.to_arrow_table()
            assert run.span is not None
            rows = operator_metric_rows(df)
            add_payload_event(
                run.span, attr.OPERATOR_METRICS_EVENT, {}, table=attr.OPERATOR_METRICS_TABLE,
                rows=rows,
            )  # fmt: skip
        with pytest.raises(Exception, match="nope"), tracked_run(label="broken", sink=sink):
            ctx.sql("SELECT nope FROM lineitem").to_arrow_table()
    return path


def _run_id(store: Path, label: str) -> str:
    rows = RunStore(store).sql(f"SELECT run_id FROM runs WHERE label = '{label}'").to_pylist()
    return str(rows[0]["run_id"])


class TestCommands:
    """Each command prints what a user asked for, as text and as JSON."""

    def test_demo_wrote_the_tpch_runs(self, store: Path) -> None:
        labels = RunStore(store).sql("SELECT label, status FROM runs ORDER BY label").to_pylist()
        assert [r["label"] for r in labels] == [
            "broken", "tpch-q01", "tpch-q03", "tpch-q06", "tpch-q15", "with-metrics",
        ]  # fmt: skip
        cache = RunStore(store).sql("SELECT DISTINCT cache_name FROM cache_state").to_pylist()
        assert {r["cache_name"] for r in cache} == set(attr.CACHE_SETTINGS)

    def test_runs(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["runs", "--store", str(store)]) == 0
        out = capsys.readouterr().out
        for needle in ("tpch-q15", "failed", "run_id"):
            assert needle in out
        assert main(["runs", "--store", str(store), "--json", "--limit", "3"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 3
        assert set(rows[0]) == {
            "run_id", "label", "status", "duration_ms", "rows", "started", "trace_url",
        }  # fmt: skip
        assert rows[0]["trace_url"] is None  # no DATAFUSION_OTEL_TRACE_URL set
        by_label = {r["label"]: r for r in json.loads(self._json(store, "runs"))}
        assert by_label["tpch-q01"]["rows"] == 4
        assert by_label["with-metrics"]["rows"] == 10  # root operator's output rows

    def _json(self, store: Path, *args: str) -> str:
        done = subprocess.run(
            [str(CLI), *args, "--store", str(store), "--json"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return done.stdout

    def test_show_prints_the_plan_tree(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        run_id = _run_id(store, "with-metrics")
        assert main(["show", run_id[:10], "--store", str(store)]) == 0
        out = capsys.readouterr().out
        assert run_id in out
        assert "datafusion_run_started_v1" in out
        for needle in ("SortPreservingMergeExec", "DataSourceExec", "rows=10", "time="):
            assert needle in out
        assert "bytes_scanned=" in out

    def test_show_json(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["show", _run_id(store, "tpch-q06"), "--store", str(store), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["run"]["label"] == "tpch-q06"
        assert {c["cache_name"] for c in doc["cache_state"]} == set(attr.CACHE_SETTINGS)
        assert all(c["hit_count"] is None for c in doc["cache_state"])
        # the demo compiles through the bridge: q06 has its plan tree from operator metrics
        assert len(doc["plan_trees"]) == 1
        assert "AggregateExec" in json.dumps(doc["plan_trees"])

    def test_stats(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["stats", "--store", str(store)]) == 0
        assert "p95_ms" in capsys.readouterr().out
        stats = {s["label"]: s for s in json.loads(self._json(store, "stats"))}
        assert stats["broken"]["error_rate"] == 1.0
        assert stats["tpch-q01"]["count"] == 1
        assert set(stats["tpch-q01"]) == {
            "label",
            "count",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        }

    def test_sql(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        query = "SELECT count(*) AS n FROM runs WHERE status = 'completed'"
        assert main(["sql", query, "--store", str(store), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == [{"n": 5}]
        assert main(["sql", "SELECT artifact FROM artifacts LIMIT 1", "--store", str(store)]) == 0
        assert "artifact" in capsys.readouterr().out


class TestErrors:
    """User errors: one line on stderr, exit status 1, never a traceback."""

    def _fails(self, argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("datafusion-otel: error: ")
        assert captured.err.count("\n") == 1
        assert needle in captured.err

    def test_unknown_run_id(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._fails(["show", "f" * 32, "--store", str(store)], capsys, "unknown run id")

    def test_missing_store(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._fails(["runs", "--store", str(tmp_path / "nope")], capsys, "no run store")

    def test_empty_store(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._fails(["stats", "--store", str(tmp_path)], capsys, "holds no runs")

    def test_bad_sql(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._fails(
            ["sql", "SELECT * FROM no_such_table", "--store", str(store)], capsys, "no_such_table"
        )

    def test_usage_error_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["frobnicate"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "invalid choice: 'frobnicate'" in err
        assert "--help" in err

    def test_subprocess_error_has_no_traceback(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "datafusion_otel.cli", "show", "abc", "--store", str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert (
            done.stderr.strip()
            == f"datafusion-otel: error: the run store at {tmp_path} holds no runs yet"
        )


def test_output_closed_early_is_not_an_error(store: Path) -> None:
    """``datafusion-otel sql ... | head -1``: the reader leaves early; no traceback, exit 0."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datafusion_otel.cli",
            "sql",
            "SELECT * FROM unnest(range(200000)) AS t(n)",
            "--store",
            str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # like `head -1` exiting
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in stderr
