"""The design document's examples, the README quickstart, docstring examples and the demo run."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from datafusion import SessionContext

import datafusion_otel
from datafusion_otel import DataFusionInstrumentor, cli

# Verbatim from the design document (scope2-run-tracking.md), original import paths.
DESIGN_START_RUN = """
from obs.datafusion_runs import start_run
from obs.diagnostics import DiagnosticsCollector

sink = DiagnosticsCollector()
run = start_run(label="query_execution", sink=sink, metadata={"user": "admin"})
print(f"Run started: {run.run_id}")
"""

DESIGN_FINISH_RUN = """
from obs.datafusion_runs import finish_run

finish_run(run, sink=sink, status="completed")
print(f"Run completed in {run.payload()['duration_ms']}ms")
"""

DESIGN_TRACKED_RUN = """
from obs.datafusion_runs import tracked_run

with tracked_run(label="data_pipeline", sink=sink) as run:
    # Automatically records start
    df = ctx.sql("SELECT * FROM large_table")
    result = df.to_arrow_table()
    # Automatically records completion
"""


def _ported(snippet: str) -> str:
    """Change only the import paths, as a user moving to datafusion-otel would."""
    return snippet.replace("obs.datafusion_runs", "datafusion_otel.runs").replace(
        "obs.diagnostics", "datafusion_otel.diagnostics"
    )


class TestDesignDocumentExamples:
    """The design document's run examples work with only the import path changed."""

    def test_start_and_finish_run(self, capsys):
        namespace: dict[str, object] = {}
        exec(_ported(DESIGN_START_RUN), namespace)
        run = namespace["run"]
        assert capsys.readouterr().out == f"Run started: {run.run_id}\n"
        exec(_ported(DESIGN_FINISH_RUN), namespace)
        out = capsys.readouterr().out
        assert re.fullmatch(r"Run completed in \d+ms\n", out)
        assert out == f"Run completed in {run.duration_ms}ms\n"
        assert uuid.UUID(hex=run.run_id).hex == run.run_id
        sink = namespace["sink"]
        artifacts = sink.artifacts_snapshot()
        (started,) = artifacts["datafusion_run_started_v1"]
        (finished,) = artifacts["datafusion_run_finished_v1"]
        assert started["run_id"] == finished["run_id"] == run.run_id
        assert started["metadata"] == {"user": "admin"}
        assert finished["status"] == "completed"
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id
        assert row["label"] == "query_execution"
        # the row's metadata adds whether the sampler selected the run for export
        assert json.loads(row["metadata"]) == {"user": "admin", "datafusion_otel.exported": False}

    def test_tracked_run_around_a_query(self):
        ctx = SessionContext()
        ctx.from_pydict({"id": list(range(100)), "v": [i * 2 for i in range(100)]}, "large_table")
        namespace: dict[str, object] = {
            "ctx": ctx,
            "sink": datafusion_otel.DiagnosticsCollector(),
        }
        exec(_ported(DESIGN_TRACKED_RUN), namespace)
        run, result, sink = namespace["run"], namespace["result"], namespace["sink"]
        assert result.equals(ctx.sql("SELECT * FROM large_table").to_arrow_table())
        assert run.status == "completed"
        assert uuid.UUID(hex=run.run_id).hex == run.run_id
        artifacts = sink.artifacts_snapshot()
        assert [a["run_id"] for a in artifacts["datafusion_run_started_v1"]] == [run.run_id]
        assert [a["run_id"] for a in artifacts["datafusion_run_finished_v1"]] == [run.run_id]
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert (row["run_id"], row["label"], row["status"]) == (
            run.run_id,
            "data_pipeline",
            "completed",
        )


class TestReadmeAndDemo:
    """The README quickstart and the main job work as shown."""

    def test_readme_quickstart(self, capsys):
        readme = Path(__file__).resolve().parents[1] / "README.md"
        blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
        quickstart = next(b for b in blocks if "tracked_run" in b)
        namespace: dict[str, object] = {}
        exec(quickstart, namespace)
        run = namespace["run"]
        assert run.status == "completed"
        assert namespace["runs"].num_rows == 1
        assert run.run_id in capsys.readouterr().out

    def test_demo_command(self, capsys, tmp_path, tpch_dir):
        store = tmp_path / "store"
        argv = ["demo", "--store", str(store), "--data-dir", str(tpch_dir), "--queries", "1,6"]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert re.search(r"\[ ?1/2\] tpch-q01  [0-9a-f]{32}\s+completed", out)
        assert "2/2 queries completed" in out
        assert "note: DataFusionInstrumentor was already on" not in out
        # a second demo on the same store: its closing table covers its own runs only
        argv = ["demo", "--store", str(store), "--data-dir", str(tpch_dir), "--queries", "6,3"]
        assert cli.main(argv) == 0
        stats = _stats_lines(capsys.readouterr().out)
        assert sorted(stats) == ["tpch-q03", "tpch-q06"]
        assert [line.split()[1] for line in stats.values()] == ["1", "1"]  # count, not 2

    @pytest.mark.filterwarnings("ignore:datafusion-otel. DataFusionInstrumentor found no")
    def test_demo_says_when_the_programs_instrumentor_captures_no_plans(
        self, capsys, tmp_path, tpch_dir
    ):
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(capture_plan_artifacts=False)  # as opentelemetry-instrument does
        try:
            argv = ["demo", "--store", str(tmp_path), "--data-dir", str(tpch_dir), "--queries", "6"]
            assert cli.main(argv) == 0
            assert instrumentor.is_instrumented_by_opentelemetry  # left as the program set it
            assert instrumentor.options is not None
            assert instrumentor.options.capture_plan_artifacts is False
        finally:
            instrumentor.uninstrument()
        out = capsys.readouterr().out
        assert "note: DataFusionInstrumentor was already on without plan capture" in out
        assert "no operator spans" in out


def _stats_lines(out: str) -> dict[str, str]:
    """The rows of the demo's closing statistics table, keyed by label."""
    table = out.split("label     count", 1)[1].split("queries completed", 1)[0]
    return {line.split()[0]: line for line in table.splitlines() if line.startswith("tpch-")}


@pytest.mark.parametrize(
    "module",
    ["datafusion_otel", "datafusion_otel.diagnostics", "datafusion_otel.processor"],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


class TestExampleScripts:
    """The scripts under examples/ run as their docstrings say."""

    EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

    def _run(self, *argv: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [*argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **(env or {})},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def test_quickstart(self, tmp_path):
        out = self._run(sys.executable, str(self.EXAMPLES / "quickstart.py"), str(tmp_path))
        assert re.search(r"run [0-9a-f]{32}: completed", out)
        assert "WHERE id >= ? ORDER BY id" in out
        assert "FilterExec" in out

    def test_design_doc_end_to_end(self):
        out = self._run(sys.executable, str(self.EXAMPLES / "design_doc_end_to_end.py"))
        assert "'status': 'completed'" in out
        assert "COUNT(DISTINCT" in out
        assert out.rstrip().endswith("metrics")  # EXPLAIN ANALYZE from metrics: ran once

    def test_instrumented_app(self):
        instrument = Path(sys.executable).parent / "opentelemetry-instrument"
        out = self._run(
            str(instrument),
            sys.executable,
            str(self.EXAMPLES / "instrumented_app.py"),
            env={
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
            },
        )
        assert "{'city': 'Lima', 't': 19.0}" in out
        assert '"name": "SELECT weather"' in out
