"""`DataFusionCompileOptions`: what to capture when a query is compiled through the package.

Artifact names (members of `DataFusionCompileOptions.artifacts`):

=====================  =====================================================================
``logical_plan``       unoptimized logical plan (indented text)
``optimized_plan``     optimized logical plan (indented text)
``physical_plan``      physical plan: the executed one when the query ran
``graphviz``           DOT of the logical plan (DataFusion's) and of the physical plan
``plan_hash``          sha256 of the literal-free unoptimized logical plan (definition v2)
``partition_count``    output partitions of the physical plan
``join_operators``     every join operator of the physical plan, by name
``operator_metrics``   per-operator runtime metrics (DATAFUSION_OPERATOR_METRICS_V1)
``substrait``          Substrait bytes of the optimized plan, validated by a round trip
``unparsed_sql``       SQL unparsed from the unoptimized logical plan
``explain``            EXPLAIN rows written to an Arrow IPC file under ``artifact_dir`` (only
                       when ``artifact_dir`` is given: no file is written by default)
``operator_spans``     one child span per timed operator, nested as in the plan, with
                       DataFusion's measured start/end times (nothing runs again)
=====================  =====================================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from datafusion_otel import attributes as attr
from datafusion_otel.sanitize import SqlTextPolicy

__all__ = [
    "ALL_ARTIFACTS",
    "DEFAULT_ARTIFACTS",
    "DEFAULT_INLINE_LIMIT_BYTES",
    "DEFAULT_MAX_OPERATOR_SPANS",
    "DataFusionCompileOptions",
    "default_artifact_dir",
]

DEFAULT_ARTIFACTS: Final[frozenset[str]] = frozenset(
    {
        "logical_plan",
        "physical_plan",
        "plan_hash",
        "partition_count",
        "join_operators",
        "operator_metrics",
        "operator_spans",
    }
)
"""The default set, bounded by design: nothing in it re-runs the optimizer or the planner.

The unoptimized logical plan (as DataFusion built it), the executed physical plan, the plan
fingerprints, partitions, joins, operator metrics and operator spans: all read from what the
query already built and ran. Operator spans are made from the operator metrics already captured
(one SDK span per timed operator, at most `DEFAULT_MAX_OPERATOR_SPANS`), so a trace UI shows the
operator tree whenever operator metrics are captured. Everything is computed on the capture
worker, off the query's thread (`datafusion_otel._capture.queue`).

``optimized_plan`` is not in it: it re-runs the optimizer (about 1-2 ms per TPC-H query). The
sanitizing still needs the optimized plan's folded constants (``upper('x')`` -> ``'X'``) to
clean the physical plan: it runs the optimizer once per distinct logical plan, off the query's
thread, and caches the literals it found (see README "Performance")."""

ALL_ARTIFACTS: Final[frozenset[str]] = DEFAULT_ARTIFACTS | {
    "optimized_plan",
    "graphviz",
    "substrait",
    "unparsed_sql",
    "explain",
}
"""Every artifact: adds the optimized plan, graphviz, Substrait with validation, unparsed SQL
and EXPLAIN files."""

DEFAULT_INLINE_LIMIT_BYTES: Final = 2048
"""Span attribute previews are cut here (Grafana Tempo silently truncates longer values)."""

DEFAULT_MAX_OPERATOR_SPANS: Final = 200
"""Operator spans made per execution at most; the others are counted on the execution span."""

_POLICIES: Final = ("sanitized", "raw", "off")
_RUN_ID = re.compile(r"[0-9a-f]{32}")

PlanArtifactsHook = Callable[[Mapping[str, object]], None]


def default_artifact_dir() -> Path:
    """Return ``$DATAFUSION_OTEL_HOME/explain`` or ``./.datafusion-otel/explain``."""
    home = os.environ.get(attr.HOME_ENV) or attr.DEFAULT_HOME
    return Path(home) / "explain"


@dataclass(frozen=True)
class DataFusionCompileOptions:
    """How a query compiled by `datafusion_otel.bridge` is observed.

    Attributes:
        run_id: Run the artifacts belong to (32 lowercase hex). When set, it wins over the
            executing thread's context: executed on a worker thread or in an asyncio task, the
            query's execution span and artifacts go under that run's root span (and so into
            its sink) while the run is live; after it ended they go to the hook only and are
            counted. Default: the trace id of the span current when the query executes.
        capture_plan_artifacts: Capture artifacts at all.
        explain_analyze: Also write an EXPLAIN ANALYZE file, built from the executed plan's
            metrics (the query is not run twice).
        plan_artifacts_hook: Called with ``structured_explain_payload()`` of every capture.
        artifact_dir: Where EXPLAIN / EXPLAIN ANALYZE files go. None (the default) writes no
            file: the plan texts stay in the rows (`default_artifact_dir` is a suggestion).
        artifacts: Names of the artifacts to capture (`DEFAULT_ARTIFACTS` or `ALL_ARTIFACTS`
            or any subset of the latter).
        sql_text: ``"sanitized"`` (literals become ``?`` in SQL and plan texts, the default),
            ``"raw"`` (keep literals: opt in only where texts are not sensitive) or ``"off"``
            (no SQL text at all).
        inline_limit_bytes: Maximum UTF-8 bytes of each span attribute preview.
        max_operator_spans: Operator spans made per execution at most (pre-order, so parents
            come first); the rest are counted in ``datafusion.operator_spans.dropped``.
        capture_min_duration_ms: Capture only executions that took at least this long
            (known once the execution ended; None, the default, captures every one). For
            services running many tiny queries; executions left out are counted
            (``datafusion_otel._capture.queue.below_threshold_count()``).
    """

    run_id: str | None = None
    capture_plan_artifacts: bool = True
    explain_analyze: bool = False
    plan_artifacts_hook: PlanArtifactsHook | None = field(default=None, compare=False)
    artifact_dir: str | os.PathLike[str] | None = None
    artifacts: frozenset[str] = DEFAULT_ARTIFACTS
    sql_text: SqlTextPolicy = "sanitized"
    inline_limit_bytes: int = DEFAULT_INLINE_LIMIT_BYTES
    max_operator_spans: int = DEFAULT_MAX_OPERATOR_SPANS
    capture_min_duration_ms: float | None = None

    def __post_init__(self) -> None:
        """Validate eagerly.

        Raises:
            ValueError: For an unknown artifact name or policy, a limit below 64 bytes, a
                negative `max_operator_spans`, a `capture_min_duration_ms` that is not a finite
                number >= 0, or a `run_id` that is not 32 lowercase hex.
        """
        if self.run_id is not None and (
            not isinstance(self.run_id, str) or _RUN_ID.fullmatch(self.run_id) is None
        ):
            raise ValueError(f"run_id must be 32 lowercase hex characters, got {self.run_id!r}")
        if (
            isinstance(self.max_operator_spans, bool)
            or not isinstance(self.max_operator_spans, int)
            or self.max_operator_spans < 0
        ):
            raise ValueError(
                f"max_operator_spans must be an int >= 0, got {self.max_operator_spans!r}"
            )
        threshold = self.capture_min_duration_ms
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not threshold >= 0  # NaN too
            or threshold == float("inf")
        ):
            raise ValueError(
                f"capture_min_duration_ms must be a finite number >= 0 or None, got {threshold!r}"
            )
        object.__setattr__(self, "artifacts", frozenset(self.artifacts))
        unknown = sorted(self.artifacts - ALL_ARTIFACTS)
        if unknown:
            raise ValueError(
                f"unknown artifacts {unknown}; known: {', '.join(sorted(ALL_ARTIFACTS))}"
            )
        if self.sql_text not in _POLICIES:
            raise ValueError(f"sql_text must be one of {_POLICIES}, got {self.sql_text!r}")
        if self.inline_limit_bytes < 64:
            raise ValueError(f"inline_limit_bytes must be >= 64, got {self.inline_limit_bytes}")

    def wants(self, artifact: str) -> bool:
        """Return True if ``artifact`` is to be captured."""
        return self.capture_plan_artifacts and artifact in self.artifacts

    def resolved_artifact_dir(self) -> Path | None:
        """Return `artifact_dir` as a Path; None when none was given (no file is written)."""
        return Path(self.artifact_dir) if self.artifact_dir is not None else None
