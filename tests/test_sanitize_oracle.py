"""Pin DataFusion 55's display formats that the sanitizing oracle and rules rely on.

The oracle of the sanitizing tests (tests/sanitize_support.py, test_sanitize_*.py) is written
per DataFusion 55's formats. Under ``sql_text="raw"`` the plans are kept as DataFusion prints
them: if an upgrade changes one of these formats, this test fails loudly, and the oracle and
the structural rules of ``_sanitize.redact`` must be reviewed.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions

RAW = DataFusionCompileOptions(
    artifacts=frozenset({"logical_plan", "optimized_plan", "physical_plan", "graphviz"}),
    sql_text="raw",
)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> SessionContext:
    folder = tmp_path_factory.mktemp("oracle")
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


def _raw_plans(ctx: SessionContext, sql: str) -> dict:
    sink = DiagnosticsCollector()
    with tracked_run(label="oracle", sink=sink):
        sql_to_datafusion(sql, ctx=ctx, options=RAW).to_arrow_table()
    return sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]


@pytest.mark.parametrize(
    ("sql", "column", "expected"),
    [
        # strings: typed in logical plans (Utf8 / Utf8View for Parquet columns), bare in physical
        ("SELECT 'secretproj' AS x, id FROM users", "optimized_plan", 'Utf8("secretproj") AS x'),
        ("SELECT 'secretproj' AS x, id FROM users", "physical_plan", "secretproj as x"),
        ("SELECT id FROM users WHERE email = 'secretx'", "optimized_plan",
         'users.email = Utf8View("secretx")'),
        ("SELECT id FROM users WHERE email = 'secretx'", "physical_plan", "email@1 = secretx"),
        ("SELECT 86421356 + id FROM users", "optimized_plan", "Int64(86421356) + users.id"),
        ("SELECT 86421356 + id FROM users", "physical_plan", "86421356 + id@0"),
        # binary: decimal bytes in logical plans, upper-case hex in physical plans
        ("SELECT X'C0FFEE' AS b, id FROM users", "optimized_plan", 'Binary("192,255,238") AS b'),
        ("SELECT X'C0FFEE' AS b, id FROM users", "physical_plan", "C0FFEE as b"),
        # intervals: a struct, quoted in logical plans and bare in physical plans
        ("SELECT ts + INTERVAL '37 months 11 days' AS t2 FROM users", "optimized_plan",
         'IntervalMonthDayNano("IntervalMonthDayNano { months: 37, days: 11, nanoseconds: 0 }")'),
        ("SELECT ts + INTERVAL '37 months 11 days' AS t2 FROM users", "physical_plan",
         "IntervalMonthDayNano { months: 37, days: 11, nanoseconds: 0 }"),
        # timestamps: epoch nanoseconds
        ("SELECT id FROM users WHERE ts > TIMESTAMP '2026-02-03 04:05:06'", "optimized_plan",
         "TimestampNanosecond(1770091506000000000, None)"),
        ("SELECT id FROM users WHERE ts > TIMESTAMP '2026-02-03 04:05:06'", "physical_plan",
         "ts@1 > 1770091506000000000"),
        # LIKE prefix: the pruning predicate holds the prefix and its incremented bound
        ("SELECT id FROM users WHERE email LIKE 'secretpfx%'", "physical_plan",
         "email_min@0 <= secretpfy AND secretpfx <= email_max@1"),
        # IN lists: typed in logical plans, a set in physical plans
        ("SELECT id FROM users WHERE id IN (86421300, 86421301, 86421302, 86421303)",
         "optimized_plan", "users.id IN ([Int64(86421300), Int64(86421301), "),
        ("SELECT id FROM users WHERE id IN (86421300, 86421301, 86421302, 86421303)",
         "physical_plan", "IN (SET) ([86421300, 86421301, 86421302, 86421303])"),
        # limits
        ("SELECT id FROM users LIMIT 424242 OFFSET 737373", "optimized_plan",
         "Limit: skip=737373, fetch=424242"),
        # graphviz: '"' -> '_' around a string literal
        ("SELECT id FROM users WHERE email = 'secretdot'", "graphviz", "users.email = Utf8(_secretdot_)"),
    ],
)  # fmt: skip
def test_datafusion_55_display_formats(ctx, sql, column, expected):
    row = _raw_plans(ctx, sql)
    assert row["sql_text_policy"] == "raw"
    assert expected in row[column], row[column]
