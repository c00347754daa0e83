"""The design document's end-to-end example, with only the module paths changed.

    uv run python examples/design_doc_end_to_end.py

``obs.datafusion_runs`` -> ``datafusion_otel.runs``, ``obs.diagnostics`` ->
``datafusion_otel.diagnostics``, ``datafusion_engine.compile_options`` ->
``datafusion_otel.compile_options``, ``datafusion_engine.bridge`` -> ``datafusion_otel.bridge``.
The document leaves ``expr`` and ``backend`` to the reader: here an Ibis expression over a
table that is registered on the SessionContext by the same name (Ibis is the ``ibis`` extra).
EXPLAIN files are written only under an explicit ``artifact_dir``: a temporary folder here.
"""

from __future__ import annotations

import tempfile

import ibis
import pyarrow as pa
from datafusion import SessionContext

from datafusion_otel.bridge import ibis_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.diagnostics import DiagnosticsCollector
from datafusion_otel.runs import tracked_run

events = ibis.table({"user_id": "int64", "kind": "string"}, name="events")
expr = events.group_by("kind").aggregate(users=events.user_id.nunique())
backend = None  # Ibis's own DataFusion backend is not needed (nor working with DataFusion 55)

sink = DiagnosticsCollector()

with tracked_run(label="user_analytics", sink=sink) as run:
    ctx = SessionContext()
    ctx.register_record_batches(
        "events",
        [[pa.record_batch({"user_id": [1, 2, 2, 3], "kind": ["view", "view", "buy", "view"]})]],
    )

    options = DataFusionCompileOptions(
        run_id=run.run_id,
        capture_plan_artifacts=True,
        explain_analyze=True,
        artifact_dir=tempfile.mkdtemp(prefix="datafusion-otel-explain-"),
        plan_artifacts_hook=lambda payload: sink.record_artifact(
            "datafusion_plan_artifacts_v1", payload
        ),
    )

    df = ibis_to_datafusion(expr, backend=backend, ctx=ctx, options=options)
    result = df.to_arrow_table()

# Artifacts now correlated:
artifacts = sink.artifacts_snapshot()
print(artifacts["datafusion_run_started_v1"])
print(artifacts["datafusion_run_finished_v1"])
print(artifacts["datafusion_plan_artifacts_v1"][0]["ibis_sql"])
print(artifacts["datafusion_plan_artifacts_v1"][0]["explain_analyze_source"])
