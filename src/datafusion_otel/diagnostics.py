"""Diagnostics sinks: where diagnostics rows and artifacts are delivered.

A sink receives two kinds of records:

* ``record_events(name, rows)``: rows of a diagnostics table (``name`` is the table name,
  for example ``datafusion_runs_v1``), each row a mapping shaped like the table's schema.
* ``record_artifact(name, payload)``: one named payload, for example
  ``datafusion_run_started_v1``.

Sinks are called by the package, never the other way round. A sink whose class sets
``nonblocking = True`` promises that its methods return quickly and do no I/O; such sinks are
called on the caller's thread. Every other sink is called from a background worker, so a
slow or failing sink never slows or breaks the observed program.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

__all__ = ["DiagnosticsCollector", "DiagnosticsSink"]


@runtime_checkable
class DiagnosticsSink(Protocol):
    """Receiver of diagnostics rows and artifacts."""

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Record rows of the diagnostics table ``name``.

        Args:
            name: Table name, for example ``datafusion_runs_v1``.
            rows: Rows shaped like the table's schema.
        """

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        """Record one named artifact payload.

        Args:
            name: Artifact name, for example ``datafusion_run_started_v1``.
            payload: The artifact's content.
        """


class DiagnosticsCollector:
    """Thread-safe in-memory sink, for tests, notebooks and small programs.

    Example:
        >>> sink = DiagnosticsCollector()
        >>> sink.record_artifact("example", {"a": 1})
        >>> sink.artifacts_snapshot()["example"]
        [{'a': 1}]
    """

    nonblocking: ClassVar[bool] = True
    """Delivery to this sink is a dictionary append: safe on the caller's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[dict[str, object]]] = {}
        self._artifacts: dict[str, list[dict[str, object]]] = {}

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Append ``rows`` under the table ``name``.

        Args:
            name: Table name.
            rows: Rows to keep; each is copied.
        """
        copied = [dict(row) for row in rows]
        with self._lock:
            self._events.setdefault(name, []).extend(copied)

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        """Append ``payload`` under the artifact ``name``.

        Args:
            name: Artifact name.
            payload: Payload to keep; it is copied.
        """
        copied = dict(payload)
        with self._lock:
            self._artifacts.setdefault(name, []).append(copied)

    def events_snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Return a deep copy of every table's rows, keyed by table name.

        Returns:
            A new dictionary; changing it does not change the collector.
        """
        with self._lock:
            return copy.deepcopy(self._events)

    def artifacts_snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Return a deep copy of every artifact payload, keyed by artifact name.

        Returns:
            A new dictionary; changing it does not change the collector.
        """
        with self._lock:
            return copy.deepcopy(self._artifacts)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._events.clear()
            self._artifacts.clear()
