"""The run profile of a finished `DataFusionRun`, for notebooks (``_repr_html_``)."""

from __future__ import annotations

import logging
from typing import Any

from datafusion_otel import attributes as attr

__all__ = ["run_html"]

_LOG = logging.getLogger("datafusion_otel.report")


def _rows(sink: Any, run_id: str) -> tuple[list[Any], list[Any], list[Any]] | None:
    """The run's operator-metrics, plan-artifacts and cache rows from ``sink``, or None."""
    snapshot = getattr(sink, "events_snapshot", None)
    if callable(snapshot):  # a DiagnosticsCollector
        events = snapshot()
        return tuple(  # type: ignore[return-value]
            [r for r in events.get(name, []) if r.get("run_id") == run_id]
            for name in (attr.OPERATOR_METRICS_TABLE, attr.PLAN_ARTIFACTS_TABLE,
                         attr.CACHE_STATE_TABLE)
        )  # fmt: skip
    from datafusion_otel.store import ParquetSink, RunStore

    if isinstance(sink, ParquetSink):
        sink.force_flush(timeout=5)
        details = RunStore(sink.path).run(run_id)
        return details.operator_metrics, details.plan_artifacts, details.cache_state
    return None


def run_html(run: Any) -> str | None:
    """Return the HTML profile of a finished run, or None (running, or rows not reachable).

    The profile is a fragment (``render_rows(..., embed=True)``): its CSS is scoped under
    ``.dfotel-profile`` and its ids are prefixed per run, so it neither restyles the notebook
    nor collides with another run's profile.

    The rows are read from the run's own sink: a `DiagnosticsCollector`'s rows, or the store
    folder of a `ParquetSink` (flushed first). Never raises: a failure logs and gives None,
    so a notebook falls back to the run's plain ``repr``.
    """
    if run.status == "running":
        return None
    try:
        from datafusion_otel.report import render_rows, trace_link

        found = _rows(getattr(run, "_sink", None), run.run_id)
        metrics, artifacts, caches = found if found is not None else ([], [], [])
        return render_rows(
            run.payload(), metrics, artifacts, cache_state=caches,
            trace_url=trace_link(run.run_id), embed=True,
        )  # fmt: skip
    except Exception:
        _LOG.warning("could not render the profile of run %s", run.run_id, exc_info=True)
        return None
