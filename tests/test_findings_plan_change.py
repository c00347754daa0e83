"""``plan_changed_and_slower`` from real runs in a ParquetSink store: the same join run several
times with a hash join, then with a sort-merge join (``prefer_hash_join = false``), is found for
a run of the new shape citing both medians and counts; a store whose shape never changed gives
none. Timing is never assumed: the medians are computed in the test from the stored metrics, and
the thresholds are placed around the measured ratio."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext

from datafusion_otel import tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.cli import main
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.findings import Thresholds, find, run_findings
from datafusion_otel.profile import query_profiles
from datafusion_otel.store import ParquetSink, RunStore

ROWS = 200_000
RUNS = 3
KIND = "plan_changed_and_slower"
QUERY = (
    "SELECT a.g, count(*) AS n, max(a.p) AS m FROM a JOIN b ON a.k = b.k "
    "WHERE b.x < 100 GROUP BY a.g"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("join")
    keys = list(range(ROWS))
    big = pa.table({"k": keys, "g": [i % 10 for i in keys], "p": [f"pad-{i}" for i in keys]})
    # small row groups: the hash join's dynamic filter lets the scan of ``a`` skip most of
    # them; the sort-merge join reads and sorts all of ``a`` (clearly slower, not assumed)
    pq.write_table(big, folder / "a.parquet", row_group_size=10_000)
    pq.write_table(pa.table({"k": keys, "x": keys}), folder / "b.parquet", row_group_size=10_000)
    return folder


def _runs(store: Path, data: Path, label: str, count: int, *, hash_join: bool) -> list[str]:
    config = SessionConfig().with_target_partitions(2)
    config = config.set("datafusion.optimizer.prefer_hash_join", str(hash_join).lower())
    ctx = SessionContext(config)
    ctx.register_parquet("a", str(data / "a.parquet"))
    ctx.register_parquet("b", str(data / "b.parquet"))
    ids = []
    sink = ParquetSink(store)
    try:
        for _ in range(count):
            with tracked_run(label=label, sink=sink) as run:
                df = sql_to_datafusion(QUERY, ctx=ctx, options=DataFusionCompileOptions())
                assert df.to_arrow_table().num_rows == 10
            ids.append(run.run_id)
    finally:
        sink.close()
    return ids


def _time_ns(store: RunStore, run_id: str) -> int:
    """The run's query time measured here: the sum of its operators' own times."""
    (query,) = query_profiles(store.run(run_id).operator_metrics)
    assert query.total_ns is not None
    return query.total_ns


def _shape(store: RunStore, run_id: str) -> str:
    (row,) = store.run(run_id).plan_artifacts
    return str(row["plan_shape_hash"])


@pytest.fixture(scope="module")
def changed(
    tmp_path_factory: pytest.TempPathFactory, data: Path
) -> tuple[Path, list[str], list[str]]:
    path = tmp_path_factory.mktemp("changed")
    before = _runs(path, data, "hash", RUNS, hash_join=True)
    after = _runs(path, data, "merge", RUNS, hash_join=False)
    return path, before, after


def _plan_changes(store: RunStore, run_id: str, **limits: Any) -> list[dict[str, Any]]:
    return [
        f for f in run_findings(store, run_id, thresholds=Thresholds(**limits)) if f["kind"] == KIND
    ]


def test_found_for_the_new_shape_with_both_medians(
    changed: tuple[Path, list[str], list[str]],
) -> None:
    path, before, after = changed
    store = RunStore(path)
    assert len({_shape(store, r) for r in before}) == 1
    assert len({_shape(store, r) for r in after}) == 1
    assert _shape(store, before[0]) != _shape(store, after[0])
    old = statistics.median(_time_ns(store, r) for r in before)
    new = statistics.median(_time_ns(store, r) for r in after)
    ratio = new / old
    # a threshold just below the measured ratio: found, citing the medians and counts
    (finding,) = _plan_changes(store, after[-1], plan_change_ratio=ratio * 0.999)
    evidence = json.loads(finding["evidence"])
    assert evidence["previous_median_ns"] == old and evidence["median_ns"] == new
    assert evidence["previous_executions"] == RUNS and evidence["executions"] == RUNS
    assert evidence["previous_plan_shape_hash"] == _shape(store, before[0])
    assert evidence["plan_shape_hash"] == _shape(store, after[0])
    assert finding["measured_value"] == pytest.approx(ratio)
    assert finding["run_id"] == after[-1] and finding["plan_hash"]
    # every run of the new shape gets it; the runs of the first shape do not
    assert all(_plan_changes(store, r, plan_change_ratio=ratio * 0.999) for r in after)
    assert not any(_plan_changes(store, r, plan_change_ratio=0.0) for r in before)
    # just above the measured ratio, or too few executions per shape: none
    assert not _plan_changes(store, after[-1], plan_change_ratio=ratio * 1.001)
    assert not _plan_changes(store, after[-1], plan_change_ratio=0.0, plan_change_min_runs=RUNS + 1)
    # the default threshold (1.2 x) decides by the measured medians
    assert bool(_plan_changes(store, after[-1])) == (ratio >= 1.2)
    print(f"sort-merge / hash median own time: {ratio:.2f}")


def test_not_in_the_one_run_findings(changed: tuple[Path, list[str], list[str]]) -> None:
    path, _before, after = changed
    store = RunStore(path)
    details = store.run(after[-1])
    assert KIND not in {f["kind"] for f in find(details.operator_metrics, details.plan_artifacts)}
    assert KIND not in {f["kind"] for f in store.stored_findings(after[-1])}


def test_command_lists_it(
    changed: tuple[Path, list[str], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, before, after = changed
    store = RunStore(path)
    ratio = statistics.median(_time_ns(store, r) for r in after) / statistics.median(
        _time_ns(store, r) for r in before
    )
    capsys.readouterr()
    assert main(["findings", after[-1], "--store", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (KIND in {r["kind"] for r in rows}) == (ratio >= 1.2)
    assert main(["findings", after[-1], "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "history" in out.splitlines()[0]
    assert (KIND in out) == (ratio >= 1.2)


def test_clean_control_same_shape_gives_none(tmp_path: Path, data: Path) -> None:
    ids = _runs(tmp_path, data, "steady", RUNS + 1, hash_join=True)
    store = RunStore(tmp_path)
    assert len({_shape(store, r) for r in ids}) == 1
    for run_id in ids:
        assert not _plan_changes(store, run_id, plan_change_ratio=0.0, plan_change_min_runs=1)
