"""Error texts of issue 13's second review: DataFrame-API literals, parameters, computed values.

Each query fails; every span, row and package log record must hold no rendering of the
literal (the oracle is written here).
"""

from __future__ import annotations

import logging

import pytest
from datafusion import SessionContext, col, lit
from datafusion import functions as f
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, config, tracked_run
from datafusion_otel._sanitize.errors import exception_text, remember_frame
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from instrumentation_support import instrumented
from sanitize_support import leaks, log_texts, row_texts, span_texts

NAMES = ("t", "id", "name")


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    datafusion_otel.configure(tracer_provider=provider)
    yield memory
    config.reset()


def _context() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict({"id": [1, 2, 3], "name": ["a", "b", "c"]}, name="t")
    return ctx


def _fail(build, sink) -> str:
    with pytest.raises(Exception) as raised, tracked_run(label="err", sink=sink):
        build().to_arrow_table()
    return str(raised.value)


DATAFRAME_FAILURES = [
    # regex parse error:\n    zqrx7secret(\n ... printed the pattern bare
    (lambda ctx: ctx.table("t").select(f.regexp_match(col("name"), lit("zqrx7secret("))),
     "zqrx7secret"),
    # Unsupported type '...'. ... Error unknown token: zqat7secret
    (lambda ctx: ctx.table("t").select(f.arrow_cast(col("id"), "zqat7secret")), "zqat7secret"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "secret"), DATAFRAME_FAILURES)
def test_dataframe_api_errors_plain(exporter, caplog, build, secret):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    ctx, sink = _context(), DiagnosticsCollector()
    message = _fail(lambda: build(ctx), sink)
    assert secret in message  # the query did quote it
    texts = span_texts(exporter) + row_texts(sink) + log_texts(caplog.records)
    assert any("error" in t.lower() for t in texts)
    assert leaks(texts, [secret], NAMES) == []


@pytest.mark.parametrize(("build", "secret"), DATAFRAME_FAILURES)
def test_dataframe_api_errors_instrumented(caplog, build, secret):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    with instrumented(capture_plan_artifacts=True) as traced:
        ctx, sink = _context(), DiagnosticsCollector()
        _fail(lambda: build(ctx), sink)
        texts = span_texts(traced.exporter) + row_texts(sink) + log_texts(caplog.records)
    assert any("error" in t.lower() for t in texts)
    assert leaks(texts, [secret], NAMES) == []


def test_param_values_do_not_leak(caplog):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    with instrumented() as traced:
        ctx, sink = _context(), DiagnosticsCollector()
        _fail(
            lambda: ctx.sql(
                "SELECT regexp_match(name, $1) FROM t", param_values={"1": "zqnp7secret(x"}
            ),
            sink,
        )
        _fail(lambda: ctx.sql("SELECT CAST($1 AS INT)", param_values={"1": "zqpv7secret"}), sink)
        texts = span_texts(traced.exporter) + row_texts(sink) + log_texts(caplog.records)
    assert any("regex" in t for t in texts)
    assert leaks(texts, ["zqnp7secret", "zqpv7secret"], NAMES) == []


def test_computed_constants_are_hidden_when_the_sql_is_known(exporter, tmp_path, caplog):
    # Can't cast value 8675309123000 to type Int32: a value no literal renders
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    ctx, sink = _context(), DiagnosticsCollector()
    options = DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path)
    sql = "SELECT arrow_cast(8675309123 * 1000, 'Int32') AS x, id FROM t"
    message = _fail(lambda: sql_to_datafusion(sql, ctx=ctx, options=options), sink)
    assert "8675309123000" in message
    texts = span_texts(exporter) + row_texts(sink) + log_texts(caplog.records)
    assert leaks(texts, ["8675309123000", "8675309123"], NAMES) == []
    metadata = sink.events_snapshot()["datafusion_runs_v1"][0]["metadata"]
    assert "Can't cast value ? to type" in metadata  # the rest of the message stays


def test_remembered_plan_literals_redact_a_bare_value():
    ctx = _context()
    df = ctx.table("t").filter(col("name") == lit("zqbare7secret")).select(col("id"))
    exc = RuntimeError("failed on zqbare7secret near id")  # a message quoting a value bare
    assert "zqbare7secret" in exception_text(exc, "sanitized")  # unknown: no quotes to go by
    remember_frame(exc, df)
    out = exception_text(exc, "sanitized")
    assert "zqbare7secret" not in out and "near id" in out
    assert exception_text(exc, "raw") == str(exc)


def test_hidden_numbers_keep_short_numbers_and_names():
    from datafusion_otel._sanitize.errors import error_text

    sql = "SELECT c1 FROM t2 WHERE id = 5"
    out = error_text(
        "column c123 of t2 at @100: 42 rows, value 86753 and -1234.5", "sanitized", sql
    )
    assert out == "column c123 of t2 at @100: 42 rows, value ? and ?"
    assert error_text("x", "sanitized", sql) == "x"


COMMAND_STATEMENTS = [
    # sqlglot read the rest after a command word as one string token with wrong positions
    ("EXPLAIN SELECT id FROM t WHERE name = 'zqcmd1secret' AND id > 8765431",
     ["zqcmd1secret", "8765431"]),
    ("EXPLAIN SELECT id FROM t WHERE name = 'zqcmd2secret' -- trailing comment", ["zqcmd2secret"]),
    ("EXPLAIN VERBOSE SELECT 'zqv1secret', 'zqv2secret'", ["zqv1secret", "zqv2secret"]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "secrets"), COMMAND_STATEMENTS)
def test_command_statements_keep_no_literal_in_query_text(sql, secrets):
    with instrumented() as traced:
        ctx = _context()
        with tracked_run(label="explain"):
            ctx.sql(sql).collect()
        texts = span_texts(traced.exporter)
    assert any("EXPLAIN" in t for t in texts)  # db.query.text is there, sanitized
    assert leaks(texts, secrets, NAMES) == []


@pytest.mark.parametrize(
    "sql",
    ["EXECUTE zqp('zqcmd5secret')", "PREPARE p2 AS SELECT id FROM t WHERE name = 'zqprep1secret'",
     "CALL zqp('zqcallsecret')"],
)  # fmt: skip
def test_command_statements_are_sanitized_token_by_token(sql):
    from datafusion_otel.sanitize import normalize_sql, sanitize_sql

    for text in (sanitize_sql(sql), normalize_sql(sql)):
        assert "secret" not in text and "?" in text, text
        assert text.split()[0] == sql.split()[0]  # the statement stays readable


@pytest.mark.parametrize("value", ["zqap2 it's secret7", "zq'apos7secret"])
def test_apostrophes_do_not_end_a_quoted_value_in_unknown_query_errors(exporter, caplog, value):
    import pyarrow as pa

    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    ctx, sink = _context(), DiagnosticsCollector()
    message = _fail(lambda: ctx.table("t").select(lit(value).cast(pa.int32())), sink)
    assert value in message  # DataFusion quoted it: Cannot cast string '...' to value of Int32
    texts = span_texts(exporter) + row_texts(sink) + log_texts(caplog.records)
    assert any("Cannot cast string" in t for t in texts)
    assert leaks(texts, [value, value.split("'")[-1]], NAMES) == []
