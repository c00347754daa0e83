"""Which sink receives the rows of which run, and which runs are live.

`start_run(sink=...)` registers the run's sink together with the span processor that owns
delivery to it (the one attached to the provider that created the run span). Only the owner,
and the package's own processor of any other provider (for spans of an instrumentor given its
own ``tracer_provider``), deliver to a run's sink: a span is seen by the processors of one
provider, which carries one package processor, so the sink receives each row exactly once
however many processors the user added.

`run_started` / `run_ended` keep the root span of every live run by run id, so that a query
compiled with an explicit ``run_id`` and executed where that run is not current (a worker
thread, an asyncio task) still finds its run (`live_root`).

Runs attached from another process (`mark_attached`, by `datafusion_otel.run_context.attached_run`
where the run is not live) end elsewhere: their root span never ends here, so the diagnostics
processor holds none of their rows for findings (`is_attached`).

A forked child process owns none of its parent's runs: both are forgotten in the child
(``os.register_at_fork``), so rows made there go to the child's own sinks, never to a copy of
a parent run's sink (see `datafusion_otel.run_context`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from opentelemetry import trace

from datafusion_otel.diagnostics import DiagnosticsSink

__all__ = [
    "RunRoute",
    "is_attached",
    "live_root",
    "lookup",
    "mark_attached",
    "register",
    "release",
    "run_ended",
    "run_started",
]

_lock = threading.Lock()
_routes: dict[str, RunRoute] = {}
_finished: OrderedDict[str, RunRoute] = OrderedDict()
_FINISHED_KEPT = 4096
"""Routes of finished runs kept for spans that end after their run's root (streams...)."""
_live: dict[str, trace.Span] = {}
_attached: OrderedDict[str, None] = OrderedDict()
_ATTACHED_KEPT = 4096
"""Ids of runs attached from another process that are remembered (the most recent ones)."""


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
        return _routes.get(run_id) or _finished.get(run_id)


def release(run_id: str) -> None:
    """Retire the route of ``run_id`` (its root span has been processed).

    The route is kept among the last few thousand finished runs, so that a child span
    ending after its run still reaches the run's sink.
    """
    with _lock:
        route = _routes.pop(run_id, None)
        if route is not None:
            _finished[run_id] = route
            while len(_finished) > _FINISHED_KEPT:
                _finished.popitem(last=False)


def run_started(run_id: str, root: trace.Span) -> None:
    """Record ``root`` as the root span of the live run ``run_id``."""
    with _lock:
        _live[run_id] = root


def run_ended(run_id: str) -> None:
    """Forget the live run ``run_id`` (it is finishing); unknown ids are ignored."""
    with _lock:
        _live.pop(run_id, None)


def live_root(run_id: str) -> trace.Span | None:
    """Return the root span of the live run ``run_id``, or None once it ended (or if unknown)."""
    with _lock:
        root = _live.get(run_id)
    return root if root is not None and root.is_recording() else None


def mark_attached(run_id: str) -> None:
    """Remember that ``run_id`` is a run of another process that work here is attached to."""
    with _lock:
        _attached[run_id] = None
        _attached.move_to_end(run_id)
        while len(_attached) > _ATTACHED_KEPT:
            _attached.popitem(last=False)


def is_attached(run_id: str) -> bool:
    """Return True if ``run_id`` is a run of another process (see `mark_attached`)."""
    if not _attached:  # the common case, without the lock: no run attached here
        return False
    with _lock:
        return run_id in _attached


def _forget_parent_runs() -> None:
    """In a forked child: the parent's runs, their sinks and live roots are the parent's."""
    global _lock  # noqa: PLW0603 - a lock held by another thread at fork time stays held
    _lock = threading.Lock()
    _routes.clear()
    _finished.clear()
    _live.clear()
    _attached.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_runs)
