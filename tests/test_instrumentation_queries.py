"""What ``SessionContext.sql`` remembers about each query: bounded caches, nothing kept alive.

(The non-deferred tests of the former ``test_instrumentation_deferred.py``.)
"""

from __future__ import annotations

import gc
import weakref

import pytest

from datafusion_otel import attributes as attr
from datafusion_otel.instrumentation import _query
from instrumentation_support import instrumented, make_context


def test_a_traced_execution_does_not_keep_its_dataframe_alive() -> None:
    """Dropping an executed DataFrame frees its plan where it would without instrumentation."""
    with instrumented() as t:
        for make in (lambda c: c.sql("SELECT a FROM t WHERE a > 1"), lambda c: c.table("t")):
            df = make(make_context())
            df.collect()
            gone = weakref.ref(df)
            del df
            gc.collect()
            assert gone() is None
        assert [s.name for s in t.executions()] == ["SELECT t", "SELECT t"]


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
