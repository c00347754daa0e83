"""TPC-H data (generated with ``tpchgen-cli``) and the 22 TPC-H queries, for demos and tests.

The queries ship as package data (``datafusion_otel/tpch/queries/q1.sql`` ... ``q22.sql``,
TPC-H fair-use text). ``q15`` creates a view, queries it and drops it.
``tpchgen-cli`` is installed with the ``demo`` extra (``pip install 'datafusion-otel[demo]'``)
and in the development environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from datafusion import SessionContext

__all__ = [
    "QUERY_NUMBERS",
    "TABLES",
    "TpchError",
    "data_complete",
    "generate",
    "query_statements",
    "query_text",
    "register_tables",
]

TABLES: tuple[str, ...] = (
    "customer",
    "lineitem",
    "nation",
    "orders",
    "part",
    "partsupp",
    "region",
    "supplier",
)
"""The eight TPC-H tables."""
QUERY_NUMBERS: tuple[int, ...] = tuple(range(1, 23))
"""Numbers of the 22 TPC-H queries."""

_MARKER = ".complete"


class TpchError(Exception):
    """TPC-H data could not be generated or found; the message is one line."""


def query_text(number: int) -> str:
    """Return the text of TPC-H query ``number`` (1-22).

    Raises:
        ValueError: If ``number`` is not between 1 and 22.
    """
    if number not in QUERY_NUMBERS:
        raise ValueError(f"TPC-H queries are numbered 1-22, got {number}")
    return resources.files(__name__).joinpath("queries", f"q{number}.sql").read_text("utf-8")


def query_statements(number: int) -> list[str]:
    """Return the SQL statements of query ``number`` (three for q15, one otherwise)."""
    lines = [ln for ln in query_text(number).splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def data_complete(folder: Path) -> bool:
    """Return True if ``folder`` holds a Parquet file for every TPC-H table."""
    return all((folder / f"{table}.parquet").is_file() for table in TABLES)


def _tpchgen() -> str:
    beside = Path(sys.executable).parent / "tpchgen-cli"
    found = shutil.which("tpchgen-cli") or (str(beside) if beside.is_file() else None)
    if found is None:
        raise TpchError(
            "tpchgen-cli is not installed: install the demo extra "
            "(pip install 'datafusion-otel[demo]')"
        )
    return found


def generate(scale_factor: float, folder: str | os.PathLike[str]) -> Path:
    """Generate TPC-H Parquet files at ``scale_factor`` into ``folder`` unless already there.

    Generation goes to a temporary sibling folder renamed into place, so ``folder`` is either
    complete or absent, even if the process is killed.

    Args:
        scale_factor: TPC-H scale factor (0.01 is ~3 MB, 0.1 is ~35 MB).
        folder: Destination; reused as a cache when it is complete.

    Returns:
        ``folder`` as a Path.

    Raises:
        TpchError: If tpchgen-cli is missing or fails.
    """
    target = Path(folder)
    if data_complete(target):
        return target
    if scale_factor <= 0:
        raise TpchError(f"scale factor must be positive, got {scale_factor}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        done = subprocess.run(  # noqa: S603 - fixed executable and arguments
            [_tpchgen(), "parquet", "-s", str(scale_factor), "--output-dir", str(work)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not data_complete(work):
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise TpchError(f"tpchgen-cli failed: {detail[-1] if detail else done.returncode}")
        (work / _MARKER).write_text(str(scale_factor))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def register_tables(ctx: SessionContext, folder: str | os.PathLike[str]) -> None:
    """Register the eight TPC-H tables of ``folder`` on ``ctx``.

    Raises:
        TpchError: If a table's file is missing.
    """
    base = Path(folder)
    if not data_complete(base):
        raise TpchError(f"no complete TPC-H data in {base}")
    for table in TABLES:
        ctx.register_parquet(table, str(base / f"{table}.parquet"))
