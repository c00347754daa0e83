"""The capture worker: plan-artifact capture off the query's thread, through a bounded queue.

The query's thread only hands over references (the DataFrame, its executed plan, the span it ran
under) as a job; one daemon thread, ``datafusion-otel-capture``, turns each job into artifacts
and attaches them (`datafusion_otel._spans.emit`). The queue holds at most
``DATAFUSION_OTEL_CAPTURE_QUEUE`` jobs (default 256): beyond it a capture is skipped and counted
(`skipped_count`), the query never waits.

Jobs are counted per trace while pending, so that:

* `wait_trace` lets a run's end wait until the captures of its queries are attached, at most
  ``DATAFUSION_OTEL_CAPTURE_WAIT`` seconds (default 5; a capture still pending then lands
  after the run's root span, its rows still reach the run's sinks);
* `after_trace` runs an action once the trace has no pending capture (the diagnostics
  processor computes the findings of an auto run, whose root span ends before its capture);
* `drain` (called by `datafusion_otel.force_flush`, and at interpreter exit with at most half
  of what is left of the exit budget, so that the rows already made are still written) waits
  until every queued capture is done.

The worker competes with the application's threads for the GIL: a query thread that comes back
from DataFusion while the worker runs Python would wait up to the interpreter's switch interval
(5 ms) for it. The worker's long loops (per-operator metrics, operator spans) therefore give the
GIL away between steps (``time.sleep(0)``): measured on a ~1.5 ms query run back to back, the
query's wall time grows by ~1.3 ms instead of ~2.0 ms, for ~0.4 ms more CPU in context switches.

A forked child starts with an empty queue and its own worker (jobs of the parent are not
inherited: their DataFusion objects belong to the parent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from datafusion_otel._exit import bounded_at_exit, env_float, exit_remaining

__all__ = [
    "QUEUE_ENV",
    "after_trace",
    "below_threshold_count",
    "capture_wait_seconds",
    "captured_count",
    "drain",
    "failed_count",
    "note_below_threshold",
    "pending",
    "skipped_count",
    "submit",
    "wait_trace",
]

_LOG = logging.getLogger("datafusion_otel.capture")
QUEUE_ENV: Final = "DATAFUSION_OTEL_CAPTURE_QUEUE"
"""Environment variable: capture jobs queued at most (default 256)."""
_DEFAULT_QUEUE = 256
WAIT_ENV: Final = "DATAFUSION_OTEL_CAPTURE_WAIT"
"""Environment variable: seconds a run's end waits for its captures at most (default 5)."""
_DEFAULT_WAIT = 5.0

Job = Callable[[], object]


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.queue: deque[tuple[int, Job]] = deque()
        self.pending: dict[int, int] = {}
        self.after: dict[int, list[Callable[[], object]]] = {}
        self.busy = 0
        self.worker: threading.Thread | None = None
        self.skipped = 0
        self.captured = 0
        self.failed = 0
        self.below_threshold = 0
        self.submitted = 0  # jobs ever queued: a drain waits for those queued before it
        self.done = 0  # jobs ever finished (one worker, first in first out)
        self.capacity = int(_bounded_env(QUEUE_ENV, _DEFAULT_QUEUE, 1, 1_000_000))


def _bounded_env(name: str, default: float, low: float, high: float) -> float:
    """``env_float(name)``, where a value outside [low, high] (inf, nan...) is the default."""
    value = env_float(name, default)
    if not low <= value <= high:
        _LOG.warning("%s is out of range; using the default", name)
        return default
    return value


_MAX_WAIT = 3600.0  # Condition.wait cannot take an infinite timeout


_state = _State()


def _reset_after_fork() -> None:
    globals()["_state"] = _State()  # the parent's jobs and worker do not exist here


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_reset_after_fork)


def skipped_count() -> int:
    """Return how many captures were skipped because the capture queue was full."""
    return _state.skipped


def capture_wait_seconds() -> float:
    """Seconds a run's end waits at most for the captures of its queries (``WAIT_ENV``)."""
    return _bounded_env(WAIT_ENV, _DEFAULT_WAIT, 0.0, _MAX_WAIT)


def failed_count() -> int:
    """Return how many capture jobs raised (a hook raising ``SystemExit``...): not captured."""
    return _state.failed


def note_below_threshold() -> None:
    """Count an execution left out by ``capture_min_duration_ms``."""
    state = _state
    with state.cond:
        state.below_threshold += 1


def below_threshold_count() -> int:
    """Return how many executions ``capture_min_duration_ms`` left out (not captured)."""
    return _state.below_threshold


def captured_count() -> int:
    """Return how many capture jobs the worker has run."""
    return _state.captured


def pending(trace_id: int | None = None) -> int:
    """Return the captures queued or running (of ``trace_id``, or of every trace)."""
    state = _state
    with state.cond:
        if trace_id is None:
            return len(state.queue) + state.busy
        return state.pending.get(trace_id, 0)


def submit(trace_id: int, job: Job) -> bool:
    """Queue ``job`` (a capture of a query of trace ``trace_id``); never blocks.

    Returns:
        False if the queue was full: the capture is skipped (counted in `skipped_count`).
    """
    state = _state
    with state.cond:
        if len(state.queue) >= state.capacity:
            state.skipped += 1
            first = state.skipped == 1
        else:
            state.queue.append((trace_id, job))
            state.submitted += 1
            state.pending[trace_id] = state.pending.get(trace_id, 0) + 1
            first = False
            if state.worker is None or not state.worker.is_alive():
                state.worker = threading.Thread(
                    target=_work, args=(state,), name="datafusion-otel-capture", daemon=True
                )
                state.worker.start()
            state.cond.notify_all()
            return True
    if first:  # (the package's log filter hides numbers: the size is in the variable)
        _LOG.warning(
            "plan-artifact capture skipped: the capture queue is full (its size is %s); the "
            "query is not affected (counted in datafusion_otel.capture_stats())",
            QUEUE_ENV,
        )
    return False


def after_trace(trace_id: int, action: Callable[[], object]) -> bool:
    """Run ``action`` on the worker once trace ``trace_id`` has no pending capture.

    Returns:
        False if the trace has none now: the caller runs ``action`` itself.
    """
    state = _state
    with state.cond:
        if not state.pending.get(trace_id):
            return False
        state.after.setdefault(trace_id, []).append(action)
        return True


def wait_trace(trace_id: int, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds until trace ``trace_id`` has no pending capture.

    Returns immediately on the worker's own thread (a capture cannot wait for itself).

    Returns:
        True if none is pending.
    """
    state = _state
    if threading.current_thread() is state.worker:
        return not state.pending.get(trace_id)
    deadline = time.monotonic() + min(max(bounded_at_exit(timeout), 0.0), _MAX_WAIT)
    with state.cond:
        while state.pending.get(trace_id):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            state.cond.wait(remaining)
    return True


def drain(timeout: float) -> bool:
    """Wait at most ``timeout`` seconds until every capture queued before this call is done.

    Captures queued meanwhile (other threads keep querying) are not waited for.

    Returns:
        True if those captures are done.
    """
    state = _state
    if threading.current_thread() is state.worker:
        return False
    deadline = time.monotonic() + min(max(bounded_at_exit(timeout), 0.0), _MAX_WAIT)
    with state.cond:
        ticket = state.submitted
        while state.done < ticket:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            state.cond.wait(remaining)
    return True


def _work(state: _State) -> None:
    while True:
        with state.cond:
            while not state.queue:
                state.cond.wait()
            trace_id, job = state.queue.popleft()
            state.busy += 1
        ok = True
        try:
            job()
        except BaseException:  # a hook's SystemExit too: the worker and its counts survive
            ok = False
            _LOG.exception("plan-artifact capture failed; the query was not affected")
        actions: list[Callable[[], object]] = []
        with state.cond:
            state.busy -= 1
            state.done += 1
            if ok:
                state.captured += 1
            else:
                state.failed += 1
            left = state.pending.get(trace_id, 1) - 1
            if left <= 0:
                state.pending.pop(trace_id, None)
                actions = state.after.pop(trace_id, [])
            else:
                state.pending[trace_id] = left
            state.cond.notify_all()
        for action in actions:
            try:
                action()
            except BaseException:
                _LOG.exception("an action waiting for plan-artifact capture failed")


def _drain_at_exit() -> None:  # pragma: no cover - exercised in subprocess tests
    if pending():  # half the exit budget at most: the rows already made must still be written
        drain(exit_remaining() / 2)


with contextlib.suppress(AttributeError, RuntimeError):  # pragma: no cover - other interpreters
    threading._register_atexit(_drain_at_exit)  # type: ignore[attr-defined]
