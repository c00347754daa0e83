"""The run store's tables on a DataFusion session, served from its live, intact files only.

`StoreTables` registers each table of a store on a session, declared with the registry's
schema, over an explicit list of files: the live files of `datafusion_otel.store._catalog`
(so rows a compaction merged are read once), minus damaged ones. The list is refreshed
before every query, so files written since are seen.

* Local folder: a private folder of links to the table's files, read by DataFusion. A
  DataFrame lists its folder when it runs, possibly after the store object is gone, so link
  folders are removed only at process exit. New files are linked into the current folder
  (a DataFrame planned earlier then sees them too, as it would see a plain folder); when
  files leave the live set (a compaction, a prune, a damaged file), a new folder is made.
* S3: a pyarrow dataset over the objects (pyarrow's S3 reader), scanned by DataFusion.

A file a compaction or prune deletes between the listing and the scan must not be missed
silently: on S3 the scan fails and is retried (below); locally DataFusion skips a link whose
target is gone, so after each query the registered files are checked and, if one vanished,
the store is listed again and the query runs again (`StoreTables.recovering`).

Damaged files never stop a query: on a local folder every file's footer is read once
(`footer_problem`: empty, truncated, not Parquet, wrong schema); when a query fails anyway,
the store is listed again (a file may have been compacted or pruned meanwhile) and every
file not yet read in full is read (`read_problem`, Rust panics included). A damaged file is
skipped and reported once (``on_skip``), and the query runs again (`StoreTables.recovering`).
"""

from __future__ import annotations

import atexit
import io
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from datafusion import SessionContext

from datafusion_otel.store._catalog import Catalog
from datafusion_otel.store._checks import (
    footer_problem,
    held_stderr,
    is_panic,
    must_propagate,
    one_line,
    read_problem,
)
from datafusion_otel.store._fs import S3FS, LocalFS, StoreFS

__all__ = ["StoreTables", "TableSpec"]

_LOG = logging.getLogger("datafusion_otel.store")
_T = TypeVar("_T")


StorePath = Path | str
"""Where a store file is, as reported: a local path, or an ``s3://`` URI."""


@dataclass(frozen=True)
class TableSpec:
    """One table of the store: SQL name, key prefix, schema, hive partition column if any."""

    name: str
    prefix: str
    schema: pa.Schema
    partition: tuple[str, pa.DataType] | None = None


_VIEW_ROOTS: list[str] = []
_VIEW_LOCK = threading.Lock()


@atexit.register
def _remove_views() -> None:  # pragma: no cover - runs at interpreter exit
    with _VIEW_LOCK:
        for root in _VIEW_ROOTS:
            shutil.rmtree(root, ignore_errors=True)


def _warn(path: StorePath, reason: str) -> None:
    _LOG.warning("skipped damaged store file %s: %s", path, reason)


class StoreTables:
    """The store's tables registered on ``ctx``, damaged and covered files skipped.

    Args:
        ctx: The session to register on.
        fs: The store.
        tables: The tables.
        on_skip: Called once with the path (or URI) and reason of each damaged file skipped
            (default: a warning on the ``datafusion_otel.store`` logger).
        quiet_panics: Hold back stderr while a query runs and drop it if DataFusion panicked
            (see `datafusion_otel.store._checks.held_stderr`).
        error: Builds the exception raised for a failure no damaged file explains.
    """

    def __init__(
        self,
        ctx: SessionContext,
        fs: StoreFS,
        tables: list[TableSpec],
        *,
        on_skip: Callable[[StorePath, str], None] | None,
        quiet_panics: bool,
        error: Callable[[str], Exception],
    ) -> None:
        self._ctx = ctx
        self._fs = fs
        self._catalog = Catalog(fs)
        self._tables = tables
        self._on_skip = on_skip or _warn
        self._quiet_panics = quiet_panics
        self._error = error
        self._skipped: dict[str, str] = {}
        self._footer_ok: set[str] = set()
        self._read_ok: set[str] = set()
        self._registered: dict[str, tuple[str, ...]] = {}
        self._views: Path | None = None
        self._generation = 0
        self._view_of: dict[str, tuple[Path, set[str]]] = {}
        self._arrow_fs: Any = None
        self._format = ds.ParquetFileFormat()
        self._fragments: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}

    @property
    def skipped(self) -> list[tuple[StorePath, str]]:
        """The damaged files skipped so far, with the reason, in the order found."""
        return [(self._where(key), reason) for key, reason in self._skipped.items()]

    def _where(self, key: str) -> StorePath:
        return self._fs.path(key) if isinstance(self._fs, LocalFS) else self._fs.display(key)

    def _live(self) -> dict[str, list[str]]:
        listing = self._catalog.listing()
        live: dict[str, list[str]] = {t.name: [] for t in self._tables}
        self._sizes = {obj.key: obj.size for obj in listing.live}
        for key in [k for k in self._fragments if k not in self._sizes]:
            del self._fragments[key]  # compacted or pruned away
        for obj in listing.live:
            for table in self._tables:
                if obj.key.startswith(table.prefix):
                    live[table.name].append(obj.key)
                    break
        return live

    def refresh(self) -> bool:
        """List the store, check new files' footers, register changed tables again.

        Returns:
            Whether any table's files changed.
        """
        changed = False
        live = self._live()
        for table in self._tables:
            intact = tuple(k for k in live[table.name] if self._intact(k, table))
            if self._registered.get(table.name) != intact or not self._ctx.table_exist(table.name):
                self._register(table, intact)
                changed = True
        return changed

    def _intact(self, key: str, table: TableSpec) -> bool:
        if key in self._skipped:
            return False
        if key in self._footer_ok or not isinstance(self._fs, LocalFS):
            return True  # S3 objects are complete by construction: checked only on failure
        problem = footer_problem(self._fs.path(key), table.schema)
        if problem is None:
            self._footer_ok.add(key)
            return True
        self._skip(key, problem)
        return False

    def _skip(self, key: str, reason: str) -> None:
        self._skipped[key] = reason
        try:
            self._on_skip(self._where(key), reason)
        except Exception:  # a reporting callback must not stop the query
            _LOG.exception("on_skip callback failed for %s", self._where(key))

    def _register(self, table: TableSpec, keys: tuple[str, ...]) -> None:
        current = self._view_of.get(table.name)
        if current is not None and keys and current[1] <= set(keys):
            self._link(table, current[0], [k for k in keys if k not in current[1]])
            current[1].update(keys)  # same folder, same registration: new files show up
            self._registered[table.name] = keys
            return
        if self._ctx.table_exist(table.name):
            self._ctx.deregister_table(table.name)
        self._view_of.pop(table.name, None)
        self._registered[table.name] = keys
        schema = table.schema
        if table.partition is not None:
            schema = schema.append(pa.field(*table.partition))
        if not keys:  # nothing (readable) written yet: an empty table of the right shape
            self._ctx.register_record_batches(
                table.name, [[pa.RecordBatch.from_pylist([], schema)]]
            )
            return
        if isinstance(self._fs, S3FS):
            self._ctx.register_dataset(table.name, self._dataset(table, schema, keys))
            return
        view = self._new_view(table)
        self._link(table, view, keys)
        self._view_of[table.name] = (view, set(keys))
        self._ctx.register_parquet(
            table.name,
            str(view) + "/",
            schema=table.schema,
            table_partition_cols=[table.partition] if table.partition else None,
        )

    def _dataset(self, table: TableSpec, schema: pa.Schema, keys: tuple[str, ...]) -> ds.Dataset:
        """Return a pyarrow dataset over the S3 objects ``keys`` of ``table``.

        Fragments are kept per key (with the object's size, saving a request per file): a
        fragment keeps the footer it read, so later queries and registrations reuse it.
        """
        assert isinstance(self._fs, S3FS)
        if self._arrow_fs is None:
            self._arrow_fs = self._fs.arrow_filesystem()
        fragments = []
        for key in keys:
            fragment = self._fragments.get(key)
            if fragment is None:
                partition = ds.scalar(True)
                if table.partition is not None:  # artifacts/artifact=<name>/...
                    value = key[len(table.prefix) :].split("/", 1)[0].split("=", 1)[1]
                    partition = ds.field(table.partition[0]) == value
                fragment = self._format.make_fragment(
                    self._fs.arrow_path(key),
                    self._arrow_fs,
                    partition_expression=partition,
                    file_size=self._sizes.get(key),
                )
                self._fragments[key] = fragment
            fragments.append(fragment)
        return ds.FileSystemDataset(fragments, schema, self._format, self._arrow_fs)

    def _new_view(self, table: TableSpec) -> Path:
        """Return a new, empty private folder for links to files of ``table``."""
        if self._views is None:
            self._views = Path(tempfile.mkdtemp(prefix="datafusion-otel-store-"))
            with _VIEW_LOCK:
                _VIEW_ROOTS.append(str(self._views))
        self._generation += 1
        view = self._views / f"{table.name}-{self._generation}"
        view.mkdir()
        return view

    def _link(self, table: TableSpec, view: Path, keys: Sequence[str]) -> None:
        """Link the files ``keys`` of ``table`` into ``view``.

        The links keep a hive partition folder (``artifact=<name>/``) and flatten the rest
        (``day=`` folders), so DataFusion reads exactly these files.
        """
        assert isinstance(self._fs, LocalFS)
        for key in keys:
            rest = key[len(table.prefix) :]
            if table.partition is not None and "/" in rest:
                folder, rest = rest.split("/", 1)
                target = view / folder
                target.mkdir(exist_ok=True)
            else:
                target = view
            link = target / rest.replace("/", "_")
            link.symlink_to(self._fs.path(key).resolve())

    def _read_problem(self, key: str, table: TableSpec) -> str | None:
        if isinstance(self._fs, LocalFS):
            path = self._fs.path(key)
            if not path.exists():
                return None  # compacted or pruned meanwhile: not damage
            return read_problem(path, table.schema)
        try:
            data = self._fs.get(key)
            if data is None:
                return None
            pq.read_table(io.BytesIO(data), schema=table.schema)
        except Exception as exc:
            return one_line(exc)
        return None

    def _find_unreadable(self, relist: bool) -> bool:
        """List again and read every file not yet read in full. True if anything changed."""
        if relist and self.refresh():
            return True  # files came or went (a compaction, a prune): try again
        found = False
        for table in self._tables:
            damaged = False
            for key in self._registered.get(table.name, ()):
                if key in self._skipped or key in self._read_ok:
                    continue
                problem = self._read_problem(key, table)
                if problem is None:
                    self._read_ok.add(key)
                else:
                    self._skip(key, problem)
                    damaged = True
            if damaged:
                found = True
        if found:
            self.refresh()
        return found

    def _vanished(self) -> bool:
        """Whether a registered local file is gone (DataFusion skips a dangling link silently).

        Store files are never re-created under the same name, so a file still there after a
        query was there when DataFusion listed its folder: none of its rows was missed.
        """
        if not isinstance(self._fs, LocalFS):
            return False  # S3: the dataset names every object; a missing one fails the scan
        return any(
            not self._fs.path(key).exists()
            for keys in self._registered.values()
            for key in keys
            if key not in self._skipped
        )

    def recovering(self, action: Callable[[], _T]) -> _T:
        """Run ``action``; when it fails, skip the damaged files it met and run it again.

        On a local folder, a file that a compaction or prune deleted while ``action`` ran
        may have been skipped silently; then the store is listed again and ``action`` runs
        again (a few times at most), so no row is missed or read twice.
        """
        relists = 3  # writers may add files all the time: list again a few times only
        reruns = 5  # compactions and prunes that keep deleting files under the query
        while True:
            try:
                with held_stderr(self._quiet_panics) as held:
                    try:
                        result = action()
                    except BaseException as exc:
                        held.discard = is_panic(exc)
                        raise
            except BaseException as exc:
                if must_propagate(exc):
                    raise
                relists -= 1
                try:
                    changed = self._find_unreadable(relists >= 0)
                except Exception as again:  # the store itself failed (an S3 listing)
                    raise self._error(one_line(again)) from exc
                if not changed:
                    prefix = "DataFusion panicked: " if is_panic(exc) else ""
                    raise self._error(prefix + one_line(exc)) from exc
                continue
            if not self._vanished():
                return result
            reruns -= 1
            if reruns < 0:
                raise self._error(
                    "the store's files kept changing during the query "
                    "(compactions or prunes); run it again"
                )
            try:
                self.refresh()
            except Exception as again:  # a listing failed
                raise self._error(one_line(again)) from again

    def damaged_files(self) -> list[tuple[StorePath, str]]:
        """Return every file whose footer shows damage now, and every file skipped so far.

        On S3 footers are not read ahead: the files skipped so far are returned.
        """
        damaged = dict(self._skipped)
        if isinstance(self._fs, LocalFS):
            live = self._live()
            for table in self._tables:
                for key in live[table.name]:
                    if key not in damaged:
                        problem = footer_problem(self._fs.path(key), table.schema)
                        if problem is not None:
                            damaged[key] = problem
        return [(self._where(key), reason) for key, reason in damaged.items()]
