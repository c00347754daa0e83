"""One budget for everything the package waits for at interpreter exit.

Stuck sinks and exporters must not hold a program at exit: every wait the package makes then (the
sink queue, ``ParquetSink`` writers, span exporters, the diagnostics processor's shutdown) is cut
to what is left of one budget of ``DATAFUSION_OTEL_EXIT_TIMEOUT`` seconds in total (default 5),
whose clock starts at the first exit-time wait. "Exiting" is known from the moment the main thread
has finished (``threading``'s exit hooks run before ``atexit`` handlers such as the SDK's
provider shutdown).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

__all__ = ["bounded_at_exit", "env_float", "exit_ceiling", "exit_remaining", "exiting"]

_LOG = logging.getLogger("datafusion_otel.exit")
_DEFAULT_EXIT_SECONDS = 5.0


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        _LOG.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    if value < 0:
        _LOG.warning("%s=%r is negative; using %s", name, raw, default)
        return default
    return value


def exit_ceiling() -> float:
    """Seconds the package may spend, in total, waiting at interpreter exit.

    ``DATAFUSION_OTEL_EXIT_TIMEOUT`` (seconds, default 5).
    """
    return env_float("DATAFUSION_OTEL_EXIT_TIMEOUT", _DEFAULT_EXIT_SECONDS)


class _ExitClock:
    """When the interpreter began to exit, and when the package's first exit-time wait began."""

    def __init__(self) -> None:
        self.exiting = False
        self.started: float | None = None
        self.lock = threading.Lock()


_exit = _ExitClock()


def _mark_exiting() -> None:
    _exit.exiting = True


def exiting() -> bool:
    """True once the interpreter began to exit (the main thread has finished)."""
    return _exit.exiting


def exit_remaining() -> float:
    """Seconds left of the exit budget (`exit_ceiling`); the first call starts the clock.

    Every wait the package makes at exit takes at most this long, so stuck sinks and exporters
    delay exit by at most `exit_ceiling` seconds in total, however many there are.
    """
    now = time.monotonic()
    with _exit.lock:
        _exit.exiting = True
        if _exit.started is None:
            _exit.started = now
        started = _exit.started
    return max(started + exit_ceiling() - now, 0.0)


def bounded_at_exit(timeout: float) -> float:
    """``timeout``, cut to what is left of the exit budget once the interpreter is exiting."""
    return min(timeout, exit_remaining()) if exiting() else timeout


# mark the start of exit before the atexit handlers (the SDK's provider shutdown) run
with contextlib.suppress(AttributeError, RuntimeError):  # pragma: no cover - other interpreters
    threading._register_atexit(_mark_exiting)  # type: ignore[attr-defined]
