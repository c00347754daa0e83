"""``plan_shape_hash`` (definition v1) from real DataFusion runs: the same query keeps its
shape across target_partitions, data sizes, literals and processes; another join strategy
changes it; the column reaches the span and the plan-artifacts row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext

from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._capture.plan_shape import shape_text
from datafusion_otel._capture.plan_walk import walk
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.schema_registry import DATAFUSION_PLAN_ARTIFACTS_V1

QUERY = (
    "SELECT a.v, count(*) AS n FROM a JOIN b ON a.k = b.k "
    "WHERE a.v > {low} AND b.w LIKE '{prefix}%' GROUP BY a.v ORDER BY a.v LIMIT {limit}"
)


def _write(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(range(rows))
    pq.write_table(pa.table({"k": keys, "v": [i % 7 for i in keys]}), folder / "a.parquet")
    pq.write_table(pa.table({"k": keys, "w": [str(i) for i in keys]}), folder / "b.parquet")
    return folder


def _ctx(folder: Path, partitions: int, *, hash_join: bool = True) -> SessionContext:
    config = SessionConfig().with_target_partitions(partitions)
    config = config.set("datafusion.optimizer.prefer_hash_join", str(hash_join).lower())
    ctx = SessionContext(config)
    ctx.register_parquet("a", str(folder / "a.parquet"))
    ctx.register_parquet("b", str(folder / "b.parquet"))
    return ctx


def _row(ctx: SessionContext, sql: str) -> dict[str, Any]:
    sink = DiagnosticsCollector()
    with tracked_run(label="shape", sink=sink):
        sql_to_datafusion(sql, ctx=ctx, options=DataFusionCompileOptions()).to_arrow_table()
    rows = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
    assert len(rows) == 1
    return rows[0]


def _shape(ctx: SessionContext, sql: str = QUERY.format(low=3, prefix="1", limit=5)) -> str:
    row = _row(ctx, sql)
    assert row["plan_executed"] is True
    shape = row["plan_shape_hash"]
    assert isinstance(shape, str) and len(shape) == 64
    return shape


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("small"), 2_000)


def test_same_shape_across_target_partitions(small: Path) -> None:
    two, eight = _ctx(small, 2), _ctx(small, 8)
    assert _shape(two) == _shape(eight)
    # the plans do differ in partition counts: the hash leaves them out
    sql = QUERY.format(low=3, prefix="1", limit=5)
    assert "Hash([v@0], 2)" in two.sql(sql).execution_plan().display_indent()
    assert "Hash([v@0], 8)" in eight.sql(sql).execution_plan().display_indent()


def test_same_shape_across_data_sizes(small: Path, tmp_path: Path) -> None:
    bigger = _write(tmp_path / "bigger", 20_000)
    assert _shape(_ctx(small, 4)) == _shape(_ctx(bigger, 4))


def test_same_shape_across_literals(small: Path) -> None:
    ctx = _ctx(small, 4)
    assert _shape(ctx) == _shape(ctx, QUERY.format(low=5, prefix="42", limit=9))


def test_sort_merge_join_changes_the_shape(small: Path) -> None:
    hashed, merged = _ctx(small, 4), _ctx(small, 4, hash_join=False)
    sql = QUERY.format(low=3, prefix="1", limit=5)
    assert "SortMergeJoinExec" in merged.sql(sql).execution_plan().display_indent()
    assert _shape(hashed) != _shape(merged)


def test_shape_text_has_no_literal_path_or_count(small: Path) -> None:
    ctx = _ctx(small, 8)
    df = ctx.sql(QUERY.format(low=3, prefix="1", limit=5))
    df.collect()
    text = shape_text(walk(df.execution_plan()))
    assert "HashJoinExec mode=" in text and "join_type=Inner" in text
    tokens = "\n".join(line.split(" ", 1)[1] for line in text.splitlines())  # no depths
    for absent in ("parquet", "8", "LIKE", "fetch", "@", str(small)):
        assert absent not in tokens.replace("file_type=parquet", ""), (absent, text)


def test_stable_across_processes(small: Path) -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
        "import test_plan_shape as t; print(t._shape(t._ctx(Path(sys.argv[1]), 3)))"
    )
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", script, str(small), here],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()[-1]
    assert out == _shape(_ctx(small, 4))


def test_column_and_span_attribute(small: Path) -> None:
    assert DATAFUSION_PLAN_ARTIFACTS_V1.field("plan_shape_hash").nullable
    row = _row(_ctx(small, 2), QUERY.format(low=3, prefix="1", limit=5))
    assert row["plan_shape_hash"]
    assert attr.DATAFUSION_PLAN_SHAPE_HASH == "datafusion.plan_shape_hash"
