"""Property-based: no rendering of any generated literal leaves the process (issue 13).

Hypothesis generates literal values (strings with quotes, backslashes, newlines, unicode,
``%`` / ``_``; integers, negatives, floats, scientific floats, decimals, hex; dates,
timestamps, intervals; arrays) and places them in many positions of real queries on a Parquet
table with statistics: projection, folded constants, CASE, arrays, arithmetic, date_bin, casts,
window frames, joins, IN lists of 1 to 12 values, BETWEEN, EXISTS and IN subqueries, LIMIT /
OFFSET, LIKE and starts_with (pruning predicates), CTE over VALUES, INSERT, CTAS, failing
queries whose errors quote the value (CAST, arrow_cast, regexp_match, INTERVAL). Every query goes through the bridge (default and all artifacts), the
DataFrame API, and the auto-instrumentation with capture; every span, every row, every file
under the artifact dir and every log record of the package at DEBUG is searched for the
renderings below. The renderings are written here, per DataFusion 55's display formats
(bare in physical plans, ``"`` -> ``_`` in graphviz, epoch values of timestamps, LIKE prefix
bounds...), not produced by the package's own generator.

Size: ``DATAFUSION_OTEL_SANITIZE_EXAMPLES`` (default 40 examples per test and seed; each example
places about 40 literals, so the default run checks over 2,000 literals). The nightly-sized run
sets it to 1000.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext, col, lit
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from capture_support import settle
from datafusion_otel import DataFusionInstrumentor, DiagnosticsCollector, config, tracked_run
from datafusion_otel._processing.delivery import dispatcher
from datafusion_otel.bridge import record_execution_artifacts, sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from sanitize_support import file_texts, leaks, log_texts, row_texts, span_texts, where

EXAMPLES = int(os.environ.get("DATAFUSION_OTEL_SANITIZE_EXAMPLES", "40"))
NAMES = ("t", "u", "m", "ctas_t", "id", "name", "amount", "ts", "uid", "uname", "a", "b", "c", "v")
EPOCH = dt.datetime(1970, 1, 1)
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALPHABET = "abcXYZ019 '\"\\%_-.,;:()[]{}=<>@#$\té中😀"


@dataclass
class Literals:
    """SQL fragments to place, and the renderings that must not appear anywhere."""

    oracle: set[str] = field(default_factory=set)
    count: int = 0

    def add(self, renderings: list[str]) -> None:
        self.count += 1
        self.oracle.update(renderings)


def string_oracle(value: str) -> list[str]:
    """DataFusion 55 prints a string bare (physical plans), raw inside ``Utf8("...")``
    (logical plans, no escaping), with ``"`` as ``_`` inside ``Utf8(_..._)`` (graphviz), and
    line by line when it holds a newline; SQL texts double its quotes (``''``)."""
    dot = value.replace('"', "_")
    out = [value, dot, f"_{dot}_", *value.splitlines(), value.replace("'", "''")]
    for line in dot.splitlines():
        out += [f"_{line}", f"{line}_"]
    return out


def bumped(prefix: str) -> str:
    """The upper bound DataFusion derives from a LIKE / starts_with prefix."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@st.composite
def strings(draw: st.DrawFn, tag: str) -> str:
    """A string literal: a distinctive head (so that it cannot be plan text) and any body."""
    body = draw(st.text(alphabet=ALPHABET, max_size=8))
    value = f"zq{tag}{draw(st.integers(100, 999))}{body}"
    if draw(st.booleans()):
        value += "\n" + f"zq{tag}n{draw(st.text(alphabet=ALPHABET, max_size=5))}"
    return value


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Query:
    sql: str
    fails: bool = False


@st.composite
def workload(draw: st.DrawFn) -> tuple[list[Query], Literals, Callable[[SessionContext], object]]:
    lits = Literals()

    def s(tag: str) -> str:
        value = draw(strings(tag))
        lits.add(string_oracle(value))
        return value

    def i(low: int = 10**6, high: int = 10**15) -> int:
        value = draw(st.integers(low, high)) * draw(st.sampled_from([1, -1]))
        lits.add(
            [
                str(value),
                str(abs(value)),
                f"{value}.0",
                f"{abs(value)}.0",
                format(abs(value), "x"),
                format(abs(value), "X"),
            ]
        )  # float and hex forms
        return value

    def f() -> str:
        whole, frac = draw(st.integers(10**4, 10**7)), draw(st.integers(1, 9999))
        text = f"{whole}.{frac}".rstrip("0")
        lits.add([text, repr(float(text))])
        return text

    def sci() -> str:
        mantissa, exponent = draw(st.integers(1001, 9999)), draw(st.integers(3, 11))
        text = f"{mantissa}e{exponent}"
        lits.add([text, str(mantissa * 10**exponent)])  # Rust prints f64 without exponent
        return text

    def dec() -> str:
        whole, frac = draw(st.integers(1000, 10**8)), draw(st.integers(1, 999999))
        text = f"{whole}.{frac:06d}"
        lits.add([text, f"{whole}{frac:06d}", text.rstrip("0")])  # Decimal128(Some(unscaled))
        return text

    def stamp() -> str:
        moment = EPOCH + dt.timedelta(seconds=draw(st.integers(10**9, 2 * 10**9)))
        seconds = int((moment - EPOCH).total_seconds())
        lits.add([str(moment), moment.isoformat(), str(seconds), str(seconds * 1000),
                  str(seconds * 10**6), str(seconds * 10**9)])  # fmt: skip
        return str(moment)

    def day() -> str:
        date = dt.date(2000, 1, 1) + dt.timedelta(days=draw(st.integers(0, 12000)))
        lits.add([date.isoformat(), str((date - dt.date(1970, 1, 1)).days)])
        return date.isoformat()

    def hexa() -> str:
        data = draw(st.binary(min_size=4, max_size=6))
        lits.add([data.hex().upper(), data.hex(), ",".join(str(b) for b in data),
                  str(int.from_bytes(data, "big"))])  # fmt: skip
        return "0x" + data.hex().upper()

    def interval() -> int:
        days = draw(st.integers(1000, 99999))
        lits.add([str(days)])
        return days

    in_strings = ", ".join(quote(s("in")) for _ in range(draw(st.integers(1, 12))))
    in_ints = ", ".join(str(i()) for _ in range(draw(st.integers(1, 12))))
    prefix = s("lk").split("\n")[0].replace("%", "").replace("_", "")
    read = re.sub(r"\\(.)", r"\1", prefix).rstrip("\\")  # LIKE: a backslash escapes
    lits.add([prefix, bumped(prefix), read, bumped(read)])
    start = s("sw").split("\n")[0]
    lits.add([start, bumped(start)])
    big = f"""
        SELECT t.id, {quote(s("p"))} AS p0, upper({quote(s("up"))}) AS p1,
          CASE WHEN t.amount > {f()} THEN {quote(s("th"))} ELSE {quote(s("el"))} END AS p2,
          make_array({quote(s("ar"))}, {quote(s("ar"))}) AS p3, {i()} + t.id AS p4,
          t.ts + INTERVAL '{interval()} days' AS p5,
          date_bin(INTERVAL '1 hour', t.ts, TIMESTAMP '{stamp()}') AS p6,
          DATE '{day()}' AS p7, CAST('{dec()}' AS DECIMAL(20,6)) AS p8, {hexa()} AS p9,
          sum(t.id) OVER (ORDER BY t.id ROWS BETWEEN {interval()} PRECEDING
            AND CURRENT ROW) AS p10, {sci()} AS p11, {f()} * t.amount AS p12
        FROM t JOIN u ON u.uid = t.id + {i()}
        WHERE (t.name IN ({in_strings}) OR t.id IN ({in_ints}) OR t.id BETWEEN {i()} AND {i()}
           OR EXISTS (SELECT 1 FROM u u2 WHERE u2.uname = {quote(s("ex"))})
           OR t.id IN (SELECT uid FROM u WHERE uname = {quote(s("sq"))}))
          AND t.ts < TIMESTAMP '{stamp()}'
        ORDER BY t.id LIMIT {abs(i(1000, 10**6))} OFFSET {abs(i(1000, 10**6))}"""
    pruned = (
        f"SELECT id FROM t WHERE name LIKE {quote(prefix + '%')} "
        f"AND starts_with(name, {quote(start)}) AND id > {i()}"
    )
    cte = (
        f"WITH c AS (SELECT * FROM (VALUES ({quote(s('va'))}, {i()})) v(a, b)) "
        f"SELECT a, b FROM c WHERE a <> {quote(s('ne'))}"
    )
    insert = f"INSERT INTO m VALUES ({quote(s('ins'))}, {i()})"
    ctas = f"CREATE OR REPLACE TABLE ctas_t AS SELECT {quote(s('ct'))} AS a, {i()} AS b"
    failing = draw(
        st.sampled_from(
            [
                "SELECT CAST({} AS INT) FROM t",
                "SELECT arrow_cast(id, {}) FROM t",
                "SELECT regexp_match(name, {}) FROM t",
                "SELECT INTERVAL {}",
            ]
        )
    ).format(quote(s("er") + "("))
    df_string, df_int = s("df"), i()

    def dataframe(ctx: SessionContext) -> object:
        frame = ctx.table("t").filter((col("name") == lit(df_string)) | (col("id") == lit(df_int)))
        return frame.select(col("id"), lit(df_string).alias("z"))

    queries = [Query(big), Query(pruned), Query(cte), Query(insert), Query(ctas)]
    queries.append(Query(failing, True))
    return queries, lits, dataframe


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sanitize-data")
    rows = 60
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": [f"name{k:03d}" for k in range(rows)],
            "amount": [k * 1.5 for k in range(rows)],
            "ts": pa.array([dt.datetime(2026, 1, 1) + dt.timedelta(hours=k) for k in range(rows)],
                           pa.timestamp("ns")),
        }
    )  # fmt: skip
    pq.write_table(table, folder / "t.parquet", row_group_size=20)  # statistics per group
    return folder


def _context(data: Path) -> SessionContext:
    ctx = SessionContext()
    ctx.register_parquet("t", str(data / "t.parquet"))
    ctx.from_pydict({"uid": [1, 2, 3], "uname": ["x", "y", "z"]}, name="u")
    ctx.from_pydict({"a": ["p"], "b": [1]}, name="m")
    return ctx


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def observed() -> Iterator[tuple[InMemorySpanExporter, TracerProvider, _Records]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    datafusion_otel.configure(tracer_provider=provider)
    handler = _Records()
    logger = logging.getLogger("datafusion_otel")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield exporter, provider, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        config.reset()
        provider.shutdown()


def _run_bridge(ctx: SessionContext, queries: list[Query], options: DataFusionCompileOptions,
                dataframe: Callable[[SessionContext], object], sink: DiagnosticsCollector) -> None:  # fmt: skip
    for query in queries:
        try:
            with tracked_run(label="prop", sink=sink):
                sql_to_datafusion(query.sql, ctx=ctx, options=options).to_arrow_table()
        except Exception:
            if not query.fails:
                raise
    frame = dataframe(ctx)
    frame.to_arrow_table()  # type: ignore[attr-defined]
    with tracked_run(label="prop-df", sink=sink) as run:
        record_execution_artifacts(frame, ctx=ctx, span=run._span, options=options)  # type: ignore[arg-type]


def _check(exporter: InMemorySpanExporter, sink: DiagnosticsCollector, directory: Path,
           handler: _Records, lits: Literals) -> None:  # fmt: skip
    settle()  # artifacts are captured off the query thread
    dispatcher.force_flush(10)  # rows are delivered off the query thread
    groups = {
        "spans": span_texts(exporter),
        "rows": row_texts(sink),
        "files": file_texts(directory),
        "logs": log_texts(handler.records),
    }
    texts = [t for group in groups.values() for t in group]
    assert any("TableScan" in t or "DataSourceExec" in t for t in texts)  # plans were captured
    found = leaks(texts, lits.oracle, NAMES)
    assert found == [], {r: {g: where(v, r) for g, v in groups.items()} for r in found}


def _bridge_property(data: Path, observed, tmp_path_factory) -> Callable[..., None]:  # type: ignore[no-untyped-def]
    exporter, _provider, handler = observed

    @given(work=workload(), everything=st.booleans())
    def body(work, everything: bool) -> None:  # type: ignore[no-untyped-def]
        queries, lits, dataframe = work
        assert lits.count >= 35
        exporter.clear()
        handler.records.clear()
        directory = tmp_path_factory.mktemp("explain")
        options = (
            DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=directory)
            if everything
            else DataFusionCompileOptions()
        )
        sink = DiagnosticsCollector()
        _run_bridge(_context(data), queries, options, dataframe, sink)
        _check(exporter, sink, directory, handler, lits)

    return body


def test_bridge_fixed_seed(data, observed, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    body = _bridge_property(data, observed, tmp_path_factory)
    PROPERTY(seed(20261202)(body))()


def test_bridge_random_seed(data, observed, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    body = _bridge_property(data, observed, tmp_path_factory)
    PROPERTY(body)()


def test_instrumentor_with_capture(data, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    datafusion_otel.configure(tracer_provider=provider)
    handler = _Records()
    logger = logging.getLogger("datafusion_otel")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    instrumentor = DataFusionInstrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_plan_artifacts=True)

    @given(work=workload())
    def body(work) -> None:  # type: ignore[no-untyped-def]
        queries, lits, dataframe = work
        exporter.clear()
        handler.records.clear()
        ctx = _context(data)
        for query in queries:
            try:
                ctx.sql(query.sql).to_arrow_table()
            except Exception:
                if not query.fails:
                    raise
        dataframe(ctx).to_arrow_table()  # type: ignore[attr-defined]
        provider.force_flush()
        sink = DiagnosticsCollector()
        _check(exporter, sink, tmp_path_factory.mktemp("none"), handler, lits)

    try:
        settings(PROPERTY, max_examples=max(EXAMPLES // 2, 5))(seed(20261203)(body))()
    finally:
        instrumentor.uninstrument()
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        config.reset()
        provider.shutdown()
