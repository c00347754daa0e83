"""Regressions from the review of the store: readers racing a compaction, atomic writes."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from datafusion import SessionContext

import datafusion_otel
from datafusion_otel import tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.store import ParquetSink, RunStore, StoreError, _day_files, compact_store
from datafusion_otel.store._catalog import Catalog
from datafusion_otel.store._fs import LocalFS, StoreObject
from datafusion_otel.store._layout import (
    FORMAT_KEY,
    FORMAT_VERSION,
    LEASE_KEY,
    format_document,
    parse_format,
)
from datafusion_otel.store._tables import StoreTables
from otel_state import Handles, handles_fixture  # noqa: F401
from s3_support import moto_server_fixture, s3_store_fixture  # noqa: F401
from test_store_compact import _fs, _write_runs

_COUNT = "SELECT count(*) AS n, count(DISTINCT run_id) AS d FROM runs"


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on a local folder, and the same on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    uri: str = request.getfixturevalue("s3_store")
    return uri


class TestReaderRacingACompaction:
    """A compaction that lands between a reader's listing and its scan loses no row."""

    def test_sources_deleted_after_the_listing_are_not_missed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        uri = str(tmp_path / "store")
        _write_runs(uri, 10)
        store = RunStore(uri)
        assert store.sql(_COUNT).to_pylist() == [{"n": 10, "d": 10}]
        original = StoreTables.recovering
        compactions: list[int] = []

        def racing(self: StoreTables, action: Callable[[], Any]) -> Any:
            if not compactions:  # after the refresh, before the scan: the sources go
                compactions.append(compact_store(uri).deleted_files)
            return original(self, action)

        monkeypatch.setattr(StoreTables, "recovering", racing)
        assert store.sql(_COUNT).to_pylist() == [{"n": 10, "d": 10}]
        assert compactions and compactions[0] > 0
        assert store.skipped_files == []

    def test_a_store_that_keeps_changing_fails_rather_than_answers_short(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        uri = str(tmp_path / "store")
        _write_runs(uri, 10)
        store = RunStore(uri)
        monkeypatch.setattr(StoreTables, "_vanished", lambda self: True)
        with pytest.raises(StoreError, match="kept changing"):
            store.sql(_COUNT)


class TestManifestGoneWhileListing:
    """A manifest deleted between the listing and its read: the store is listed again."""

    def test_a_merged_file_merged_away_meanwhile_is_not_taken_for_unfinished(
        self, store_uri: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _write_runs(store_uri, 10)
        compact_store(store_uri)  # M1 per folder, its sources gone
        _write_runs(store_uri, 5)  # small files beside M1
        fs = _fs(store_uri)
        assert RunStore(store_uri).sql(_COUNT).to_pylist() == [{"n": 15, "d": 15}]
        original = type(fs).list
        fired: list[int] = []

        def racing(self: Any, prefix: str = "") -> list[StoreObject]:
            objects = original(self, prefix)
            if not fired:  # M1 merged away, its manifest deleted, before the reader reads it
                fired.append(0)  # the compaction lists too
                fired[0] = compact_store(store_uri).deleted_files
            return objects

        monkeypatch.setattr(type(fs), "list", racing)
        listing = Catalog(fs).listing()
        monkeypatch.setattr(type(fs), "list", original)
        assert fired and fired[0] > 0
        assert listing.incomplete == [] and listing.covered == []
        now = {o.key for o in fs.list()}
        assert {o.key for o in listing.live} <= now  # nothing deleted, nothing stale
        assert RunStore(store_uri).sql(_COUNT).to_pylist() == [{"n": 15, "d": 15}]

    def test_a_reader_racing_it_counts_every_row_once(
        self, store_uri: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _write_runs(store_uri, 10)
        compact_store(store_uri)
        _write_runs(store_uri, 5)
        fs = _fs(store_uri)
        store = RunStore(store_uri)
        original = type(fs).list
        fired: list[int] = []

        def racing(self: Any, prefix: str = "") -> list[StoreObject]:
            objects = original(self, prefix)
            if not fired:
                fired.append(0)
                fired[0] = compact_store(store_uri).deleted_files
            return objects

        monkeypatch.setattr(type(fs), "list", racing)
        assert store.sql(_COUNT).to_pylist() == [{"n": 15, "d": 15}]
        assert fired and fired[0] > 0


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from datafusion_otel.store._fs import LocalFS
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
root = Path(sys.argv[1])
root.mkdir()
resource.setrlimit(resource.RLIMIT_FSIZE, (8, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    LocalFS(root).put_new(sys.argv[2], b'{"format": "datafusion-otel-run-store", "version": 2}')
except OSError as exc:
    print("failed", exc.errno)
else:
    print("written")
"""


class TestAtomicCreate:
    """``put_new`` (``_format.json``, the lease) leaves a whole file or none."""

    @pytest.mark.parametrize("key", [FORMAT_KEY, LEASE_KEY])
    def test_a_write_failing_midway_leaves_no_file(self, tmp_path: Path, key: str) -> None:
        root = tmp_path / "store"
        done = subprocess.run(
            [sys.executable, "-c", _FULL_DISK, str(root), key],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == f"failed {errno.EFBIG}", done.stdout + done.stderr
        assert not (root / key).exists()
        assert [p.name for p in root.iterdir()] == []  # no temporary file either
        assert RunStore(root).format_version == 1  # readable: nothing was recorded

    def test_put_new_writes_once(self, tmp_path: Path) -> None:
        fs = LocalFS(tmp_path)
        assert fs.put_new("a/x.json", b"one")
        assert not fs.put_new("a/x.json", b"two")
        assert fs.get("a/x.json") == b"one"
        assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]

    def test_an_empty_format_document_is_read_and_rewritten(self, tmp_path: Path) -> None:
        uri = str(tmp_path / "store")
        Path(uri).mkdir()
        (Path(uri) / FORMAT_KEY).write_bytes(b"")  # what a killed writer of 0.x left
        store = RunStore(uri)
        assert store.format_version == FORMAT_VERSION
        _write_runs(uri, 3)
        assert parse_format((Path(uri) / FORMAT_KEY).read_bytes()) == FORMAT_VERSION
        assert (Path(uri) / FORMAT_KEY).read_bytes() == format_document()
        assert RunStore(uri).run_count() == 3


class TestRunDayWithAConfiguredSink:
    """A sink given to ``configure`` files every row of a run under the run's start day."""

    def test_rows_flushed_before_the_run_row_go_to_the_start_day(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handles: Handles
    ) -> None:
        real = _day_files.day_of
        # rows filed by write time land on another day (as after midnight)
        monkeypatch.setattr(
            _day_files, "day_of", lambda ms: real(ms) if ms is not None else "2099-01-01"
        )
        root = tmp_path / "store"
        sink = ParquetSink(str(root), flush_interval=60)
        handles.add(datafusion_otel.configure(sink=sink, set_global=False))
        ctx = SessionContext()
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b')").collect()
        with tracked_run(label="configured") as run:  # no sink=: the run-started note not sent
            sql_to_datafusion("SELECT column2, count(*) FROM t GROUP BY column2", ctx=ctx).collect()
            assert datafusion_otel.force_flush(30)
            assert sink.force_flush(30)  # operator and plan rows written before the run row
        assert datafusion_otel.force_flush(30) and sink.force_flush(30)
        start_day = real(run.start_time_unix_ms)
        folders = {p.parent.name for p in root.rglob("*.parquet")}
        tables = {p.relative_to(root).parts[0] for p in root.rglob("*.parquet")}
        assert folders == {f"day={start_day}"}, folders
        assert {"datafusion_runs_v1", "datafusion_operator_metrics_v1"} <= tables
        sink.close()
