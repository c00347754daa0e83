"""The embedded run store: `ParquetSink` writes it, `RunStore` reads it with SQL."""

from __future__ import annotations

from datafusion_otel.store._layout import resolve_home
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
    "ParquetSink",
    "RunDetails",
    "RunNotFoundError",
    "RunStore",
    "StoreError",
    "resolve_home",
]
