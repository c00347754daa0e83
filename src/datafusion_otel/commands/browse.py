"""The commands that read a run store: ``runs``, ``show``, ``stats`` and ``sql``.

A damaged store file is skipped with one warning line on stderr naming it; the commands
answer from the intact files (see `datafusion_otel.store.RunStore`).
``$DATAFUSION_OTEL_TRACE_URL`` (a template containing ``{run_id}``, for example
``http://localhost:16686/trace/{run_id}``) makes ``runs`` and ``show`` print a link to each
run in a trace UI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from datafusion_otel import attributes as attr
from datafusion_otel.cache_state import scan_cache_metrics
from datafusion_otel.commands.render import (
    format_ms,
    format_time,
    json_text,
    plan_tree,
    print_json,
    print_table,
)
from datafusion_otel.findings import find
from datafusion_otel.store import RunStore, StoreError

__all__ = ["open_store", "runs", "show", "sql", "stats", "trace_url_template"]

_RUN_ID = "{run_id}"


def _warn_skipped(path: Path | str, reason: str) -> None:
    print(f"datafusion-otel: warning: skipped damaged file {path}: {reason}", file=sys.stderr)


def open_store(args: argparse.Namespace, *, need_runs: bool = True) -> RunStore:
    """Open the store named by ``--store`` (or the default one).

    Damaged files are skipped with one warning line each on stderr.

    Raises:
        StoreError: If the store is missing, or holds no (readable) runs while ``need_runs``.
    """
    store = RunStore(args.store, must_exist=True, on_skip=_warn_skipped, quiet_panics=True)
    if need_runs and store.run_count() == 0:
        readable = " readable" if store.skipped_files else ""
        raise StoreError(f"the run store at {store.path} holds no{readable} runs yet")
    return store


def trace_url_template() -> str | None:
    """Return ``$DATAFUSION_OTEL_TRACE_URL`` when set (None when not).

    Raises:
        StoreError: If it is not an http(s) URL containing ``{run_id}``.
    """
    template = os.environ.get(attr.TRACE_URL_ENV, "").strip()
    if not template:
        return None
    if _RUN_ID not in template:
        raise StoreError(
            f"{attr.TRACE_URL_ENV} must contain {_RUN_ID}, for example "
            f"http://localhost:16686/trace/{_RUN_ID}; got {template!r}"
        )
    if not template.lower().startswith(("http://", "https://")):
        raise StoreError(
            f"{attr.TRACE_URL_ENV} must be an http:// or https:// URL; got {template!r}"
        )
    return template


def _link(template: str | None, run_id: object) -> str | None:
    return None if template is None else template.replace(_RUN_ID, str(run_id))


def runs(args: argparse.Namespace) -> int:
    """List recent runs: id, label, status, duration, rows (and a trace link when set)."""
    template = trace_url_template()
    table = open_store(args).recent_runs(args.limit)
    rows = [
        {
            "run_id": r["run_id"],
            "label": r["label"],
            "status": r["status"],
            "duration_ms": r["duration_ms"],
            "rows": r["output_rows"],
            "started": format_time(r["start_time_unix_ms"]),
            "trace_url": _link(template, r["run_id"]),
        }
        for r in table.to_pylist()
    ]
    if args.json:
        print_json(rows)
    else:
        columns = [c for c in (rows[0] if rows else {}) if c != "trace_url" or template]
        print_table(rows, columns, whole=("trace_url",))
    return 0


def show(args: argparse.Namespace) -> int:
    """Show one run, its artifacts, cache state and plan tree with per-operator figures."""
    template = trace_url_template()
    details = open_store(args).run(args.run_id)
    link = _link(template, details.run["run_id"])
    trees = plan_tree(details.operator_metrics)
    scan = scan_cache_metrics(details.operator_metrics)
    found = find(details.operator_metrics, details.plan_artifacts)
    if args.json:
        print_json(
            {
                "run": details.run,
                "trace_url": link,
                "artifacts": details.artifacts,
                "plan_artifacts": details.plan_artifacts,
                "cache_state": details.cache_state,
                "scan_cache_metrics": scan,
                "plan_trees": trees,
                "findings": found,
            }
        )
        return 0
    run = details.run
    print(f"run       {run['run_id']}")
    if link is not None:
        print(f"trace     {link}")
    print(f"label     {run['label']}")
    print(f"status    {run['status']}")
    print(f"started   {format_time(run['start_time_unix_ms'])} UTC")
    print(f"duration  {format_ms(run['duration_ms'])} ms")
    metadata = run.get("metadata")
    if metadata:
        print(f"metadata  {metadata if isinstance(metadata, str) else json_text(metadata)}")
    print(f"\nartifacts ({len(details.artifacts)})")
    for artifact in details.artifacts:
        print(f"  {format_time(artifact['event_time_unix_ms'])}  {artifact['artifact']}")
    print(f"\nplan artifacts ({len(details.plan_artifacts)})")
    for row in details.plan_artifacts:
        sql_text = " ".join(str(row.get("sql") or "").split())
        print(f"  plan_hash={row.get('plan_hash') or '-'}  {sql_text[:80]}")
    if details.cache_state:
        print("\ncaches (DataFusion 55 exposes limits only; hit/miss counts are not available)")
        print_table(details.cache_state, ["cache_name", "config_limit", "config_ttl"])
    if scan:
        print("\nscan cache metrics  " + "  ".join(f"{k}={v}" for k, v in sorted(scan.items())))
    print("\nplan" + ("" if trees else ": no operator metrics recorded for this run"))
    for tree in trees:
        _print_tree(tree)
    print(f"\nfindings ({len(found)})")
    for finding in found:
        print(f"  {finding['severity']:<8} {finding['kind']:<17} {finding['message']}")
    return 0


def _print_tree(tree: dict[str, Any]) -> None:
    print(f"  query span={tree['span_id'] or '-'} plan_hash={tree['plan_hash'] or '-'}")
    for op in tree["operators"]:
        name = "  " * op["depth"] + str(op["name"])
        figures = f"rows={op['output_rows'] if op['output_rows'] is not None else '-'}"
        time_ms = op["time_ms"]
        figures += "  time=-" if time_ms is None else f"  time={format_ms(time_ms)} ms"
        if op["spill_count"]:
            figures += f"  spills={op['spill_count']}"
        print(f"    {name:<48} {figures}")


def stats(args: argparse.Namespace) -> int:
    """Print per label: count, error_rate, p50_ms, p95_ms, p99_ms (exact percentiles)."""
    rows = open_store(args).stats_by_label().to_pylist()
    columns = ["label", "count", "error_rate", "p50_ms", "p95_ms", "p99_ms"]
    if args.json:
        print_json([{c: r[c] for c in columns} for r in rows])
    else:
        print_table(rows, columns)
    return 0


def sql(args: argparse.Namespace) -> int:
    """Run any SQL over the store's tables and print the result."""
    table = open_store(args, need_runs=False).sql(args.query)
    rows = table.to_pylist()
    if args.json:
        print_json(rows)
    elif rows:
        print_table(rows, table.column_names)
    else:
        print_table([], table.column_names)
        print("(0 rows)")
    return 0
