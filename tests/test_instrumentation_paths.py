"""Every execution path gives exactly one execution span, named, attributed and parented."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from datafusion import DataFrame, SessionContext
from opentelemetry.trace import format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel._processing.span_rows import run_row
from instrumentation_support import Traced, instrumented, make_context


@pytest.fixture
def traced() -> Iterator[Traced]:
    with instrumented() as t:
        yield t


def _aiter(df: DataFrame) -> list[Any]:
    async def read() -> list[Any]:
        return [batch async for batch in df]

    return asyncio.run(read())


# method attribute -> (call, returned rows when the method makes them known)
PATHS: dict[str, tuple[Callable[[DataFrame, Path], Any], int | None]] = {
    "collect": (lambda df, _: df.collect(), 2),
    "collect_partitioned": (lambda df, _: df.collect_partitioned(), 2),
    "collect_column": (lambda df, _: df.collect_column("a"), 2),
    "to_arrow_table": (lambda df, _: df.to_arrow_table(), 2),
    "to_pandas": (lambda df, _: df.to_pandas(), 2),
    "to_polars": (lambda df, _: df.to_polars(), 2),
    "to_pylist": (lambda df, _: df.to_pylist(), 2),
    "to_pydict": (lambda df, _: df.to_pydict(), 2),
    "count": (lambda df, _: df.count(), 2),
    "show": (lambda df, _: df.show(), None),
    "tail": (lambda df, _: df.tail(1), None),
    "cache": (lambda df, _: df.cache(), None),
    "describe": (lambda df, _: df.describe(), None),
    "execute_stream": (lambda df, _: list(df.execute_stream()), 2),
    "execute_stream_partitioned": (
        lambda df, _: [list(s) for s in df.execute_stream_partitioned()],
        2,
    ),
    "__iter__": (lambda df, _: list(df), 2),
    "__aiter__": (lambda df, _: _aiter(df), 2),
    "__arrow_c_stream__": (lambda df, _: pa.table(df), 2),
    "write_csv": (lambda df, tmp: df.write_csv(tmp / "out.csv"), None),
    "write_json": (lambda df, tmp: df.write_json(tmp / "out.json"), None),
    "write_parquet": (lambda df, tmp: df.write_parquet(tmp / "out.parquet"), None),
    "write_parquet_with_options": (
        lambda df, tmp: df.write_parquet_with_options(tmp / "o.parquet", _parquet_options()),
        None,
    ),
}


def _parquet_options() -> Any:
    from datafusion import ParquetWriterOptions

    return ParquetWriterOptions()


def _check_attributes(span: Any, method: str, rows: int | None, ctx: SessionContext) -> None:
    attrs = dict(span.attributes)
    assert span.name == "SELECT t"
    assert attrs[attr.DB_SYSTEM_NAME] == "datafusion"
    assert attrs[attr.DB_QUERY_SUMMARY] == "SELECT t"
    assert attrs[attr.DB_OPERATION_NAME] == "SELECT"
    assert attrs[attr.DB_COLLECTION_NAME] == "t"
    assert attrs[attr.DB_QUERY_TEXT] == "SELECT a, b FROM t WHERE a > ?"
    assert attrs[attr.DATAFUSION_METHOD] == f"DataFrame.{method}"
    assert attrs[attr.DATAFUSION_SESSION_ID] == ctx.session_id()
    assert attrs.get(attr.DB_RESPONSE_RETURNED_ROWS) == rows


@pytest.mark.parametrize("method", list(PATHS))
def test_path_outside_a_run_is_its_own_run(traced: Traced, tmp_path: Path, method: str) -> None:
    """With auto_run, the execution span is the root span of a run whose id is its trace id."""
    ctx = make_context()
    df = ctx.sql("SELECT a, b FROM t WHERE a > 1")
    call, rows = PATHS[method]
    call(df, tmp_path)
    gc.collect()
    span = traced.only_execution()
    _check_attributes(span, method, rows, ctx)
    assert span.parent is None
    assert span.attributes[attr.RUN_ID] == format_trace_id(span.context.trace_id)
    assert span.name == "SELECT t"
    assert attr.RUN_STATUS not in span.attributes  # derived: "completed" unless it failed
    row = run_row(span)
    assert (row["label"], row["status"]) == ("SELECT t", "completed")
    assert json.loads(str(row["metadata"]))["datafusion_otel.auto_run"] is True
    assert len(traced.spans()) == 1  # no second span from internal nesting


@pytest.mark.parametrize("method", list(PATHS))
def test_path_inside_a_run_is_a_child_of_the_run(
    traced: Traced, tmp_path: Path, method: str
) -> None:
    """Inside tracked_run the execution span is a child of the run's root span."""
    ctx = make_context()
    df = ctx.sql("SELECT a, b FROM t WHERE a > 1")
    call, rows = PATHS[method]
    with tracked_run(label="pipeline") as run:
        call(df, tmp_path)
        gc.collect()
    span = traced.only_execution()
    _check_attributes(span, method, rows, ctx)
    assert run.span is not None
    assert span.parent is not None
    assert span.parent.span_id == run.span.get_span_context().span_id
    assert format_trace_id(span.context.trace_id) == run.run_id
    assert attr.RUN_ID not in span.attributes


def test_polars_from_dataframe(traced: Traced) -> None:
    """polars.DataFrame(df) reads through __arrow_c_stream__: one span, rows counted."""
    import polars as pl

    df = make_context().sql("SELECT a, b FROM t WHERE a > 1")
    assert pl.DataFrame(df).height == 2
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.__arrow_c_stream__"
    assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 2


def test_write_table(traced: Traced) -> None:
    """write_table inserts through one span named from the source query."""
    ctx = make_context()
    ctx.sql("CREATE TABLE target (a BIGINT, b VARCHAR)")
    traced.clear()
    ctx.sql("SELECT a, b FROM t WHERE a > 1").write_table("target")
    span = traced.only_execution()
    assert span.name == "SELECT t"
    assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.write_table"
    assert ctx.sql("SELECT count(*) AS n FROM target").to_pydict() == {"n": [2]}


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("CREATE TABLE c AS SELECT a FROM t", "CREATE c t"),
        ("CREATE VIEW v AS SELECT a FROM t", "CREATE v t"),
        ("SET datafusion.execution.batch_size = 4096", "SET"),
    ],
)
def test_eager_sql_statement_has_one_span(traced: Traced, statement: str, name: str) -> None:
    """DDL runs inside SessionContext.sql: one span there, named from the statement."""
    ctx = make_context()
    ctx.sql(statement)
    span = traced.only_execution()
    assert span.name == name
    assert span.attributes[attr.DATAFUSION_METHOD] == "SessionContext.sql"
    assert span.attributes[attr.DATAFUSION_SESSION_ID] == ctx.session_id()


def test_sql_with_options_nests_without_a_second_span(traced: Traced) -> None:
    """sql_with_options calls sql internally; only the outer call is traced."""
    from datafusion import SQLOptions

    ctx = make_context()
    ctx.sql_with_options("CREATE TABLE c AS SELECT a FROM t", SQLOptions())
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_METHOD] == "SessionContext.sql_with_options"
    assert len(traced.spans()) == 1


def test_lazy_sql_has_no_span_until_executed(traced: Traced) -> None:
    """A SELECT (or INSERT) through SessionContext.sql is lazy: its span comes at execution."""
    ctx = make_context()
    df = ctx.sql("INSERT INTO t VALUES (4, 'w')")
    assert traced.executions() == []
    df.collect()
    span = traced.only_execution()
    assert span.name == "INSERT t"
    assert span.attributes[attr.DB_OPERATION_NAME] == "INSERT"


def test_session_context_execute(traced: Traced) -> None:
    """SessionContext.execute(plan, partition) is one span ending with its stream."""
    ctx = make_context()
    plan = ctx.sql("SELECT a FROM t").execution_plan()
    traced.clear()
    batches = list(ctx.execute(plan, 0))
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_METHOD] == "SessionContext.execute"
    assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == sum(
        b.to_pyarrow().num_rows for b in batches
    )
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is True


def test_dataframe_api_query_is_named_from_its_plan(traced: Traced) -> None:
    """Without SQL, the span is named from the plan's table scans and has no db.query.text."""
    from datafusion import col, lit

    ctx = make_context()
    ctx.from_pydict({"a": [1], "c": [2]}, name="u")
    traced.clear()
    df = ctx.table("t").join(ctx.table("u"), on="a").filter(col("c") > lit(0))
    df.collect()
    span = traced.only_execution()
    assert span.name == "SELECT t u"
    assert attr.DB_QUERY_TEXT not in span.attributes
    assert attr.DB_COLLECTION_NAME not in span.attributes


def test_tail_and_cache_results_keep_the_query_name(traced: Traced) -> None:
    """The DataFrames returned by tail and cache are named like their source query."""
    df = make_context().sql("SELECT a, b FROM t WHERE a > 1")
    df.tail(1).collect()
    names = [(s.name, s.attributes[attr.DATAFUSION_METHOD]) for s in traced.executions()]
    assert names == [("SELECT t", "DataFrame.tail"), ("SELECT t", "DataFrame.collect")]


def test_write_parquet_with_writer_options_is_one_span(traced: Traced, tmp_path: Path) -> None:
    """``write_parquet(path, ParquetWriterOptions)`` calls write_parquet_with_options inside."""
    df = make_context().sql("SELECT a, b FROM t WHERE a > 1")
    df.write_parquet(tmp_path / "w.parquet", _parquet_options())
    span = traced.only_execution()
    assert span.attributes is not None
    assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.write_parquet"
