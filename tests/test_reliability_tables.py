"""One row's bad value never costs other rows: table builders and the ParquetSink batch."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest

from datafusion_otel import datafusion_operator_metrics_table, datafusion_runs_table
from datafusion_otel.store import ParquetSink, RunStore


def _run(index: int, **extra: object) -> dict[str, object]:
    return {
        "run_id": f"{index:032x}",
        "label": "x",
        "start_time_unix_ms": 1,
        "status": "completed",
        "metadata": "{}",
        **extra,
    }


class TestTableBuilders:
    """Out-of-range numbers raise the documented ValueError naming row and column."""

    def test_integer_out_of_range_names_row_and_column(self) -> None:
        with pytest.raises(ValueError, match=r"row 1, column 'duration_ms': .*out of the range"):
            datafusion_runs_table([_run(0), _run(1, duration_ms=2**70)])

    def test_huge_integer_in_any_int64_column(self) -> None:
        row = {
            "run_id": "a" * 32,
            "event_time_unix_ms": 1,
            "operator_path": "0",
            "operator_name": "ProjectionExec",
            "output_rows": -(2**70),
        }
        with pytest.raises(ValueError, match="row 0, column 'output_rows'"):
            datafusion_operator_metrics_table([row])


class TestParquetSinkBatch:
    """A payload that JSON cannot hold becomes a note; the rest of the batch is written."""

    def test_one_bad_artifact_does_not_drop_the_batch(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, batch_rows=1000)
        for index in range(50):
            sink.record_artifact("custom", {"run_id": f"{index:032x}", "n": index})
        sink.record_artifact("custom", {"run_id": "f" * 32, "bad": Decimal(1), "nan": 1e999})
        assert sink.close()
        rows = RunStore(tmp_path).sql("SELECT run_id, payload FROM artifacts").to_pylist()
        assert len(rows) == 51
        bad = next(json.loads(r["payload"]) for r in rows if r["run_id"] == "f" * 32)
        assert bad["bad"] is None
        assert bad["nan"] is None
        assert len(bad["datafusion_otel.notes"]) == 2


class TestValidJson:
    """JSON written for dict- and list-valued string columns is valid JSON: no NaN, no Infinity."""

    NON_FINITE: ClassVar[dict[str, object]] = {
        "x": float("nan"),
        "y": [float("inf"), 1.5],
        "z": {"w": -float("inf")},
    }

    @staticmethod
    def _strict(text: str) -> object:
        def refuse(constant: str) -> object:
            raise ValueError(f"{constant} is not JSON")

        return json.loads(text, parse_constant=refuse)

    def test_table_builder_writes_null_for_non_finite_floats(self) -> None:
        table = datafusion_runs_table([_run(0, metadata=self.NON_FINITE)])
        text = table.column("metadata").to_pylist()[0]
        assert self._strict(text) == {"x": None, "y": [None, 1.5], "z": {"w": None}}

    def test_parquet_sink_dict_column_is_valid_json(self, tmp_path: Path) -> None:
        sink = ParquetSink(tmp_path, flush_interval=60)
        sink.record_events("datafusion_runs_v1", [_run(0, metadata=self.NON_FINITE)])
        assert sink.close()
        (text,) = RunStore(tmp_path).sql("SELECT metadata FROM runs").column(0).to_pylist()
        assert self._strict(text) == {"x": None, "y": [None, 1.5], "z": {"w": None}}
