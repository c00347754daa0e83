"""Span-only executions record their span on the query path and create it off it.

The span must still carry the times of the call, appear without any flush within a short
while, appear at once on ``TracerProvider.force_flush()`` / ``datafusion_otel.force_flush()``
/ ``uninstrument()`` / interpreter exit, and nothing may be lost silently.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

import datafusion_otel
from datafusion_otel import _deferred
from datafusion_otel import attributes as attr
from datafusion_otel.instrumentation import _query
from instrumentation_support import instrumented, make_context


@pytest.fixture
def idle_worker(monkeypatch: pytest.MonkeyPatch) -> _deferred.DeferredSpans:
    """A fresh deferred queue whose worker never wakes: spans wait for a flush."""
    queue = _deferred.DeferredSpans(interval_s=3600)
    monkeypatch.setattr(_deferred, "queue", queue)
    return queue


def test_span_carries_the_times_of_the_call() -> None:
    with instrumented() as t:
        ctx = make_context()
        df = ctx.sql("SELECT a FROM t")
        before = time.time_ns()
        df.collect()
        after = time.time_ns()
        span = t.only_execution()
        assert span.start_time is not None and span.end_time is not None
        assert before <= span.start_time <= span.end_time <= after


def test_worker_creates_spans_without_a_flush() -> None:
    with instrumented() as t:
        make_context().sql("SELECT a FROM t").collect()
        deadline = time.monotonic() + 5
        found = []
        while time.monotonic() < deadline and not found:
            found = [
                s
                for s in t.exporter.get_finished_spans()  # no force_flush here
                if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)
            ]
            time.sleep(0.02)
        assert len(found) == 1
        assert t.instrumentor.pending_spans == 0


def test_datafusion_otel_force_flush_creates_pending_spans() -> None:
    with instrumented() as t:
        ctx = make_context()
        for _ in range(50):
            ctx.sql("SELECT a FROM t").collect()
        datafusion_otel.force_flush(5)
        names = [s.name for s in t.exporter.get_finished_spans()]  # no provider flush
        assert names.count("SELECT t") == 50


def test_uninstrument_creates_pending_spans() -> None:
    with instrumented() as t:
        ctx = make_context()
        for _ in range(20):
            ctx.sql("SELECT a FROM t").collect()
        t.instrumentor.uninstrument()
        assert t.instrumentor.pending_spans == 0
        names = [s.name for s in t.exporter.get_finished_spans()]
        assert names.count("SELECT t") == 20


def test_errors_are_not_deferred() -> None:
    """A failing execution creates its span at once (the exception is recorded on it)."""
    with instrumented() as t:
        with pytest.raises(Exception):  # noqa: B017 - DataFusion's own exception type
            make_context().sql("SELECT CAST(b AS INT) FROM t").collect()  # fails running
        spans = [
            s for s in t.exporter.get_finished_spans() if (s.attributes or {}).get(attr.ERROR_TYPE)
        ]
        assert len(spans) == 1
        assert spans[0].events[0].name == "exception"


class _Record:
    def __init__(self, done: list[int], value: int, *, fail: bool = False) -> None:
        self._done, self._value, self._fail = done, value, fail

    def materialize(self) -> None:
        if self._fail:
            raise RuntimeError("cannot create this span")
        self._done.append(self._value)


def test_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    queue = _deferred.DeferredSpans(capacity=3, interval_s=3600)
    done: list[int] = []
    with caplog.at_level(logging.WARNING, logger="datafusion_otel.instrumentation"):
        for i in range(5):
            queue.add(_Record(done, i))
    assert queue.dropped == 2
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1  # once
    assert queue.flush() == 3
    assert done == [0, 1, 2]  # in order, nothing created twice


def test_failed_span_creation_is_counted_and_the_rest_goes_on() -> None:
    queue = _deferred.DeferredSpans(capacity=10, interval_s=3600)
    done: list[int] = []
    queue.add(_Record(done, 1))
    queue.add(_Record(done, 2, fail=True))
    queue.add(_Record(done, 3))
    assert queue.flush() == 3
    assert done == [1, 3]
    assert queue.failed == 1
    assert queue.created == 3  # every record is accounted for, with the CPU it took
    assert queue.cpu_ns >= 0


def test_spans_are_exported_at_interpreter_exit() -> None:
    """A script that ends right after its query still exports the span (atexit ordering)."""
    script = textwrap.dedent(
        """
        from datafusion import SessionContext
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from datafusion_otel import DataFusionInstrumentor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
        DataFusionInstrumentor().instrument()
        ctx = SessionContext()
        ctx.from_pydict({"a": [1, 2]}, name="t")
        ctx.sql("SELECT a FROM t").collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert '"name": "SELECT t"' in done.stdout, done.stdout + done.stderr
    assert '"datafusion.method": "DataFrame.collect"' in done.stdout


def test_spans_created_during_provider_shutdown_are_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = _deferred.DeferredSpans(interval_s=3600)  # its worker never gets to the span
    monkeypatch.setattr(_deferred, "queue", slow)
    with instrumented() as t:
        make_context().sql("SELECT a FROM t").collect()
        assert t.instrumentor.pending_spans == 1
        with caplog.at_level(logging.WARNING, logger="datafusion_otel.instrumentation"):
            t.provider.shutdown()
        assert t.instrumentor.pending_spans == 0
        assert t.instrumentor.dropped_spans == 1  # created, but maybe after the exporters closed
        warned = [r for r in caplog.records if "during TracerProvider.shutdown" in r.getMessage()]
        assert len(warned) == 1


def test_a_pending_span_does_not_keep_a_sql_dataframe_alive(
    idle_worker: _deferred.DeferredSpans,
) -> None:
    """Dropping an executed DataFrame frees its plan where it would without instrumentation."""
    with instrumented() as t:
        df = make_context().sql("SELECT a FROM t WHERE a > 1")
        df.collect()
        gone = weakref.ref(df)
        del df
        gc.collect()
        assert gone() is None
        assert len(idle_worker) == 1  # the span is still to be created...
        span = t.only_execution()  # ...and is complete without the DataFrame
        assert span.name == "SELECT t"
        assert span.attributes is not None
        assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 2
        partitions = span.attributes[attr.DATAFUSION_PARTITION_COUNT]
        assert isinstance(partitions, int) and partitions >= 1


def test_a_dataframe_without_sql_is_kept_only_until_it_is_named(
    idle_worker: _deferred.DeferredSpans,
) -> None:
    with instrumented() as t:
        ctx = make_context()
        df = ctx.table("t").select("a")
        df.collect()
        assert t.only_execution().name == "SELECT t"  # named from its plan, off the query path
        t.clear()
        df.collect()  # its name is known now: the record does not need the DataFrame
        gone = weakref.ref(df)
        del df
        gc.collect()
        assert gone() is None
        assert t.only_execution().name == "SELECT t"


def test_the_query_cache_of_a_context_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_query, "MAX_QUERIES", 4)
    with instrumented() as t:
        ctx = make_context()
        for i in range(10):  # texts with inlined literals: one cache entry each
            ctx.sql(f"SELECT a FROM t WHERE a > {i}").collect()
            assert len(ctx.__dict__[_query.QUERIES_ATTR]) <= 4
        names = [s.name for s in t.executions()]
        assert names == ["SELECT t"] * 10


def test_long_sql_texts_are_traced_but_never_cached() -> None:
    """Caches keyed by SQL text must not pin multi-megabyte texts in memory."""
    from datafusion_otel.instrumentation import _execution

    long_sql = "SELECT a FROM t WHERE b NOT IN (" + ", ".join(f"'v{i}'" for i in range(3000)) + ")"
    assert not _query.cacheable(long_sql)
    with instrumented() as t:
        ctx = make_context()
        sizes = (
            _query._cached_summary.cache_info().currsize,
            _query._cached_normalized.cache_info().currsize,
            _execution.start_attributes.cache_info().currsize,
        )
        assert ctx.sql(long_sql).to_pydict() == {"a": [1, 2, 3]}
        span = t.only_execution()
        assert span.name == "SELECT t"
        assert span.attributes is not None
        text = span.attributes[attr.DB_QUERY_TEXT]
        assert isinstance(text, str) and "'v1'" not in text  # sanitized, as always
        assert long_sql not in ctx.__dict__.get(_query.QUERIES_ATTR, {})
        assert sizes == (
            _query._cached_summary.cache_info().currsize,
            _query._cached_normalized.cache_info().currsize,
            _execution.start_attributes.cache_info().currsize,
        )


def test_uninstrument_drops_the_query_caches() -> None:
    with instrumented() as t:
        ctx = make_context()
        ctx.sql("SELECT a FROM t").collect()
        assert _query.QUERIES_ATTR in ctx.__dict__
        t.instrumentor.uninstrument()
        assert _query.QUERIES_ATTR not in ctx.__dict__


def test_sql_with_options_passes_its_inner_sql_call_straight_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sql_with_options`` calls ``sql``: the inner call must not repeat the wrapper's work."""
    from datafusion import SessionContext, SQLOptions

    from datafusion_otel.instrumentation._execution import INSIDE

    real_sql = SessionContext.sql
    inside_seen: list[bool] = []

    def sql(self: SessionContext, *args: object, **kwargs: object) -> object:
        inside_seen.append(INSIDE.get())
        return real_sql(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SessionContext, "sql", sql)  # patched first: the wrapper wraps it
    with instrumented() as t:
        ctx = make_context()
        ctx.sql_with_options("SELECT a FROM t", SQLOptions()).collect()
        assert inside_seen == [True]
        assert t.only_execution().name == "SELECT t"


def test_suppressed_sql_remembers_nothing() -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with instrumented() as t:
        ctx = make_context()
        with suppress_instrumentation():
            df = ctx.sql("SELECT a FROM t WHERE b = 'secret'")
        assert _query.INFO_ATTR not in df.__dict__
        df.collect()  # traced, named from its plan, with no SQL text
        span = t.only_execution()
        assert span.name == "SELECT t"
        assert span.attributes is not None
        assert attr.DB_QUERY_TEXT not in span.attributes
