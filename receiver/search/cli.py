"""`drain-receiver search` and `drain-receiver stats`: parse the command line, print results.

Bad input (a time or status that does not parse, bad SQL, a missing directory) is one line on
stderr and exit 2. Records go to stdout; progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from receiver.search.bucket import ArchiveError
from receiver.search.engine import TABLE_COLUMNS, Engine, SearchError, engine_over, now_ms, open_engine
from receiver.search.filters import RELATIVE_UNITS, FilterError, Filters, check, parse_time
from receiver.search.follow import follow, start_tails
from receiver.search.output import results_table, sql_table, stats_chart
from receiver.search.snapshot import Snapshot, take_snapshot

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
    parser.add_argument("--dir", type=Path, default=Path(env["DRAIN_DIR"]) if env.get("DRAIN_DIR") else None,
                        help="the receiver's --dir: every partition, worker, rotated and compressed "
                        f"file under it is read [env DRAIN_DIR] (default: {DEFAULT_DIR}, or none "
                        "with --archive)")
    parser.add_argument("--rejected", action="store_true",
                        help="search the rejects (under DIR/rejected/, and the archive's) instead of "
                        "the records")
    archive = parser.add_argument_group(
        "archive", "Read the receiver's --archive too (instead of, or beside, --dir). The bucket is "
        "listed, objects outside --since/--until/--stream (by their key's stream=, date= and hour=) "
        "are skipped, and the others downloaded once into --cache-dir and read there; a file both "
        "in DIR and in the bucket (uploaded, not yet deleted) is read once. Credentials and region "
        "come from the standard AWS chain (AWS_* variables, AWS_PROFILE, a role). With --sql, "
        "--since/--until/--stream still choose the objects the view holds.")
    archive.add_argument("--archive", default=env.get("DRAIN_ARCHIVE", ""), metavar="s3://BUCKET/PREFIX",
                         help="the receiver's --archive [env DRAIN_ARCHIVE]")
    archive.add_argument("--archive-endpoint", default=env.get("DRAIN_ARCHIVE_ENDPOINT", ""), metavar="URL",
                         help="an S3-compatible store's URL (R2, MinIO...) [env DRAIN_ARCHIVE_ENDPOINT]")
    archive.add_argument("--cache-dir", type=Path, metavar="DIR",
                         help="where downloaded objects are kept, by key, for the next search; "
                         "delete it at any time (default: $XDG_CACHE_HOME/drain-receiver/archive)")
    archive.add_argument("--archive-slack", default="1h", metavar="DURATION",
                         help="objects cut more than this after --until are skipped: raise it when "
                         "records arrive later than that or --rotate-every is longer (default: 1h)")
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


def local_root(args: argparse.Namespace) -> Path | None:
    """The --dir to read: the one given, else the default one unless the archive is read."""
    if args.dir is not None:
        return args.dir
    return None if args.archive else Path(DEFAULT_DIR)


def parse_slack(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip(), re.IGNORECASE)
    if not match:
        raise UsageError(f"not a duration: --archive-slack {text!r} (use 30m, 1h, 2d)")
    return int(match.group(1)) * RELATIVE_UNITS[match.group(2).lower()] * 1000


@contextmanager
def open_search(args: argparse.Namespace, filters: Filters) -> Iterator[Engine]:
    """An Engine over --dir, the --archive objects the filters may need, or both."""
    root = local_root(args)
    if not args.archive:
        assert root is not None
        with open_engine(root, args.rejected) as engine:
            yield engine
        return
    from receiver.search.bucket import default_cache_dir, not_in_snapshot, open_bucket, open_cached, wanted

    slack_ms = parse_slack(args.archive_slack)
    bucket = open_bucket(args.archive, args.archive_endpoint or None, args.cache_dir or default_cache_dir())
    local = take_snapshot(root, args.rejected) if root is not None else Snapshot(bucket.cache_dir)
    with local:
        chosen = [obj for obj in bucket.list(args.rejected) if wanted(obj, filters, args.rejected, slack_ms)]
        chosen = not_in_snapshot(chosen, local)
        missing = [obj for obj in chosen if not bucket.cached(obj)]
        if missing and sys.stderr.isatty():
            print(f"downloading {len(missing)} of {len(chosen)} objects "
                  f"({sum(o.size for o in missing) / 1e6:.1f} MB) from {args.archive}…", file=sys.stderr)
        local.files.extend(open_cached([(obj, bucket.fetch(obj)) for obj in chosen]))
        with engine_over(local) as engine:
            yield engine


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
    root = local_root(args)
    if args.follow and root is None:
        raise UsageError("--follow prints new records as the receiver writes them: give its --dir "
                         "(the archive only holds finished files)")
    tails = start_tails(root, args.rejected) if args.follow and root is not None and root.is_dir() else None
    with open_search(args, filters) as engine:
        report_scan(engine.snapshot.root, len(engine.snapshot.files), engine.snapshot.size())
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
    print(f"following new records under {root} (Ctrl-C stops)", file=sys.stderr, flush=True)
    return follow(tails, filters, lambda new: write_records(new, fmt), {row[RAW] for row in rows})


def run_stats(argv: Sequence[str]) -> int:
    args = stats_parser().parse_args(argv)
    if args.since is None:
        args.since = "24h"
    filters = filters_from(args)
    if filters.until_ms is None:
        filters = Filters(**{**filters.__dict__, "until_ms": now_ms()})
    by = {"status": "statusCode", "project": "projectId"}.get(args.by, args.by)
    with open_search(args, filters) as engine:
        report_scan(engine.snapshot.root, len(engine.snapshot.files), engine.snapshot.size())
        histogram = engine.histogram(filters, max(1, args.intervals), by)
    print_lines(stats_chart(histogram, min(terminal_width(), 120)))
    return 0


def guarded(run: object, argv: Sequence[str], prog: str) -> int:
    try:
        return run(argv)  # type: ignore[operator]
    except (UsageError, SearchError, ArchiveError) as error:
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
