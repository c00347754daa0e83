"""The ``datafusion-otel`` command line: a TPC-H demo and a browser for the run store.

Commands (each takes ``--store PATH`` (a folder, or ``s3://bucket/prefix`` with the ``AWS_*``
environment variables), default ``$DATAFUSION_OTEL_HOME`` or ``./.datafusion-otel``, and
``--json``):

* ``demo``: generate TPC-H data, run the 22 queries as tracked runs into the store.
* ``runs``: recent runs. ``show RUN_ID``: one run (a unique id prefix is enough).
* ``stats``: per label count, error rate, p50/p95/p99. ``sql "QUERY"``: one read-only SQL
  query over the store (DDL, DML and statements are refused).
* ``findings [RUN_ID | --label L]``: why a run was slow (see `datafusion_otel.findings`).
  ``report RUN_ID [-o FILE]``: the run's offline HTML profile (`datafusion_otel.report`).
* ``compact``: merge the store's small files (safe while writers write).
  ``prune --older-than 30d``: delete the days older than that, all tables together.

``$DATAFUSION_OTEL_TRACE_URL`` (a template with ``{run_id}``) makes ``runs`` and ``show``
print a link to each run in a trace UI.

User errors (missing or empty store, unknown run id, bad SQL, a statement that is not a
query) print one line on stderr and exit with status 1; a bad argument prints one line and
exits with status 2. A damaged store file is skipped with one warning line naming it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from datafusion_otel.commands import browse, maintain
from datafusion_otel.commands import demo as demo_command
from datafusion_otel.commands import findings as findings_command
from datafusion_otel.config import Telemetry, configure
from datafusion_otel.metrics import enable_run_metrics
from datafusion_otel.store import ParquetSink, StoreError
from datafusion_otel.tpch import TpchError

__all__ = ["main"]

_PROG = "datafusion-otel"


def _configure_telemetry(sink: ParquetSink) -> Telemetry:
    """Set up OpenTelemetry for the demo: diagnostics rows to ``sink``, run metrics on.

    ``configure`` exports over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
    """
    telemetry = configure(sink=sink, set_global=False)
    enable_run_metrics(tracer_provider=telemetry.tracer_provider)
    return telemetry


def _demo(args: argparse.Namespace) -> int:
    return demo_command.demo(args, _configure_telemetry)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage stays behind ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_MAX_LIMIT = 1_000_000_000


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {_MAX_LIMIT:,}, got {text!r}"
        )
    return value


def _query_list(text: str) -> str:
    """Check ``--queries`` when parsing, so a bad list is a usage error (status 2)."""
    try:
        demo_command.selected_queries(text)
    except TpchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _store_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder or URI, got an empty string")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG, description="Observe Apache DataFusion runs; browse the run store."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _Parser(add_help=False)
    common.add_argument(
        "--store", metavar="PATH", type=_store_path, help="run store folder or s3://bucket/prefix"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    demo = commands.add_parser("demo", parents=[common], help="run the 22 TPC-H queries")
    demo.add_argument("--scale", type=_positive_float, default=0.1, help="TPC-H scale factor (0.1)")
    demo.add_argument("--data-dir", metavar="PATH", help="TPC-H data folder (cached)")
    demo.add_argument(
        "--queries", metavar="N,N", type=_query_list, help="only these queries, e.g. 1,6,15"
    )
    demo.set_defaults(func=_demo)

    runs = commands.add_parser("runs", parents=[common], help="list recent runs")
    runs.add_argument("--limit", type=_positive_int, default=20, help="number of runs (20)")
    runs.set_defaults(func=browse.runs)

    show = commands.add_parser("show", parents=[common], help="show one run")
    show.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix")
    show.set_defaults(func=browse.show)

    stats = commands.add_parser("stats", parents=[common], help="per-label statistics")
    stats.set_defaults(func=browse.stats)

    sql = commands.add_parser(
        "sql", parents=[common], help="run a read-only SQL query over the store"
    )
    sql.add_argument("query", metavar="QUERY", help="tables: " + ", ".join(_TABLES))
    sql.set_defaults(func=browse.sql)

    found = commands.add_parser("findings", parents=[common], help="why was a run slow")
    found.add_argument("run_id", metavar="RUN_ID", nargs="?", help="run id (default: latest)")
    found.add_argument("--label", metavar="L", help="the latest run with this label")
    found.set_defaults(func=findings_command.findings)

    report = commands.add_parser("report", parents=[common], help="write a run's HTML profile")
    report.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix")
    report.add_argument("-o", "--output", metavar="FILE", help="HTML file (run-<id>.html)")
    report.set_defaults(func=findings_command.report)

    compact = commands.add_parser("compact", parents=[common], help="merge small store files")
    compact.add_argument(
        "--target-mb", type=_positive_float, default=128.0, help="merged file size (128 MB)"
    )
    compact.add_argument(
        "--lease-seconds", type=_positive_float, default=600.0, help="lease lifetime (600 s)"
    )
    compact.set_defaults(func=maintain.compact)

    prune = commands.add_parser("prune", parents=[common], help="delete old days of runs")
    prune.add_argument(
        "--older-than", metavar="AGE", type=maintain.age, required=True, help="e.g. 30d, 12h"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(func=maintain.prune)
    return parser


_TABLES = ("runs", "plan_artifacts", "operator_metrics", "cache_state", "artifacts", "findings")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 on success, 1 for a user error, 2 for a usage error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.func(args)
    except (StoreError, TpchError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``datafusion-otel runs | head``)
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
