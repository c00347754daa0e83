"""Counting down the streams of one execution to the moment the last one ends.

Shared by the plan-artifact bridge (which captures artifacts when the last stream ends) and the
auto-instrumentation (which ends the execution span then): streams end in any order, on any
thread, by exhaustion, an error, ``close()`` or garbage collection. Both also read
``__arrow_c_stream__`` the way DataFusion does, partition after partition (`partition_batches`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = ["StreamLatch", "StreamOutcome", "partition_batches"]


@dataclass(frozen=True)
class StreamOutcome:
    """How the streams of one execution ended, reported once, by the last one.

    Attributes:
        exhausted: Every stream was read to its end.
        error: The first error a stream ended with, if any.
    """

    exhausted: bool
    error: BaseException | None


class StreamLatch:
    """Counts ``streams`` stream ends down to zero; thread-safe.

    Args:
        streams: How many streams must end (0: the first `count_down` reports at once).
    """

    __slots__ = ("_error", "_exhausted", "_lock", "_open", "_reported")

    def __init__(self, streams: int) -> None:
        self._open = streams
        self._exhausted = True
        self._error: BaseException | None = None
        self._reported = False
        self._lock = threading.Lock()

    def count_down(
        self, *, exhausted: bool, error: BaseException | None = None
    ) -> StreamOutcome | None:
        """Record that one stream ended.

        Args:
            exhausted: The stream was read to its end.
            error: The exception it ended with, if any.

        Returns:
            The outcome of all streams when this was the last one to end (exactly once),
            else None.
        """
        with self._lock:
            self._open -= 1
            self._exhausted = self._exhausted and exhausted
            if error is not None and self._error is None:
                self._error = error
            if self._open > 0 or self._reported:
                return None
            self._reported = True
            return StreamOutcome(self._exhausted, self._error)


def partition_batches(streams: Iterable[Iterable[Any]], schema: pa.Schema) -> Iterator[Any]:
    """Yield the batches of ``streams`` as ``pyarrow`` batches, partition after partition.

    DataFusion's ``__arrow_c_stream__`` does the same (``PartitionedDataFrameStreamReader``):
    the first partition to its end, then the next; nothing is read before it is asked for.
    A batch whose schema differs from ``schema`` only in field metadata or nullability is
    relabelled with ``schema``, as DataFusion's reader declares ``schema`` for every batch.
    """
    for stream in streams:
        for batch in stream:
            table = batch.to_pyarrow()
            if not table.schema.equals(schema):
                table = pa.RecordBatch.from_arrays(table.columns, schema=schema)
            yield table
