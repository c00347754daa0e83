"""The maintenance commands: ``compact`` and ``prune`` (see `datafusion_otel.store.maintenance`).

* ``compact``: merge the store's small files into larger ones (safe while writers write).
* ``prune --older-than 30d [--dry-run]``: delete every day older than the age, all tables.
"""

from __future__ import annotations

import argparse
import sys

from datafusion_otel.commands.render import print_json
from datafusion_otel.store import StoreError, compact_store, prune_store
from datafusion_otel.store.maintenance import parse_age

__all__ = ["age", "compact", "prune"]


def age(text: str) -> str:
    """Check ``--older-than`` when parsing (a bad age is a usage error, status 2)."""
    try:
        parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def compact(args: argparse.Namespace) -> int:
    """Compact the store; print what was merged and deleted."""
    log = sys.stderr if args.json else sys.stdout
    report = compact_store(
        args.store,
        target_bytes=int(args.target_mb * 1024 * 1024),
        lease_seconds=args.lease_seconds,
        progress=lambda line: print(line, file=log),
    )
    if args.json:
        print_json(report.__dict__)
    else:
        print(
            f"merged {report.source_files} files into {report.merged_files} "
            f"({report.rows:,} rows); deleted {report.deleted_files} files"
        )
        for path in report.skipped_files:
            print(f"left out unreadable file {path}")
    return 0


def prune(args: argparse.Namespace) -> int:
    """Delete the days older than ``--older-than``; print the days removed."""
    try:
        older_than = parse_age(args.older_than)
    except ValueError as exc:  # pragma: no cover - argparse checked it
        raise StoreError(str(exc)) from exc
    report = prune_store(args.store, older_than=older_than, dry_run=args.dry_run)
    if args.json:
        print_json({**report.__dict__, "dry_run": args.dry_run})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    days = f"{report.days[0]} to {report.days[-1]}" if report.days else "none"
    print(f"{verb} {report.deleted_files} files of {len(report.days)} days ({days}); "
          f"kept {report.kept_days} days")  # fmt: skip
    if report.undated_files:
        print(f"{report.undated_files} files of an older layout have no day and were kept")
    if report.bad_day_folders:
        folders = ", ".join(report.bad_day_folders)
        print(f"skipped day folders whose name is not a date: {folders}")
    return 0
