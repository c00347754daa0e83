"""Shared fixtures: TPC-H data (``tpch_dir``) and reset of datafusion-otel's global state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest_tpch import tpch_dir  # noqa: F401 - re-exported fixture
from datafusion_otel import config


@pytest.fixture(autouse=True)
def _reset_configuration() -> Iterator[None]:
    config.reset()
    yield
    config.reset()
