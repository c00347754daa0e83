"""EXPLAIN / EXPLAIN ANALYZE rows written as Arrow IPC files, atomically.

Arrow IPC (``.arrow``, readable with ``pyarrow.ipc.open_file`` or DataFusion's
``register_arrow``) costs a fraction of a millisecond to write; Parquet costs several.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyarrow import ipc

__all__ = ["EXPLAIN_SCHEMA", "WrittenFile", "write_explain_rows"]

EXPLAIN_SCHEMA = pa.schema(
    [pa.field("plan_type", pa.string(), nullable=False), pa.field("plan", pa.string())]
)
"""The columns of DataFusion's ``EXPLAIN`` output."""
FORMAT = "arrow_ipc"
_SUFFIX = "arrow"


@dataclass(frozen=True)
class WrittenFile:
    """A file written under the artifact directory.

    Attributes:
        path: Absolute path.
        format: File format (``arrow_ipc``).
        schema_fingerprint: sha256 (hex) of the file's Arrow schema, as text.
    """

    path: str
    format: str
    schema_fingerprint: str


def schema_fingerprint(schema: pa.Schema) -> str:
    """Return the sha256 (hex) of ``schema`` rendered as text, without metadata."""
    return hashlib.sha256(schema.remove_metadata().to_string().encode()).hexdigest()


_EXPLAIN_FINGERPRINT = schema_fingerprint(EXPLAIN_SCHEMA)


def write_explain_rows(directory: Path, stem: str, rows: list[tuple[str, str]]) -> WrittenFile:
    """Write ``(plan_type, plan)`` rows to ``directory/stem.arrow`` atomically.

    Args:
        directory: Target folder (created if missing).
        stem: File name without extension.
        rows: EXPLAIN rows.

    Returns:
        What was written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"plan_type": [r[0] for r in rows], "plan": [r[1] for r in rows]}, schema=EXPLAIN_SCHEMA
    )
    target = directory / f"{stem}.{_SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    os.close(fd)
    try:
        with pa.OSFile(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return WrittenFile(str(target.resolve()), FORMAT, _EXPLAIN_FINGERPRINT)
