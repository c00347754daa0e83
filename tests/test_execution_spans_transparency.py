"""Instrumentation is transparent: same results, order, laziness, exceptions and interrupts.

Issue 14, item 7. ``__arrow_c_stream__`` with capture used to read one merged
``execute_stream()`` (rows of a two-partition frame came back in another order) and ran the
query when the reader was created; a stream interrupted during its capture left its span open.
Also the warning when ``instrument()`` finds no OpenTelemetry SDK (issue 14, surprises).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from datafusion import DataFrame, SessionConfig, SessionContext, udf
from opentelemetry.trace import StatusCode

from capture_support import artifact_events
from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel.instrumentation import _execution
from instrumentation_support import Traced, instrumented

MODES = ["plain", "span-only", "capture"]


@contextmanager
def mode(name: str) -> Iterator[Traced | None]:
    if name == "plain":
        yield None
        return
    with instrumented(capture_plan_artifacts=name == "capture") as t:
        yield t


def _two_partitions(calls: list[int] | None = None, where: str = "") -> DataFrame:
    """A frame over two input partitions (DataFusion's own reader returns partition 0 first)."""
    ctx = SessionContext(SessionConfig().with_target_partitions(2))
    first = pa.record_batch({"a": list(range(0, 50))})
    second = pa.record_batch({"a": list(range(50, 100))})
    ctx.register_record_batches("t", [[first], [second]])
    if calls is None:
        return ctx.sql("SELECT a FROM t" + where)

    def counted(values: pa.Array) -> pa.Array:
        calls.append(len(values))
        return values

    ctx.register_udf(udf(counted, [pa.int64()], pa.int64(), "volatile", name="counted"))
    return ctx.sql("SELECT counted(a) AS a FROM t")


READERS: dict[str, Callable[[DataFrame], list[int]]] = {
    "from_stream": lambda df: pa.RecordBatchReader.from_stream(df).read_all()["a"].to_pylist(),
    "pa.table": lambda df: pa.table(df)["a"].to_pylist(),
    "polars": lambda df: pl.DataFrame(df)["a"].to_list(),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_arrow_c_stream_keeps_datafusions_partition_order(reader: str) -> None:
    results: dict[str, set[tuple[int, ...]]] = {}
    for name in MODES:
        with mode(name):
            results[name] = {tuple(READERS[reader](_two_partitions())) for _ in range(20)}
    assert results["plain"] == {tuple(range(100))}  # DataFusion's order: partition by partition
    assert results["span-only"] == results["capture"] == results["plain"]


@pytest.mark.parametrize("name", MODES)
def test_arrow_c_stream_runs_the_query_when_read_not_when_created(name: str) -> None:
    calls: list[int] = []
    with mode(name) as t:
        with tracked_run(label="lazy"):
            reader = pa.RecordBatchReader.from_stream(_two_partitions(calls))
            assert calls == []  # nothing ran yet
            first = reader.read_next_batch()
            assert calls and sum(calls) < 100  # the first partition only
            rest = reader.read_all()
        assert first.num_rows + rest.num_rows == 100
        if t is not None:
            (span,) = t.executions()
            assert span.attributes is not None
            assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 100
            if name == "capture":
                assert artifact_events(t.spans(), span)


def test_arrow_c_stream_with_capture_keeps_operator_metrics() -> None:
    """Reading the partitions of ``execute_stream_partitioned`` keeps the executed plan."""
    from datafusion_otel import DiagnosticsCollector, configure

    with instrumented(capture_plan_artifacts=True) as t:
        sink = DiagnosticsCollector()
        configure(tracer_provider=t.provider, sink=sink)
        with tracked_run(label="metrics", sink=sink):
            table = pa.table(_two_partitions(where=" WHERE a % 2 = 0"))
    assert table["a"].to_pylist() == list(range(0, 100, 2))
    rows = sink.events_snapshot()[attr.OPERATOR_METRICS_TABLE]
    filters = [row for row in rows if row["operator_name"] == "FilterExec"]
    assert len(filters) == 2  # one per partition, with runtime metrics
    assert sum(row["output_rows"] for row in filters) == 50


def _slow_udf_frame(interrupt_at: int) -> DataFrame:
    ctx = SessionContext(SessionConfig().with_target_partitions(1).with_batch_size(10))
    batches = [pa.record_batch({"a": list(range(i, i + 10))}) for i in range(0, 200, 10)]
    ctx.register_record_batches("t", [batches])
    calls = [0]

    def interrupting(values: pa.Array) -> pa.Array:
        calls[0] += 1
        if calls[0] == interrupt_at:
            raise KeyboardInterrupt
        return values

    ctx.register_udf(udf(interrupting, [pa.int64()], pa.int64(), "volatile", name="slow"))
    return ctx.sql("SELECT slow(a) AS a FROM t")


@pytest.mark.parametrize("name", MODES)
def test_an_interrupted_arrow_stream_raises_as_without_instrumentation(name: str) -> None:
    with mode(name) as t:
        reader = pa.RecordBatchReader.from_stream(_slow_udf_frame(interrupt_at=3))
        reader.read_next_batch()
        with pytest.raises(BaseException) as raised:
            reader.read_all()
        assert "KeyboardInterrupt" in str(raised.value)
        if t is not None:
            (span,) = t.executions()  # ended, with the error DataFusion raised
            assert span.attributes is not None
            assert span.status.status_code is StatusCode.ERROR
            assert "KeyboardInterrupt" in str(span.status.description)


@pytest.mark.parametrize("path", ["stream", "arrow_c_stream", "collect"])
def test_an_interrupt_during_capture_still_ends_the_span(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A KeyboardInterrupt that lands in the artifact capture reaches the user; the span ends."""

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_execution, "schedule_execution_artifacts", interrupted)
    with instrumented(capture_plan_artifacts=True) as t:
        df = _two_partitions()
        calls: dict[str, Callable[[], object]] = {
            "stream": lambda: list(df.execute_stream()),
            "arrow_c_stream": lambda: pa.RecordBatchReader.from_stream(df).read_all(),
            "collect": df.collect,
        }
        # pyarrow turns an exception of the Python batch source into ArrowInvalid
        expected = pa.ArrowInvalid if path == "arrow_c_stream" else KeyboardInterrupt
        with pytest.raises(expected) as raised:
            calls[path]()
        assert path != "arrow_c_stream" or "KeyboardInterrupt" in str(raised.value)
        assert len(t.exporter.get_finished_spans()) == 1


WARNING_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("always")
    {setup}
    from datafusion import SessionContext
    from datafusion_otel import DataFusionInstrumentor
    DataFusionInstrumentor().instrument()
    DataFusionInstrumentor().uninstrument()
    DataFusionInstrumentor().instrument()
    print(SessionContext().sql("SELECT 1 AS x").to_pydict())
    """
)


@pytest.mark.parametrize(
    ("setup", "warned"),
    [
        ("", 1),
        (
            "from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider;"
            " trace.set_tracer_provider(TracerProvider())",
            0,
        ),
    ],
    ids=["no-sdk", "sdk"],
)
def test_instrument_warns_once_without_an_sdk_provider(setup: str, warned: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WARNING_SCRIPT.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    assert done.returncode == 0, done.stderr
    assert "{'x': [1]}" in done.stdout
    assert done.stderr.count("datafusion-otel[instrument]") == warned, done.stderr


def test_grouping_sets_with_capture_finish(tmp_path) -> None:
    """DataFusion's own test_grouping_set_single_column hung under capture: the literal walk
    branched exponentially through GroupingSet's expressions. It now ends (over its node budget
    the plan texts are withheld) and the result is the plain one. Run in a child process so a
    regression fails by timeout instead of hanging the suite."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from datafusion import SessionContext, column, functions as f
        from datafusion.expr import GroupingSet
        from opentelemetry.sdk.trace import TracerProvider
        from datafusion_otel import DataFusionInstrumentor
        DataFusionInstrumentor().instrument(
            tracer_provider=TracerProvider(), capture_plan_artifacts=True
        )
        ctx = SessionContext()
        df = ctx.from_pydict({"a": [1, 1, 2], "b": [10, 20, 30]})
        for grouping in (GroupingSet.rollup(column("a")), GroupingSet.cube(column("a"))):
            result = df.aggregate(
                [grouping], [f.sum(column("b")).alias("s"), f.grouping(column("a"))]
            ).sort(column("a").sort(ascending=True, nulls_first=False))
            print(sorted(result.to_pydict()["s"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["[30, 30, 60]", "[30, 30, 60]"]
