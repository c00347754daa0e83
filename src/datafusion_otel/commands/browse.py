"""The commands that read a run store: ``runs``, ``show``, ``stats`` and ``sql``."""

from __future__ import annotations

import argparse
from typing import Any

from datafusion_otel.cache_state import scan_cache_metrics
from datafusion_otel.commands.render import (
    format_ms,
    format_time,
    plan_tree,
    print_json,
    print_table,
)
from datafusion_otel.store import RunStore, StoreError

__all__ = ["open_store", "runs", "show", "sql", "stats"]


def open_store(args: argparse.Namespace, *, need_runs: bool = True) -> RunStore:
    """Open the store named by ``--store`` (or the default one).

    Raises:
        StoreError: If the store is missing, or holds no runs while ``need_runs``.
    """
    store = RunStore(args.store, must_exist=True)
    if need_runs and store.run_count() == 0:
        raise StoreError(f"the run store at {store.path} holds no runs yet")
    return store


def runs(args: argparse.Namespace) -> int:
    """List recent runs: id, label, status, duration, rows."""
    table = open_store(args).recent_runs(args.limit)
    rows = [
        {
            "run_id": r["run_id"],
            "label": r["label"],
            "status": r["status"],
            "duration_ms": r["duration_ms"],
            "rows": r["output_rows"],
            "started": format_time(r["start_time_unix_ms"]),
        }
        for r in table.to_pylist()
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows)
    return 0


def show(args: argparse.Namespace) -> int:
    """Show one run, its artifacts, cache state and plan tree with per-operator figures."""
    details = open_store(args).run(args.run_id)
    trees = plan_tree(details.operator_metrics)
    scan = scan_cache_metrics(details.operator_metrics)
    if args.json:
        print_json(
            {
                "run": details.run,
                "artifacts": details.artifacts,
                "plan_artifacts": details.plan_artifacts,
                "cache_state": details.cache_state,
                "scan_cache_metrics": scan,
                "plan_trees": trees,
            }
        )
        return 0
    run = details.run
    print(f"run       {run['run_id']}")
    print(f"label     {run['label']}")
    print(f"status    {run['status']}")
    print(f"started   {format_time(run['start_time_unix_ms'])} UTC")
    print(f"duration  {format_ms(run['duration_ms'])} ms")
    if run.get("metadata"):
        print(f"metadata  {run['metadata']}")
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
    return 0


def _print_tree(tree: dict[str, Any]) -> None:
    print(f"  query span={tree['span_id'] or '-'} plan_hash={tree['plan_hash'] or '-'}")
    for op in tree["operators"]:
        name = "  " * op["depth"] + str(op["name"])
        figures = f"rows={op['output_rows'] if op['output_rows'] is not None else '-'}"
        figures += f"  time={format_ms(op['elapsed_compute_ms'])} ms"
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
