"""Sanitizing under a non-default ``datafusion.sql_parser.dialect`` (issue 13, second review).

Under MySQL, ``"text"`` is a string for DataFusion and ``\\'`` an escape: sqlglot's postgres
tokenizer read them as an identifier and a closing quote, so those literals were exempt.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, config, tracked_run
from datafusion_otel._sanitize.dialect import session_dialect
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from datafusion_otel.sanitize import sanitize_sql
from instrumentation_support import instrumented
from sanitize_support import file_texts, leaks, log_texts, row_texts, span_texts

NAMES = ("t", "id", "name", "a")


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    datafusion_otel.configure(tracer_provider=provider)
    yield memory
    config.reset()


def _context(tmp_path, dialect: str) -> SessionContext:
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"]})
    pq.write_table(table, tmp_path / "t.parquet")
    ctx = SessionContext(SessionConfig().set("datafusion.sql_parser.dialect", dialect))
    ctx.register_parquet("t", str(tmp_path / "t.parquet"))
    return ctx


QUERIES = [
    ('SELECT id, "zqdq7secret" AS a FROM t WHERE name = "zqdq7secret"', ["zqdq7secret"], False),
    ("SELECT id FROM t WHERE name = 'x\\'' OR name = 'zqbs7secret' -- '", ["zqbs7secret"], False),
    ('SELECT CAST("zqdqcast" AS INT)', ["zqdqcast"], True),
]


@pytest.mark.parametrize("dialect", ["MySQL", "BigQuery"])
@pytest.mark.parametrize(("sql", "oracle", "fails"), QUERIES)
def test_mysql_strings_are_literals(exporter, tmp_path, caplog, dialect, sql, oracle, fails):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    ctx = _context(tmp_path, dialect)
    sink = DiagnosticsCollector()
    folder = tmp_path / "art"
    options = DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=folder)
    try:
        with tracked_run(label="dialect", sink=sink):
            sql_to_datafusion(sql, ctx=ctx, options=options).to_arrow_table()
    except Exception:
        assert fails
    else:
        assert not fails
    texts = span_texts(exporter) + row_texts(sink) + log_texts(caplog.records)
    if folder.exists():
        texts += file_texts(folder)
    assert any("SELECT" in t for t in texts)
    assert leaks(texts, oracle, NAMES) == []


def test_instrumented_query_text_under_mysql(tmp_path):
    with instrumented() as traced:
        ctx = _context(tmp_path, "MySQL")
        ctx.sql('SELECT id FROM t WHERE name = "zqinstr7secret"').to_arrow_table()
        span = traced.only_execution()
        texts = span_texts(traced.exporter)
    assert span.attributes["db.query.text"] == "SELECT id FROM t WHERE name = ?"
    assert leaks(texts, ["zqinstr7secret"], NAMES) == []


def test_dialect_is_read_per_context(tmp_path):
    assert session_dialect(_context(tmp_path, "MySQL")) == "mysql"
    assert session_dialect(SessionContext()) == "generic"
    # under the default dialect "..." stays a name
    assert (
        sanitize_sql("SELECT \"Name\" FROM t WHERE a = 'x'") == 'SELECT "Name" FROM t WHERE a = ?'
    )
