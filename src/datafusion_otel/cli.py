"""The ``datafusion-otel`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(_args: argparse.Namespace) -> int:
    # imported here so that ``datafusion-otel --help`` stays fast
    from datafusion import SessionContext  # noqa: PLC0415

    from datafusion_otel.diagnostics import DiagnosticsCollector  # noqa: PLC0415
    from datafusion_otel.runs import tracked_run  # noqa: PLC0415

    sink = DiagnosticsCollector()
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    with tracked_run(label="demo", sink=sink) as run:
        table = ctx.sql("SELECT k, sum(v) AS total FROM t GROUP BY k ORDER BY k").to_arrow_table()
    row = sink.events_snapshot()["datafusion_runs_v1"][0]
    print(f"run {run.run_id} {row['status']} in {row['duration_ms']} ms, {table.num_rows} rows")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(prog="datafusion-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a small tracked query").set_defaults(func=_demo)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
