"""The run store on S3-compatible object storage (a real moto server on 127.0.0.1)."""

from __future__ import annotations

import io
import json
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
from datafusion import SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel.cli import main
from datafusion_otel.store import ParquetSink, RunStore, StoreError
from datafusion_otel.store._fs import S3FS, resolve_location
from datafusion_otel.store._layout import FORMAT_KEY, FORMAT_VERSION
from s3_support import free_port, moto_server_fixture, s3_store_fixture  # noqa: F401

_WRITER = Path(__file__).with_name("store_writer_app.py")
_COUNTER = struct.Struct("<qq")  # runs completed, sink.dropped_rows


def _cli_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> object:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _objects(uri: str) -> S3FS:
    location = resolve_location(uri)
    assert not isinstance(location, Path)
    return S3FS(location)


class TestRoundTrip:
    """A sink writes an S3 prefix; RunStore and the CLI read it like a local folder."""

    def test_runs_artifacts_and_cli(
        self, s3_store: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ctx = SessionContext()
        sink = ParquetSink(s3_store, flush_interval=60)
        ids = []
        for label in ("etl", "etl", "report"):
            with tracked_run(label=label, sink=sink) as run:
                ctx.sql("SELECT 1 AS x").to_arrow_table()
            ids.append(run.run_id)
        assert sink.close(30) and sink.dropped_rows == 0
        assert sink.path == s3_store

        store = RunStore(s3_store, must_exist=True)
        assert store.format_version == FORMAT_VERSION
        assert store.run_count() == 3
        assert store.run(ids[0][:10]).run["run_id"] == ids[0]
        artifacts = store.sql("SELECT artifact, count(*) AS n FROM artifacts GROUP BY artifact")
        assert {r["artifact"]: r["n"] for r in artifacts.to_pylist()} == {
            attr.RUN_STARTED_ARTIFACT: 3,
            attr.RUN_FINISHED_ARTIFACT: 3,
        }
        fs = _objects(s3_store)
        keys = [o.key for o in fs.list()]
        assert FORMAT_KEY in keys
        assert all("/day=" in k for k in keys if k.endswith(".parquet"))

        runs = _cli_json(["runs", "--store", s3_store], capsys)
        assert isinstance(runs, list) and {r["run_id"] for r in runs} == set(ids)
        stats = _cli_json(["stats", "--store", s3_store], capsys)
        assert isinstance(stats, list)
        assert {r["label"]: r["count"] for r in stats} == {"etl": 2, "report": 1}
        shown = _cli_json(["show", ids[2], "--store", s3_store], capsys)
        assert isinstance(shown, dict) and shown["run"]["label"] == "report"
        counted = _cli_json(
            ["sql", "SELECT count(*) AS n FROM artifacts", "--store", s3_store], capsys
        )
        assert counted == [{"n": 6}]
        found = _cli_json(["findings", ids[1], "--store", s3_store], capsys)
        assert isinstance(found, list)

    def test_report_from_s3(
        self, s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ctx = SessionContext()
        with ParquetSink(s3_store) as sink, tracked_run(label="r", sink=sink) as run:
            ctx.sql("SELECT 1 AS x").to_arrow_table()
        target = tmp_path / "run.html"
        report = _cli_json(["report", run.run_id, "-o", str(target), "--store", s3_store], capsys)
        assert isinstance(report, dict) and report["run_id"] == run.run_id
        assert run.run_id in target.read_text()

    def test_files_written_after_opening_are_seen(self, s3_store: str) -> None:
        store = RunStore(s3_store)
        assert store.run_count() == 0
        with ParquetSink(s3_store) as sink, tracked_run(label="late", sink=sink):
            pass
        assert store.run_count() == 1

    def test_missing_store_and_newer_format_are_one_line_errors(
        self, s3_store: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(StoreError, match="no run store at s3://"):
            RunStore(s3_store, must_exist=True)
        capsys.readouterr()
        assert main(["runs", "--store", s3_store]) == 1
        assert capsys.readouterr().err.count("\n") == 1
        _objects(s3_store).put(FORMAT_KEY, b'{"format": "datafusion-otel-run-store", "version": 9}')
        with pytest.raises(StoreError, match="format version 9"):
            RunStore(s3_store)


def _start_writer(store: str, runs: int, label: str, counter: Path, bound: int | None = None):  # type: ignore[no-untyped-def]
    counter.write_bytes(bytes(_COUNTER.size))
    args = [sys.executable, str(_WRITER), store, str(runs), label, str(counter)]
    if bound is not None:  # a small buffer cap (and batches that fit it)
        args += [str(bound), str(bound // 2)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _counter(path: Path) -> tuple[int, int]:
    with open(path, "rb") as handle:
        shared = mmap.mmap(handle.fileno(), _COUNTER.size, access=mmap.ACCESS_READ)
        values = _COUNTER.unpack_from(shared, 0)
        shared.close()
    return int(values[0]), int(values[1])


class TestManyWriters:
    """8 writer processes share one prefix with no coordination."""

    WRITERS = 8
    RUNS = 200

    def test_eight_writers_two_hundred_runs_each(
        self, s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        procs = [
            _start_writer(s3_store, self.RUNS, f"w{i}", tmp_path / f"c{i}")
            for i in range(self.WRITERS)
        ]
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
            assert "closed ok=True dropped=0" in out
        total = self.WRITERS * self.RUNS
        store = RunStore(s3_store)
        assert store.run_count() == total
        assert store.sql("SELECT count(DISTINCT run_id) AS n FROM runs").to_pylist() == [
            {"n": total}
        ]
        per_label = store.sql("SELECT label, count(*) AS n FROM runs GROUP BY label").to_pylist()
        assert {r["label"]: r["n"] for r in per_label} == {
            f"w{i}": self.RUNS for i in range(self.WRITERS)
        }
        artifacts = store.sql(
            "SELECT artifact, count(*) AS n, count(DISTINCT run_id) AS runs FROM artifacts "
            "GROUP BY artifact"
        ).to_pylist()
        assert {r["artifact"]: (r["n"], r["runs"]) for r in artifacts} == {
            attr.RUN_STARTED_ARTIFACT: (total, total),
            attr.RUN_FINISHED_ARTIFACT: (total, total),
        }
        writers = {o.key.rsplit("/", 1)[-1].split("-")[2] for o in _objects(s3_store).list()
                   if o.key.endswith(".parquet")}  # fmt: skip
        assert len(writers) == self.WRITERS  # every file names its writer (host-pid-random)
        runs = _cli_json(["runs", "--limit", "5000", "--store", s3_store], capsys)
        assert isinstance(runs, list) and len(runs) == total
        stats = _cli_json(["stats", "--store", s3_store], capsys)
        assert isinstance(stats, list) and sum(r["count"] for r in stats) == total

    def test_a_writer_killed_midway(self, s3_store: str, tmp_path: Path) -> None:
        bound = 50
        procs = [  # the victim has a small buffer cap; the others keep the default
            _start_writer(
                s3_store, self.RUNS, f"w{i}", tmp_path / f"c{i}", bound if i == 0 else None
            )
            for i in range(self.WRITERS)
        ]
        victim = procs[0]
        assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while _counter(tmp_path / "c0")[0] < self.RUNS // 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
        victim.stdout.close()
        assert victim.returncode == -signal.SIGKILL
        done, dropped = _counter(tmp_path / "c0")
        assert self.RUNS // 2 <= done < self.RUNS, "the writer was not killed midway"
        for proc in procs[1:]:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0 and "dropped=0" in out, out

        fs = _objects(s3_store)
        for obj in fs.list():  # no partial object: every object listed reads in full
            if obj.key.endswith(".parquet"):
                data = fs.get(obj.key)
                assert data is not None and len(data) == obj.size
                assert pq.read_table(io.BytesIO(data)).num_rows > 0
        store = RunStore(s3_store)
        assert store.damaged_files() == []
        others = store.sql("SELECT count(*) AS n FROM runs WHERE label <> 'w0'").to_pylist()
        assert others == [{"n": (self.WRITERS - 1) * self.RUNS}]
        victim_runs = store.sql("SELECT run_id FROM runs WHERE label = 'w0'").column(0).to_pylist()
        victim_artifacts = store.sql(
            "SELECT count(*) AS n FROM artifacts a WHERE a.run_id IN "
            "(SELECT run_id FROM runs WHERE label = 'w0') "
            "OR a.run_id NOT IN (SELECT run_id FROM runs)"
        ).to_pylist()[0]["n"]
        assert len(victim_runs) <= done + 1
        # each completed run hands 3 rows to the sink (run row, started, finished); the loss
        # bound is 2 x max_buffer_rows rows, drops on arrival are counted apart
        lost = 3 * done - dropped - (len(victim_runs) + victim_artifacts)
        assert lost <= 2 * bound, (done, dropped, len(victim_runs), victim_artifacts)


class TestDeadEndpoint:
    """An unreachable or silent S3 endpoint never holds process exit beyond the bound."""

    CODE = textwrap.dedent("""
        import sys
        from datafusion_otel import tracked_run
        from datafusion_otel.store import ParquetSink
        sink = ParquetSink("s3://bucket/runs", flush_interval=3600)
        for _ in range(5):
            with tracked_run(label="dead", sink=sink):
                pass
        if sys.argv[1] == "close":
            ok = sink.close(2)
            print(f"ok={ok} dropped={sink.dropped_rows}", flush=True)
        print("exiting", flush=True)
    """)

    def _run(self, endpoint: str, mode: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "DATAFUSION_OTEL_EXIT_TIMEOUT": "2",
            "DATAFUSION_OTEL_S3_TIMEOUT": "600",  # without the exit bound a write would hang
        }
        # the timeout only detects a hang (600 s requests, retried): the bound is 2 s
        return subprocess.run(
            [sys.executable, "-c", self.CODE, mode],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def test_refused_connections_drop_and_count_the_rows(self) -> None:
        done = self._run(f"http://127.0.0.1:{free_port()}", "close")
        assert done.returncode == 0, done.stderr
        assert "ok=False dropped=15" in done.stdout  # 5 runs x (run row + 2 artifacts)

    def test_a_silent_endpoint_does_not_hold_exit(self) -> None:
        from listeners import SilentServer

        server = SilentServer()
        try:
            closed = self._run(f"http://127.0.0.1:{server.port}", "close")
            at_exit = self._run(f"http://127.0.0.1:{server.port}", "atexit")
        finally:
            server.close()
        assert closed.returncode == 0 and "ok=False" in closed.stdout, closed.stderr
        assert at_exit.returncode == 0 and "exiting" in at_exit.stdout, at_exit.stderr
