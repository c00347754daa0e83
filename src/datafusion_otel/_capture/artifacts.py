"""Capture every plan artifact of a DataFrame, each in isolation.

One artifact failing fills its entry in ``artifact_errors`` and never fails the query or the
other artifacts. Texts are treated under the options' ``sql_text`` policy: unless it is ``raw``
every text goes through a `_sanitize.redact.Redactor` built from the literals of the SQL text
and of the plans (`_sanitize.literals`); a text that cannot be sanitized is replaced by
``_sanitize.redact.WITHHELD`` and named in ``artifact_errors``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from datafusion_otel._capture import plan_walk as _plan_walk
from datafusion_otel._capture.artifact_files import write_explain_rows
from datafusion_otel._capture.plan_shape import shape_hash
from datafusion_otel._sanitize.dialect import note_sql
from datafusion_otel._sanitize.errors import protect_package_loggers, remember_frame, remember_sql
from datafusion_otel._sanitize.redact import WITHHELD, Redactor, hide_numbers, query_redactor
from datafusion_otel.artifacts import DataFusionPlanArtifacts
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.sanitize import normalize_sql, sanitize_sql

__all__ = ["NO_SQL_NOTE", "SQL_OFF_NOTE", "capture_artifacts"]

_LOG = logging.getLogger("datafusion_otel.capture")
_T = TypeVar("_T")

NO_SQL_NOTE = "-- DataFrame API query: no SQL text"
"""``sql`` column value for queries built with the DataFrame API."""
SQL_OFF_NOTE = "-- SQL text not captured (sql_text='off')"
"""``sql`` column value under the ``off`` policy."""
_UNSUPPORTED_HINTS = ("not supported", "unsupported", "not implemented", "not yet implemented")
WITHHELD_ERROR = "withheld: could not be sanitized"
"""``artifact_errors`` entry of a text replaced by ``_sanitize.redact.WITHHELD``."""
NO_ARTIFACT_DIR = "no artifact_dir given: no file written (the plan texts are in this row)"
"""``artifact_errors`` entry of an EXPLAIN file not written: files need an explicit directory."""


class _Errors(dict[str, str]):
    """Artifact name -> why it is missing; remembers which texts came from exceptions.

    Exception texts may quote the query's literals and are sanitized under the default
    policy; the package's own notes are not (sanitizing would garble their wording).
    """

    def __init__(self) -> None:
        super().__init__()
        self.raised: set[str] = set()

    def exception(self, name: str, exc: BaseException) -> None:
        self[name] = f"{type(exc).__name__}: {exc}".strip()
        self.raised.add(name)


def _attempt(errors: _Errors, name: str, fn: Callable[[], _T]) -> _T | None:
    try:
        return fn()
    except Exception as exc:  # each artifact is captured in isolation
        errors.exception(name, exc)
        _LOG.debug("artifact %s failed: %s", name, type(exc).__name__)  # texts quote literals
        return None


def _substrait_status(ctx: Any, optimized: Any, expected_schema: Any) -> tuple[str, str | None]:
    """Return ``(status, base64 bytes)`` for the optimized plan's Substrait round trip."""
    import base64

    from datafusion import substrait

    try:
        encoded = substrait.Producer.to_substrait_plan(optimized, ctx).encode()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(hint in reason.lower() for hint in _UNSUPPORTED_HINTS):
            return f"unsupported: {reason}", None
        return f"failed: {reason}", None
    b64 = base64.b64encode(encoded).decode("ascii")
    try:
        plan = substrait.Consumer.from_substrait_plan(
            ctx, substrait.Serde.deserialize_bytes(encoded)
        )
        got = ctx.create_dataframe_from_logical_plan(plan).schema()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"failed: {reason}", b64
    want = [(f.name, str(f.type)) for f in expected_schema]
    have = [(f.name, str(f.type)) for f in got]
    if want != have:
        return f"mismatch: expected {want}, round trip gave {have}", b64
    return "ok", b64


def capture_artifacts(
    df: Any,
    *,
    ctx: Any,
    options: DataFusionCompileOptions,
    sql: str | None = None,
    ibis_sql: str | None = None,
    run_id: str | None = None,
    executed: bool = False,
    execution_error: BaseException | None = None,
    allow_real_explain_analyze: bool = False,
    plan_note: str | None = None,
    plan: Any = None,
) -> DataFusionPlanArtifacts:
    """Capture the artifacts of ``df`` that ``options`` asks for.

    Args:
        df: The DataFrame.
        ctx: Its SessionContext (needed for Substrait and real EXPLAIN ANALYZE).
        options: What to capture and how to treat texts.
        sql: The SQL text, when the query came from SQL.
        ibis_sql: The SQL Ibis generated, when the query came from Ibis.
        run_id: Run the artifacts belong to.
        executed: Whether ``df`` has run, so ``df.execution_plan()`` is the executed plan
            with its metrics.
        execution_error: The error the query failed with, if it did.
        allow_real_explain_analyze: Run a real EXPLAIN ANALYZE for an unexecuted query (only
            for a query that has not run and will not run).
        plan_note: Why the executed plan is not available (for example ``count()``).
        plan: The executed physical plan, taken when the execution ended (default:
            ``df.execution_plan()`` now, which is the executed plan unless ``df`` ran again
            meanwhile).

    Returns:
        The artifacts; never raises for a failed artifact.
    """
    started = time.perf_counter()
    executed_plan = plan
    protect_package_loggers()  # every package logger treats what it writes
    errors = _Errors()
    policy = options.sql_text
    raw = policy == "raw"
    note_sql(ctx, sql)  # a non-default dialect reads literals differently
    if execution_error is not None:
        remember_sql(execution_error, sql)  # run metadata / span events redact with its literals
        remember_frame(execution_error, df)  # and with those of its plan (DataFrame API)
        errors.exception("execution", execution_error)

    logical = _attempt(errors, "logical_plan", df.logical_plan)
    logical_text = _attempt(errors, "logical_plan", logical.display_indent) if logical else None
    optimized_text: str | None = None
    optimized: Any = None
    if options.wants("optimized_plan") or options.wants("substrait"):
        optimized = _attempt(errors, "optimized_plan", df.optimized_logical_plan)
        if optimized is not None:
            optimized_text = _attempt(errors, "optimized_plan", optimized.display_indent)
    plan_texts = ("physical_plan", "graphviz", "explain")
    needs_folded = not raw and (
        any(options.wants(a) for a in plan_texts) or options.explain_analyze
    )  # folded constants appear only in the optimized (and so the physical) plan

    def folded() -> Any:
        """The optimized plan, for its folded constants: run once per distinct query."""
        return _attempt(errors, "optimized_plan", df.optimized_logical_plan)

    needs_physical = any(
        options.wants(a)
        for a in ("physical_plan", "partition_count", "join_operators", "operator_metrics",
                  "operator_spans", "explain")
    ) or (options.capture_plan_artifacts and options.explain_analyze)  # fmt: skip
    plan = None
    physical_text: str | None = None
    if needs_physical:  # the executed plan taken at the end of the execution, when there is one
        plan = executed_plan if executed_plan is not None and executed else None
        plan = plan or _attempt(errors, "physical_plan", df.execution_plan)
        if plan is not None:
            physical_text = _attempt(errors, "physical_plan", plan.display_indent)

    redactor = None
    if not raw:
        lazy = optimized if optimized is not None else (folded if needs_folded else None)
        # the constants the optimizer folded are in the physical text: a cached redactor is
        # reused only for a query whose physical plan printed the same
        redactor = query_redactor(
            (sql, ibis_sql), logical, logical_text, lazy, folded_key=physical_text
        )

    def text(value: str | None, name: str = "plan") -> str | None:
        """Treat a plan text under the policy ("off" sanitizes plans like "sanitized")."""
        if value is None or redactor is None:
            return value
        clean = redactor.clean(value)
        if clean is None:
            errors.setdefault(name, WITHHELD_ERROR)
            return WITHHELD
        return clean

    def text_str(value: str, name: str = "plan") -> str:
        return text(value, name) or ""

    def sql_text(value: str, name: str) -> str:
        if redactor is None:
            return value
        clean = sanitize_sql(value)  # the tokenizer did the work; check it all the same
        if redactor.leaks(clean):
            errors.setdefault(name, WITHHELD_ERROR)
            return WITHHELD
        return clean

    art = DataFusionPlanArtifacts(
        event_time_unix_ms=time.time_ns() // 1_000_000,
        sql=NO_SQL_NOTE if sql is None else sql,
        run_id=run_id,
        sql_text_policy=policy,
        plan_executed=executed and execution_error is None,
    )
    if sql is not None:
        art.normalized_sql = None
        if policy != "off":
            normalized = normalize_sql(sql)
            art.normalized_sql = normalized if raw else sql_text(normalized, "normalized_sql")
        art.sql = SQL_OFF_NOTE if policy == "off" else sql_text(sql, "sql")
    if ibis_sql is not None and policy != "off":
        art.ibis_sql = sql_text(ibis_sql, "ibis_sql")

    if options.wants("logical_plan") and logical is not None:
        art.logical_plan = text(logical_text, "logical_plan")
    if options.wants("graphviz") and logical is not None:
        dot = _attempt(errors, "graphviz", logical.display_graphviz)
        art.graphviz = text(dot, "graphviz")
    if options.wants("optimized_plan"):
        art.optimized_plan = text(optimized_text, "optimized_plan")
    if options.wants("plan_hash") and logical is not None and logical_text is not None:
        art.plan_hash = _plan_hash(redactor, sql, ibis_sql, logical, logical_text, errors)

    nodes: list[_plan_walk.OperatorNode] = []
    if plan is not None:
        nodes = (
            _attempt(errors, "physical_plan", lambda: _plan_walk.walk(plan, physical_text)) or []
        )
        art.plan_shape_hash = _attempt(
            errors, "plan_shape_hash", lambda: shape_hash(nodes, physical_text)
        )
        if options.wants("physical_plan"):
            art.physical_plan = text(physical_text, "physical_plan")
        if options.wants("graphviz"):
            labels = (art.physical_plan or "").splitlines()
            if len(labels) != len(nodes):  # one line per operator, in pre-order, normally
                labels = [text_str(n.line, "physical_graphviz") for n in nodes]
            dot = _attempt(
                errors, "physical_graphviz", lambda: _plan_walk.physical_dot(nodes, labels)
            )
            art.physical_graphviz = text(dot, "physical_graphviz")
        if options.wants("partition_count"):
            art.partition_count = _attempt(errors, "partition_count", lambda: plan.partition_count)
        if options.wants("join_operators"):
            art.join_operators = _plan_walk.join_operators(nodes)
        if executed and (options.wants("operator_metrics") or options.wants("operator_spans")):
            art.operator_metrics = (
                _attempt(
                    errors,
                    "operator_metrics",
                    lambda: _plan_walk.operator_metric_rows(
                        nodes,
                        base={
                            "event_time_unix_ms": art.event_time_unix_ms,
                            "run_id": run_id,
                            "span_id": None,
                            "plan_hash": art.plan_hash,
                        },
                    ),
                )
                or []
            )
            art.operator_nodes = nodes
            if plan_note:  # for example a stream closed before its end
                errors["operator_metrics"] = plan_note
        elif not executed and options.wants("operator_metrics"):
            errors["operator_metrics"] = plan_note or "the query has not run: no runtime metrics"

    if options.wants("substrait"):
        if optimized is None:
            art.substrait_validation_status = "failed: no optimized plan"
        else:
            status = _attempt(
                errors, "substrait", lambda: _substrait_status(ctx, optimized, df.schema())
            )
            if status is not None:
                art.substrait_validation_status, art.substrait_b64 = status
                art.substrait_validation_status = text(
                    art.substrait_validation_status, "substrait_validation_status"
                )  # DataFusion's errors dump the plan: Literal(Utf8("..."))
                if not raw and art.substrait_b64 is not None:
                    # Substrait bytes embed the query's literals: they cannot be sanitized.
                    art.substrait_b64 = None
                    errors["substrait"] = (
                        f"bytes withheld under the {policy} sql_text policy: Substrait embeds "
                        "the literals of the query (use sql_text=raw to keep them)"
                    )
    if options.wants("unparsed_sql") and logical is not None:
        art.unparsed_sql, art.unparse_error = _unparse(logical, text)
        if art.unparse_error:
            errors["unparsed_sql"] = art.unparse_error
            errors.raised.add("unparsed_sql")

    short_hash = art.plan_hash[:16] if art.plan_hash else "nohash"
    stem = f"{run_id or 'no-run'}-{short_hash}-{uuid.uuid4().hex[:8]}"
    directory = options.resolved_artifact_dir()
    if options.wants("explain") and plan is not None and directory is None:
        errors["explain"] = NO_ARTIFACT_DIR
    elif options.wants("explain") and plan is not None and directory is not None:
        rows = [
            ("logical_plan", text_str(optimized_text or "", "explain")),
            ("physical_plan", art.physical_plan or text_str(plan.display_indent(), "explain")),
        ]
        written = _attempt(
            errors, "explain", lambda: write_explain_rows(directory, f"{stem}-explain", rows)
        )
        if written is not None:
            art.explain_rows_artifact_path = written.path
            art.explain_rows_artifact_format = written.format
            art.explain_rows_schema_fingerprint = written.schema_fingerprint
    if options.capture_plan_artifacts and options.explain_analyze:
        if directory is None:
            errors["explain_analyze"] = NO_ARTIFACT_DIR
        elif executed or allow_real_explain_analyze:
            _explain_analyze(art, errors, df, ctx, sql, directory, stem, nodes, text_str, executed)
        else:
            errors["explain_analyze"] = plan_note or "the executed plan is not available"

    if redactor is not None:  # exception texts may quote the query's literals
        for name in errors.raised:
            errors[name] = hide_numbers(redactor.text(errors[name], plan=False))
        if art.unparse_error is not None:
            art.unparse_error = errors.get("unparsed_sql", art.unparse_error)
    art.artifact_errors = dict(errors)
    art.capture_duration_ms = (time.perf_counter() - started) * 1000
    return art


def _unparse(
    logical: Any, text: Callable[[str | None, str], str | None]
) -> tuple[str | None, str | None]:
    from datafusion import unparser

    try:
        sql = unparser.Unparser(unparser.Dialect.default()).plan_to_sql(logical)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}".strip()
    return text(str(sql), "unparsed_sql"), None


def _explain_analyze(
    art: DataFusionPlanArtifacts,
    errors: _Errors,
    df: Any,
    ctx: Any,
    sql: str | None,
    directory: Any,
    stem: str,
    nodes: list[_plan_walk.OperatorNode],
    text_str: Callable[[str, str], str],
    executed: bool,
) -> None:
    """Write the EXPLAIN ANALYZE file: from metrics when the query ran, else a real one."""
    if executed:
        if not nodes:
            errors["explain_analyze"] = "the executed plan is not available"
            return
        sanitized = (art.physical_plan or "").splitlines()
        if len(sanitized) == len(nodes):  # reuse the treated physical plan's lines
            body = _plan_walk.explain_analyze_text(nodes, sanitized)
        else:
            body = text_str(_plan_walk.explain_analyze_text(nodes), "explain_analyze")
        source = "metrics"
    else:

        def real() -> str:
            if sql is not None:
                result = ctx.sql("EXPLAIN ANALYZE " + sql).to_pydict()
                return "\n".join(str(p) for p in result.get("plan", []))
            plan = df.execution_plan()
            for partition in range(plan.partition_count):
                for _ in ctx.execute(plan, partition):
                    pass
            return _plan_walk.explain_analyze_text(_plan_walk.walk(plan))

        analyzed = _attempt(errors, "explain_analyze", real)
        if analyzed is None:
            return
        body = text_str(analyzed, "explain_analyze")
        source = "explain_analyze"
    written = _attempt(
        errors,
        "explain_analyze",
        lambda: write_explain_rows(
            directory, f"{stem}-explain-analyze", [("Plan with Metrics", body)]
        ),
    )
    if written is not None:
        art.explain_analyze_artifact_path = written.path
        art.explain_analyze_artifact_format = written.format
        art.explain_analyze_schema_fingerprint = written.schema_fingerprint
        art.explain_analyze_source = source


def _plan_hash(
    redactor: Redactor | None,
    sql: str | None,
    ibis_sql: str | None,
    logical: Any,
    logical_text: str,
    errors: dict[str, str],
) -> str | None:
    """``plan_hash``: sha256 of the literal-free logical plan as DataFusion built it.

    Definition v2 (like pg_stat_statements' queryid): the unoptimized logical plan's indented
    text with every literal redacted (whatever the ``sql_text`` policy), so the same statement
    with other constants has the same hash and a hash cannot confirm a guessed literal; no
    optimizer run is needed. A text that could not be made literal-free gets no hash.
    """
    cleaner = redactor or query_redactor((sql, ibis_sql), logical, logical_text)
    free = cleaner.clean(logical_text)
    if free is None:
        errors.setdefault("plan_hash", WITHHELD_ERROR)
        return None
    return hashlib.sha256(free.encode()).hexdigest()
