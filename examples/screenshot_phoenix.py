"""Take docs/phoenix-run.png: a real DataFusion run, exported to Arize Phoenix, in its UI.

Starts Phoenix like the tests do (tests/backends.py: its own uvx tool env, inside
``unshare -n``, HTTP port relayed to 127.0.0.1; needs root), exports a run of real queries over
OTLP/HTTP, opens the run's trace (trace id = run id) in headless Chromium and saves the picture.

    apt-get install -y chromium
    uv run python examples/screenshot_phoenix.py [OUTPUT.png]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from datafusion import SessionContext  # noqa: E402
from opentelemetry import trace  # noqa: E402

import datafusion_otel  # noqa: E402
from backends import _stop_group, start_phoenix  # noqa: E402
from datafusion_otel import attributes as attr  # noqa: E402

QUERIES = {
    "totals": "SELECT k, sum(v) AS total FROM t GROUP BY k ORDER BY k",
    "top": "SELECT k, v FROM t WHERE v > 15 ORDER BY v DESC LIMIT 2",
}


def export_run(url: str) -> str:
    telemetry = datafusion_otel.configure(endpoint=url, service_name="datafusion-otel-demo")
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    tracer = trace.get_tracer(attr.TRACER_NAME)
    with datafusion_otel.tracked_run(label="nightly_rebuild", metadata={"owner": "etl"}) as run:
        for name, sql in QUERIES.items():
            with tracer.start_as_current_span(f"query {name}") as span:
                df = ctx.sql(sql)
                df.to_arrow_table()
                span.set_attribute("db.system.name", "datafusion")
                span.set_attribute("db.query.text", sql)
                span.add_event(
                    attr.PLAN_ARTIFACTS_EVENT,
                    {"datafusion.plan.physical": df.execution_plan().display_indent()},
                )
    if not telemetry.force_flush(10):
        raise SystemExit(f"export failed: {telemetry.delivery_stats()}")
    return run.run_id


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "phoenix-run.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    workdir = Path(tempfile.mkdtemp(prefix="df-otel-shot-"))
    process, phoenix, relay = start_phoenix(workdir)
    try:
        run_id = export_run(phoenix.url)
        while not phoenix.spans(run_id, expect=3):
            time.sleep(0.5)
        projects = phoenix.get_json("/v1/projects")["data"]
        project = next(p for p in projects if p["name"] == "default")  # type: ignore[union-attr,index]
        page = f"{phoenix.url}/projects/{project['id']}/traces/{run_id}"
        print(f"run {run_id}: {page}")
        subprocess.run(  # noqa: S603 - fixed argv, chromium from PATH
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={workdir / 'chromium'}",
                "--hide-scrollbars",
                "--window-size=1600,1000",
                "--virtual-time-budget=20000",
                f"--screenshot={output}",
                page,
            ],
            check=True,
            timeout=180,
            capture_output=True,
        )
        print(f"saved {output}")
    finally:
        _stop_group(process)
        relay.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
