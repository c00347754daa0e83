"""Checks that tell a damaged store file from an intact one, and Rust panics from errors.

A store file can be damaged in ways a reader notices at different moments: an empty or
truncated file, a broken footer, a file of another table (wrong schema) are found by reading
the footer (`footer_problem`, cheap, done for every file when a store is opened); a damaged
data page only when its rows are decoded (`read_problem`, a full read, done only after a
query failed). DataFusion may answer a damaged file with a Rust panic
(``pyo3_runtime.PanicException``), which derives from `BaseException`, not `Exception`:
`is_panic` recognises it and `held_stderr` keeps the panic message Rust prints on file
descriptor 2 off the terminal.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionContext

__all__ = [
    "HeldStderr",
    "footer_problem",
    "held_stderr",
    "is_panic",
    "must_propagate",
    "one_line",
    "read_problem",
]

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


def must_propagate(exc: BaseException) -> bool:
    """Whether ``exc`` ends the program rather than reports a problem (Ctrl-C, exit)."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic raised through pyo3 (``PanicException``)."""
    return any(cls.__name__ == "PanicException" for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """Return the message of ``exc`` on one printable line (its type name if it has none)."""
    text = " ".join(str(exc).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text.removeprefix("DataFusion error: ") or type(exc).__name__


def _compatible(got: pa.DataType, expected: pa.DataType) -> bool:
    if got.equals(expected):
        return True
    if pa.types.is_map(got) and pa.types.is_map(expected):
        return bool(got.key_type.equals(expected.key_type)) and bool(
            got.item_type.equals(expected.item_type)
        )
    if expected in _STRING_TYPES:
        return got in _STRING_TYPES
    return bool(pa.types.is_integer(expected)) and bool(pa.types.is_integer(got))


def footer_problem(path: Path, schema: pa.Schema) -> str | None:
    """Return why ``path`` is not an intact file of a table with ``schema``, or None.

    Reads the footer only: size, magic bytes, metadata, and the schema (every column the
    table requires is there, and every column the table knows has a compatible type).
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        metadata = pq.read_metadata(path)
        file_schema = metadata.schema.to_arrow_schema()
    except BaseException as exc:
        if must_propagate(exc):
            raise
        return one_line(exc)
    for field in schema:
        index = file_schema.get_field_index(field.name)
        if index < 0:
            if field.nullable:
                continue  # written before the column existed: reads as null
            return f"wrong schema: no column {field.name!r}"
        got = file_schema.field(index).type
        if not _compatible(got, field.type):
            return f"wrong schema: column {field.name!r} is {got}, expected {field.type}"
    return None


def read_problem(path: Path, schema: pa.Schema) -> str | None:
    """Return why DataFusion cannot read every row of ``path``, or None.

    A full read (and a row count) with DataFusion itself, Rust panics included, with the
    panic message kept off the terminal.
    """
    ctx = SessionContext()
    try:
        with held_stderr(True) as held:
            held.discard = True  # only a panic message can come out of this read
            ctx.register_parquet("f", str(path), schema=schema)
            ctx.sql("SELECT count(*) FROM f").collect()
            ctx.sql("SELECT * FROM f").collect()
    except BaseException as exc:
        if must_propagate(exc):
            raise
        return ("Rust panic: " if is_panic(exc) else "") + one_line(exc)
    return None


@dataclass
class HeldStderr:
    """What to do with the output held back by `held_stderr`.

    Attributes:
        discard: Drop it (it is a Rust panic message) instead of printing it afterwards.
    """

    discard: bool = False


@contextmanager
def held_stderr(enabled: bool) -> Iterator[HeldStderr]:
    """Redirect file descriptor 2 to a temporary file while the block runs.

    Afterwards the held output is written to the real stderr unless the block set
    ``discard``. Rust writes panic messages straight to file descriptor 2, so this is the one
    way to keep them off a terminal; it affects the whole process while it lasts, so it is
    meant for command-line programs (`RunStore` uses it when ``quiet_panics`` is set).

    Args:
        enabled: Do nothing when False.
    """
    held = HeldStderr()
    if not enabled:
        yield held
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not held.discard:
                sink.seek(0)
                data = sink.read()
                if data:
                    os.write(2, data)
