"""The bounded buffer of rows a `ParquetSink` holds until they are in a file.

Rows count against their pool's cap (rows and estimated bytes) from the moment they are
added until `PendingRows.release` is called for them, that is until their file has been
renamed into place or their write has failed. Everything a crash can lose is therefore
inside the caps: the caps *are* the sink's loss bound. Rows that would go over their pool's
cap are not taken (the caller counts them as dropped).

There are two pools, each with the full cap: the keys given as ``reserved`` (the sink's
``datafusion_runs_v1`` table) and all other keys. A run's row arrives after its operator
metrics and plan rows; with one shared cap, a run with many such rows would fill the buffer
and starve its own run row. The loss bound is therefore twice the cap.

`PendingRows` is not thread-safe on its own: the sink calls it with its lock held.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Chunk", "Key", "PendingRows", "estimate_bytes"]

Key = tuple[str, str]
"""A buffer key: ``("table", name)`` or ``("artifact", name)``."""

_ROW_OVERHEAD = 64
_SCALAR_BYTES = 8
_ENTRY_BYTES = 48  # one entry of a nested mapping or sequence (key, value, slot)
_SCALARS = frozenset({int, float, bool, type(None)})


def estimate_bytes(row: Mapping[str, object]) -> int:
    """Return a cheap estimate of the memory ``row`` holds once buffered.

    Strings and bytes count their length, nested mappings and sequences 48 bytes per entry
    (plus the length of their string items), every other value 8 bytes. It runs on the
    query's thread, so it looks one level deep only. Never raises.
    """
    size = _ROW_OVERHEAD
    try:
        for key, value in row.items():
            size += len(key) if type(key) is str else _SCALAR_BYTES
            kind = type(value)
            if kind in _SCALARS:
                size += _SCALAR_BYTES
            elif isinstance(value, (str, bytes, bytearray)):
                size += len(value) + _SCALAR_BYTES
            elif isinstance(value, dict | Mapping):
                size += _ENTRY_BYTES * len(value)
            elif isinstance(value, (list, tuple, set, frozenset)):
                size += _ENTRY_BYTES * len(value)
                size += sum(len(item) for item in value if isinstance(item, str))
            else:
                size += _SCALAR_BYTES
    except Exception:  # an odd mapping: count what was seen, never fail the caller
        return size
    return size


@dataclass
class Chunk:
    """At most ``batch_rows`` rows of one key, taken for one file."""

    key: Key
    rows: list[dict[str, object]]
    nbytes: int


class PendingRows:
    """Rows per key waiting for the writer, capped in rows and in estimated bytes.

    Args:
        batch_rows: Rows of one key that make it due, and the most rows of one chunk.
        max_rows: Cap on the rows one pool holds (buffered plus taken and not yet released).
        max_bytes: Cap on the estimated bytes one pool holds.
        interval: Seconds after which a key's oldest row makes it due.
        reserved: Keys whose rows have a pool of their own (never starved by other keys).
    """

    def __init__(
        self,
        *,
        batch_rows: int,
        max_rows: int,
        max_bytes: int,
        interval: float,
        reserved: frozenset[Key] = frozenset(),
    ) -> None:
        self._batch_rows = batch_rows
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._interval = interval
        self._reserved = reserved
        self._queues: dict[Key, deque[tuple[dict[str, object], int]]] = {}
        self._first_at: dict[Key, float] = {}
        self._queued_rows = [0, 0]
        self._queued_bytes = [0, 0]
        self._held_rows = [0, 0]
        self._held_bytes = [0, 0]

    @property
    def held_rows(self) -> int:
        """Rows added and not yet released (both pools)."""
        return sum(self._held_rows)

    @property
    def held_bytes(self) -> int:
        """Estimated bytes added and not yet released (both pools)."""
        return sum(self._held_bytes)

    def _pool(self, key: Key) -> int:
        return 1 if key in self._reserved else 0

    def add(self, key: Key, rows: list[tuple[dict[str, object], int]]) -> tuple[int, bool]:
        """Queue ``rows`` (each with its estimated size) in order while they fit under the cap.

        Returns:
            How many rows were taken (the first ones), and whether the writer should be woken
            (a new deadline, a full batch, or the buffer half full).
        """
        queue = self._queues.setdefault(key, deque())
        was_empty = not queue
        pool = self._pool(key)
        taken = 0
        for row, size in rows:
            if (
                self._held_rows[pool] + 1 > self._max_rows
                or self._held_bytes[pool] + size > self._max_bytes
            ):
                break
            queue.append((row, size))
            self._held_rows[pool] += 1
            self._held_bytes[pool] += size
            self._queued_rows[pool] += 1
            self._queued_bytes[pool] += size
            taken += 1
        if not queue:
            del self._queues[key]
            return 0, False
        if was_empty:
            self._first_at[key] = time.monotonic()
        return taken, was_empty or len(queue) >= self._batch_rows or self._pressure()

    def _pressure(self) -> bool:
        """Whether the queued rows fill half a pool's cap: then every key is written at once."""
        return any(
            rows * 2 >= self._max_rows or nbytes * 2 >= self._max_bytes
            for rows, nbytes in zip(self._queued_rows, self._queued_bytes, strict=True)
        )

    def due(self, now: float) -> bool:
        """Whether some key should be written now."""
        return bool(self._due_keys(now))

    def next_deadline(self) -> float | None:
        """The monotonic time at which the oldest queued row makes its key due."""
        if not self._first_at:
            return None
        return min(self._first_at.values()) + self._interval

    def _due_keys(self, now: float) -> list[Key]:
        if self._pressure():
            return list(self._queues)
        return [
            key
            for key, queue in self._queues.items()
            if len(queue) >= self._batch_rows or now - self._first_at[key] >= self._interval
        ]

    def take(self, *, everything: bool) -> list[Chunk]:
        """Remove and return chunks of at most ``batch_rows`` rows.

        Args:
            everything: Take every queued row (in as many chunks as needed); otherwise one
                chunk per due key.

        The rows stay counted against the cap until `release`.
        """
        keys = list(self._queues) if everything else self._due_keys(time.monotonic())
        chunks: list[Chunk] = []
        for key in keys:
            queue = self._queues[key]
            while queue:
                rows: list[dict[str, object]] = []
                nbytes = 0
                while queue and len(rows) < self._batch_rows:
                    row, size = queue.popleft()
                    rows.append(row)
                    nbytes += size
                self._queued_rows[self._pool(key)] -= len(rows)
                self._queued_bytes[self._pool(key)] -= nbytes
                chunks.append(Chunk(key, rows, nbytes))
                if not everything:
                    break
            if not queue:  # rows left behind keep their key's original deadline
                del self._queues[key]
                del self._first_at[key]
        return chunks

    def release(self, chunk: Chunk) -> None:
        """Stop counting ``chunk`` against the cap (its file is in place, or it failed)."""
        self._held_rows[self._pool(chunk.key)] -= len(chunk.rows)
        self._held_bytes[self._pool(chunk.key)] -= chunk.nbytes
