"""One run fanned out to a real distributed scheduler: Dask's LocalCluster, 2 worker processes.

Each task gets the carrier as an argument; the worker process configures datafusion-otel on
its first task (`run_context_workers.configure_worker`) and runs real DataFusion queries inside
`attached_run`. Same checks as for process pools (`run_context_support.check_one_run`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import run_context_workers as workers
from datafusion_otel import run_context, tracked_run
from run_context_support import check_one_run, configure_owner, write_data

distributed = pytest.importorskip("distributed")

TIMEOUT = 180  # seconds for the whole fan-out at most (2 busy cores): never a timing assertion


def test_run_fanned_out_to_a_dask_local_cluster(tmp_path):
    data = write_data(tmp_path / "data")
    owner = configure_owner()
    tracer = owner.provider.get_tracer("test")
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster, timeout=TIMEOUT) as client,
    ):
        client.wait_for_workers(2, timeout=TIMEOUT)
        addresses = sorted(client.scheduler_info()["workers"])
        assert len(addresses) == 2
        dispatchers: dict[int, str] = {}
        futures = []
        with tracked_run(label="fanout") as run:
            for index in range(4):
                with tracer.start_as_current_span(f"dispatch {index}") as dispatch:
                    dispatchers[index] = f"{dispatch.get_span_context().span_id:016x}"
                    futures.append(
                        client.submit(
                            workers.query_task,
                            run_context(),
                            data,
                            str(tmp_path / "out"),
                            pure=False,
                            workers=[addresses[index % 2]],  # both processes get work
                            allow_other_workers=False,
                        )
                    )
            results = client.gather(futures, errors="raise")
            assert isinstance(results, list)
    assert len({r["pid"] for r in results}) == 2  # both worker processes took tasks
    check_one_run(run.run_id, results, dispatchers, owner)


def test_dask_example(tmp_path):
    """examples/dask_run.py runs offline and shows one run row and every task's artifacts."""
    example = Path(__file__).resolve().parents[1] / "examples" / "dask_run.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"run [0-9a-f]{32}: completed, 4 tasks on [12] worker processes", done.stdout)
    assert "run rows: 1\n" in done.stdout
    assert "plan artifacts under the run: 4\n" in done.stdout
    assert "'city': 'Pune', 'trips': 250" in done.stdout
