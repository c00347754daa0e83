"""Text and JSON output of the commands: aligned tables, JSON documents, plan trees."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "SCAN_TIME_METRIC",
    "format_ms",
    "format_time",
    "json_text",
    "plan_tree",
    "print_json",
    "print_table",
]

_PATH_PARTS = re.compile(r"[./]")
SCAN_TIME_METRIC = "time_elapsed_processing"
"""The time a scan records (in ``other_metrics``): DataFusion's file scans leave
``elapsed_compute`` at (nearly) zero and count their decoding time here."""


def format_ms(value: object) -> str:
    """Format milliseconds for humans (``-`` for null)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_time(unix_ms: object) -> str:
    """Format Unix milliseconds as an ISO-8601 UTC time to the second (``-`` for null)."""
    if not isinstance(unix_ms, int):
        return "-"
    moment = dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: object, *, whole: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    text = str(value).replace("\n", " ")
    return text if whole or len(text) <= 60 else text[:57] + "..."


def print_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    whole: Sequence[str] = (),
) -> None:
    """Print ``rows`` as an aligned text table with a header line.

    Args:
        rows: The rows.
        columns: Column names (default: the first row's keys).
        out: Stream (default stdout).
        whole: Columns printed in full (others are cut at 60 characters), such as links.
    """
    stream = out or sys.stdout
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    cells = [[_cell(row.get(name), whole=name in whole) for name in names] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip(), file=stream)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=stream)


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def print_json(document: object, *, out: TextIO | None = None) -> None:
    """Print ``document`` as indented JSON (values JSON cannot hold become strings)."""
    print(json.dumps(document, indent=2, default=_json_default), file=out or sys.stdout)


def json_text(value: object) -> str:
    """Return ``value`` as compact one-line JSON (values JSON cannot hold become strings)."""
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _path_key(path: str) -> tuple[tuple[int, object], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _PATH_PARTS.split(path))


def _other_metrics(row: Mapping[str, Any]) -> Mapping[str, object]:
    other = row.get("other_metrics")
    if isinstance(other, Mapping):
        return other
    if isinstance(other, list):  # a map column read without conversion: (key, value) pairs
        return {str(k): v for k, v in other}
    return {}


def plan_tree(operator_metrics: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold per-partition operator-metrics rows into one plan tree per query.

    Operators are ordered by ``operator_path`` (components split on ``.`` or ``/``, numeric
    components compared as numbers); an operator's depth is its number of components minus
    one. Rows and times are summed over partitions. An operator's ``time_ms`` is its scan
    time (``time_elapsed_processing``) when it records one, as DataFusion's file scans do,
    else its ``elapsed_compute``; null when it records neither.

    Returns:
        One dict per query: ``span_id``, ``plan_hash`` and ``operators``, each operator a
        dict with ``path``, ``depth``, ``name``, ``output_rows``, ``elapsed_compute_ms``,
        ``scan_time_ms``, ``time_ms``, ``time_metric`` (``elapsed_compute``,
        ``time_elapsed_processing`` or null), ``partitions``, ``spill_count``.
    """
    queries: dict[tuple[object, object], dict[str, dict[str, Any]]] = {}
    for row in operator_metrics:
        key = (row.get("span_id"), row.get("plan_hash"))
        path = str(row.get("operator_path", ""))
        node = queries.setdefault(key, {}).setdefault(
            path,
            {
                "path": path,
                "depth": 0,
                "name": row.get("operator_name"),
                "output_rows": None,
                "elapsed_compute_ms": None,
                "scan_time_ms": None,
                "time_ms": None,
                "time_metric": None,
                "partitions": 0,
                "spill_count": None,
            },
        )
        node["partitions"] += 1
        values = {**row, "scan_time_ns": _other_metrics(row).get(SCAN_TIME_METRIC)}
        for source, target, scale in (
            ("output_rows", "output_rows", 1),
            ("elapsed_compute_ns", "elapsed_compute_ms", 1e-6),
            ("scan_time_ns", "scan_time_ms", 1e-6),
            ("spill_count", "spill_count", 1),
        ):
            value = values.get(source)
            if isinstance(value, int) and not isinstance(value, bool):
                node[target] = (node[target] or 0) + value * scale
    trees = []
    for (span_id, plan_hash), nodes in queries.items():
        ordered = sorted(nodes.values(), key=lambda n: _path_key(n["path"]))
        top = min(len(_PATH_PARTS.split(n["path"])) for n in ordered)
        for node in ordered:
            node["depth"] = len(_PATH_PARTS.split(node["path"])) - top
            if node["scan_time_ms"] is not None:
                node["time_ms"], node["time_metric"] = node["scan_time_ms"], SCAN_TIME_METRIC
            elif node["elapsed_compute_ms"] is not None:
                node["time_ms"], node["time_metric"] = node["elapsed_compute_ms"], "elapsed_compute"
        trees.append({"span_id": span_id, "plan_hash": plan_hash, "operators": ordered})
    return trees
