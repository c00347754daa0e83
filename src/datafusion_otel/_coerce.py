"""Coerce Python values to the Arrow types of the diagnostics schemas."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["CoercionError", "coerce_rows"]


class CoercionError(ValueError):
    """A value that cannot be coerced to its column's type."""


def _to_python(value: object) -> object:
    """Turn numpy (and other array-library) scalars into plain Python values."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__.startswith("numpy"):
        return item()
    return value


def unix_time(value: dt.datetime | dt.date, unit_per_second: int) -> int:
    """Return ``value`` as a Unix timestamp in ``unit_per_second`` units (naive = UTC)."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * unit_per_second // 1_000_000


def _to_int(value: object, column: str) -> int:
    if isinstance(value, bool):
        raise CoercionError("a bool is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return unix_time(value, 1_000_000_000 if column.endswith("_ns") else 1_000)
    raise CoercionError(f"expected an integer, got {type(value).__name__}")


def _check_int_range(value: int, kind: pa.DataType) -> int:
    bits = kind.bit_width
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not pa.types.is_signed_integer(kind):
        low, high = 0, 2**bits - 1
    if not low <= value <= high:
        raise CoercionError(f"{value} is out of the range of {kind} [{low}, {high}]")
    return value


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CoercionError(f"expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError as exc:
        raise CoercionError("the integer is too large for a float") from exc


def _to_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise CoercionError(f"expected a bool, got {type(value).__name__}")
    return value


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return json_dumps(value)
        except ValueError as exc:
            raise CoercionError(str(exc)) from exc
    if isinstance(value, uuid.UUID):
        return value.hex
    raise CoercionError(f"expected a string, got {type(value).__name__}")


def _json_default(value: object) -> object:
    value = _to_python(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, uuid.UUID):
        return value.hex
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _coerce_value(value: object, field: pa.Field) -> object:
    value = _to_python(value)
    kind = field.type
    if value is None:
        return None
    if pa.types.is_integer(kind):
        return _check_int_range(_to_int(value, field.name), kind)
    if pa.types.is_floating(kind):
        return _to_float(value)
    if pa.types.is_boolean(kind):
        return _to_bool(value)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _to_str(value)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, set, frozenset)):
            raise CoercionError(f"expected a list, got {type(value).__name__}")
        item_field = pa.field(field.name, kind.value_type)
        return [_coerce_value(item, item_field) for item in value]
    if pa.types.is_map(kind):
        if not isinstance(value, Mapping):
            raise CoercionError(f"expected a mapping, got {type(value).__name__}")
        item_field = pa.field(field.name, kind.item_type)
        return [(_to_str(k), _coerce_value(v, item_field)) for k, v in value.items()]
    raise CoercionError(f"unsupported column type {kind}")  # pragma: no cover - schema bug


def coerce_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from ``rows``, coercing each value to its column's type.

    Args:
        rows: Row mappings. Missing nullable columns become null.
        schema: Target schema.

    Returns:
        A table with exactly ``schema``.

    Raises:
        ValueError: Naming the row index and column of the first value that cannot be
            coerced, of a missing required value, or of a column the schema does not have.
    """
    names = schema.names
    known = set(names)
    columns: dict[str, list[object]] = {name: [] for name in names}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {index}: expected a mapping, got {type(row).__name__}")
        unknown = [key for key in row if key not in known]
        if unknown:
            raise ValueError(
                f"row {index}: column {unknown[0]!r} is not in {schema_name(schema)} "
                f"(known columns: {', '.join(names)})"
            )
        for field in schema:
            value = row.get(field.name)
            try:
                coerced = _coerce_value(value, field)
            except (CoercionError, OverflowError) as exc:
                raise ValueError(f"row {index}, column {field.name!r}: {exc}") from exc
            if coerced is None and not field.nullable:
                raise ValueError(f"row {index}, column {field.name!r}: a value is required")
            columns[field.name].append(coerced)
    arrays = [pa.array(columns[field.name], type=field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_name(schema: pa.Schema) -> str:
    """Return the table name stored in ``schema``'s metadata, or ``"the schema"``."""
    metadata = schema.metadata or {}
    raw = metadata.get(b"table_name")
    return raw.decode() if raw else "the schema"


def _finite(value: object, on_path: set[int]) -> object:
    """``value`` with every NaN and infinity (nested too) replaced by None.

    A container met again on its own path (a cycle) is returned as is, for `json.dumps` to
    refuse.
    """
    value = _to_python(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, (Mapping, list, tuple, set, frozenset)) or id(value) in on_path:
        return value
    on_path.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {_finite(key, on_path): _finite(item, on_path) for key, item in value.items()}
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_finite(item, on_path) for item in items]
    finally:
        on_path.discard(id(value))


def json_dumps(value: object) -> str:
    """Serialize ``value`` to compact, key-sorted, valid JSON.

    NaN and the infinities (which JSON cannot hold) become ``null``.

    Raises:
        ValueError: If ``value`` holds something else JSON cannot represent.
    """
    try:
        try:
            return json.dumps(
                value,
                sort_keys=True,
                default=_json_default,
                separators=(",", ":"),
                allow_nan=False,
            )
        except ValueError as exc:
            if "Out of range float" not in str(exc):
                raise
        return json.dumps(
            _finite(value, set()),
            sort_keys=True,
            default=_json_default,
            separators=(",", ":"),
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON serializable: {exc}") from exc
    except RecursionError as exc:
        raise ValueError("not JSON serializable: nested too deeply") from exc
