"""Text and JSON output of the commands: aligned tables, JSON documents, plan trees."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["format_ms", "format_time", "plan_tree", "print_json", "print_table"]

_PATH_PARTS = re.compile(r"[./]")


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


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def print_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
) -> None:
    """Print ``rows`` as an aligned text table with a header line."""
    stream = out or sys.stdout
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    cells = [[_cell(row.get(name)) for name in names] for row in rows]
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


def _path_key(path: str) -> tuple[tuple[int, object], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _PATH_PARTS.split(path))


def plan_tree(operator_metrics: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold per-partition operator-metrics rows into one plan tree per query.

    Operators are ordered by ``operator_path`` (components split on ``.`` or ``/``, numeric
    components compared as numbers); an operator's depth is its number of components minus
    one. Rows and compute time are summed over partitions.

    Returns:
        One dict per query: ``span_id``, ``plan_hash`` and ``operators``, each operator a
        dict with ``path``, ``depth``, ``name``, ``output_rows``, ``elapsed_compute_ms``,
        ``partitions``, ``spill_count``.
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
                "partitions": 0,
                "spill_count": None,
            },
        )
        node["partitions"] += 1
        for source, target, scale in (
            ("output_rows", "output_rows", 1),
            ("elapsed_compute_ns", "elapsed_compute_ms", 1e-6),
            ("spill_count", "spill_count", 1),
        ):
            value = row.get(source)
            if isinstance(value, int):
                node[target] = (node[target] or 0) + value * scale
    trees = []
    for (span_id, plan_hash), nodes in queries.items():
        ordered = sorted(nodes.values(), key=lambda n: _path_key(n["path"]))
        top = min(len(_PATH_PARTS.split(n["path"])) for n in ordered)
        for node in ordered:
            node["depth"] = len(_PATH_PARTS.split(node["path"])) - top
        trees.append({"span_id": span_id, "plan_hash": plan_hash, "operators": ordered})
    return trees
