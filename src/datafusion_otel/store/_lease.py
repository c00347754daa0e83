"""The maintenance lease: one compactor (or pruner) at a time on a store, dead ones expire.

The lease is one small object (``_compact.lease``) holding its owner and an expiry time. It
is taken with a create-if-absent write (``If-None-Match: *`` on S3, ``O_EXCL`` locally), so
of two processes taking it at once one wins. A holder that dies leaves the lease behind
until it expires (``seconds`` after it was last renewed); the next process then removes it
and takes it. The holder renews it while it works and checks, before every destructive step
(deleting files), that the lease is still its own and not expired; if not, it stops.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from datafusion_otel.store._fs import StoreFS
from datafusion_otel.store._layout import LEASE_KEY, writer_id

__all__ = ["Lease", "LeaseError"]


class LeaseError(Exception):
    """The lease is held by someone else, or was lost while working."""


@dataclass(frozen=True)
class _Holder:
    owner: str
    expires: float


def _parse(data: bytes | None) -> _Holder | None:
    if data is None:
        return None
    try:
        document = json.loads(data)
        return _Holder(str(document["owner"]), float(document["expires_unix"]))
    except (ValueError, KeyError, TypeError):
        return _Holder("?", 0.0)  # unreadable: treated as expired


class Lease:
    """The maintenance lease of a store.

    Args:
        fs: The store.
        seconds: How long the lease lasts after each renewal.
        purpose: What the holder does (shown to whoever finds the lease held).
    """

    def __init__(self, fs: StoreFS, *, seconds: float, purpose: str) -> None:
        if seconds <= 0:
            raise ValueError(f"lease seconds must be > 0, got {seconds}")
        self._fs = fs
        self._seconds = seconds
        self.owner = f"{purpose}:{writer_id()}:{time.time_ns()}"
        self._renewed = 0.0
        self.held = False

    def _document(self) -> bytes:
        expires = time.time() + self._seconds
        return json.dumps({"owner": self.owner, "expires_unix": expires}).encode()

    def acquire(self) -> None:
        """Take the lease (removing an expired one first).

        Raises:
            LeaseError: If another live holder has it.
        """
        for _ in range(3):
            if self._fs.put_new(LEASE_KEY, self._document()):
                self.held = True
                self._renewed = time.monotonic()
                return
            holder = _parse(self._fs.get(LEASE_KEY))
            if holder is None:
                continue  # released meanwhile
            if holder.expires > time.time():
                until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder.expires))
                raise LeaseError(
                    f"another maintenance process ({holder.owner}) holds the lease of "
                    f"{self._fs.uri} until {until} UTC; try again later"
                )
            self._fs.delete(LEASE_KEY)  # expired: its holder died
        raise LeaseError(f"could not take the lease of {self._fs.uri} (contended)")

    def check(self) -> None:
        """Renew the lease if a third of it has passed; make sure it is still ours.

        Raises:
            LeaseError: If the lease was lost (expired and taken, or removed).
        """
        holder = _parse(self._fs.get(LEASE_KEY))
        if holder is None or holder.owner != self.owner or holder.expires <= time.time():
            self.held = False
            raise LeaseError(f"lost the lease of {self._fs.uri}; stopped before deleting files")
        if time.monotonic() - self._renewed > self._seconds / 3:
            self._fs.put(LEASE_KEY, self._document())
            self._renewed = time.monotonic()

    def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        if not self.held:
            return
        self.held = False
        holder = _parse(self._fs.get(LEASE_KEY))
        if holder is not None and holder.owner == self.owner:
            self._fs.delete(LEASE_KEY)
