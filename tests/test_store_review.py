"""Regressions from the review of the store: readers racing a compaction, atomic writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datafusion_otel.store import RunStore, StoreError, compact_store
from datafusion_otel.store._catalog import Catalog
from datafusion_otel.store._fs import StoreObject
from datafusion_otel.store._tables import StoreTables
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
