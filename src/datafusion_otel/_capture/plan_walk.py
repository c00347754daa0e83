"""Walk a DataFusion physical plan: operators, joins, DOT, runtime metrics."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from datafusion_otel._coerce import unix_time

__all__ = [
    "OperatorNode",
    "explain_analyze_text",
    "join_operators",
    "operator_metric_rows",
    "physical_dot",
    "walk",
]

_JOIN = "Join"  # HashJoinExec, SortMergeJoinExec, CrossJoinExec, NestedLoopJoinExec...
_CORE = ("output_rows", "elapsed_compute", "spill_count", "spilled_bytes")
_TIMESTAMPS = ("start_timestamp", "end_timestamp")
_PRUNING = (
    "pruning_row_groups_total",
    "pruning_row_groups_matched",
    "pruning_pages_total",
    "pruning_pages_matched",
)
_NS_PER_SECOND = 1_000_000_000
_DATETIME = dt.datetime
# DataFusion 55 reports pruning counters as text with a null value: "10 total → 3 matched".
_PRUNING_TEXT = re.compile(r"^\s*(\d+) total → (\d+) matched")
_PRUNING_COLUMNS = {
    "row_groups_pruned_statistics": "pruning_row_groups",
    "page_index_pages_pruned": "pruning_pages",
}


@dataclass
class OperatorNode:
    """One operator of a physical plan.

    Attributes:
        path: Position in the tree: ``"0"`` for the root, ``"0.1"`` for its second child...
        name: Operator name, for example ``HashJoinExec``.
        line: The operator's one-line display.
        depth: Depth in the tree (root = 0).
        plan: The DataFusion ``ExecutionPlan`` object.
        children: Paths of the child operators.
    """

    path: str
    name: str
    line: str
    depth: int
    plan: Any = field(repr=False)
    children: list[str] = field(default_factory=list)


_Skeleton = tuple[tuple[str, str, str, int, tuple[str, ...]], ...]
_SKELETONS: OrderedDict[str, _Skeleton] = OrderedDict()
_SKELETONS_SIZE = 512
_CACHED_TEXT_CHARS = 16_384
_skeleton_lock = threading.Lock()


def walk(plan: Any, text: str | None = None) -> list[OperatorNode]:
    """Return the operators of ``plan`` in pre-order.

    Args:
        plan: A DataFusion ``ExecutionPlan``.
        text: Its ``display_indent()``, when the caller has it: the operators' names, lines
            and tree are then taken from a cache of plans that printed the same (a repeated
            query reads only the tree of plan objects, not every operator's display).
    """
    skeleton = None
    if text is not None and len(text) > _CACHED_TEXT_CHARS:
        text = None  # a huge plan (a long IN list): not kept in memory
    if text is not None:
        with _skeleton_lock:
            skeleton = _SKELETONS.get(text)
    if skeleton is not None:
        plans = _preorder(plan)
        if len(plans) == len(skeleton):
            return [
                OperatorNode(path=p, name=n, line=ln, depth=d, plan=obj, children=list(ch))
                for (p, n, ln, d, ch), obj in zip(skeleton, plans, strict=True)
            ]
    nodes: list[OperatorNode] = []

    def visit(node: Any, path: str, depth: int) -> None:
        line = node.display().strip()
        name = line.split(":", 1)[0].strip()
        entry = OperatorNode(path=path, name=name, line=line, depth=depth, plan=node)
        nodes.append(entry)
        for index, child in enumerate(node.children()):
            child_path = f"{path}.{index}"
            entry.children.append(child_path)
            visit(child, child_path, depth + 1)

    visit(plan, "0", 0)
    if text is not None:
        built = tuple((n.path, n.name, n.line, n.depth, tuple(n.children)) for n in nodes)
        with _skeleton_lock:
            _SKELETONS[text] = built
            while len(_SKELETONS) > _SKELETONS_SIZE:
                _SKELETONS.popitem(last=False)
    return nodes


def _preorder(plan: Any) -> list[Any]:
    out: list[Any] = []
    stack = [plan]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children()))
    return out


def join_operators(nodes: list[OperatorNode]) -> list[str]:
    """Return the name of every join operator, in plan order (repeats kept)."""
    return [n.name for n in nodes if _JOIN in n.name]


def physical_dot(nodes: list[OperatorNode], labels: list[str] | None = None) -> str:
    """Return a graphviz DOT digraph of the physical plan.

    Nodes are named by operator path (``"0"``, ``"0.1"``...) and labelled with the operator's
    display line; edges point from parent to child, drawn child-to-parent (data flow).

    Args:
        nodes: Operators from `walk`.
        labels: One label per node (for example sanitized lines); default the display lines.
    """
    texts = labels if labels is not None and len(labels) == len(nodes) else [n.line for n in nodes]
    lines = ["digraph PhysicalPlan {", '  node [shape=box, fontname="monospace"];']
    for node, label in zip(nodes, texts, strict=False):
        text = label.strip().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'  "{node.path}" [label="{text}"];')
    for node in nodes:
        for child in node.children:
            lines.append(f'  "{node.path}" -> "{child}" [dir=back];')
    lines.append("}")
    return "\n".join(lines)


def _metric_value(name: str, value: object) -> int | None:
    """Return a metric's value (ns, count, bytes, or timestamp in unix ns), or None.

    None when DataFusion did not record it: no value (ratios, gauges, pruning counters) or a
    time metric still at 0 (DataFusion prints those as "NOT RECORDED").
    """
    if isinstance(value, dt.datetime):
        return unix_time(value, _NS_PER_SECOND)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    if value == 0 and (name.endswith("_time") or name == "elapsed_compute"):
        return None
    return value


def _raw_metrics(plan: Any) -> list[Any]:
    metrics = plan.metrics()
    if metrics is None:
        return []
    raw = getattr(metrics, "_raw", None)  # skip the per-metric Python wrappers when possible
    return list(raw.metrics()) if raw is not None else list(metrics.metrics())


def _per_partition(node: OperatorNode) -> dict[int | None, dict[str, int | None]]:
    grouped: dict[int | None, dict[str, int | None]] = {}
    pruning = _PRUNING_COLUMNS
    timestamps = _TIMESTAMPS
    for metric in _raw_metrics(node.plan):
        name = metric.name
        partition = metric.partition
        raw = metric.value
        values = grouped.get(partition)
        if values is None:
            values = grouped[partition] = {}
        value: int | None
        kind = type(raw)
        if kind is int:  # the common cases, inlined (`_metric_value`)
            value = None if raw == 0 and _is_time(name) else raw
        elif raw is None:
            value = None
            if name in pruning:
                _add_pruning(values, pruning[name], metric)
        elif kind is _DATETIME:
            value = unix_time(raw, _NS_PER_SECOND)
        else:
            value = _metric_value(name, raw)
        if name in values:
            previous = values[name]
            if previous is not None:
                if value is None:
                    value = previous
                elif name not in timestamps:
                    value += previous
        values[name] = value
    return grouped


def _is_time(name: str) -> bool:
    return name == "elapsed_compute" or name.endswith("_time")


def _add_pruning(values: dict[str, int | None], prefix: str, metric: Any) -> None:
    """Add a pruning counter's parsed ``total`` / ``matched`` to ``values`` (if it parses)."""
    try:
        match = _PRUNING_TEXT.match(repr(metric))
    except Exception:  # a metric whose text cannot be read stays not recorded
        return
    if match is None:
        return
    for key, text in ((f"{prefix}_total", match[1]), (f"{prefix}_matched", match[2])):
        values[key] = (values.get(key) or 0) + int(text)


def _iter_rows(
    nodes: list[OperatorNode],
) -> Iterator[tuple[OperatorNode, int | None, dict[str, int | None]]]:
    for node in nodes:
        time.sleep(0)  # let a query thread waiting for the GIL run (see _capture.queue)
        grouped = _per_partition(node) or {None: {}}  # an operator without metrics keeps a row
        for partition, values in sorted(
            grouped.items(), key=lambda kv: -1 if kv[0] is None else kv[0]
        ):
            yield node, partition, values


def operator_metric_rows(
    nodes: list[OperatorNode], *, base: dict[str, object]
) -> list[dict[str, object]]:
    """Return DATAFUSION_OPERATOR_METRICS_V1 rows: one per operator and partition.

    Args:
        nodes: Operators of an executed plan.
        base: Values shared by every row (``event_time_unix_ms``, ``run_id``, ``span_id``,
            ``plan_hash``).
    """
    rows: list[dict[str, object]] = []
    for node, partition, values in _iter_rows(nodes):
        skip = (*_CORE, *_TIMESTAMPS, *_PRUNING)
        other = {k: v for k, v in values.items() if k not in skip}
        rows.append(
            {
                **base,
                "operator_path": node.path,
                "operator_name": node.name,
                "partition": partition,
                "output_rows": values.get("output_rows"),
                "elapsed_compute_ns": values.get("elapsed_compute"),
                "spill_count": values.get("spill_count"),
                "spilled_bytes": values.get("spilled_bytes"),
                "start_time_unix_ns": values.get("start_timestamp"),
                "end_time_unix_ns": values.get("end_timestamp"),
                "other_metrics": {k: v for k, v in other.items()} or None,
                **{key: values.get(key) for key in _PRUNING},
            }
        )
    return rows


def operator_totals(rows: list[dict[str, object]]) -> dict[str, dict[str, int | None]]:
    """Sum operator metric rows per operator path (rows, compute, start/end span)."""
    totals: dict[str, dict[str, int | None]] = {}
    for row in rows:
        path = str(row["operator_path"])
        acc = totals.setdefault(
            path, {"output_rows": None, "elapsed_compute_ns": None, "start": None, "end": None}
        )
        for key in ("output_rows", "elapsed_compute_ns"):
            value = row.get(key)
            if isinstance(value, int):
                acc[key] = (acc[key] or 0) + value
        start, end = row.get("start_time_unix_ns"), row.get("end_time_unix_ns")
        if isinstance(start, int) and (acc["start"] is None or start < acc["start"]):
            acc["start"] = start
        if isinstance(end, int) and (acc["end"] is None or end > acc["end"]):
            acc["end"] = end
    return totals


def explain_analyze_text(
    nodes: list[OperatorNode],
    lines_in: list[str] | None = None,
) -> str:
    """Return an EXPLAIN ANALYZE style plan: each operator with its metric totals.

    Totals are DataFusion's own sums over partitions (``MetricsSet.output_rows`` ...), read
    from the executed plan: nothing runs again.

    Args:
        nodes: Operators from `walk`.
        lines_in: One display line per node to use instead of the node's own (for example
            the lines of an already sanitized physical plan).
    """
    labels = lines_in if lines_in is not None and len(lines_in) == len(nodes) else None
    lines = []
    for index, node in enumerate(nodes):
        metrics = node.plan.metrics()
        parts = []
        if metrics is not None:
            for key in ("output_rows", "elapsed_compute", "spill_count", "spilled_bytes"):
                value = getattr(metrics, key)
                if value is not None:
                    parts.append(f"{key}={value}")
        line = labels[index].strip() if labels is not None else node.line
        lines.append(f"{'  ' * node.depth}{line}, metrics=[{', '.join(parts)}]")
    return "\n".join(lines)
