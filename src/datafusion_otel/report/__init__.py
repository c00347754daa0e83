"""The run profile: one self-contained, offline HTML file per run.

`render` returns the page of a run of a `RunStore`; `render_rows` the page of rows from any
source (a `DiagnosticsCollector`, older stores). The page holds the run header (with a link
to the trace when ``$DATAFUSION_OTEL_TRACE_URL`` is set), the findings, and per query the
stored (sanitized) SQL, the physical plan as a nested tree (``<details>``, readable without
JavaScript) and a sortable grid with each operator's own and inclusive time, share of the
query, rows, bytes, spills, spilled bytes, per-partition min / median / max time and rows,
a Parquet scan's row groups and pages matched of those tested, finding badges, a timeline of
operators per partition (bars placed with CSS from DataFusion's per-partition start and end
timestamps), the logical and optimized plans and any ``artifact_errors``. A query with plan
artifacts and no operator metrics (one that failed while executing) still gets its section.
``render_rows(..., embed=True)`` gives the notebook form: a fragment whose CSS is scoped under
``.dfotel-profile`` and whose ids are prefixed per run. CSS and JavaScript are inline
(the script only sorts the grids); nothing is loaded from the network. Every text from the
store is HTML-escaped; a value that was not recorded shows as "not recorded".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datafusion_otel import attributes as attr
from datafusion_otel.findings import Thresholds, find
from datafusion_otel.profile import as_rows, plan_only_profiles, query_profiles
from datafusion_otel.report._html import NOT_CAPTURED, NOT_RECORDED, fragment, page

__all__ = ["NOT_CAPTURED", "NOT_RECORDED", "render", "render_rows", "trace_link"]

_RUN_ID = "{run_id}"


def trace_link(run_id: str, template: str | None = None) -> str | None:
    """Return the trace UI link of ``run_id``, or None.

    Args:
        run_id: The run id.
        template: A URL template containing ``{run_id}`` (default
            ``$DATAFUSION_OTEL_TRACE_URL``); anything but an http(s) URL gives None.
    """
    text = (template if template is not None else os.environ.get(attr.TRACE_URL_ENV, "")).strip()
    if _RUN_ID not in text or not text.lower().startswith(("http://", "https://")):
        return None
    return text.replace(_RUN_ID, run_id)


def render_rows(
    run: Mapping[str, Any],
    operator_metrics: Iterable[Mapping[str, Any]],
    plan_artifacts: Iterable[Mapping[str, Any]] = (),
    *,
    cache_state: Iterable[Mapping[str, Any]] = (),
    thresholds: Thresholds | None = None,
    trace_url: str | None = None,
    embed: bool = False,
) -> str:
    """Return the HTML profile of one run given its rows.

    Args:
        run: The run's DATAFUSION_RUNS_V1 row.
        operator_metrics: Its DATAFUSION_OPERATOR_METRICS_V1 rows.
        plan_artifacts: Its DATAFUSION_PLAN_ARTIFACTS_V1 rows.
        cache_state: Its DATAFUSION_CACHE_STATE_V1 rows.
        thresholds: Finding thresholds (default `Thresholds()`).
        trace_url: Link to the run's trace (shown in the header), or None.
        embed: Return a fragment to embed in another page (a notebook) instead of a whole
            document: one ``<div class="dfotel-profile" id="dfotel-<run id>">`` whose CSS
            is scoped under ``.dfotel-profile`` and whose element ids are prefixed per run.
    """
    metrics, artifacts = as_rows(operator_metrics), as_rows(plan_artifacts)
    findings = find(metrics, artifacts, thresholds=thresholds)
    queries = query_profiles(metrics, artifacts)
    queries += plan_only_profiles(queries, artifacts)  # e.g. a query failing at execution
    build = fragment if embed else page
    return build(run, queries, findings, cache_state=as_rows(cache_state), trace_url=trace_url)


def render(
    run_id: str,
    *,
    store: Any = None,
    thresholds: Thresholds | None = None,
    trace_url_template: str | None = None,
) -> str:
    """Return the HTML profile of a run of a run store.

    Args:
        run_id: Run id or a unique prefix.
        store: A `datafusion_otel.store.RunStore`, or a store folder (default: the default
            store, ``$DATAFUSION_OTEL_HOME`` or ``./.datafusion-otel``).
        thresholds: Finding thresholds (default `Thresholds()`).
        trace_url_template: Trace link template with ``{run_id}`` (default
            ``$DATAFUSION_OTEL_TRACE_URL``).

    Raises:
        StoreError: If the store or the run is not found.
    """
    from datafusion_otel.store import RunStore

    if not isinstance(store, RunStore):
        store = RunStore(store if store is None else Path(store), must_exist=True)
    details = store.run(run_id)
    return render_rows(
        details.run,
        details.operator_metrics,
        details.plan_artifacts,
        cache_state=details.cache_state,
        thresholds=thresholds,
        trace_url=trace_link(str(details.run["run_id"]), trace_url_template),
    )
