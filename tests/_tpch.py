"""TPC-H data and queries for tests: data generated once per scale factor with tpchgen-cli."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from datafusion import SessionContext

TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "tpch-queries"


def queries_dir() -> Path:
    """The 22 TPC-H queries: the package's copy when present, else ../shared/reference."""
    try:
        from datafusion_otel import tpch  # type: ignore[attr-defined]

        packaged = Path(tpch.__file__).parent / "queries"
        if packaged.is_dir():
            return packaged
    except ImportError:
        pass
    return _SHARED


def query_text(number: int) -> str:
    return (queries_dir() / f"q{number}.sql").read_text()


def statements(number: int) -> list[str]:
    """The statements of query ``number`` (q15 has three), without trailing semicolons."""
    parts = [p.strip() for p in query_text(number).split(";")]
    out = []
    for part in parts:
        lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
        body = "\n".join(lines).strip()
        if body:
            out.append(body)
    return out


def tpch_data(scale: float) -> Path:
    """Return a folder with the TPC-H tables as Parquet at ``scale``, generating it once."""
    cache = Path(os.environ.get("DFO_TEST_CACHE", Path(tempfile.gettempdir()) / "dfo-test-cache"))
    target = cache / f"tpch-sf{scale}"
    if all((target / f"{t}.parquet").exists() for t in TABLES):
        return target
    tmp = cache / f".tpch-sf{scale}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    exe = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run(
        [
            str(exe) if exe.exists() else "tpchgen-cli",
            "parquet",
            "-s",
            str(scale),
            "--output-dir",
            str(tmp),
        ],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def register(ctx: SessionContext, data: Path) -> SessionContext:
    for table in TABLES:
        ctx.register_parquet(table, str(data / f"{table}.parquet"))
    return ctx
