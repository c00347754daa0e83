"""A run's metadata: the package's reserved keys, and the JSON snapshot taken when it ends.

The metadata belongs to the user. The package's own keys live under one reserved prefix,
``datafusion_otel.`` (`EXPORTED`, `AUTO_RUN`, `NOTES`); the design document's ``error_type`` /
``error_message`` keep their plain names unless the user set a key of that name, in which case
the package's value goes under the prefix instead (``datafusion_otel.error_type``): a value the
user passed is never overwritten.

`snapshot` turns metadata into a JSON-safe deep copy that never fails and always ends: a value
that cannot be kept (not JSON serializable, NaN or an infinity, nested deeper than `MAX_DEPTH`,
a container holding itself, or raising while read) becomes ``null`` and a note under `NOTES`
says where and why, without the value. A snapshot keeps at most `MAX_VALUES` values (a
sub-object shared by several keys counts once per place it appears); the values beyond become
``null`` under one note saying the metadata was truncated.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from typing import Final

__all__ = [
    "AUTO_RUN",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "EXPORTED",
    "MAX_DEPTH",
    "MAX_VALUES",
    "NOTES",
    "PREFIX",
    "error_metadata",
    "snapshot",
    "snapshot_text",
    "to_text",
]

PREFIX: Final = "datafusion_otel."
"""Reserved prefix of the package's own metadata keys."""
EXPORTED: Final = PREFIX + "exported"
"""Whether the run's spans were sampled for export (a bool)."""
AUTO_RUN: Final = PREFIX + "auto_run"
"""True for a run the auto-instrumentation made of one execution."""
NOTES: Final = PREFIX + "notes"
"""List of notes about metadata values that could not be kept (never the values)."""
ERROR_TYPE: Final = "error_type"
ERROR_MESSAGE: Final = "error_message"
MAX_DEPTH: Final = 64
"""Deepest nesting of metadata kept; deeper values become a note."""
MAX_VALUES: Final = 10_000
"""Most values (scalars and containers) one snapshot keeps; the rest become null, one note."""

_KEY_TYPES = (str, int, float, bool, type(None))


def error_metadata(user: Mapping[str, object], error_type: str, message: str) -> dict[str, object]:
    """Return the error keys to merge into ``user`` without overwriting any of its keys."""
    out: dict[str, object] = {}
    for key, value in ((ERROR_TYPE, error_type), (ERROR_MESSAGE, message)):
        out[PREFIX + key if key in user else key] = value
    return out


def error_value(metadata: Mapping[str, object], key: str) -> object:
    """Return the package's ``error_type`` / ``error_message`` value in ``metadata``."""
    reserved = metadata.get(PREFIX + key)
    return reserved if reserved is not None else metadata.get(key)


def _key(key: object) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, _KEY_TYPES):  # as json.dumps names them
        return json.dumps(key)
    return None


def _scalar(value: object) -> tuple[bool, object]:
    """Return ``(True, json_value)`` for a value kept as a scalar, else ``(False, None)``."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__.startswith("numpy"):
        value = item()
    if value is None or isinstance(value, (str, bool, int)):
        return True, value
    if isinstance(value, float):
        return True, value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return True, value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True, base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return True, value.hex
    return False, None


class _Snapshot:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.values = 0
        self.truncated = False
        self.on_path: set[int] = set()  # ids of the containers being copied (cycle check)

    def note(self, path: str, why: str) -> None:
        self.notes.append(f"metadata {path}: {why}; kept as null")

    def value(self, value: object, path: str, depth: int) -> object:
        self.values += 1
        if self.values > MAX_VALUES:
            if not self.truncated:
                self.truncated = True
                self.note(path, f"truncated after {MAX_VALUES} values (this and every later value)")
            return None
        try:
            return self._value(value, path, depth)
        except RecursionError:
            self.note(path, f"nested deeper than {MAX_DEPTH} levels")
        except Exception as exc:  # a value raising while read (a mutating container...)
            self.note(path, f"could not be read ({type(exc).__name__})")
        return None

    def _value(self, value: object, path: str, depth: int) -> object:
        scalar, plain = _scalar(value)
        if scalar:
            if isinstance(plain, float) and not math.isfinite(plain):
                self.note(path, f"{plain} is not valid JSON")
                return None
            return plain
        if id(value) in self.on_path:
            self.note(path, "a container holding itself (a cycle)")
            return None
        self.on_path.add(id(value))
        try:
            return self._container(value, path, depth)
        finally:
            self.on_path.discard(id(value))

    def _container(self, value: object, path: str, depth: int) -> object:
        if depth >= MAX_DEPTH:
            self.note(path, f"nested deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(value, Mapping):
            out: dict[str, object] = {}
            for key, item in list(value.items()):  # list(): a copy before reading values
                name = _key(key)
                if name is None:
                    self.note(f"{path}[?]", f"a {type(key).__name__} key is not JSON")
                    continue
                out[name] = self.value(item, f"{path}[{name!r}]", depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            items = list(value)
            return [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(items)]
        if isinstance(value, (set, frozenset)):
            items = sorted(value, key=str)
            return [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(items)]
        self.note(path, f"a {type(value).__name__} is not JSON serializable")
        return None


def snapshot(metadata: Mapping[str, object]) -> dict[str, object]:
    """Return a JSON-safe deep copy of ``metadata``; never raises.

    Values that cannot be kept become ``None``; the notes saying so (key path and reason,
    never the value) are appended to the `NOTES` list of the copy.
    """
    state = _Snapshot()
    copied = state.value(metadata, "", 0)
    out = copied if isinstance(copied, dict) else {}
    if state.notes:
        previous = out.get(NOTES)
        kept = list(previous) if isinstance(previous, list) else []
        out[NOTES] = kept + state.notes
    return out


def to_text(snapshot_: Mapping[str, object]) -> str:
    """Serialize a `snapshot` to compact, key-sorted JSON (always valid JSON)."""
    return json.dumps(snapshot_, sort_keys=True, separators=(",", ":"), allow_nan=False)


def snapshot_text(metadata: object) -> str:
    """Return the JSON text of ``metadata``'s `snapshot` (``{}`` if not a mapping); never raises."""
    return to_text(snapshot(metadata) if isinstance(metadata, Mapping) else {})
