"""``opentelemetry-instrument python app.py`` picks up the ``datafusion`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

APP = textwrap.dedent(
    """
    from datafusion import SessionContext

    ctx = SessionContext()
    ctx.from_pydict({"a": [1, 2, 3]}, name="numbers")
    print("rows", ctx.sql("SELECT a FROM numbers WHERE a > 1").to_pydict())
    """
)


def test_opentelemetry_instrument_traces_an_unmodified_script(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    runner = Path(sys.executable).parent / "opentelemetry-instrument"
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "datafusion-otel-test",
    }
    done = subprocess.run(
        [str(runner), sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rows {'a': [2, 3]}" in done.stdout
    assert '"name": "SELECT numbers"' in done.stdout, done.stdout + done.stderr
    assert '"db.system.name": "datafusion"' in done.stdout
    assert '"datafusion.method": "DataFrame.to_pydict"' in done.stdout
    assert '"db.query.text": "SELECT a FROM numbers WHERE a > ?"' in done.stdout
