"""``plan_shape_hash``: a fingerprint of the physical plan's strategy (definition v1).

The sha256 of `shape_text`, a canonical text of the executed physical plan's operator tree
without literals, expressions, file paths or partition counts: it changes when DataFusion picks
another join, join order, aggregation or sort strategy, not when the data or
``target_partitions`` change. Used by the ``plan_changed_and_slower`` finding.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict

from datafusion_otel._capture.plan_walk import OperatorNode

__all__ = ["SHAPE_HASH_VERSION", "shape_hash", "shape_text"]

SHAPE_HASH_VERSION = "v1"
"""Version of the `shape_hash` definition (``plan_shape_hash``)."""
# Strategy details kept in the shape, each from a fixed vocabulary (a literal in an expression
# can never add its own text): the first occurrence of each key on the operator's line.
_SHAPE_KEYS = {
    "mode": ("Partitioned", "CollectLeft", "Auto", "Partial", "FinalPartitioned", "Final",
             "SinglePartitioned", "Single"),
    "join_type": ("Inner", "LeftSemi", "LeftAnti", "LeftMark", "Left", "RightSemi",
                  "RightAnti", "RightMark", "Right", "Full"),
    "ordering_mode": ("PartiallySorted", "Sorted", "Linear"),
    "partitioning": ("Hash", "RoundRobinBatch", "UnknownPartitioning"),
    "preserve_partitioning": ("[true]", "[false]"),
    "file_type": ("parquet", "csv", "json", "avro", "arrow"),
}  # fmt: skip
_SHAPE_PATTERNS = {
    key: re.compile(rf"\b{key}=({'|'.join(re.escape(v) for v in values)})")
    for key, values in _SHAPE_KEYS.items()
}
_TOPK = re.compile(r"^SortExec: TopK\(")


def _shape_token(node: OperatorNode) -> str:
    parts = [node.name]
    if _TOPK.match(node.line):
        parts.append("TopK")
    for key, pattern in _SHAPE_PATTERNS.items():
        found = pattern.search(node.line)
        if found:
            parts.append(f"{key}={found.group(1)}")
    return " ".join(parts)


def _is_parallelism_only(node: OperatorNode) -> bool:
    # Round-robin repartitioning only spreads batches over the cores: present or not by
    # partition count and file layout, not by strategy.
    return node.name == "RepartitionExec" and "partitioning=RoundRobinBatch(" in node.line


def shape_text(nodes: list[OperatorNode]) -> str:
    """Return the canonical operator-tree text that `shape_hash` hashes (definition v1).

    One line per operator in pre-order: its depth, its name and the strategy details that do
    not depend on the data (join ``mode`` / ``join_type``, aggregate ``mode`` /
    ``ordering_mode``, repartitioning kind, sort ``TopK`` and ``preserve_partitioning``, scan
    ``file_type``), each taken only from a fixed vocabulary. No expression, literal, file
    path, fetch count or partition count; round-robin ``RepartitionExec`` operators are left
    out (their children take their place).
    """
    by_path = {n.path: n for n in nodes}
    lines: list[str] = []

    def visit(node: OperatorNode, depth: int) -> None:
        skip = _is_parallelism_only(node)
        if not skip:
            lines.append(f"{depth} {_shape_token(node)}")
        for child in node.children:
            if child in by_path:
                visit(by_path[child], depth if skip else depth + 1)

    if nodes:
        visit(nodes[0], 0)
    return "\n".join(lines)


_HASHES: OrderedDict[str, str] = OrderedDict()
_HASHES_SIZE = 512
_CACHED_TEXT_CHARS = 16_384
_lock = threading.Lock()


def shape_hash(nodes: list[OperatorNode], text: str | None = None) -> str | None:
    """``plan_shape_hash`` (definition v1): sha256 hex of `shape_text`; None without nodes.

    Args:
        nodes: The plan's operators (`datafusion_otel._capture.plan_walk.walk`).
        text: The plan's ``display_indent()``, when known: the hash is cached per plan text
            (a repeated query costs a lookup).
    """
    if not nodes:
        return None
    if text is not None and len(text) > _CACHED_TEXT_CHARS:
        text = None  # a huge plan (a long IN list): not kept in memory
    if text is not None:
        with _lock:
            found = _HASHES.get(text)
        if found is not None:
            return found
    digest = hashlib.sha256(shape_text(nodes).encode()).hexdigest()
    if text is not None:
        with _lock:
            _HASHES[text] = digest
            while len(_HASHES) > _HASHES_SIZE:
                _HASHES.popitem(last=False)
    return digest
