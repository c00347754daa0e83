"""Build the run profile's HTML from a run's rows (every store text escaped)."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from datafusion_otel.findings import plan_lines
from datafusion_otel.profile import SCAN_TIME_METRIC, OperatorProfile, QueryProfile
from datafusion_otel.report._assets import PAGE_STYLE, SCOPE, STYLE, script
from datafusion_otel.report._gantt import timeline

__all__ = ["NOT_CAPTURED", "NOT_RECORDED", "fragment", "page", "root_id"]

NOT_RECORDED = "not recorded"
"""Shown for every value DataFusion (or an older store) did not record."""

_MS = 1_000_000


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nr() -> str:
    return f'<span class="nr">{NOT_RECORDED}</span>'


def _ms(ns: int | float | None) -> str:
    return _nr() if ns is None else f"{ns / _MS:,.2f} ms"


def _num(value: int | float | None) -> str:
    if value is None:
        return _nr()
    return f"{value:,.0f}" if isinstance(value, int) or value.is_integer() else f"{value:,.1f}"


def _spread(spread: tuple[int, float, int] | None, time: bool) -> str:
    if spread is None:
        return _nr()
    low, mid, high = spread
    if time:
        return f"{low / _MS:,.2f} / {mid / _MS:,.2f} / {high / _MS:,.2f} ms"
    return f"{low:,} / {mid:,.0f} / {high:,}"


def _share(op: OperatorProfile, total: int | None) -> float | None:
    if op.own_ns is None or not total:
        return None
    return op.own_ns / total


def _badges(findings: Sequence[Mapping[str, Any]]) -> str:
    return "".join(
        f'<span class="badge {_e(f["severity"])}" title="{_e(f["message"])}">{_e(f["kind"])}</span>'
        for f in findings
    )


def _time_text(value: object) -> str:
    if not isinstance(value, int):
        return NOT_RECORDED
    moment = dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(run: Mapping[str, Any], trace_url: str | None) -> str:
    metadata = run.get("metadata")
    if metadata is not None and not isinstance(metadata, str):
        metadata = json.dumps(metadata, sort_keys=True, default=str)
    duration = run.get("duration_ms")
    rows = [
        ("run", _e(run.get("run_id"))),
        ("label", _e(run.get("label"))),
        ("status", _e(run.get("status"))),
        ("duration", _nr() if duration is None else f"{_e(duration)} ms"),
        ("started", _e(_time_text(run.get("start_time_unix_ms")))),
        ("metadata", _nr() if metadata is None else f"<code>{_e(metadata)}</code>"),
    ]
    if trace_url is not None:
        rows.append(("trace", f'<a href="{_e(trace_url)}">{_e(trace_url)}</a>'))
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _findings(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return "<p>No findings: nothing crossed a threshold.</p>"
    rows = "".join(
        f'<tr><td><span class="badge {_e(f["severity"])}">{_e(f["severity"])}</span></td>'
        f"<td>{_e(f['kind'])}</td><td>{_e(f.get('operator_name') or '')} "
        f"{_e(f.get('operator_path') or '')}</td><td>{_e(f['message'])}</td>"
        f"<td><code>{_e(f.get('evidence') or '')}</code></td></tr>"
        for f in findings
    )
    head = "<tr><th>severity</th><th>kind</th><th>operator</th><th>finding</th><th>evidence</th>"
    return f'<table class="findings"><thead>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _is_scan(op: OperatorProfile) -> bool:
    """A Parquet scan: it recorded pruning counters or the scan's own-time metric."""
    return SCAN_TIME_METRIC in op.metrics or any(
        k.startswith("pruning_") and v is not None for k, v in op.metrics.items()
    )


def _pruning(op: OperatorProfile) -> str:
    """``row groups matched/total · pages matched/total`` of a Parquet scan ("" otherwise)."""
    if not _is_scan(op):
        return ""
    parts = []
    for unit, key in (("row groups", "row_groups"), ("pages", "pages")):
        matched = op.metrics.get(f"pruning_{key}_matched")
        tested = op.metrics.get(f"pruning_{key}_total")
        value = _nr() if matched is None or tested is None else f"{matched:,} / {tested:,}"
        parts.append(f"{unit} matched/total {value}")
    return " · ".join(parts)


def _figures(op: OperatorProfile, total: int | None) -> str:
    share = _share(op, total)
    bar = "" if share is None else f'<span class="bar" style="width:{share * 100:.0f}px"></span>'
    spills = _nr() if op.spill_count is None else f"{op.spill_count:,}"
    pruning = _pruning(op)
    return (
        f"{bar}own {_ms(op.own_ns)} · incl. {_ms(op.inclusive_ns)} · "
        f"{_nr() if share is None else f'{share:.1%}'} of query · rows {_num(op.output_rows)} · "
        f"bytes {_num(op.output_bytes)} · spills {spills} · spilled bytes "
        f"{_num(op.spilled_bytes)} · partition time min/med/max "
        f"{_spread(op.time_spread(), True)} · rows min/med/max {_spread(op.rows_spread(), False)}"
        + (f" · {pruning}" if pruning else "")
    )


def _tree(
    query: QueryProfile,
    path: str,
    lines: Mapping[str, str],
    by_op: Mapping[str, list[Mapping[str, Any]]],
) -> str:
    op = query.operators[path]
    line = lines.get(path)
    summary = (
        f'<span class="op">{_e(op.name)}</span> <small>{_e(path)}</small>'
        f"{_badges(by_op.get(path, []))}<br>"
        + (f'<span class="line">{_e(line)}</span><br>' if line else "")
        + f'<span class="figs">{_figures(op, query.total_ns)}</span>'
    )
    children = [c for c in op.children if c in query.operators]
    if not children:
        return f'<div class="leaf" data-path="{_e(path)}">{summary}</div>'
    inner = "".join(_tree(query, c, lines, by_op) for c in children)
    return f'<details open data-path="{_e(path)}"><summary>{summary}</summary>{inner}</details>'


def _grid(query: QueryProfile, by_op: Mapping[str, list[Mapping[str, Any]]]) -> str:
    head = (
        "path",
        "operator",
        "own ms",
        "inclusive ms",
        "% of query",
        "rows",
        "bytes",
        "spills",
        "spilled bytes",
        "pruning",
        "partition time min/med/max",
        "partition rows min/med/max",
        "findings",
    )
    body = []
    for op in query.operators.values():
        share = _share(op, query.total_ns)
        cells = [
            (op.path, _e(op.path)),
            (op.name, _e(op.name)),
            (op.own_ns, _ms(op.own_ns)),
            (op.inclusive_ns, _ms(op.inclusive_ns)),
            (share, _nr() if share is None else f"{share:.1%}"),
            (op.output_rows, _num(op.output_rows)),
            (op.output_bytes, _num(op.output_bytes)),
            (op.spill_count, _num(op.spill_count)),
            (op.spilled_bytes, _num(op.spilled_bytes)),
            (None, _pruning(op)),
            (None, _spread(op.time_spread(), True)),
            (None, _spread(op.rows_spread(), False)),
            (None, _badges(by_op.get(op.path, []))),
        ]
        tds = "".join(
            f'<td class="num" data-v="{_e(v)}">{text}</td>'
            if isinstance(v, (int, float))
            else f"<td>{text}</td>"
            for v, text in cells
        )
        body.append(f"<tr>{tds}</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<table class="grid"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


NOT_CAPTURED = "not captured: not in this query's capture set (it is in ALL_ARTIFACTS)"
"""Shown for a plan text that was not asked for (no error names it)."""


def _text_block(
    title: str, text: object, name: str = "", artifacts: Mapping[str, Any] | None = None
) -> str:
    if not isinstance(text, str) or not text.strip():
        errors = str((artifacts or {}).get("artifact_errors") or "")
        if name and artifacts and f'"{name}"' not in errors:  # not asked for, not failed
            return f'<details><summary>{title}</summary><p class="nr">{NOT_CAPTURED}</p></details>'
        return f"<details><summary>{title}</summary><p>{_nr()}</p></details>"
    return f"<details><summary>{title}</summary><pre>{_e(text)}</pre></details>"


def _errors(artifacts: Mapping[str, Any]) -> str:
    """The artifacts that could not be captured (``artifact_errors``), escaped."""
    raw = artifacts.get("artifact_errors")
    if not isinstance(raw, str) or not raw.strip():
        return ""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return f"<h3>Artifact errors</h3><pre>{_e(raw)}</pre>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in parsed.items())
    return (
        '<h3>Artifact errors</h3><table class="errors"><tr><th>artifact</th><th>error</th></tr>'
        f"{rows}</table>"
    )


def _operators(query: QueryProfile, lines: Mapping[str, str], by_op: Any) -> str:
    if not query.operators:
        return f"<h3>Operators</h3><p>Operator metrics: {_nr()}</p>"
    roots = [p for p in query.operators if "." not in p] or list(query.operators)[:1]
    tree = "".join(_tree(query, root, lines, by_op) for root in roots)
    return (
        f'<h3>Physical plan</h3><div class="tree">{tree}</div>'
        f"<h3>Operators</h3>{_grid(query, by_op)}"
    )


def _query(
    index: int, query: QueryProfile, findings: Sequence[Mapping[str, Any]], prefix: str
) -> str:
    artifacts = query.plan_artifacts or {}
    physical = artifacts.get("physical_plan")
    lines = plan_lines(physical) if isinstance(physical, str) else {}
    mine = [
        f
        for f in findings
        if f.get("span_id") == query.span_id and f.get("plan_hash") == query.plan_hash
    ]
    by_op: dict[str, list[Mapping[str, Any]]] = {}
    for finding in mine:
        by_op.setdefault(str(finding.get("operator_path")), []).append(finding)
    sql = artifacts.get("sql")
    return (
        f'<section class="query" id="{prefix}q{index}"><h2>Query {index}</h2>'
        f"<p>span {_e(query.span_id or NOT_RECORDED)} · plan_hash "
        f"{_e(query.plan_hash or NOT_RECORDED)} · query time (sum of own times) "
        f"{_ms(query.total_ns)}</p>"
        f"<h3>SQL ({_e(artifacts.get('sql_text_policy') or 'sanitized')})</h3>"
        + (f"<pre>{_e(sql)}</pre>" if isinstance(sql, str) else f"<p>{_nr()}</p>")
        + _operators(query, lines, by_op)
        + timeline(query, NOT_RECORDED)
        + _text_block("Logical plan", artifacts.get("logical_plan"), "logical_plan", artifacts)
        + _text_block(
            "Optimized logical plan", artifacts.get("optimized_plan"), "optimized_plan", artifacts
        )
        + _text_block("Physical plan text", physical, "physical_plan", artifacts)
        + _errors(artifacts)
        + "</section>"
    )


def _caches(cache_state: Sequence[Mapping[str, Any]]) -> str:
    if not cache_state:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r.get('cache_name'))}</td><td>{_e(r.get('config_limit') or '')}</td>"
        f"<td>{_e(r.get('config_ttl') or '')}</td></tr>"
        for r in cache_state
    )
    return (
        "<h2>Caches</h2><p>DataFusion 55 exposes limits only (no hit/miss counts).</p>"
        f"<table><tr><th>cache</th><th>limit</th><th>ttl</th></tr>{rows}</table>"
    )


def root_id(run_id: object) -> str:
    """The wrapper id of a run's profile: ``dfotel-<run id>`` (safe characters only)."""
    return "dfotel-" + re.sub(r"[^A-Za-z0-9_-]", "_", str(run_id))


def _body(
    run: Mapping[str, Any],
    queries: Sequence[QueryProfile],
    findings: Sequence[Mapping[str, Any]],
    cache_state: Sequence[Mapping[str, Any]],
    trace_url: str | None,
    style: str = "",
) -> str:
    """The wrapper ``<div>`` holding the whole profile (``style`` first, its script last)."""
    wrapper = root_id(run.get("run_id"))
    prefix = wrapper + "-"
    body = (
        f"<h1>Run profile: {_e(run.get('label'))}</h1>{_header(run, trace_url)}"
        f"<h2>Findings ({len(findings)})</h2>{_findings(findings)}"
        + (
            "".join(_query(i, q, findings, prefix) for i, q in enumerate(queries, 1))
            or f"<p>Queries: {_nr()}</p>"
        )
        + _caches(cache_state)
    )
    return (
        f'<div class="{SCOPE}" id="{wrapper}">{style}{body}<script>{script(wrapper)}</script></div>'
    )


def fragment(
    run: Mapping[str, Any],
    queries: Sequence[QueryProfile],
    findings: Sequence[Mapping[str, Any]],
    *,
    cache_state: Sequence[Mapping[str, Any]] = (),
    trace_url: str | None = None,
) -> str:
    """Return the profile as an HTML fragment for embedding (a notebook's ``_repr_html_``).

    No ``<html>``/``<body>``: one ``<div class="dfotel-profile" id="dfotel-<run id>">`` with
    its stylesheet (every selector under ``.dfotel-profile``), element ids prefixed with the
    wrapper id, and a script that sorts only the grids inside the wrapper.
    """
    return _body(run, queries, findings, cache_state, trace_url, f"<style>{STYLE}</style>")


def page(
    run: Mapping[str, Any],
    queries: Sequence[QueryProfile],
    findings: Sequence[Mapping[str, Any]],
    *,
    cache_state: Sequence[Mapping[str, Any]] = (),
    trace_url: str | None = None,
) -> str:
    """Return the whole self-contained HTML page of one run (the fragment in a document)."""
    title = f"datafusion-otel run {run.get('label')} ({run.get('run_id')})"
    inner = _body(run, queries, findings, cache_state, trace_url)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{PAGE_STYLE}{STYLE}</style></head>"
        f"<body>{inner}</body></html>"
    )
