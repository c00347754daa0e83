"""Take docs/phoenix-run.png: a ``datafusion-otel demo`` run exported to Arize Phoenix, in its UI.

Starts Phoenix like the tests do (tests/backends.py: its own uvx tool env, inside
``unshare -n``, HTTP port relayed to 127.0.0.1; needs root), runs the demo exactly as a user
would (``datafusion-otel demo`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: TPC-H queries traced by
the auto-instrumentation inside tracked runs), opens one run's trace (trace id = run id) in
headless Chromium and saves the picture. Nothing is made by hand: the spans are the demo's.

    apt-get install -y chromium
    uv run python examples/screenshot_phoenix.py [OUTPUT.png]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from backends import _stop_group, start_phoenix  # noqa: E402
from datafusion_otel.store import RunStore  # noqa: E402

QUERY = "3"  # TPC-H q3: a scan, two joins, an aggregate and a sort: a readable tree
SCALE = "0.01"


def export_demo_run(url: str, workdir: Path) -> str:
    """Run the demo for one query with export to ``url``; return its run id."""
    store = workdir / "store"
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=url)
    subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "datafusion_otel.cli", "demo", "--store", str(store),
         "--scale", SCALE, "--queries", QUERY],
        env=env, check=True, timeout=600,
    )  # fmt: skip
    runs = RunStore(store).recent_runs(1).to_pylist()
    return str(runs[0]["run_id"])


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "phoenix-run.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    workdir = Path(tempfile.mkdtemp(prefix="df-otel-shot-"))
    process, phoenix, relay = start_phoenix(workdir)
    try:
        run_id = export_demo_run(phoenix.url, workdir)
        while len(phoenix.spans(run_id, expect=10)) < 10:
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
