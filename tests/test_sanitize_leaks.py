"""One regression test per leak of issue 13: each one leaked under the default settings."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext, col, lit
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from capture_support import settle
from datafusion_otel import DiagnosticsCollector, config, tracked_run
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._processing.delivery import dispatcher
from datafusion_otel._sanitize.redact import WITHHELD, Redactor
from datafusion_otel.bridge import record_execution_artifacts, sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from datafusion_otel.sanitize import sanitize_sql
from sanitize_support import file_texts, leaks, log_texts, row_texts, span_texts


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    datafusion_otel.configure(tracer_provider=provider)
    yield memory
    config.reset()


@pytest.fixture
def ctx(tmp_path_factory) -> SessionContext:
    folder = tmp_path_factory.mktemp("users")
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "email": ["alice@example.com", "bob@example.com", "carol@example.com"],
            "ts": pa.array([dt.datetime(2026, 1, 1, h) for h in (1, 2, 3)], pa.timestamp("ns")),
        }
    )
    pq.write_table(table, folder / "users.parquet")  # with statistics: pruning predicates
    context = SessionContext()
    context.register_parquet("users", str(folder / "users.parquet"))
    return context


def _everything(exporter, sink, directory, caplog) -> list[str]:
    return (
        span_texts(exporter) + row_texts(sink) + file_texts(directory) + log_texts(caplog.records)
    )


def _run(ctx, sql, tmp_path, *, fails=False):
    sink = DiagnosticsCollector()
    options = DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path)
    try:
        with tracked_run(label="leak", sink=sink):
            sql_to_datafusion(sql, ctx=ctx, options=options).to_arrow_table()
    except Exception:
        if not fails:
            raise
    else:
        assert not fails, "the query was expected to fail"
    return sink


NAMES = ("users", "email", "id", "ts")


@pytest.mark.parametrize(
    ("sql", "oracle"),
    [
        # physical plans print literals unquoted: ProjectionExec: expr=[secret as x]
        ("SELECT 'secretproj' AS x, id FROM users", ["secretproj"]),
        ("SELECT 86421356 + id FROM users", ["86421356"]),
        # IN lists kept their first value: IN (SET) ([86421300, ?, ...
        ("SELECT id FROM users WHERE id IN (86421300, 86421301, 86421302, 86421303)",
         ["86421300", "86421301", "86421302", "86421303"]),
        # make_array('secret') gives List([secret])
        ("SELECT make_array('secretarr') AS a FROM users", ["secretarr"]),
        # pruning predicates: email_min@0 <= secreu AND secret <= email_max@1
        ("SELECT id FROM users WHERE email LIKE 'secretpfx%'", ["secretpfx", "secretpfy"]),
        ("SELECT id FROM users WHERE starts_with(email, 'secretsw')", ["secretsw", "secretsx"]),
        # a timestamp argument as epoch nanoseconds: date_bin(?, ts@0, 1770091506000000000)
        ("SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMP '2026-02-03 04:05:06') FROM users",
         ["1770091506000000000", "2026-02-03 04:05:06", "2026-02-03T04:05:06"]),
        # graphviz kept a literal holding a newline
        ("SELECT id FROM users WHERE email = 'firstline\nsecondline'",
         ["firstline", "secondline", "_firstline", "secondline_"]),  # DOT: Utf8(_value_)
        # substrait_validation_status held DataFusion's plan dump: Literal(Utf8("secret"))
        ("SELECT unnest(make_array('secretunnest')) FROM users", ["secretunnest"]),
        ("SELECT arrow_cast('secretcastok', 'LargeUtf8'), 'secretvc'::varchar(20) || email "
         "FROM users", ["secretcastok", "secretvc"]),
        # folded constants appear only in the optimized and physical plans
        ("SELECT upper('foldedvalue') AS u FROM users", ["foldedvalue", "FOLDEDVALUE"]),
        ("SELECT id FROM users LIMIT 424242 OFFSET 737373", ["424242", "737373"]),
        ("SELECT id FROM users WHERE id = 0xC0FFEE1234",
         ["192,255,238,18,52", "C0FFEE1234", "c0ffee1234", "828927513140"]),
    ],
)  # fmt: skip
def test_no_rendering_leaves_the_process(ctx, exporter, tmp_path, caplog, sql, oracle):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    fails = "0xC0FFEE1234" in sql  # comparing Int64 with Binary is a planning error
    sink = _run(ctx, sql, tmp_path, fails=fails)
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert texts and any("users" in t for t in texts)  # something was captured at all
    assert leaks(texts, oracle, NAMES) == []


def test_dataframe_api_literal(ctx, exporter, tmp_path, caplog):
    # lit('x"secret') appeared as FilterExec: email@0 = x"secret
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    df = ctx.table("users").filter(col("email") == lit('x"secretdf')).select(col("id"))
    df.to_arrow_table()
    sink = DiagnosticsCollector()
    options = DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path)
    with tracked_run(label="df", sink=sink) as run:
        art = record_execution_artifacts(df, ctx=ctx, span=run._span, options=options)
    assert art is not None and art.physical_plan and "FilterExec" in art.physical_plan
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert leaks(texts, ['x"secretdf', "secretdf", "x_secretdf"], NAMES) == []


@pytest.mark.parametrize(
    ("sql", "oracle"),
    [
        ("SELECT INTERVAL 'secretinterval days'", ["secretinterval"]),
        ("SELECT arrow_cast(id, 'secretcast') FROM users", ["secretcast"]),
        ("SELECT regexp_match(email, 'secretregex(') FROM users", ["secretregex"]),
        ("SELECT CAST('secretint' AS INT)", ["secretint"]),
    ],
)
def test_error_texts_hold_no_literal(ctx, exporter, tmp_path, caplog, sql, oracle):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    sink = _run(ctx, sql, tmp_path, fails=True)
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert any("error" in t.lower() for t in texts)
    assert leaks(texts, oracle, NAMES) == []


def test_a_failed_query_is_sanitized_while_its_capture_waits(
    ctx, exporter, tmp_path, caplog, monkeypatch
):
    """The run records the exception as soon as it propagates, when its capture may not have
    run yet: the SQL text must be remembered on it on the query's thread. It was remembered on
    the capture worker, so a busy worker let the message out sanitized without its query: a
    string that spans lines is no quoted text of one line (a flaky property test)."""
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    monkeypatch.setenv(_capture_queue.WAIT_ENV, "0")  # the run's end does not wait for it
    release, started = threading.Event(), threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(60)

    assert _capture_queue.submit(0, stuck) and started.wait(10)
    try:
        sql = "SELECT CAST('secretfirst\\Y$\nsecretsecond,(' AS INT) FROM users"
        sink = _run(ctx, sql, tmp_path, fails=True)
    finally:
        release.set()
    settle()
    dispatcher.force_flush(10)
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert any("Cannot cast string" in t for t in span_texts(exporter))  # it was recorded
    assert leaks(texts, ["secretfirst", "secretsecond"], NAMES) == []


def test_a_failed_query_whose_sql_is_unknown_keeps_a_multiline_value_out(
    ctx, exporter, tmp_path, caplog
):
    """Capture off: the plain DataFrame fails while running and nothing remembered its SQL, so
    the message is sanitized without its query; a quoted value spanning lines is no name."""
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    sink = DiagnosticsCollector()
    sql = "SELECT CAST('secretline\\Y$\nsecondline,(' AS INT) FROM users"
    options = DataFusionCompileOptions(capture_plan_artifacts=False)
    with pytest.raises(Exception, match="Cannot cast"), tracked_run(label="off", sink=sink):
        sql_to_datafusion(sql, ctx=ctx, options=options).to_arrow_table()
    dispatcher.force_flush(10)
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert any("Cannot cast string" in t for t in span_texts(exporter))
    assert leaks(texts, ["secretline", "secondline"], NAMES) == []


def test_names_survive_in_plans_and_errors(ctx, exporter, tmp_path):
    sink = _run(ctx, "SELECT email FROM users WHERE email = 'users'", tmp_path)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert "TableScan: users" in row["logical_plan"]
    assert "email" in row["physical_plan"]
    failed = _run(ctx, "SELECT * FROM orders_missing WHERE id = 'secretmissing'", tmp_path,
                  fails=True)  # fmt: skip
    metadata = failed.events_snapshot()["datafusion_runs_v1"][0]["metadata"]
    assert "table 'datafusion.public.orders_missing' not found" in metadata
    assert "secretmissing" not in metadata


def test_sanitize_sql_reads_every_literal_form():
    text = "SELECT $$secretdollar$$, 0xC0FFEE1234, E'it\\'s secretesc' FROM t WHERE a = 'x'"
    out = sanitize_sql(text)
    assert out == "SELECT ?, ?, ? FROM t WHERE a = ?"
    assert sanitize_sql("SELECT $tag$secret$tag$ -- note 'c'\nFROM t") == "SELECT ? FROM t"


def test_substrait_status_dump_is_redacted():
    status = 'failed: Substrait error: Literal(Utf8("secretsub")) not supported in Filter'
    assert (
        Redactor(["secretsub"]).text(status)
        == "failed: Substrait error: Literal(?) not supported in Filter"
    )
    assert "secretunknown" not in Redactor([]).text(status.replace("secretsub", "secretunknown"))


def test_capture_logger_writes_no_exception_text(ctx, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    sink = DiagnosticsCollector()
    with pytest.raises(Exception, match="Cast error"), tracked_run(label="boom", sink=sink):
        sql_to_datafusion(
            "SELECT CAST('secretlogged' AS INT) FROM users",
            ctx=ctx,
            options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path),
        ).to_arrow_table()
    assert leaks(log_texts(caplog.records), ["secretlogged"]) == []


def test_a_text_still_holding_a_rendering_is_withheld():
    redactor = Redactor(["withheldvalue"], complete=False)
    assert redactor.text("Filter: x = withheldvalue") == WITHHELD  # plan walk incomplete
    redactor = Redactor(["abc"])
    assert redactor.text("ProjectionExec: expr=[abc as y]") == "ProjectionExec: expr=[? as y]"


def test_explain_files_need_an_explicit_directory(ctx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = DiagnosticsCollector()
    with tracked_run(label="nofile", sink=sink):
        sql_to_datafusion(
            "SELECT id FROM users",
            ctx=ctx,
            options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS),
        ).to_arrow_table()
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert row["explain_rows_artifact_path"] is None
    assert "artifact_dir" in row["artifact_errors"]
    assert not list(tmp_path.rglob("*.arrow"))


def test_a_literal_inside_a_longer_name_is_not_a_match(ctx, tmp_path):
    sink = _run(ctx, "SELECT id AS o_year, email FROM users WHERE email = 'year'", tmp_path)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert "o_year" in row["physical_plan"] and "o_year" in row["logical_plan"]
    assert "withheld" not in row["physical_plan"]
    assert leaks([row["physical_plan"], row["logical_plan"]], ["year"], ["o_year"]) == []


def test_error_text_without_its_query_uses_recent_literals():
    from datafusion_otel._sanitize.errors import error_text
    from datafusion_otel.sanitize import normalize_sql

    normalize_sql("SELECT regexp_match(b, 'recentsecret(') FROM orders")  # the instrumentation
    message = "regex parse error:\n    recentsecret(\n    ^\nerror: unclosed group"
    out = error_text(message, "sanitized")
    assert "recentsecret" not in out and "regex parse error" in out
    assert error_text("table 'orders' not found", "sanitized") == "table 'orders' not found"
    assert error_text("no user 'neverseen@example.com' id 4242", "sanitized") == ("no user ? id ?")


def test_sql_text_keeps_keywords_that_a_literal_also_holds(ctx, tmp_path):
    sink = _run(ctx, "SELECT id FROM users WHERE email = 'FROM users SELECT'", tmp_path)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert row["sql"] == "SELECT id FROM users WHERE email = ?"


def test_sanitizing_filter_treats_messages_and_tracebacks(caplog):
    from datafusion_otel._sanitize.errors import SanitizingFilter
    from datafusion_otel.sanitize import normalize_sql

    normalize_sql("SELECT * FROM orders WHERE note = 'filtersecret'")
    logger = logging.getLogger("datafusion_otel.test_filter")
    logger.addFilter(SanitizingFilter())
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    try:
        raise ValueError("cannot parse 'filtersecret' for orders")
    except ValueError:
        logger.exception("failed on %s", "filtersecret")
    record = caplog.records[-1]
    texts = [caplog.text, record.getMessage(), record.exc_text or ""]
    assert leaks(texts, ["filtersecret"]) == []
    assert "ValueError" in caplog.text and "failed on ?" in caplog.text


def test_every_package_logger_is_protected_once_a_query_is_captured(ctx, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    _run(ctx, "SELECT id FROM users WHERE email = 'emitsecret'", tmp_path)
    try:
        raise RuntimeError("sink failed on row 'emitsecret'")
    except RuntimeError:
        logging.getLogger("datafusion_otel.delivery").exception("sink raised")
    assert "sink raised" in caplog.text and "RuntimeError" in caplog.text
    assert leaks([caplog.text, *log_texts(caplog.records)], ["emitsecret"]) == []


def test_db_query_text_in_span_only_instrumentation():
    from instrumentation_support import instrumented, make_context

    with instrumented() as traced:
        ctx = make_context()
        ctx.sql(
            "SELECT $$dollarsecret$$ AS x, 0xC0FFEE1234 AS y, E'it\\'s escsecret' AS z FROM t"
        ).to_arrow_table()
        texts = span_texts(traced.exporter)
        span = traced.only_execution()
    query = span.attributes["db.query.text"]
    assert query == "SELECT ? AS x, ? AS y, ? AS z FROM t"
    oracle = ["dollarsecret", "C0FFEE1234", "escsecret", "192,255,238,18,52"]
    assert leaks(texts, oracle, ["t"]) == []


def test_a_2000_value_in_list_is_redacted(ctx, exporter, tmp_path, caplog):
    # 1,000 strings + 1,000 integers: redaction and the leak check are one pass per text
    # (benchmarks/bench_sanitize.py measures the cost; no timing is asserted here)
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    strings = [f"zqv{i:05d}x" for i in range(1000)]
    numbers = [str(10**9 + 7 * i) for i in range(1000)]
    sql = (
        "SELECT id FROM users WHERE email IN ("
        + ",".join(f"'{s}'" for s in strings)
        + ") OR id IN ("
        + ",".join(numbers)
        + ")"
    )
    sink = _run(ctx, sql, tmp_path)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert "TableScan: users" in row["logical_plan"] and "FilterExec" in row["physical_plan"]
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert leaks(texts, strings + numbers, NAMES) == []


def test_longest_rendering_wins_and_names_stay():
    redactor = Redactor(["abc", "abc def", 12345], identifiers=["abcd"])
    assert redactor.text("x = abc def AND abcd = 12345 OR y = abc") == "x = ? AND abcd = ? OR y = ?"
    assert (
        redactor.text("f(12345.0) g(-12345) h(x12345) i(abc_1)") == "f(?) g(?) h(x12345) i(abc_1)"
    )
    assert not redactor.leaks("abcdef xabc abc_def 123456")
    assert redactor.leaks("[abc]")


def test_leading_dot_numbers_are_one_literal(ctx, exporter, tmp_path, caplog):
    # sqlglot reads ".8675309123e3" as "." and "8675309123e3"; DataFusion reads 867.5309123
    caplog.set_level(logging.DEBUG, logger="datafusion_otel")
    sql = "SELECT .8675309123e3 + id AS x, id * .31415926 AS y FROM users /* note */"
    sink = _run(ctx, sql, tmp_path)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert row["sql"] == "SELECT ? + id AS x, id * ? AS y FROM users"
    texts = _everything(exporter, sink, tmp_path, caplog)
    assert leaks(texts, ["867.5309123", "0.31415926", ".31415926", "31415926"], NAMES) == []
    assert sanitize_sql("SELECT t.a, .5e3, x.y FROM t") == "SELECT t.a, ?, x.y FROM t"
