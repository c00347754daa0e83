"""Findings from real DataFusion runs: each kind provoked by a workload and found with the
metric values it cites; a clean control yields none; older stores degrade to no finding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datafusion_otel import DiagnosticsCollector
from datafusion_otel import attributes as attr
from datafusion_otel.cli import main
from datafusion_otel.findings import Thresholds, find, findings_table, run_findings
from datafusion_otel.profile import other_metrics
from datafusion_otel.schema_registry import DATAFUSION_FINDINGS_V1
from datafusion_otel.store import RunStore
from findings_support import WORKLOADS, capture


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A store with one run per workload, labelled by the workload's name."""
    path = tmp_path_factory.mktemp("store")
    for name in WORKLOADS:
        capture(path, data, name)
    return path


def _run(store: Path, label: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's operator-metrics rows and its findings."""
    opened = RunStore(store)
    run_id = opened.sql(f"SELECT run_id FROM runs WHERE label = '{label}'").column(0)[0]
    details = opened.run(run_id.as_py())
    return details.operator_metrics, find(details.operator_metrics, details.plan_artifacts)


def _kinds(found: list[dict[str, Any]]) -> set[str]:
    return {f["kind"] for f in found}


class TestEachKind:
    """Each workload's finding is there, and its figures are the recorded metrics."""

    def test_partition_skew_names_the_hot_partition(self, store: Path) -> None:
        rows, found = _run(store, "skew")
        skews = [f for f in found if f["kind"] == "partition_skew"]
        repartition = [f for f in skews if f["operator_name"] == "RepartitionExec"]
        assert repartition, found
        finding = repartition[0]
        per_partition = {
            r["partition"]: r["output_rows"]
            for r in rows
            if r["operator_path"] == finding["operator_path"] and r["partition"] is not None
        }
        hot = max(per_partition, key=lambda p: per_partition[p])
        assert finding["partition"] == hot
        evidence = json.loads(finding["evidence"])
        assert evidence["max"] == per_partition[hot] >= 0.9 * sum(per_partition.values())
        assert finding["measured_value"] == pytest.approx(evidence["max"] / evidence["median"])
        assert finding["threshold"] == 4.0 and f"partition {hot}" in finding["message"]

    def test_spill_cites_the_spill_metrics(self, store: Path) -> None:
        rows, found = _run(store, "spill")
        spills = [f for f in found if f["kind"] == "spill"]
        assert [f["operator_name"] for f in spills] == ["SortExec"]
        evidence = json.loads(spills[0]["evidence"])
        recorded = [r for r in rows if r["operator_path"] == spills[0]["operator_path"]]
        assert evidence["spill_count"] == sum(r["spill_count"] or 0 for r in recorded) > 0
        assert evidence["spilled_bytes"] == sum(r["spilled_bytes"] or 0 for r in recorded) > 0
        assert evidence["memory_limit_bytes"] is None  # not readable from DataFusion 55

    def test_row_explosion_of_a_many_to_many_join(self, store: Path) -> None:
        _rows, found = _run(store, "row_explosion")
        (finding,) = [f for f in found if f["kind"] == "row_explosion"]
        evidence = json.loads(finding["evidence"])
        assert finding["operator_name"].endswith("JoinExec")
        assert evidence["output_rows"] == 1_000_000
        assert sorted(evidence["input_rows"].values()) == [1_000, 1_000]
        assert finding["measured_value"] == 1_000.0

    def test_filter_not_pushed_down(self, store: Path) -> None:
        _rows, found = _run(store, "filter_drops_most")
        (finding,) = [f for f in found if f["kind"] == "filter_drops_most"]
        evidence = json.loads(finding["evidence"])
        assert evidence["input_rows"] == 200_000 and evidence["scan_predicate"] is None
        assert finding["measured_value"] == pytest.approx(1 - evidence["output_rows"] / 200_000)
        _rows, pushed = _run(store, "filter_pushed")  # same filter, the Parquet scan got it
        assert "filter_drops_most" not in _kinds(pushed)

    def test_slow_operator_is_the_largest_share(self, store: Path) -> None:
        rows, _found = _run(store, "slow_operator")
        every = find(rows, thresholds=Thresholds(slow_min_query_ns=0))
        slow = [f for f in every if f["kind"] == "slow_operator"]
        assert slow
        top = max(slow, key=lambda f: f["measured_value"])
        evidence = json.loads(top["evidence"])
        assert top["measured_value"] == evidence["own_time_ns"] / evidence["query_time_ns"]
        level = {"info": 0.1, "warning": 0.4, "critical": 0.9}[top["severity"]]
        assert top["threshold"] == level <= top["measured_value"]
        # the default floor: a query faster than 100 ms gets no slow_operator finding
        default = [f for f in find(rows) if f["kind"] == "slow_operator"]
        assert bool(default) == (evidence["query_time_ns"] >= 100_000_000)

    def test_poor_pruning_parsed_from_the_text_metrics(self, store: Path) -> None:
        rows, found = _run(store, "poor_pruning")
        (finding,) = [f for f in found if f["kind"] == "poor_pruning"]
        assert json.loads(finding["evidence"]) == {
            "pruning_row_groups_total": 10,
            "pruning_row_groups_matched": 10,
        }
        scans = [r for r in rows if r["operator_name"] == "DataSourceExec"]
        assert all("row_groups_pruned_statistics" not in other_metrics(r) or
                   other_metrics(r)["row_groups_pruned_statistics"] is None for r in scans)  # fmt: skip

    def test_a_scan_without_predicate_never_pruned_poorly(self, store: Path) -> None:
        rows, found = _run(store, "unfiltered_scan")
        scans = [r for r in rows if r["operator_name"] == "DataSourceExec"]
        # the metric that fooled the rule: every row group "matched" although nothing filtered
        total = sum(r.get("pruning_row_groups_total") or 0 for r in scans)
        matched = sum(r.get("pruning_row_groups_matched") or 0 for r in scans)
        assert total == matched == 10
        assert "poor_pruning" not in _kinds(found)

    def test_clean_control_yields_none(self, store: Path) -> None:
        rows, found = _run(store, "clean")
        assert found == []
        pruned = sum(r["pruning_row_groups_total"] or 0 for r in rows)
        assert pruned == 10  # the scan did test its row groups (and pruned 9 of 10)


class TestThresholdsAndRows:
    """Thresholds are overridable; findings are rows of datafusion_findings_v1."""

    def test_overridden_threshold_silences_a_kind(self, store: Path) -> None:
        rows, _found = _run(store, "row_explosion")
        assert "row_explosion" not in _kinds(
            find(rows, thresholds=Thresholds(explosion_ratio=2_000))
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            Thresholds().skew_ratio = 1.0  # type: ignore[misc]

    def test_findings_table_has_the_registry_schema(self, store: Path) -> None:
        _rows, found = _run(store, "skew")
        table = findings_table(found)
        assert table.schema.equals(DATAFUSION_FINDINGS_V1, check_metadata=True)
        assert table.num_rows == len(found) > 0

    def test_from_a_collector_and_from_arrow_tables(self, store: Path, data: Path) -> None:
        sink = DiagnosticsCollector()
        capture(sink, data, "row_explosion", label="collected")
        events = sink.events_snapshot()
        from_rows = find(events[attr.OPERATOR_METRICS_TABLE], events[attr.PLAN_ARTIFACTS_TABLE])
        assert _kinds(from_rows) == {"row_explosion"}
        opened = RunStore(store)
        tables = find(opened.sql("SELECT * FROM operator_metrics"),
                      opened.sql("SELECT * FROM plan_artifacts"))  # fmt: skip
        assert {"partition_skew", "spill", "row_explosion", "filter_drops_most",
                "poor_pruning"} <= _kinds(tables)  # fmt: skip


def test_store_without_the_new_columns_gives_no_pruning_finding(tmp_path: Path, data: Path) -> None:
    """Operator-metrics files written before the pruning columns existed: read as null."""
    run_id = capture(tmp_path, data, "poor_pruning")
    # (timing-based kinds such as partition_skew may appear on a loaded machine: not asserted)
    assert "poor_pruning" in {f["kind"] for f in run_findings(RunStore(tmp_path), run_id)}
    for path in (tmp_path / attr.OPERATOR_METRICS_TABLE).rglob("*.parquet"):
        table = pq.read_table(path)
        keep = [c for c in table.column_names if not c.startswith("pruning_")]
        pq.write_table(table.select(keep), path)
    assert "poor_pruning" not in {f["kind"] for f in run_findings(RunStore(tmp_path), run_id)}


class TestCommands:
    """``findings``, ``show`` and their JSON."""

    def test_findings_by_label_and_id(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["findings", "--store", str(store), "--label", "spill"]) == 0
        out = capsys.readouterr().out
        assert "spill" in out and "SortExec" in out
        assert main(["findings", "--store", str(store), "--label", "clean", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main(["findings", "--store", str(store), "--label", "nope"]) == 1
        assert "no run labelled 'nope'" in capsys.readouterr().err

    def test_show_prints_findings(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        opened = RunStore(store)
        run_id = opened.sql("SELECT run_id FROM runs WHERE label = 'row_explosion'").column(0)
        assert main(["show", "--store", str(store), run_id[0].as_py()[:10]]) == 0
        out = capsys.readouterr().out
        assert "findings (1)" in out and "row_explosion" in out
        assert main(["show", "--store", str(store), run_id[0].as_py(), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [f["kind"] for f in shown["findings"]] == ["row_explosion"]
