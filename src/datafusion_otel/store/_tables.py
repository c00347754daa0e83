"""The run store's tables on a DataFusion session, served from the intact files only.

`StoreTables` registers each table of a store folder on a session (a Parquet listing table
over its folder, declared with the registry's schema). Damaged files never stop a query:
every file's footer is read when the tables are registered (`footer_problem`: empty,
truncated, not Parquet, wrong schema); when a query fails anyway, every file not yet read in
full is read with DataFusion (`read_problem`, Rust panics included). A damaged file is
skipped and reported once (``on_skip``); its table is then served from the intact files
through a private folder of links to them, and the query runs again (`StoreTables.recovering`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from datafusion import SessionContext

from datafusion_otel.store._checks import (
    footer_problem,
    held_stderr,
    is_panic,
    must_propagate,
    one_line,
    read_problem,
)
from datafusion_otel.store._layout import data_files

__all__ = ["StoreTables", "TableSpec"]

_LOG = logging.getLogger("datafusion_otel.store")
_T = TypeVar("_T")


@dataclass(frozen=True)
class TableSpec:
    """One table of the store: SQL name, folder, schema, hive partition column if any."""

    name: str
    folder: Path
    schema: pa.Schema
    partition: tuple[str, pa.DataType] | None = None


def _warn(path: Path, reason: str) -> None:
    _LOG.warning("skipped damaged store file %s: %s", path, reason)


class StoreTables:
    """The store's tables registered on ``ctx``, damaged files skipped.

    Args:
        ctx: The session to register on.
        tables: The tables.
        on_skip: Called once with the path and reason of each damaged file skipped
            (default: a warning on the ``datafusion_otel.store`` logger).
        quiet_panics: Hold back stderr while a query runs and drop it if DataFusion panicked
            (see `datafusion_otel.store._checks.held_stderr`).
        error: Builds the exception raised for a failure no damaged file explains.
    """

    def __init__(
        self,
        ctx: SessionContext,
        tables: list[TableSpec],
        *,
        on_skip: Callable[[Path, str], None] | None,
        quiet_panics: bool,
        error: Callable[[str], Exception],
    ) -> None:
        self._ctx = ctx
        self._tables = tables
        self._on_skip = on_skip or _warn
        self._quiet_panics = quiet_panics
        self._error = error
        self._skipped: dict[Path, str] = {}
        self._footer_ok: set[Path] = set()
        self._read_ok: set[Path] = set()
        self._views: Path | None = None
        self._generation = 0

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """The damaged files skipped so far, with the reason, in the order found."""
        return list(self._skipped.items())

    def refresh(self) -> None:
        """Check new files' footers and register every table again."""
        for table in self._tables:
            for path in data_files(table.folder):
                if path not in self._skipped and path not in self._footer_ok:
                    problem = footer_problem(path, table.schema)
                    if problem is None:
                        self._footer_ok.add(path)
                    else:
                        self._skip(path, problem)
            self._register(table)

    def _skip(self, path: Path, reason: str) -> None:
        self._skipped[path] = reason
        try:
            self._on_skip(path, reason)
        except Exception:  # a reporting callback must not stop the query
            _LOG.exception("on_skip callback failed for %s", path)

    def _register(self, table: TableSpec) -> None:
        if self._ctx.table_exist(table.name):
            self._ctx.deregister_table(table.name)
        files = data_files(table.folder)
        intact = [f for f in files if f not in self._skipped]
        if not intact:  # nothing (readable) written yet: an empty table of the right shape
            schema = table.schema
            if table.partition is not None:
                schema = schema.append(pa.field(*table.partition))
            self._ctx.register_record_batches(
                table.name, [[pa.RecordBatch.from_pylist([], schema)]]
            )
            return
        folder = table.folder if len(intact) == len(files) else self._view(table, intact)
        self._ctx.register_parquet(
            table.name,
            str(folder) + os.sep,
            schema=table.schema,
            table_partition_cols=[table.partition] if table.partition else None,
        )

    def _view(self, table: TableSpec, intact: list[Path]) -> Path:
        """Return a new private folder of links to ``intact`` (same layout as the table's)."""
        if self._views is None:
            self._views = Path(tempfile.mkdtemp(prefix="datafusion-otel-store-"))
            weakref.finalize(self, shutil.rmtree, str(self._views), True)
        self._generation += 1
        view = self._views / f"{table.name}-{self._generation}"
        for path in intact:
            link = view / path.relative_to(table.folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        return view

    def _find_unreadable(self) -> bool:
        """Read every file not yet read in full; skip the damaged ones. True if any was."""
        found = False
        for table in self._tables:
            damaged = False
            for path in data_files(table.folder):
                if path in self._skipped or path in self._read_ok:
                    continue
                problem = read_problem(path, table.schema)
                if problem is None:
                    self._read_ok.add(path)
                else:
                    self._skip(path, problem)
                    damaged = True
            if damaged:
                self._register(table)
                found = True
        return found

    def recovering(self, action: Callable[[], _T]) -> _T:
        """Run ``action``; when it fails, skip the damaged files it met and run it again."""
        while True:
            try:
                with held_stderr(self._quiet_panics) as held:
                    try:
                        return action()
                    except BaseException as exc:
                        held.discard = is_panic(exc)
                        raise
            except BaseException as exc:
                if must_propagate(exc):
                    raise
                if not self._find_unreadable():
                    prefix = "DataFusion panicked: " if is_panic(exc) else ""
                    raise self._error(prefix + one_line(exc)) from exc

    def damaged_files(self) -> list[tuple[Path, str]]:
        """Return every file whose footer shows damage now, and every file skipped so far."""
        damaged = dict(self._skipped)
        for table in self._tables:
            for path in data_files(table.folder):
                if path not in damaged:
                    problem = footer_problem(path, table.schema)
                    if problem is not None:
                        damaged[path] = problem
        return list(damaged.items())
