"""What the commands print: scan times, trace links, JSON metadata, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel._spans.payloads import add_payload_event
from datafusion_otel.cli import main
from datafusion_otel.store import ParquetSink, RunStore
from operator_metrics_helper import operator_metric_rows

METADATA = {"owner": "etl", "tags": ["a", "b"], "ok": True, "none": None}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run scanning a Parquet file and an in-memory table, with operator metrics."""
    path = tmp_path_factory.mktemp("store")
    data = tmp_path_factory.mktemp("data") / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(200_000))}), data)
    ctx = SessionContext()
    ctx.register_parquet("numbers", str(data))
    ctx.from_pydict({"m": [1, 2, 3]}, name="small")
    with ParquetSink(path) as sink, tracked_run(label="scan", sink=sink, metadata=METADATA) as run:
        assert run.span is not None
        for sql in (
            "SELECT sum(n) FROM numbers WHERE n % 7 = 0",
            "SELECT m FROM small WHERE m > 1",
        ):
            df = ctx.sql(sql)
            df.collect()
            rows = operator_metric_rows(df, plan_hash=sql[:20])
            add_payload_event(
                run.span, attr.OPERATOR_METRICS_EVENT, {}, table=attr.OPERATOR_METRICS_TABLE,
                rows=rows,
            )  # fmt: skip
    return path


def _run_id(store: Path) -> str:
    return str(RunStore(store).sql("SELECT run_id FROM runs").column(0)[0].as_py())


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("datafusion-otel")
    return err


class TestShow:
    """``show``: scan time where DataFusion records it, "-" where nothing is, JSON metadata."""

    def test_scan_time_comes_from_time_elapsed_processing(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["show", _run_id(store), "--store", str(store), "--json"]) == 0
        trees = json.loads(capsys.readouterr().out)["plan_trees"]
        scans = [op for tree in trees for op in tree["operators"] if op["name"] == "DataSourceExec"]
        parquet = [op for op in scans if op["time_metric"] == "time_elapsed_processing"]
        assert len(parquet) == 1
        assert parquet[0]["time_ms"] == parquet[0]["scan_time_ms"] > 0
        memory = [op for op in scans if op is not parquet[0]]
        assert len(memory) == 1
        assert memory[0]["time_ms"] is None and memory[0]["time_metric"] is None
        filters = [op for tree in trees for op in tree["operators"] if op["name"] == "FilterExec"]
        assert all(op["time_metric"] == "elapsed_compute" for op in filters)

    def test_text_prints_scan_time_and_dash(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["show", _run_id(store), "--store", str(store)]) == 0
        out = capsys.readouterr().out
        scans = {line.split()[1]: line for line in out.splitlines() if "DataSourceExec" in line}
        assert set(scans) == {"rows=200000", "rows=-"}  # the in-memory scan records nothing
        parquet, memory = scans["rows=200000"], scans["rows=-"]
        assert parquet.endswith(" ms") and "time=0.0 ms" not in parquet and "time=-" not in parquet
        assert memory.endswith("time=-")

    def test_metadata_prints_as_json(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["show", _run_id(store), "--store", str(store)]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("metadata"))
        printed = json.loads(line.removeprefix("metadata").strip())
        assert {key: printed[key] for key in METADATA} == METADATA  # plus the package's keys


class TestTraceLinks:
    """``DATAFUSION_OTEL_TRACE_URL`` gives each run a link in ``runs`` and ``show``."""

    TEMPLATE = "http://localhost:16686/trace/{run_id}"

    def test_runs_and_show_print_links(
        self, store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(attr.TRACE_URL_ENV, self.TEMPLATE)
        run_id = _run_id(store)
        link = f"http://localhost:16686/trace/{run_id}"
        assert main(["runs", "--store", str(store)]) == 0
        out = capsys.readouterr().out
        assert "trace_url" in out.splitlines()[0]
        assert link in out  # whole, not cut at 60 characters
        assert main(["runs", "--store", str(store), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["trace_url"] == link
        assert main(["show", run_id[:8], "--store", str(store)]) == 0
        assert f"trace     {link}" in capsys.readouterr().out.splitlines()
        assert main(["show", run_id, "--store", str(store), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["trace_url"] == link

    def test_no_template_no_link(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["runs", "--store", str(store)]) == 0
        assert "trace" not in capsys.readouterr().out

    @pytest.mark.parametrize(
        "template", ["http://localhost:16686/trace/", "localhost:16686/trace/{run_id}"]
    )
    def test_a_bad_template_is_one_line(
        self,
        store: Path,
        template: str,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv(attr.TRACE_URL_ENV, template)
        for command in (["runs"], ["show", _run_id(store)]):
            err = _one_line_error([*command, "--store", str(store)], capsys)
            assert attr.TRACE_URL_ENV in err


class TestOneLineErrors:
    """Bad arguments, statements that are not queries and unusable stores: one line each."""

    @pytest.mark.parametrize(
        ("argv", "needle"),
        [
            (["runs", "--limit", "-1"], "--limit: expected a whole number from 1 to"),
            (["runs", "--limit", "ten"], "got 'ten'"),
            (["runs", "--limit", "9" * 30], "--limit: expected a whole number from 1 to"),
            (["runs", "--store", ""], "--store: expected a folder"),
            (["demo", "--scale", "0"], "--scale: expected a number > 0, got '0'"),
            (["demo", "--queries", "99"], "--queries: TPC-H queries are numbered 1-22"),
            (["demo", "--queries", "x"], "--queries: --queries takes numbers like 1,3,15"),
            (["show"], "RUN_ID"),
            (["sql"], "QUERY"),
        ],
    )
    def test_bad_arguments(
        self, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert needle in _one_line_error(argv, capsys, code=2)

    @pytest.mark.parametrize(
        "statement",
        [
            "COPY (SELECT * FROM runs) TO '{target}' STORED AS PARQUET",
            "CREATE TABLE t AS SELECT * FROM runs",
            "INSERT INTO runs SELECT * FROM runs",
            "SET datafusion.execution.batch_size = 1",
            "PREPARE p AS SELECT 1",
        ],
    )
    def test_sql_refuses_what_is_not_a_query(
        self, store: Path, tmp_path: Path, statement: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        target = tmp_path / "copied"
        query = statement.format(target=target)
        err = _one_line_error(["sql", query, "--store", str(store)], capsys)
        assert "the store is read-only" in err
        assert not target.exists()

    def test_other_remote_schemes_are_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        err = _one_line_error(["runs", "--store", "gs://bucket/runs"], capsys)
        assert "gs:// scheme is not supported" in err
        assert not (tmp_path / "gs:").exists()

    @pytest.mark.parametrize("kind", ["file", "below-a-file"])
    def test_demo_store_that_cannot_be_a_folder(self, tmp_path: Path, kind: str) -> None:
        a_file = tmp_path / "a-file"
        a_file.write_text("x")
        store = a_file if kind == "file" else a_file / "store"
        done = subprocess.run(
            [sys.executable, "-m", "datafusion_otel.cli", "demo", "--store", str(store)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(
            f"datafusion-otel: error: cannot use {store} as the run store"
        )
