"""The run profile of one run holding the 22 TPC-H queries (scale 0.01), run through the
bridge so that every query shares the run's span: one section per executed query, each with its
own SQL, operators and timeline, and the whole file under the issue's 2 MB bound."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from datafusion import SessionContext

from datafusion_otel import force_flush, tpch, tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.report import render
from datafusion_otel.store import ParquetSink, RunStore


@pytest.fixture(scope="module")
def tpch_run(tpch_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("store")
    ctx = SessionContext()
    tpch.register_tables(ctx, tpch_dir)
    with ParquetSink(store) as sink:
        with tracked_run(label="tpch-22", sink=sink) as run:
            for number in tpch.QUERY_NUMBERS:
                for statement in tpch.query_statements(number):
                    sql_to_datafusion(
                        statement, ctx=ctx, options=DataFusionCompileOptions()
                    ).to_arrow_table()
        force_flush(timeout=30)
    return store, run.run_id


def test_one_section_per_query_with_its_own_plan_and_sql(tpch_run: tuple[Path, str]) -> None:
    store, run_id = tpch_run
    details = RunStore(store).run(run_id)
    executions: dict[tuple[object, ...], set[str]] = {}
    for row in details.operator_metrics:
        key = (row["span_id"], row["plan_hash"], row["event_time_unix_ms"])
        executions.setdefault(key, set()).add(row["operator_path"])
    assert len(executions) >= 22
    text = render(run_id, store=store)
    sections = re.findall(
        r'<section class="query" id="dfotel-[0-9a-f]+-q\d+">(.*?)</section>', text, re.S
    )
    assert len(sections) == len(executions)
    sql_texts = [re.search(r"</h3><pre>(.*?)</pre>", s, re.S) for s in sections]
    assert all(sql_texts)
    assert len({m.group(1) for m in sql_texts if m}) >= 22  # each query shows its own SQL
    for section, paths in zip(sections, executions.values(), strict=True):
        assert set(re.findall(r'data-path="([\d.]+)"', section)) == paths
    assert len(text.encode()) < 2_000_000  # the bound (the time is in benchmarks/)
