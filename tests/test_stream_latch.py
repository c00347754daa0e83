"""The countdown shared by stream-reading paths: the last stream to end reports, once."""

from __future__ import annotations

import threading

from datafusion_otel._capture.stream_latch import StreamLatch, StreamOutcome


def test_the_last_stream_reports_the_combined_outcome_once() -> None:
    latch = StreamLatch(3)
    first_error = RuntimeError("first")
    assert latch.count_down(exhausted=True) is None
    assert latch.count_down(exhausted=False, error=first_error) is None
    assert latch.count_down(exhausted=True, error=ValueError("later")) == StreamOutcome(
        exhausted=False, error=first_error
    )
    assert latch.count_down(exhausted=True) is None  # an extra end never reports again


def test_all_exhausted_without_error() -> None:
    latch = StreamLatch(2)
    assert latch.count_down(exhausted=True) is None
    assert latch.count_down(exhausted=True) == StreamOutcome(exhausted=True, error=None)


def test_no_streams_reports_at_the_first_count_down() -> None:
    assert StreamLatch(0).count_down(exhausted=True) == StreamOutcome(True, None)


def test_streams_ending_on_many_threads_report_exactly_once() -> None:
    streams = 64
    latch = StreamLatch(streams)
    outcomes: list[StreamOutcome] = []
    start = threading.Barrier(streams)

    def end() -> None:
        start.wait()
        outcome = latch.count_down(exhausted=True)
        if outcome is not None:
            outcomes.append(outcome)

    threads = [threading.Thread(target=end) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [StreamOutcome(True, None)]
