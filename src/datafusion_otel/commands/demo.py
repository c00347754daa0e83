"""``datafusion-otel demo``: the 22 TPC-H queries as tracked runs, traced by the instrumentor.

Each query runs inside `datafusion_otel.runs.tracked_run` through unchanged DataFusion calls
(``ctx.sql(...).to_arrow_table()``) with `DataFusionInstrumentor` on and plan capture enabled,
which is what a user's program gets from ``opentelemetry-instrument``: every run's trace is the
tree run -> execution span per DataFusion execution -> one span per physical operator. Rows go
to the run store; spans also go over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

When the program already had the instrumentor on (``opentelemetry-instrument``), the demo keeps
it as it is and says so in one line if its plan capture is off (no operator spans then). The
closing statistics cover this invocation's runs only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pyarrow as pa
from datafusion import SessionContext

from datafusion_otel import tpch
from datafusion_otel.cache_state import record_cache_state
from datafusion_otel.commands.browse import trace_url_template
from datafusion_otel.commands.render import print_json, print_table
from datafusion_otel.config import Telemetry
from datafusion_otel.export import resolve_otlp_settings
from datafusion_otel.instrumentation import DataFusionInstrumentor
from datafusion_otel.rollups import summarize_runs
from datafusion_otel.runs import tracked_run
from datafusion_otel.store import ParquetSink, RunStore, StoreError

__all__ = ["command_prefix", "demo", "execute_sql", "selected_queries"]

_QUERY_STARTS = ("select", "with")
_FLUSH_TIMEOUT_S = 30.0


def execute_sql(ctx: SessionContext, sql: str) -> pa.Table:
    """Run one statement with plain DataFusion calls (traced by the instrumentor when on)."""
    return ctx.sql(sql).to_arrow_table()


def _run_query(ctx: SessionContext, number: int) -> pa.Table:
    result: pa.Table | None = None
    for statement in tpch.query_statements(number):
        table = execute_sql(ctx, statement)
        if statement.lstrip().lower().startswith(_QUERY_STARTS):
            result = table
    return result if result is not None else pa.table({})


def selected_queries(spec: str | None) -> list[int]:
    """Return the TPC-H query numbers ``spec`` names (all 22 when empty).

    Raises:
        TpchError: If ``spec`` is not a list of numbers 1-22 such as ``1,6,15``.
    """
    if not spec:
        return list(tpch.QUERY_NUMBERS)
    try:
        numbers = [int(part.strip().lstrip("qQ")) for part in spec.split(",") if part.strip()]
    except ValueError as exc:
        raise tpch.TpchError(f"--queries takes numbers like 1,3,15; got {spec!r}") from exc
    bad = [n for n in numbers if n not in tpch.QUERY_NUMBERS]
    if bad or not numbers:
        raise tpch.TpchError(f"TPC-H queries are numbered 1-22; got {spec!r}")
    return numbers


def command_prefix(cwd: Path | None = None) -> str:
    """Return how to call the command from ``cwd``: ``uv run datafusion-otel`` in its repository.

    Args:
        cwd: The folder the user is in (default: the current directory).

    Returns:
        ``"uv run datafusion-otel"`` inside a checkout of this project (a ``pyproject.toml``
        naming it, in ``cwd`` or a parent), else ``"datafusion-otel"``.
    """
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file():
            try:
                text = project.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return "datafusion-otel"
            ours = 'name = "datafusion-otel"' in text
            return "uv run datafusion-otel" if ours else "datafusion-otel"
    return "datafusion-otel"


_CAPTURE_OFF_NOTE = (
    "note: DataFusionInstrumentor was already on without plan capture (for example under "
    "opentelemetry-instrument); the demo keeps its settings, so its runs have no operator "
    "spans and no plan rows (set DATAFUSION_OTEL_CAPTURE_PLAN_ARTIFACTS=true to get them)"
)


def _instrument(telemetry: Telemetry, log: TextIO) -> bool:
    """Turn the instrumentor on with plan capture; False when the program had it on already.

    An instrumentor the program turned on is left as it is (its provider, SQL text policy
    and capture setting are the program's choice); when its plan capture is off, a one-line
    note says that the demo's runs will have no operator spans.
    """
    instrumentor = DataFusionInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        options = instrumentor.options
        if options is not None and not options.capture_plan_artifacts:
            print(_CAPTURE_OFF_NOTE, file=log)
        return False
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, capture_plan_artifacts=True, auto_run=False
    )
    return True


def _delivery_summary(telemetry: Telemetry, log: TextIO) -> bool:
    """Print what reached the OTLP endpoint; return False when spans were lost."""
    settings = resolve_otlp_settings()
    if settings is None or not telemetry.exporters:
        return True
    flushed = telemetry.force_flush(_FLUSH_TIMEOUT_S)
    stats = telemetry.delivery_stats()
    exported = sum(s.exported for s in stats.exporters.values())
    lost = sum(s.failed + s.dropped + s.pending for s in stats.exporters.values())
    print(f"exported {exported} spans to {settings.endpoint}, {lost} failed", file=log)
    if lost or not flushed:
        print(
            f"WARNING: {lost} spans did not reach {settings.endpoint} "
            "(is the collector or backend running?)",
            file=log,
        )
        return False
    return True


def _open_sink(store: str | None) -> ParquetSink:
    """Open the demo's store, or raise `StoreError` with one line saying why it cannot be."""
    try:
        return ParquetSink(store)
    except ValueError as exc:  # a URI scheme the store does not support yet
        raise StoreError(str(exc)) from exc
    except OSError as exc:
        reason = "it is a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror
        where = exc.filename or store or "the default store folder"
        raise StoreError(f"cannot use {where} as the run store: {reason or exc}") from exc


def demo(args: argparse.Namespace, configure_telemetry: Callable[[ParquetSink], Telemetry]) -> int:
    """Generate TPC-H data, run the queries as tracked runs, print a summary.

    Args:
        args: Parsed arguments (``store``, ``scale``, ``data_dir``, ``queries``, ``json``).
        configure_telemetry: Called once with the sink before the first run (sets up
            OpenTelemetry; exports over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).

    Returns:
        0 when every query completed and every span was delivered, 1 otherwise.
    """
    numbers = selected_queries(args.queries)
    template = trace_url_template()  # a bad template is a one-line error before any work
    log = sys.stderr if args.json else sys.stdout
    sink = _open_sink(args.store)
    data_dir = Path(args.data_dir) if args.data_dir else _data_home(sink) / f"sf{args.scale}"
    if not tpch.data_complete(data_dir):
        print(f"generating TPC-H data at scale factor {args.scale} in {data_dir} ...", file=log)
    tpch.generate(args.scale, data_dir)
    ctx = SessionContext()
    tpch.register_tables(ctx, data_dir)
    telemetry = configure_telemetry(sink)
    instrumented = _instrument(telemetry, log)
    summary: list[dict[str, object]] = []
    try:
        for index, number in enumerate(numbers, start=1):
            position = f"[{index:2d}/{len(numbers)}]"
            summary.append(_one_run(ctx, sink, args, number, position, log, template))
    finally:
        if instrumented:
            DataFusionInstrumentor().uninstrument()
        delivered = _delivery_summary(telemetry, log)
        sink.close()
    failed = sum(1 for item in summary if item["status"] != "completed")
    if args.json:
        print_json({"store": str(sink.path), "runs": summary, "failed": failed})
    else:
        print()
        print_table(_stats_of(sink.path, summary),
                    ["label", "count", "error_rate", "p50_ms", "p95_ms", "p99_ms"])  # fmt: skip
        print(f"\n{len(summary) - failed}/{len(summary)} queries completed; store: {sink.path}")
        prefix = command_prefix()
        store = "" if args.store is None else f" --store {sink.path}"
        print(f"browse it: {prefix} runs{store} | {prefix} show RUN_ID{store} | "
              f"{prefix} stats{store}")  # fmt: skip
    return 0 if failed == 0 and delivered else 1


def _data_home(sink: ParquetSink) -> Path:
    """Where the demo caches TPC-H data: in a local store, else in the temporary folder."""
    if isinstance(sink.path, Path):
        return sink.path / "tpch"
    return Path(tempfile.gettempdir()) / "datafusion-otel-tpch"


def _stats_of(store: Path | str, summary: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per-label statistics of this invocation's runs only (not of earlier demos in the store).

    The runs are read back from the store by id and rolled up as ``stats`` does
    (`datafusion_otel.rollups.summarize_runs`), in a private session.
    """
    run_ids = [str(item["run_id"]) for item in summary if item["run_id"]]
    if not run_ids:
        return []
    listed = ", ".join(f"'{run_id}'" for run_id in run_ids if run_id.isalnum())
    runs = RunStore(store).sql(
        "SELECT label, status, duration_ms, start_time_unix_ms FROM runs "
        f"WHERE run_id IN ({listed})"
    )
    ctx = SessionContext()
    ctx.from_arrow(runs, name="these_runs")
    rows: list[dict[str, object]] = summarize_runs(ctx, table="these_runs").to_pylist()
    return rows


def _one_run(
    ctx: SessionContext,
    sink: ParquetSink,
    args: argparse.Namespace,
    number: int,
    position: str,
    log: TextIO,
    template: str | None,
) -> dict[str, object]:
    label = f"tpch-q{number:02d}"
    started = time.perf_counter()
    run_id, status, rows = "", "completed", None
    try:
        meta = {"query": f"q{number}", "scale_factor": args.scale}
        with tracked_run(label=label, sink=sink, metadata=meta) as run:
            run_id = run.run_id
            record_cache_state(ctx, run=run)
            table = _run_query(ctx, number)
            rows = table.num_rows
            run.metadata["output_rows"] = rows
    except Exception as exc:  # a failing query is part of the demo's output
        status = f"failed: {type(exc).__name__}"
    elapsed = (time.perf_counter() - started) * 1000
    shown = "-" if rows is None else rows
    print(
        f"{position} {label}  {run_id}  {status:<10} {elapsed:8.1f} ms  {shown} rows"
        f"{'' if template is None or not run_id else '  ' + template.replace('{run_id}', run_id)}",
        file=log,
        flush=True,
    )
    return {"label": label, "run_id": run_id, "status": status, "rows": rows,
            "duration_ms": round(elapsed, 1)}  # fmt: skip
