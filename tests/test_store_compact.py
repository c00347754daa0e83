"""Compaction merges small files without losing or duplicating a row, while writers write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from datafusion_otel import DATAFUSION_RUNS_V1, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._coerce import coerce_rows
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.cli import main
from datafusion_otel.store import ParquetSink, RunStore, StoreError, compact_store
from datafusion_otel.store._fs import StoreFS, open_location, resolve_location
from datafusion_otel.store._layout import LEASE_KEY, is_merged, manifest_key
from s3_support import moto_server_fixture, s3_store_fixture  # noqa: F401

_WRITER = Path(__file__).with_name("store_writer_app.py")
_COUNTS = (
    "SELECT (SELECT count(*) FROM runs) AS runs, "
    "(SELECT count(DISTINCT run_id) FROM runs) AS distinct_runs, "
    "(SELECT count(*) FROM operator_metrics) AS operator_metrics, "
    "(SELECT count(*) FROM plan_artifacts) AS plan_artifacts, "
    "(SELECT count(*) FROM artifacts) AS artifacts"
)


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on a local folder, and the same on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    uri: str = request.getfixturevalue("s3_store")
    return uri


def _fs(uri: str) -> StoreFS:
    return open_location(resolve_location(uri))


def _data_files(uri: str) -> list[str]:
    return [o.key for o in _fs(uri).list() if o.key.endswith(".parquet")]


def _write_runs(uri: str, runs: int, labels: int = 3) -> None:
    """Tracked runs with real DataFusion queries: run, operator, plan and artifact rows."""
    ctx = SessionContext()
    ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'a')").collect()
    with ParquetSink(uri, batch_rows=4, flush_interval=0.01, max_buffer_rows=1000) as sink:
        for i in range(runs):
            with tracked_run(label=f"l{i % labels}", sink=sink):
                sql_to_datafusion("SELECT column2, count(*) FROM t GROUP BY column2", ctx=ctx)
                sql_to_datafusion("SELECT sum(column1) FROM t", ctx=ctx).to_arrow_table()
            if i % 5 == 4:
                sink.force_flush(10)  # many small files
        assert sink.force_flush(30)
        assert sink.dropped_rows == 0


def _snapshot(uri: str) -> tuple[dict[str, int], list[dict[str, object]]]:
    store = RunStore(uri)
    counts = store.sql(_COUNTS).to_pylist()[0]
    return counts, store.stats_by_label().to_pylist()


class TestCompaction:
    """Row counts and ``stats`` are equal before and after; the files are fewer."""

    def test_merges_every_table_and_keeps_every_row(self, store_uri: str) -> None:
        _write_runs(store_uri, 30)
        before_files = _data_files(store_uri)
        before = _snapshot(store_uri)
        assert before[0]["runs"] == 30 and before[0]["operator_metrics"] > 0
        report = compact_store(store_uri)
        after_files = _data_files(store_uri)
        assert _snapshot(store_uri) == before
        assert report.source_files == len(before_files)
        assert len(after_files) == report.merged_files < len(before_files)
        assert all(is_merged(key) for key in after_files)
        again = compact_store(store_uri)  # nothing left to merge
        assert (again.merged_files, again.deleted_files) == (0, 0)
        assert _snapshot(store_uri) == before

    def test_compaction_while_writers_write(self, store_uri: str, tmp_path: Path) -> None:
        writers, runs = 4, 120
        procs = []
        for i in range(writers):
            counter = tmp_path / f"c{i}"
            counter.write_bytes(bytes(16))
            procs.append(subprocess.Popen(
                [sys.executable, str(_WRITER), store_uri, str(runs), f"w{i}", str(counter)],
                stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        seen: list[tuple[int, int]] = []
        stop = threading.Event()

        gave_up: list[StoreError] = []  # "kept changing": a clear error, never a short answer
        failures: list[BaseException] = []

        def read() -> None:  # a reader all along: never a row twice, never a row missed
            store = RunStore(store_uri)
            try:
                while not stop.is_set():
                    try:
                        row = store.sql(
                            "SELECT count(*), count(DISTINCT run_id) FROM runs"
                        ).to_pylist()[0]
                    except StoreError as exc:
                        if "kept changing" not in str(exc):
                            raise
                        gave_up.append(exc)
                        continue
                    seen.append(tuple(row.values()))  # type: ignore[arg-type]
            except BaseException as exc:  # the test sees it, not pytest's thread hook
                failures.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        compactions = 0
        try:
            while any(p.poll() is None for p in procs):
                compact_store(store_uri)
                compactions += 1
        finally:
            stop.set()
            reader.join(60)
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.read()  # communicate() after poll() would return nothing
            proc.stdout.close()
            assert proc.wait(120) == 0 and "dropped=0" in out, out
        assert not failures, failures
        assert compactions >= 1 and seen  # answers came (a few reads may have given up)
        assert all(total == distinct for total, distinct in seen), seen
        totals = [total for total, _ in seen]  # writers only add runs: a dip is a missed file
        assert totals == sorted(totals), totals
        before = _snapshot(store_uri)
        assert before[0]["runs"] == before[0]["distinct_runs"] == writers * runs
        assert before[0]["artifacts"] == 2 * writers * runs
        compact_store(store_uri)
        assert _snapshot(store_uri) == before
        assert sum(s["count"] for s in before[1]) == writers * runs  # type: ignore[misc]


class TestInterruptedCompaction:
    """A compactor that dies at any step leaves a store that reads every row once."""

    def test_died_before_deleting_its_sources(
        self, store_uri: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _write_runs(store_uri, 10)
        before = _snapshot(store_uri)
        sources = _data_files(store_uri)
        fs_class = type(_fs(store_uri))
        real_delete = fs_class.delete

        def dying_delete(self: StoreFS, key: str) -> None:
            if key != LEASE_KEY:
                raise OSError("killed")
            real_delete(self, key)

        monkeypatch.setattr(fs_class, "delete", dying_delete)
        with pytest.raises(StoreError, match="killed"):
            compact_store(store_uri)
        monkeypatch.setattr(fs_class, "delete", real_delete)
        files = _data_files(store_uri)
        (merged,) = [k for k in files if is_merged(k)]  # died at its first merge's deletes
        manifest = _fs(store_uri).get(manifest_key(merged))
        assert manifest is not None
        covered = set(json.loads(manifest)["covers"])
        assert len(covered) >= 2 and covered <= set(sources) and set(sources) < set(files)
        assert _snapshot(store_uri) == before  # the complete merge wins: no row twice
        report = compact_store(store_uri)  # deletes the covered sources, merges the rest
        assert report.deleted_files == len(sources)
        assert not set(_data_files(store_uri)) & set(sources)
        assert _snapshot(store_uri) == before

    def test_a_merged_file_without_manifest_is_not_read(self, store_uri: str) -> None:
        _write_runs(store_uri, 10)
        before = _snapshot(store_uri)
        fs = _fs(store_uri)
        source = next(k for k in _data_files(store_uri) if k.startswith(attr.RUNS_TABLE))
        orphan = source.rsplit("/", 1)[0] + "/c-00000000000000000001-dead-1-000000.parquet"
        data = fs.get(source)
        assert data is not None
        fs.put(orphan, data)  # a dead compactor's merged file, its manifest never written
        assert _snapshot(store_uri) == before
        compact_store(store_uri, lease_seconds=600)  # too young to delete: still not read
        assert orphan in _data_files(store_uri)
        assert _snapshot(store_uri) == before
        if isinstance(resolve_location(store_uri), Path):
            old = time.time() - 3600
            os.utime(Path(store_uri) / orphan, (old, old))
            compact_store(store_uri, lease_seconds=600)
            assert orphan not in _data_files(store_uri)
            assert _snapshot(store_uri) == before


class TestLease:
    """One compactor at a time; a dead compactor's lease expires."""

    def test_a_held_lease_refuses_a_second_compactor_until_it_expires(
        self, store_uri: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        _write_runs(store_uri, 5)
        fs = _fs(store_uri)
        live = {"owner": "compact:other-host-1-abc:1", "expires_unix": time.time() + 3600}
        fs.put(LEASE_KEY, json.dumps(live).encode())
        with pytest.raises(StoreError, match="holds the lease"):
            compact_store(store_uri)
        assert main(["compact", "--store", store_uri]) == 1
        assert "holds the lease" in capsys.readouterr().err
        dead = {**live, "expires_unix": time.time() - 1}
        fs.put(LEASE_KEY, json.dumps(dead).encode())
        assert compact_store(store_uri).merged_files > 0
        assert fs.get(LEASE_KEY) is None  # released


class TestFormats:
    """A version-1 folder (no day folders, no _format.json) is read and compacted in place."""

    def test_version_one_store(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        folder = tmp_path / attr.RUNS_TABLE
        folder.mkdir(parents=True)
        for f in range(4):
            rows = [
                {"run_id": f"{f:04x}{i:028x}", "label": "old", "start_time_unix_ms": 1_700_000_000_000,
                 "end_time_unix_ms": 1_700_000_000_010, "status": "completed", "duration_ms": 10,
                 "metadata": "{}"}
                for i in range(5)
            ]  # fmt: skip
            name = f"{1_700_000_000_000_000_000 + f:020d}-{100 + f}-000000.parquet"
            pq.write_table(coerce_rows(rows, DATAFUSION_RUNS_V1), folder / name)
        store = RunStore(tmp_path)
        assert store.format_version == 1 and store.run_count() == 20
        capsys.readouterr()
        assert main(["compact", "--store", str(tmp_path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["merged_files"], report["source_files"]) == (1, 4)
        files = list(folder.glob("*.parquet"))
        assert len(files) == 1 and is_merged(files[0].name)
        assert (folder / manifest_key(files[0].name)).exists()
        assert RunStore(tmp_path).run_count() == 20
        assert pa.Table.equals(
            RunStore(tmp_path).sql("SELECT run_id FROM runs ORDER BY run_id"),
            store.sql("SELECT run_id FROM runs ORDER BY run_id"),
        )


class TestFormatDocument:
    """A writer records the format version; a newer version is refused with one line."""

    def test_local_store(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _write_runs(str(tmp_path), 2)
        assert json.loads((tmp_path / "_format.json").read_text()) == {
            "format": "datafusion-otel-run-store",
            "version": 2,
        }
        assert RunStore(tmp_path).format_version == 2
        (tmp_path / "_format.json").write_text(
            '{"format": "datafusion-otel-run-store", "version": 3}'
        )
        with pytest.raises(StoreError, match="format version 3"):
            RunStore(tmp_path)
        capsys.readouterr()
        assert main(["stats", "--store", str(tmp_path)]) == 1
        assert "format version 3" in capsys.readouterr().err


class TestReaderLifetime:
    """A query planned on a store's session still reads every row after the store is gone."""

    def test_a_dataframe_outliving_its_run_store(self, tmp_path: Path) -> None:
        _write_runs(str(tmp_path), 10)
        frame = RunStore(tmp_path).ctx.sql("SELECT run_id FROM runs")  # the store is dropped
        import gc

        gc.collect()
        assert len(frame.to_pylist()) == 10
        frame = RunStore(tmp_path).sql("SELECT count(*) AS n FROM runs")
        assert frame.to_pylist() == [{"n": 10}]


class TestWhatReadersRead:
    """The rules readers apply to a listing (`live_files`)."""

    @staticmethod
    def _listing(keys: list[str], manifests: dict[str, list[str] | None]) -> dict[str, list[str]]:
        from datafusion_otel.store._catalog import live_files
        from datafusion_otel.store._fs import StoreObject

        objects = [StoreObject(k, 1, 0.0) for k in keys]
        covers = {k: None if v is None else frozenset(v) for k, v in manifests.items()}
        listing = live_files(objects, covers)
        return {
            name: sorted(o.key for o in getattr(listing, name))
            for name in ("live", "covered", "incomplete", "superseded")
        }

    def test_rules(self) -> None:
        d = "datafusion_runs_v1/day=2026-12-01/"
        s1, s2, s3, s4 = (f"{d}{i}-w-000000.parquet" for i in range(1, 5))
        m1, m2, m3 = (f"{d}c-{i}-w-000000.parquet" for i in range(1, 4))
        # no manifest yet: the merged file is not read, its sources are
        got = self._listing([s1, s2, m1], {})
        assert got["live"] == [s1, s2] and got["incomplete"] == [m1]
        # complete: the merged file is read, its sources are not (still there or not)
        got = self._listing([s1, s2, s3, m1, manifest_key(m1)], {manifest_key(m1): [s1, s2]})
        assert got["live"] == [s3, m1] and got["covered"] == [s1, s2]
        # a newer merge of the merged file: only the newest is read
        manifests: dict[str, list[str] | None] = {
            manifest_key(m1): [s1, s2],
            manifest_key(m2): [m1, s3, s1, s2],
        }
        got = self._listing([s1, m1, m2, s3, s4], manifests)
        assert got["live"] == [s4, m2] and got["covered"] == sorted([s1, m1, s3])
        # two merges overlapping (two compactors): the newer wins, the older is not read
        manifests = {manifest_key(m2): [s1, s2], manifest_key(m3): [s2, s3]}
        got = self._listing([s1, s2, s3, m2, m3], manifests)
        assert got["live"] == [s1, m3] and got["superseded"] == [m2]
        # an unreadable manifest counts as none
        got = self._listing([s1, m1], {manifest_key(m1): None})
        assert got["live"] == [s1] and got["incomplete"] == [m1]
