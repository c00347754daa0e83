"""Retention: remove the store's files of every day older than a given age.

Files lie in ``day=YYYY-MM-DD`` folders by the UTC day their run started, every table alike
(`datafusion_otel.store._layout`), so removing a day removes all tables' rows of that day's
runs together. A day goes when it ended at least ``older_than`` ago: with ``30d`` on
2026-12-02 at 10:00 UTC, the days up to 2026-11-01 go (2026-11-01 ended 30 days and 10
hours ago) and 2026-11-02 stays. Pruning takes the maintenance lease, so it never runs beside
a compaction (which could write a merged file into a day being removed).

Version-1 files (no ``day=`` folder) are never pruned; they are counted in the report.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from datafusion_otel import attributes as attr
from datafusion_otel.schema_registry import SCHEMAS
from datafusion_otel.store._fs import StoreFS
from datafusion_otel.store._layout import MANIFEST_SUFFIX, PARQUET_SUFFIX, day_of_key
from datafusion_otel.store._lease import Lease

__all__ = ["PruneReport", "parse_age", "prune"]

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_TABLE_FOLDERS = frozenset(SCHEMAS) | {attr.ARTIFACTS_FOLDER}
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MAX_AGE = dt.timedelta(days=36500)


def parse_age(text: str) -> dt.timedelta:
    """Return the age written as ``<number><unit>``: ``30d``, ``12h``, ``2w``, ``90m``, ``60s``.

    Raises:
        ValueError: For anything else, a zero age, or one over 100 years (36500d).
    """
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"expected an age such as 30d, 12h or 2w, got {text!r}")
    try:
        age = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except (OverflowError, ValueError):  # beyond what a timedelta holds
        age = _MAX_AGE + dt.timedelta(days=1)
    if age <= dt.timedelta(0):
        raise ValueError(f"the age must be more than zero, got {text!r}")
    if age > _MAX_AGE:
        raise ValueError(f"the age must be at most 36500d (100 years), got {text!r}")
    return age


@dataclass
class PruneReport:
    """What one prune did (or would do, with ``dry_run``).

    Attributes:
        days: The days removed, oldest first.
        deleted_files: Files deleted (or to delete).
        kept_days: Days kept.
        undated_files: Version-1 files outside any day folder (never pruned).
        bad_day_folders: ``day=`` folders whose name is not a date (skipped, never pruned).
    """

    days: list[str] = field(default_factory=list)
    deleted_files: int = 0
    kept_days: int = 0
    undated_files: int = 0
    bad_day_folders: list[str] = field(default_factory=list)


def prune(
    fs: StoreFS,
    *,
    older_than: dt.timedelta,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    lease_seconds: float = 600.0,
) -> PruneReport:
    """Delete every file of the days that ended at least ``older_than`` before ``now``.

    Args:
        fs: The store.
        older_than: Age of the days to remove.
        now: The current time (default: now, UTC).
        dry_run: Only report what would be deleted.
        lease_seconds: Lifetime of the maintenance lease while pruning.

    Raises:
        datafusion_otel.store._lease.LeaseError: If another process holds the lease.
    """
    moment = now or dt.datetime.now(dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    # day D ends at D+1 00:00 UTC; it goes when that is at least older_than ago
    try:
        cutoff = (moment - older_than).astimezone(dt.timezone.utc).date()
    except OverflowError:  # before year 1: nothing is that old
        cutoff = dt.date.min
    report = PruneReport()
    lease = Lease(fs, seconds=lease_seconds, purpose="prune")
    if not dry_run:
        lease.acquire()
    try:
        by_day: dict[str, list[str]] = {}
        for obj in fs.list():
            if not obj.key.endswith((PARQUET_SUFFIX, MANIFEST_SUFFIX)):
                continue
            if obj.key.split("/", 1)[0] not in _TABLE_FOLDERS:
                continue  # not the store's (the demo's TPC-H data, a user's files)
            day = day_of_key(obj.key)
            if day is None:
                report.undated_files += 1
            else:
                by_day.setdefault(day, []).append(obj.key)
        dates: dict[str, dt.date] = {}
        for day in sorted(by_day):
            try:
                dates[day] = dt.date.fromisoformat(day)
            except ValueError:  # day=9999-99-99: not written by a sink
                report.bad_day_folders.append(f"day={day}")
        for day, date in dates.items():
            if date >= cutoff:
                report.kept_days += 1
                continue
            report.days.append(day)
            # data files first: a manifest left alone covers nothing that is read
            keys = sorted(by_day[day], key=lambda k: k.endswith(MANIFEST_SUFFIX))
            report.deleted_files += len(keys)
            if dry_run:
                continue
            lease.check()
            for key in keys:
                fs.delete(key)
        return report
    finally:
        lease.release()
