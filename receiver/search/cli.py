"""`drain-receiver search` and `drain-receiver stats`: parse the command line, print results.

Bad input (a time or status that does not parse, bad SQL, a missing directory) is one line on
stderr and exit 2. Records go to stdout; progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from receiver.search.engine import TABLE_COLUMNS, SearchError, now_ms, open_engine
from receiver.search.filters import FilterError, Filters, check, parse_time
from receiver.search.follow import follow, start_tails
from receiver.search.output import results_table, sql_table, stats_chart

EXIT_USAGE = 2
DEFAULT_DIR = "drain-data"
RAW = TABLE_COLUMNS.index("raw")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """The filters shared by search, stats and the web API. Repeat a flag to OR its values."""
    env = os.environ
    parser.add_argument("--dir", type=Path, default=Path(env.get("DRAIN_DIR", DEFAULT_DIR)),
                        help="the receiver's --dir: every partition, worker, rotated and compressed "
                        "file under it is read [env DRAIN_DIR] (default: %(default)s)")
    parser.add_argument("--rejected", action="store_true",
                        help="search the rejects under DIR/rejected/ instead of the records")
    group = parser.add_argument_group(
        "filters", "Repeating a flag means OR, different flags mean AND. --status, --host and "
        "--path match the record's own field or the same field of its proxy object. --host and "
        "--path match exactly, or as a glob when the value holds a * (e.g. --path '/api/*').")
    group.add_argument("--since", help="from this time: 15m, 1h, 7d (ago), 2026-12-01T10:00Z, or Unix ms")
    group.add_argument("--until", help="before this time (same forms as --since)")
    for flag, help_text in (
        ("--project", "projectId or projectName"),
        ("--deployment", "deploymentId"),
        ("--env", "environment: production or preview"),
        ("--source", "build, edge, lambda, static, external, firewall, redirect"),
        ("--level", "info, warning, error, fatal"),
        ("--status", "statusCode or proxy.statusCode: 5xx, 404, 200-299, -1 (crashed)"),
        ("--host", "host or proxy.host"),
        ("--path", "path or proxy.path (with the query string)"),
        ("--request-id", "requestId"),
        ("--branch", "git branch"),
        ("--stream", "the drain type's stream: logs, traces, speed_insights, analytics, audit_log, ..."),
    ):
        group.add_argument(flag, action="append", default=[], metavar="VALUE", help=help_text)


def filters_from(args: argparse.Namespace, text: Sequence[str] = ()) -> Filters:
    now = now_ms()
    try:
        return check(Filters(
            text=tuple(t for t in text if t),
            since_ms=parse_time(args.since, now) if args.since else None,
            until_ms=parse_time(args.until, now) if args.until else None,
            project=tuple(args.project), deployment=tuple(args.deployment), env=tuple(args.env),
            source=tuple(args.source), level=tuple(args.level), status=tuple(args.status),
            host=tuple(args.host), path=tuple(args.path), request_id=tuple(args.request_id),
            branch=tuple(args.branch), stream=tuple(args.stream),
        ))
    except FilterError as error:
        raise UsageError(str(error)) from None


def search_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drain-receiver search",
        description="Find records in the files the receiver wrote, newest first. TEXT matches "
        "the record's message only (case-insensitive substring); use the flags for other fields.",
    )
    parser.add_argument("text", nargs="*", metavar="TEXT",
                        help="words the message must contain (any of them)")
    add_filter_options(parser)
    parser.add_argument("--limit", type=int, default=100, help="at most this many records (default: 100)")
    parser.add_argument("--format", choices=("table", "ndjson", "json"), default="table",
                        help="table (fitted to the terminal), ndjson (each record byte for byte as "
                        "written) or json (an array of the records)")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="after the newest matches, keep printing new matching records as they "
                        "are written, oldest first, until Ctrl-C (across rotation)")
    parser.add_argument("--sql", help="run this SQL over the view `logs` (one row per record: its "
                        "fields as columns, proxy fields as proxy_*, plus raw, the exact line) instead")
    return parser


def stats_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="drain-receiver stats",
                     description="Records per interval, as a text chart (default: the last 24 hours).")
    add_filter_options(parser)
    parser.add_argument("--by", choices=("level", "source", "status", "project"), default="level")
    parser.add_argument("--intervals", type=int, default=24, help="how many bars (default: 24)")
    return parser


def terminal_width() -> int:
    """The terminal's width; unlimited when stdout is a pipe or a file (nothing is cut)."""
    if not sys.stdout.isatty():
        return 1 << 30
    return shutil.get_terminal_size((160, 24)).columns


def print_lines(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))


def write_records(rows: Sequence[tuple], fmt: str) -> None:
    out = sys.stdout.buffer
    if fmt == "ndjson":
        out.write(b"".join(row[RAW].encode() + b"\n" for row in rows))
    elif fmt == "json":
        out.write(b"[" + b",".join(row[RAW].encode() for row in rows) + b"]\n")
    else:
        out.write("".join(line + "\n" for line in results_table(rows, terminal_width())).encode())
    out.flush()


def report_scan(root: Path, files: int, size: int) -> None:
    if sys.stderr.isatty():
        print(f"searching {files} files under {root} ({size / 1e6:.1f} MB)…", file=sys.stderr)


def run_search(argv: Sequence[str]) -> int:
    args = search_parser().parse_args(argv)
    filters = filters_from(args, args.text)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    tails = start_tails(args.dir, args.rejected) if args.follow and args.dir.is_dir() else None
    with open_engine(args.dir, args.rejected) as engine:
        report_scan(args.dir, len(engine.snapshot.files), engine.snapshot.size())
        if args.sql:
            names, rows = engine.rows(args.sql)
            print_lines(sql_table(names, rows, terminal_width()))
            return 0
        rows = engine.search(filters, args.limit)
        if not args.follow:
            write_records(rows, args.format)
            return 0
    fmt = "ndjson" if args.format == "json" else args.format
    write_records(list(reversed(rows)), fmt)
    assert tails is not None
    print(f"following new records under {args.dir} (Ctrl-C stops)", file=sys.stderr, flush=True)
    return follow(tails, filters, lambda new: write_records(new, fmt), {row[RAW] for row in rows})


def run_stats(argv: Sequence[str]) -> int:
    args = stats_parser().parse_args(argv)
    if args.since is None:
        args.since = "24h"
    filters = filters_from(args)
    if filters.until_ms is None:
        filters = Filters(**{**filters.__dict__, "until_ms": now_ms()})
    by = {"status": "statusCode", "project": "projectId"}.get(args.by, args.by)
    with open_engine(args.dir, args.rejected) as engine:
        report_scan(args.dir, len(engine.snapshot.files), engine.snapshot.size())
        histogram = engine.histogram(filters, max(1, args.intervals), by)
    print_lines(stats_chart(histogram, min(terminal_width(), 120)))
    return 0


def guarded(run: object, argv: Sequence[str], prog: str) -> int:
    try:
        return run(argv)  # type: ignore[operator]
    except (UsageError, SearchError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as error:
        print(f"{prog}: {error.args[0] if len(error.args) == 1 else error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main_search(argv: Sequence[str]) -> int:
    return guarded(run_search, argv, "drain-receiver search")


def main_stats(argv: Sequence[str]) -> int:
    return guarded(run_stats, argv, "drain-receiver stats")


def compact_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drain-receiver compact",
        description="Give every compressed file under DIR a Parquet twin, which searches read "
        "instead of the gzip (much faster); remove twins whose .gz is gone. The .gz files stay "
        "the archive: twins can be deleted at any time. `drain-receiver ui` (and the receiver's "
        "--ui) runs this with --watch by itself; otherwise run it beside the receiver or from cron.")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("DRAIN_DIR", DEFAULT_DIR)),
                        help="the receiver's --dir [env DRAIN_DIR] (default: %(default)s)")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="keep compacting, a pass every SECONDS, until SIGTERM or Ctrl-C")
    return parser


def run_compact(argv: Sequence[str]) -> int:
    from receiver.search.compact import run

    args = compact_parser().parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        raise UsageError("--watch must be a positive number of seconds")
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir} is not a directory (give the receiver's --dir)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args.dir, args.watch)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main_compact(argv: Sequence[str]) -> int:
    code = guarded(run_compact, argv, "drain-receiver compact")
    return 0 if code == 130 else code  # stopped by SIGTERM or Ctrl-C, as asked
