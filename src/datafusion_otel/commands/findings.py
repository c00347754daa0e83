"""The ``findings`` and ``report`` commands: why a run was slow, as text, JSON or HTML.

* ``findings [RUN_ID | --label L]``: the findings of a run (default: the most recent run; with
  ``--label``, the most recent run with that label), see `datafusion_otel.findings`: the rows
  recorded when the run ended (``datafusion_findings_v1``) when there are any, else computed
  from the run's operator metrics now; plus ``plan_changed_and_slower``, always computed now
  from the store's history (the recorded rows never hold it: they see one run).
* ``report RUN_ID [-o FILE]``: the run's offline HTML profile (`datafusion_otel.report`),
  written to ``FILE`` (default ``run-<first 12 hex of the id>.html``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from datafusion_otel.commands.browse import open_store, trace_url_template
from datafusion_otel.commands.render import print_json, print_table
from datafusion_otel.findings import SEVERITIES, plan_change_findings, run_findings
from datafusion_otel.report import render
from datafusion_otel.store import RunStore, StoreError

__all__ = ["findings", "print_findings", "report"]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _run_id(store: RunStore, args: argparse.Namespace) -> str:
    if args.run_id:
        return store.resolve_run_id(args.run_id)
    where = "" if args.label is None else f"WHERE label = {_quote(args.label)} "
    rows = store.sql(
        f"SELECT run_id FROM runs {where}ORDER BY start_time_unix_ms DESC LIMIT 1"
    ).to_pylist()
    if not rows:
        raise StoreError(f"no run labelled {args.label!r} in the store at {store.path}")
    return str(rows[0]["run_id"])


def print_findings(rows: list[dict[str, Any]]) -> None:
    """Print findings as an aligned table (or one line saying there are none)."""
    if not rows:
        print("no findings: nothing crossed a threshold")
        return
    table = [
        {**r, "operator": f"{r['operator_name'] or ''} {r['operator_path'] or ''}".strip()}
        for r in rows
    ]
    print_table(table, ["severity", "kind", "operator", "message"], whole=("message",))


def findings(args: argparse.Namespace) -> int:
    """List the findings of one run (``--json``: DATAFUSION_FINDINGS_V1 rows)."""
    if args.run_id and args.label is not None:
        raise StoreError("give a RUN_ID or --label, not both")
    store = open_store(args)
    run_id = _run_id(store, args)
    rows = store.stored_findings(run_id)
    source = "recorded when the run ended; plan changes computed from the store's history"
    if rows:
        rows.extend(plan_change_findings(store, run_id))
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        rows.sort(key=lambda f: rank.get(str(f["severity"]), len(rank)))
    else:
        rows = run_findings(store, run_id)
        source = "computed from the stored metrics and the store's history"
    if args.json:
        print_json(rows)
    else:
        print(f"run {run_id} (findings {source})")
        print_findings(rows)
    return 0


def report(args: argparse.Namespace) -> int:
    """Write a run's HTML profile to ``-o FILE``; print the file's path."""
    template = trace_url_template()
    store = open_store(args)
    run_id = store.resolve_run_id(args.run_id)
    text = render(run_id, store=store, trace_url_template=template)
    target = Path(args.output or f"run-{run_id[:12]}.html")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc
    if args.json:
        print_json({"run_id": run_id, "path": str(target), "bytes": len(text.encode())})
    else:
        print(target)
    return 0
