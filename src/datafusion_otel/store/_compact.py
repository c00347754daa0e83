"""Compaction: merge a store's small files into larger ones while writers keep writing.

`compact` works folder by folder (a table's ``day=`` folder, or a version-1 table folder):

1. take the maintenance lease (`datafusion_otel.store._lease`), so one compactor runs;
2. list the store; the live small files of a folder (as readers see them,
   `datafusion_otel.store._catalog`) are read, cast to their table's schema and written as
   one merged file ``c-<time>-<writer>.parquet`` (complete or absent, like any file);
3. then its manifest ``c-....covers.json`` naming every file the merged one holds: from this
   moment readers read the merged file and skip its sources;
4. check the lease is still ours, then delete the sources (and their manifests).

Files written while this runs are not in the listing and stay untouched, so no row is lost
or read twice at any moment. A compactor that dies leaves either a merged file without a
manifest (readers skip it; the next run deletes it once older than the lease) or sources a
complete merge covers (readers skip them; the next run deletes them). Two merges covering a
file in common (only if two compactors ran at once despite the lease) are left for a person:
readers read the newer one, the older one is logged. A damaged source file
is left out of a merge and stays where it is (readers skip it as before).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from datafusion_otel import attributes as attr
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._catalog import Catalog, StoreListing
from datafusion_otel.store._fs import StoreFS, StoreObject
from datafusion_otel.store._layout import (
    ARTIFACTS_SCHEMA,
    is_merged,
    manifest_key,
    merged_key,
    record_format,
    table_of_key,
)
from datafusion_otel.store._lease import Lease

__all__ = ["CompactionReport", "compact"]

_LOG = logging.getLogger("datafusion_otel.store")
_TARGET_BYTES = 128 * 1024 * 1024
COVERS_METADATA = b"datafusion_otel.covers"
"""Parquet key-value metadata of a merged file: its direct sources (JSON list)."""


@dataclass
class CompactionReport:
    """What one compaction did.

    Attributes:
        merged_files: Merged files written.
        source_files: Files merged into them.
        rows: Rows in the merged files.
        deleted_files: Files deleted (merged sources, leftovers of earlier runs).
        skipped_files: Files left out of a merge because they could not be read.
    """

    merged_files: int = 0
    source_files: int = 0
    rows: int = 0
    deleted_files: int = 0
    skipped_files: list[str] = field(default_factory=list)


def _schema(prefix: str) -> pa.Schema | None:
    if prefix.startswith(f"{attr.ARTIFACTS_FOLDER}/"):
        return ARTIFACTS_SCHEMA
    return SCHEMAS.get(prefix.rstrip("/"))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns (missing nullable ones as nulls)."""
    columns = []
    for target in schema:
        if target.name in table.column_names:
            columns.append(table.column(target.name).cast(target.type))
        else:
            columns.append(pa.nulls(table.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _folder(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/"


class _Compactor:
    def __init__(self, fs: StoreFS, lease: Lease, target_bytes: int, keep_seconds: float) -> None:
        self.fs = fs
        self.lease = lease
        self.target_bytes = target_bytes
        self.keep_seconds = keep_seconds
        self.report = CompactionReport()

    def clean(self, listing: StoreListing) -> None:
        """Delete what earlier compactions left: covered sources, old unfinished merges."""
        cutoff = time.time() - self.keep_seconds
        doomed = [o.key for o in listing.covered]
        doomed += [o.key for o in listing.incomplete if o.modified < cutoff]
        for obj in listing.superseded:  # two compactors raced: leave it for a person to look at
            _LOG.warning(
                "merged file %s overlaps a newer merge; not read", self.fs.display(obj.key)
            )
        if doomed:
            self.lease.check()
        for key in doomed:
            self._delete(key)

    def _delete(self, key: str) -> None:
        self.fs.delete(key)
        self.report.deleted_files += 1
        if is_merged(key):
            self.fs.delete(manifest_key(key))

    def merge_folder(self, files: list[StoreObject], listing: StoreListing) -> None:
        schema = _schema(table_of_key(files[0].key))
        if schema is None:
            return  # a table this package does not know: left as written
        small = [o for o in files if o.size < self.target_bytes // 2]
        group: list[StoreObject] = []
        size = 0
        for obj in small:
            group.append(obj)
            size += obj.size
            if size >= self.target_bytes:
                self._merge(group, schema, listing)
                group, size = [], 0
        if len(group) >= 2:
            self._merge(group, schema, listing)

    def _merge(self, group: list[StoreObject], schema: pa.Schema, listing: StoreListing) -> None:
        tables: list[pa.Table] = []
        sources: list[str] = []
        for obj in group:
            try:
                data = self.fs.get(obj.key)
                if data is None:
                    continue  # pruned meanwhile
                tables.append(_conform(pq.read_table(io.BytesIO(data)), schema))
            except Exception as exc:  # a damaged file stays out of the merge
                self.report.skipped_files.append(self.fs.display(obj.key))
                _LOG.warning("compaction left out %s: %s", self.fs.display(obj.key), exc)
                continue
            sources.append(obj.key)
        if len(sources) < 2:
            return
        merged = pa.concat_tables(tables)
        covers: set[str] = set(sources)
        existing = {o.key for o in listing.objects}
        for key in sources:  # what a merged source covered, if still there
            covers |= listing.manifests.get(manifest_key(key), frozenset()) & existing
        key = merged_key(_folder(group[0].key))
        merged = merged.replace_schema_metadata(
            {**(schema.metadata or {}), COVERS_METADATA: json.dumps(sources).encode()}
        )
        buffer = io.BytesIO()
        pq.write_table(merged, buffer, compression="zstd", row_group_size=256 * 1024)
        self.lease.check()
        self.fs.put(key, buffer.getvalue())
        manifest = {"version": 1, "merged": key, "sources": sources, "covers": sorted(covers)}
        self.fs.put(manifest_key(key), json.dumps(manifest).encode())
        self.report.merged_files += 1
        self.report.source_files += len(sources)
        self.report.rows += merged.num_rows
        self.lease.check()  # still ours: only now may the sources go
        for source in sources:
            self._delete(source)


def compact(
    fs: StoreFS,
    *,
    target_bytes: int = _TARGET_BYTES,
    lease_seconds: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> CompactionReport:
    """Merge the small files of every folder of the store (see the module docstring).

    Args:
        fs: The store.
        target_bytes: Stop adding files to a merged file once their sizes sum to this;
            files of at least half of it are left as they are.
        lease_seconds: Lifetime of the lease (renewed while working); also the age after
            which an unfinished merged file (no manifest) of a dead compactor is deleted.
        progress: Called with one line per folder merged.

    Returns:
        What was done.

    Raises:
        datafusion_otel.store._lease.LeaseError: If another process holds the lease, or it
            was lost while working (then nothing more is deleted).
    """
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be >= 1, got {target_bytes}")
    lease = Lease(fs, seconds=lease_seconds, purpose="compact")
    lease.acquire()
    try:
        record_format(fs)
        listing = Catalog(fs).listing()
        work = _Compactor(fs, lease, target_bytes, lease_seconds)
        work.clean(listing)
        folders: dict[str, list[StoreObject]] = {}
        for obj in listing.live:
            folders.setdefault(_folder(obj.key), []).append(obj)
        for folder, files in sorted(folders.items()):
            if len(files) < 2:
                continue
            before = work.report.merged_files
            work.merge_folder(files, listing)
            if progress is not None and work.report.merged_files > before:
                progress(f"merged {len(files)} files in {fs.display(folder)}")
        return work.report
    finally:
        lease.release()
