"""Soak: many runs under stress, with faults everywhere, and an exact count at the end.

One application process mixes threads and asyncio tasks (each run a real, instrumented
DataFusion query), a raising sink, a slow sink and a dead OTLP endpoint; meanwhile store writers
in other processes are SIGKILLed mid-stream, repeatedly. At the end: every run started in the
surviving application has exactly one run row in the sink every run goes to (and the slow sink
has exactly its runs), and each killed writer lost no more run rows than ParquetSink's bound.
Bounded in time: a few seconds of load, then the checks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from datafusion_otel import RunStore
from listeners import closed_port

_APP = Path(__file__).with_name("soak_app.py")
_BATCH_ROWS = 50
_KILLS = 3
_LOAD_SECONDS = 4.0


def _writer_round(store: Path, rng: random.Random) -> tuple[list[str], int, set[str]]:
    """Start a writer, SIGKILL it after a random moment.

    Returns:
        The run ids it printed, the rows its sink had dropped (counted) by its last line, and
        the run ids in the store after the kill.
    """
    process = subprocess.Popen(
        [sys.executable, str(_APP), "writer", str(store), str(_BATCH_ROWS)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    printed: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            printed.append(line.strip())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 60
    while len(printed) < 200 and time.monotonic() < deadline:  # it is writing files by now
        time.sleep(0.05)
    time.sleep(rng.uniform(0.2, 1.5))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    reader.join(10)
    runs = RunStore(store).ctx.sql("SELECT run_id FROM runs").to_pylist()
    ids = [line.split()[0] for line in printed if line.count(" ") == 1]
    dropped = int(printed[-1].split()[1]) if printed and printed[-1].count(" ") == 1 else 0
    return ids, dropped, {str(row["run_id"]) for row in runs}


def test_soak_exact_rows_and_bounded_losses(tmp_path: Path) -> None:
    out = tmp_path / "app.json"
    app = subprocess.Popen(
        [sys.executable, str(_APP), "app", str(out), str(closed_port()), str(_LOAD_SECONDS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rng = random.Random(int(os.environ.get("SOAK_SEED", "7")))
    losses = []
    for kill in range(_KILLS):
        printed, dropped, stored = _writer_round(tmp_path / f"store-{kill}", rng)
        assert len(printed) >= 200
        lost = [run_id for run_id in printed if run_id not in stored]
        losses.append((len(lost), dropped))
    _, stderr = app.communicate(timeout=120)
    assert app.returncode == 0, stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["started"] > 100
    assert result["distinct_started"] == result["started"]
    assert result["run_rows"] == result["started"]  # every run, exactly once
    assert result["run_ids_match"]
    assert result["slow_ids_match"], result  # the slow sink has exactly its runs
    assert result["raising_calls"] > 0
    assert result["force_flush"] is False  # the raising sink's failures are reported
    # a killed writer loses at most what its buffer held (ParquetSink's bound: run rows have a
    # budget of max_buffer_rows, by default 10 x batch_rows) besides the rows it counted as dropped
    assert all(lost <= 10 * _BATCH_ROWS + dropped for lost, dropped in losses), losses
