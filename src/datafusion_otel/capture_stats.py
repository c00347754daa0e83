"""`capture_stats`: what happened to the plan-artifact captures of this process, in one place.

Every capture that did not land is counted somewhere in the package; this gathers the counters
so a service can export or log them without reaching into private modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._spans import emit as _emit

__all__ = ["CaptureStats", "capture_stats"]


@dataclass(frozen=True)
class CaptureStats:
    """Counters of plan-artifact capture since the process started.

    In a forked child the queue's counters start again at the fork.

    Attributes:
        captured: Captures the worker ran and attached.
        pending: Captures queued or running now.
        skipped_queue_full: Skipped because the capture queue was full
            (``DATAFUSION_OTEL_CAPTURE_QUEUE``).
        failed: Captures that raised (a hook raising ``SystemExit``...): lost.
        below_threshold: Executions left out by ``capture_min_duration_ms`` (by design).
        dropped: Captures with nowhere to go (no span, no hook), or whose span had ended.
        run_ended: Captures naming a run (``DataFusionCompileOptions.run_id``) that had ended.
        hook_errors: Times a ``plan_artifacts_hook`` raised an ``Exception``.
    """

    captured: int
    pending: int
    skipped_queue_full: int
    failed: int
    below_threshold: int
    dropped: int
    run_ended: int
    hook_errors: int


def capture_stats() -> CaptureStats:
    """Return the capture counters of this process.

    Example:
        >>> import datafusion_otel
        >>> stats = datafusion_otel.capture_stats()
        >>> stats.skipped_queue_full >= 0
        True
    """
    return CaptureStats(
        captured=_capture_queue.captured_count(),
        pending=_capture_queue.pending(),
        skipped_queue_full=_capture_queue.skipped_count(),
        failed=_capture_queue.failed_count(),
        below_threshold=_capture_queue.below_threshold_count(),
        dropped=_emit.dropped_count(),
        run_ended=_emit.run_ended_count(),
        hook_errors=_emit.hook_error_count(),
    )
