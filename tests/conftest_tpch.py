"""Session fixture ``tpch_dir``: TPC-H Parquet data generated once per test session.

Data is generated with tpchgen-cli at ``TPCH_TEST_SCALE`` into a temporary cache folder keyed
by scale factor (``.../tpch-cache/sf0.01``). Reuse it from any test module: the fixture is
made visible to every test by ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datafusion_otel import tpch

TPCH_TEST_SCALE = 0.01


@pytest.fixture(scope="session")
def tpch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with the eight TPC-H tables as Parquet at scale factor 0.01."""
    cache = tmp_path_factory.getbasetemp() / "tpch-cache"
    return tpch.generate(TPCH_TEST_SCALE, cache / f"sf{TPCH_TEST_SCALE}")
