"""Diagnostics schemas (pinned) and the table builders that coerce rows to them."""

from __future__ import annotations

import base64
import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from datafusion_otel import (
    DATAFUSION_PLAN_ARTIFACTS_V1,
    DATAFUSION_RUNS_V1,
    datafusion_plan_artifacts_table,
    datafusion_runs_table,
    schema_for,
)
from datafusion_otel.schema_registry import SCHEMAS

# The design document's DATAFUSION_RUNS_V1, verbatim.
DESIGN_RUNS_V1 = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("start_time_unix_ms", pa.int64(), nullable=False),
        pa.field("end_time_unix_ms", pa.int64(), nullable=True),
        pa.field("status", pa.string(), nullable=False),
        pa.field("duration_ms", pa.int64(), nullable=True),
        pa.field("metadata", pa.string(), nullable=True),  # JSON string
    ]
)

# The original system's plan-artifacts columns (original-schemas.md), in order.
ORIGINAL_PLAN_ARTIFACT_COLUMNS = [
    ("event_time_unix_ms", pa.int64(), False),
    ("run_id", pa.string(), True),
    ("plan_hash", pa.string(), True),
    ("sql", pa.string(), False),
    ("normalized_sql", pa.string(), True),
    ("explain_rows_artifact_path", pa.string(), True),
    ("explain_rows_artifact_format", pa.string(), True),
    ("explain_rows_schema_fingerprint", pa.string(), True),
    ("explain_analyze_artifact_path", pa.string(), True),
    ("explain_analyze_artifact_format", pa.string(), True),
    ("substrait_b64", pa.string(), True),
    ("substrait_validation_status", pa.string(), True),
    ("ibis_sql", pa.string(), True),
    ("unparsed_sql", pa.string(), True),
    ("unparse_error", pa.string(), True),
    ("logical_plan", pa.string(), True),
    ("optimized_plan", pa.string(), True),
    ("physical_plan", pa.string(), True),
    ("graphviz", pa.string(), True),
    ("partition_count", pa.int64(), True),
    ("join_operators", pa.list_(pa.string()), True),
]

RUN_ROW = {
    "run_id": "0af7651916cd43dd8448eb211c80319c",
    "label": "nightly",
    "start_time_unix_ms": 1_700_000_000_000,
    "end_time_unix_ms": 1_700_000_000_250,
    "status": "completed",
    "duration_ms": 250,
    "metadata": '{"a":1}',
}


class TestSchemaPins:
    """Column names, types and nullability stay those the original system's users query."""

    def test_runs_schema_equals_the_design_document(self):
        assert DATAFUSION_RUNS_V1.equals(DESIGN_RUNS_V1, check_metadata=False)
        assert [(f.name, f.type, f.nullable) for f in DATAFUSION_RUNS_V1] == [
            (f.name, f.type, f.nullable) for f in DESIGN_RUNS_V1
        ]
        assert DATAFUSION_RUNS_V1.metadata[b"table_name"] == b"datafusion_runs_v1"

    def test_plan_artifacts_schema_starts_with_the_original_columns(self):
        head = [(f.name, f.type, f.nullable) for f in DATAFUSION_PLAN_ARTIFACTS_V1][:21]
        assert head == ORIGINAL_PLAN_ARTIFACT_COLUMNS
        assert DATAFUSION_PLAN_ARTIFACTS_V1.metadata[b"table_name"] == (
            b"datafusion_plan_artifacts_v1"
        )

    def test_added_plan_artifact_columns_are_nullable_and_documented(self):
        import datafusion_otel.schema_registry as registry

        added = list(DATAFUSION_PLAN_ARTIFACTS_V1)[21:]
        assert added, "expected datafusion-otel's own columns after the original ones"
        for field in added:
            assert field.nullable, field.name
            assert f"``{field.name}``" in (registry.__doc__ or ""), field.name

    def test_every_schema_names_its_table(self):
        for name, schema in SCHEMAS.items():
            assert schema.metadata[b"table_name"].decode() == name
            assert name.endswith("_v1")


class TestSchemaFor:
    """schema_for looks a table up by name and lists the known names when it cannot."""

    def test_lookup_by_table_name_and_constant_name(self):
        assert schema_for("datafusion_runs_v1") is DATAFUSION_RUNS_V1
        assert schema_for("DATAFUSION_RUNS_V1") is DATAFUSION_RUNS_V1
        assert schema_for("datafusion_plan_artifacts_v1") is DATAFUSION_PLAN_ARTIFACTS_V1

    def test_unknown_name_lists_the_known_ones(self):
        with pytest.raises(KeyError) as raised:
            schema_for("datafusion_nope_v1")
        message = str(raised.value)
        assert "datafusion_nope_v1" in message
        for name in SCHEMAS:
            assert name in message


class TestCoercion:
    """Table builders coerce everyday Python values to each column's Arrow type."""

    def test_runs_row_round_trips(self):
        table = datafusion_runs_table([RUN_ROW])
        assert table.schema.equals(DATAFUSION_RUNS_V1, check_metadata=True)
        assert table.to_pylist() == [RUN_ROW]

    def test_missing_nullable_columns_become_null(self):
        row = {k: RUN_ROW[k] for k in ("run_id", "label", "start_time_unix_ms", "status")}
        (out,) = datafusion_runs_table([row]).to_pylist()
        assert out["end_time_unix_ms"] is None
        assert out["duration_ms"] is None
        assert out["metadata"] is None

    def test_dict_metadata_becomes_json(self):
        meta = {"user": "admin", "tags": ["a", "b"], "when": dt.date(2024, 1, 2)}
        (out,) = datafusion_runs_table([{**RUN_ROW, "metadata": meta}]).to_pylist()
        assert json.loads(out["metadata"]) == {
            "user": "admin",
            "tags": ["a", "b"],
            "when": "2024-01-02",
        }

    def test_datetimes_become_unix_milliseconds(self):
        aware = dt.datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        naive = dt.datetime(2024, 1, 2, 3, 4, 5, 678_000)  # taken as UTC
        (out,) = datafusion_runs_table(
            [{**RUN_ROW, "start_time_unix_ms": aware, "end_time_unix_ms": naive}]
        ).to_pylist()
        assert out["start_time_unix_ms"] == int(aware.timestamp() * 1000)
        expected_naive = int(naive.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
        assert out["end_time_unix_ms"] == expected_naive
        assert out["end_time_unix_ms"] - out["start_time_unix_ms"] == 2 * 3600 * 1000

    def test_numpy_scalars_become_python_values(self):
        row = {
            "event_time_unix_ms": np.int64(1_700_000_000_000),
            "sql": np.str_("SELECT 1"),
            "partition_count": np.int32(4),
            "plan_executed": np.bool_(True),
            "capture_duration_ms": np.float32(1.5),
            "join_operators": [np.str_("HashJoinExec")],
        }
        (out,) = datafusion_plan_artifacts_table([row]).to_pylist()
        assert out["event_time_unix_ms"] == 1_700_000_000_000
        assert out["sql"] == "SELECT 1"
        assert out["partition_count"] == 4
        assert out["plan_executed"] is True
        assert out["capture_duration_ms"] == 1.5
        assert out["join_operators"] == ["HashJoinExec"]

    def test_bytes_in_a_string_column_become_base64(self):
        plan = b"\x00\x01substrait\xff"
        (out,) = datafusion_plan_artifacts_table(
            [{"event_time_unix_ms": 1, "sql": "SELECT 1", "substrait_b64": plan}]
        ).to_pylist()
        assert base64.b64decode(out["substrait_b64"]) == plan

    def test_join_operators_list_and_tuple(self):
        rows = [
            {
                "event_time_unix_ms": 1,
                "sql": "a",
                "join_operators": ["HashJoinExec", "CrossJoinExec"],
            },
            {"event_time_unix_ms": 2, "sql": "b", "join_operators": ("SortMergeJoinExec",)},
            {"event_time_unix_ms": 3, "sql": "c", "join_operators": []},
            {"event_time_unix_ms": 4, "sql": "d"},
        ]
        table = datafusion_plan_artifacts_table(rows)
        assert table.schema.equals(DATAFUSION_PLAN_ARTIFACTS_V1)
        assert table.column("join_operators").to_pylist() == [
            ["HashJoinExec", "CrossJoinExec"],
            ["SortMergeJoinExec"],
            [],
            None,
        ]

    def test_empty_input_gives_an_empty_table_of_the_schema(self):
        table = datafusion_runs_table([])
        assert table.num_rows == 0
        assert table.schema.equals(DATAFUSION_RUNS_V1, check_metadata=True)


class TestCoercionErrors:
    """A row that cannot be coerced raises ValueError naming its index and column."""

    @pytest.mark.parametrize(
        ("bad", "column", "reason"),
        [
            ({"label": None}, "label", "a value is required"),
            ({"start_time_unix_ms": "yesterday"}, "start_time_unix_ms", "expected an integer"),
            ({"duration_ms": 1.5}, "duration_ms", "expected an integer"),
            ({"duration_ms": True}, "duration_ms", "bool"),
            ({"status": 3}, "status", "expected a string"),
            ({"metadata": {"obj": object()}}, "metadata", "JSON"),
        ],
    )
    def test_runs_row_errors_name_row_and_column(self, bad, column, reason):
        rows = [RUN_ROW, {**RUN_ROW, **bad}]
        with pytest.raises(ValueError, match=reason) as raised:
            datafusion_runs_table(rows)
        assert f"row 1, column {column!r}" in str(raised.value)

    def test_missing_required_column(self):
        row = {k: v for k, v in RUN_ROW.items() if k != "run_id"}
        with pytest.raises(ValueError, match="row 0, column 'run_id': a value is required"):
            datafusion_runs_table([row])

    def test_unknown_column(self):
        rows = [RUN_ROW, RUN_ROW, {**RUN_ROW, "colour": "red"}]
        with pytest.raises(ValueError, match="row 2: column 'colour' is not in datafusion_runs_v1"):
            datafusion_runs_table(rows)

    def test_join_operators_must_be_a_list(self):
        rows = [{"event_time_unix_ms": 1, "sql": "a", "join_operators": "HashJoinExec"}]
        with pytest.raises(ValueError, match="row 0, column 'join_operators': expected a list"):
            datafusion_plan_artifacts_table(rows)

    def test_plan_artifacts_require_sql(self):
        with pytest.raises(ValueError, match="row 0, column 'sql': a value is required"):
            datafusion_plan_artifacts_table([{"event_time_unix_ms": 1}])

    def test_row_that_is_not_a_mapping(self):
        with pytest.raises(ValueError, match="row 1: expected a mapping, got list"):
            datafusion_runs_table([RUN_ROW, [1, 2]])
