"""The embedded run store: `ParquetSink` writes it, `RunStore` reads it with SQL.

A store is a local folder or ``s3://bucket/prefix``; `compact_store` and `prune_store`
maintain it (CLI: ``datafusion-otel compact`` and ``prune``).
"""

from __future__ import annotations

from datafusion_otel.store._layout import resolve_home
from datafusion_otel.store.maintenance import (
    CompactionReport,
    PruneReport,
    compact_store,
    prune_store,
)
from datafusion_otel.store.parquet_sink import ParquetSink
from datafusion_otel.store.run_store import (
    STORE_TABLES,
    RunDetails,
    RunNotFoundError,
    RunStore,
    StoreError,
)

__all__ = [
    "STORE_TABLES",
    "CompactionReport",
    "ParquetSink",
    "PruneReport",
    "RunDetails",
    "RunNotFoundError",
    "RunStore",
    "StoreError",
    "compact_store",
    "prune_store",
    "resolve_home",
]
