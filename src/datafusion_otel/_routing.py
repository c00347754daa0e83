"""Which sink receives the rows of which run.

`start_run(sink=...)` registers the run's sink together with the span processor that owns
delivery to it (the one attached to the provider that created the run span). Only the owner
delivers to a run's sink, so the sink receives each row exactly once however many
processors see the run's spans.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from datafusion_otel.diagnostics import DiagnosticsSink

__all__ = ["RunRoute", "lookup", "register", "release"]

_lock = threading.Lock()
_routes: dict[str, RunRoute] = {}


@dataclass(frozen=True)
class RunRoute:
    """The sink of one run and the processor that delivers to it."""

    sink: DiagnosticsSink
    owner: object


def register(run_id: str, sink: DiagnosticsSink, owner: object) -> None:
    """Route rows of ``run_id`` to ``sink`` through the processor ``owner``."""
    with _lock:
        _routes[run_id] = RunRoute(sink, owner)


def lookup(run_id: str) -> RunRoute | None:
    """Return the route of ``run_id``, if it has one."""
    with _lock:
        return _routes.get(run_id)


def release(run_id: str) -> None:
    """Forget the route of ``run_id`` (its root span has been processed)."""
    with _lock:
        _routes.pop(run_id, None)
