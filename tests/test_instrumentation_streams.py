"""Stream spans end with the stream; concurrent tasks and threads never mix spans."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from collections.abc import Iterator

import pytest
from datafusion import SessionContext
from opentelemetry.trace import format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel import current_run, tracked_run
from datafusion_otel.instrumentation import TracedRecordBatchStream
from instrumentation_support import Traced, instrumented


@pytest.fixture
def traced() -> Iterator[Traced]:
    with instrumented() as t:
        yield t


@pytest.fixture
def ctx() -> SessionContext:
    """Table ``n`` with 10 rows in 5 batches of 2 rows (one batch per read)."""
    ctx = SessionContext()
    batches = [{"x": [2 * i, 2 * i + 1]} for i in range(5)]
    import pyarrow as pa

    ctx.register_record_batches("n", [[pa.RecordBatch.from_pydict(b) for b in batches]])
    return ctx


def test_stream_span_is_open_until_exhausted(traced: Traced, ctx: SessionContext) -> None:
    stream = ctx.sql("SELECT x FROM n").execute_stream()
    assert isinstance(stream, TracedRecordBatchStream)
    next(stream)
    assert traced.executions() == []  # still reading
    rest = list(stream)
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is True
    assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 2 + sum(
        b.to_pyarrow().num_rows for b in rest
    )


def test_half_read_stream_ends_on_close(traced: Traced, ctx: SessionContext) -> None:
    stream = ctx.sql("SELECT x FROM n").execute_stream()
    next(stream)
    stream.close()
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False
    assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 2
    stream.close()  # a second close changes nothing
    assert len(traced.executions()) == 1


def test_half_read_stream_ends_when_garbage_collected(traced: Traced, ctx: SessionContext) -> None:
    stream = iter(ctx.sql("SELECT x FROM n"))
    next(stream)
    del stream
    gc.collect()
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.__iter__"
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_half_read_async_stream(traced: Traced, ctx: SessionContext) -> None:
    async def read_one() -> None:
        async for _batch in ctx.sql("SELECT x FROM n"):
            break

    asyncio.run(read_one())
    gc.collect()
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.__aiter__"
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_partitioned_streams_share_one_span(traced: Traced) -> None:
    import pyarrow as pa
    from datafusion import SessionConfig

    ctx = SessionContext(SessionConfig().with_target_partitions(2))
    part = [pa.RecordBatch.from_pydict({"x": [1, 2]})]
    ctx.register_record_batches("p", [part, part])
    df = ctx.sql("SELECT x FROM p")
    streams = df.execute_stream_partitioned()
    assert len(streams) == 2
    list(streams[0])
    assert traced.executions() == []  # one partition still open
    streams[1].close()
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_PARTITION_COUNT] == 2
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_half_read_arrow_c_stream_ends_on_release(traced: Traced, ctx: SessionContext) -> None:
    import pyarrow as pa

    reader = pa.RecordBatchReader.from_stream(ctx.sql("SELECT x FROM n"))
    reader.read_next_batch()
    assert traced.executions() == []
    del reader
    gc.collect()
    span = traced.only_execution()
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_stream_error_ends_the_span(traced: Traced, ctx: SessionContext) -> None:
    stream = ctx.sql("SELECT 10 / (x - 5) AS y FROM n").execute_stream()
    with pytest.raises(Exception, match="Divide by zero"):
        list(stream)
    span = traced.only_execution()
    assert span.attributes[attr.ERROR_TYPE]
    assert span.status.is_ok is False


def test_asyncio_tasks_never_cross(traced: Traced, ctx: SessionContext) -> None:
    """Each task's executions land in its own run, even interleaved at every batch."""

    async def job(i: int) -> str:
        with tracked_run(label=f"task-{i}") as run:
            assert current_run() is run
            async for _batch in ctx.sql("SELECT x FROM n"):
                await asyncio.sleep(0)
            ctx.sql("SELECT x FROM n").collect()
            assert current_run() is run
        return run.run_id

    async def main() -> list[str]:
        return list(await asyncio.gather(*(job(i) for i in range(6))))

    run_ids = asyncio.run(main())
    spans = traced.executions()
    assert len(spans) == 12
    by_run: dict[str, int] = {}
    for span in spans:
        run_id = format_trace_id(span.context.trace_id)
        assert run_id in run_ids
        by_run[run_id] = by_run.get(run_id, 0) + 1
    assert set(by_run.values()) == {2}


def test_threads_never_cross(traced: Traced, ctx: SessionContext) -> None:
    run_ids: list[str] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with tracked_run(label=f"thread-{i}") as run:
                run_ids.append(run.run_id)
                for _ in range(5):
                    ctx.sql("SELECT x FROM n").to_pylist()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(work, i)) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    spans = traced.executions()
    assert len(spans) == 20
    for run_id in run_ids:
        mine = [s for s in spans if format_trace_id(s.context.trace_id) == run_id]
        assert len(mine) == 5
        assert all(s.parent is not None for s in mine)


def test_partitioned_streams_with_no_partition_still_end_their_span(
    ctx: SessionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing would read a stream, so the call itself ends the (only) span."""
    from datafusion import DataFrame

    monkeypatch.setattr(DataFrame, "execute_stream_partitioned", lambda self: [])
    with instrumented() as t:
        assert ctx.sql("SELECT x FROM n").execute_stream_partitioned() == []
        span = t.only_execution()
        assert span.attributes is not None
        assert span.attributes[attr.DATAFUSION_METHOD] == "DataFrame.execute_stream_partitioned"
        assert span.attributes[attr.DATAFUSION_PARTITION_COUNT] == 0
        assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 0
