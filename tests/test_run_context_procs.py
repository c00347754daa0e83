"""One run fanned out to other processes: multiprocessing (spawn), a process pool, a crash.

The owning process starts a run and, under one dispatching span per task, takes the carrier
with `run_context`; each worker process configures datafusion-otel (its own SDK provider and
ParquetSink) and runs real DataFusion queries inside `attached_run`. The checks
(`run_context_support.check_one_run`): one trace, every worker execution span a child of its
dispatching span, every worker row under the run id, exactly one run row (the owner's).
"""

from __future__ import annotations

import multiprocessing
import queue
from concurrent.futures import ProcessPoolExecutor

import pytest

import run_context_workers as workers
from datafusion_otel import run_context, tracked_run
from run_context_support import check_one_run, configure_owner, worker_tables, write_data

TIMEOUT = 120  # seconds a worker may take at most (spawn imports DataFusion on 2 busy cores)


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data")


def test_run_fanned_out_to_four_spawned_processes(tmp_path, data):
    owner = configure_owner()
    tracer = owner.provider.get_tracer("test")
    spawn = multiprocessing.get_context("spawn")
    results_queue = spawn.Queue()
    dispatchers: dict[int, str] = {}
    processes = []
    with tracked_run(label="fanout") as run:
        for index in range(4):
            with tracer.start_as_current_span(f"dispatch {index}") as dispatch:
                dispatchers[index] = f"{dispatch.get_span_context().span_id:016x}"
                carrier = run_context()
                process = spawn.Process(
                    target=workers.queue_task,
                    args=(results_queue, carrier, data, str(tmp_path / "out")),
                )
                process.start()
                processes.append(process)
        results = [results_queue.get(timeout=TIMEOUT) for _ in processes]
        for process in processes:
            process.join(TIMEOUT)
            assert process.exitcode == 0
    by_dispatch = {
        next(i for i, sid in dispatchers.items() if sid == r["spans"][0]["parent_span_id"]): r
        for r in results
    }
    ordered = [by_dispatch[i] for i in range(4)]
    check_one_run(run.run_id, ordered, dispatchers, owner)
    assert len({r["pid"] for r in results}) == 4


def test_run_fanned_out_to_a_process_pool(tmp_path, data):
    owner = configure_owner()
    tracer = owner.provider.get_tracer("test")
    dispatchers: dict[int, str] = {}
    futures = []
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        with tracked_run(label="fanout") as run:
            for index in range(4):
                with tracer.start_as_current_span(f"dispatch {index}") as dispatch:
                    dispatchers[index] = f"{dispatch.get_span_context().span_id:016x}"
                    futures.append(
                        pool.submit(workers.query_task, run_context(), data, str(tmp_path / "out"))
                    )
            results = [future.result(timeout=TIMEOUT) for future in futures]
    check_one_run(run.run_id, results, dispatchers, owner)


def test_bridge_only_worker_gets_a_span_of_its_own(tmp_path, data):
    """Without the instrumentor, attached_run opens a span so bridge captures have a home."""
    owner = configure_owner()
    tracer = owner.provider.get_tracer("test")
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        with tracked_run(label="fanout") as run:
            dispatchers: dict[int, str] = {}
            futures = []
            for index in range(2):
                with tracer.start_as_current_span(f"dispatch {index}") as dispatch:
                    dispatchers[index] = f"{dispatch.get_span_context().span_id:016x}"
                    futures.append(
                        pool.submit(
                            workers.query_task,
                            run_context(),
                            data,
                            str(tmp_path / "out"),
                            instrument=False,
                        )
                    )
            results = [future.result(timeout=TIMEOUT) for future in futures]
    for index, result in enumerate(results):
        spans = result["spans"]
        assert {s["trace_id"] for s in spans} == {run.run_id}
        assert [s for s in spans if s["parent_span_id"] is None] == []
        (own,) = [s for s in spans if s["parent_remote"]]  # the block's span, then its operators
        assert own["name"] == "datafusion.run.attached"
        assert own["trace_id"] == run.run_id
        assert own["parent_span_id"] == dispatchers[index]
    rows = worker_tables(r["store"] for r in results)
    assert rows["runs"] == []
    assert len(rows["plan_artifacts"]) == 2  # the bridge query of each task
    assert {r["run_id"] for r in rows["plan_artifacts"] + rows["operator_metrics"]} == {run.run_id}
    (run_row,) = owner.sink.events_snapshot()["datafusion_runs_v1"]
    assert run_row["run_id"] == run.run_id


def test_crashed_worker_neither_fails_nor_hangs_the_run(tmp_path, data):
    """A worker killed (SIGKILL) after flushing: the run ends once, its flushed rows stay."""
    owner = configure_owner()
    spawn = multiprocessing.get_context("spawn")
    results_queue = spawn.Queue()
    out = str(tmp_path / "out")
    with tracked_run(label="fanout") as run:
        carrier = run_context()
        crashing = spawn.Process(
            target=workers.queue_task,
            args=(results_queue, carrier, data, out),
            kwargs={"crash_after_flush": True},
        )
        healthy = spawn.Process(target=workers.queue_task, args=(results_queue, carrier, data, out))
        crashing.start()
        healthy.start()
        results = [results_queue.get(timeout=TIMEOUT)]  # the healthy worker's
        crashing.join(TIMEOUT)
        healthy.join(TIMEOUT)
        with pytest.raises(queue.Empty):
            results_queue.get(timeout=0.5)  # the crashed worker never answered
    assert crashing.exitcode == -9 and healthy.exitcode == 0
    assert run.status == "completed"
    (run_row,) = owner.sink.events_snapshot()["datafusion_runs_v1"]
    assert run_row["run_id"] == run.run_id and run_row["status"] == "completed"
    crashed_store = tmp_path / "out" / f"worker-{crashing.pid}"
    rows = worker_tables([str(crashed_store), results[0]["store"]])
    assert rows["runs"] == []
    by_store = worker_tables([str(crashed_store)])
    # the two queries it flushed before dying are kept, under the run id
    assert len(by_store["plan_artifacts"]) == 2
    assert {r["run_id"] for r in by_store["plan_artifacts"]} == {run.run_id}
    assert {r["run_id"] for r in by_store["operator_metrics"]} == {run.run_id}
