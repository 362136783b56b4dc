"""Parquet twins of compressed files: the columnar copy a search reads instead of the gzip.

`X.ndjson.gz` gets `X.ndjson.v2.parquet`: one row per record, the `logs` view's columns (the
record's fields, `message_lower`, `stream`, and `raw`, the exact line), sorted by timestamp so a
time filter skips whole row groups. A twin is written to `X.ndjson.v2.parquet.partial` and
renamed when complete, so a search never sees half of one. The `.gz` stays the archive; a twin
is a cache that may be deleted at any time, and one whose `.gz` is gone (retention) is never
read and is removed by the next pass. `v2` names the column set (v1 had no `message_lower`):
change the columns and bump it, and old twins are orphans, removed (and written anew).

This runs in its own process (`drain-receiver compact`, started by `drain-receiver ui`), at
the lowest CPU priority and with one DuckDB thread: never in the receiver's process, never on
the delivery path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from receiver.search.child import start_child
from receiver.search.engine import CSV_OPTIONS, records_sql, sql_string
from receiver.search.snapshot import COMPRESSED, PARTIAL_TWIN, TWIN
from receiver.sinks.files import stream_of_file
from receiver.streams import LOGS

log = logging.getLogger("receiver.compact")

ROW_GROUP_ROWS = 100_000
MEMORY_LIMIT = "1GB"
STALE_PARTIAL_SECONDS = 3600
WATCH_SECONDS = 30.0
PARENT_ENV = "DRAIN_COMPACT_PARENT"
OLD_TWIN = re.compile(r"\.ndjson\.v\d+\.parquet(\.partial)?$")


@dataclass(frozen=True)
class Pass:
    """What one pass did."""

    written: list[Path]
    removed: list[Path]
    failed: list[Path]


def twin_of(compressed: Path) -> Path:
    return compressed.with_name(compressed.name[: -len(COMPRESSED)] + TWIN)


def compressed_of(twin: Path) -> Path:
    return twin.with_name(twin.name[: -len(TWIN)] + COMPRESSED)


def walk_names(root: Path) -> Iterator[tuple[Path, list[str]]]:
    for directory, _, names in os.walk(root):
        yield Path(directory), names


def is_stale(directory: Path, name: str, present: set[str]) -> bool:
    """A twin whose `.gz` is gone, a twin of an older column set, or a temp file left by a
    pass that stopped (older than STALE_PARTIAL_SECONDS, so not another compactor's)."""
    if name.endswith(TWIN):
        return compressed_of(directory / name).name not in present
    if name.endswith(PARTIAL_TWIN):
        with contextlib.suppress(FileNotFoundError):
            return os.stat(directory / name).st_mtime < time.time() - STALE_PARTIAL_SECONDS
        return False
    return OLD_TWIN.search(name) is not None


def connect(threads: int = 1) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"threads": threads, "memory_limit": MEMORY_LIMIT,
                                  "preserve_insertion_order": False})


def write_twin(connection: duckdb.DuckDBPyConnection, compressed: Path) -> Path:
    """Write the twin of `compressed` (temp name, then rename); returns its path."""
    twin = twin_of(compressed)
    partial = twin.with_name(twin.name[: -len(TWIN)] + PARTIAL_TWIN)
    stream = stream_of_file(compressed.name) or LOGS
    lines = (f"SELECT raw, {sql_string(stream)} AS stream FROM read_csv({sql_string(str(compressed))}, "
             f"compression='gzip', {CSV_OPTIONS})")
    try:
        connection.execute(
            f"COPY (SELECT * FROM ({records_sql(lines)}) ORDER BY timestamp NULLS FIRST) "
            f"TO {sql_string(str(partial))} "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        os.chmod(partial, stat.S_IMODE(os.stat(compressed).st_mode))  # as private as the archive
        os.replace(partial, twin)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return twin


def compact(root: Path, connection: duckdb.DuckDBPyConnection | None = None) -> Pass:
    """Write a twin for every `.gz` under `root` that has none; remove twins without a `.gz`
    and temp files a stopped pass left."""
    own = connection is None
    connection = connection or connect()
    written: list[Path] = []
    removed: list[Path] = []
    failed: list[Path] = []
    try:
        for directory, names in walk_names(root):
            present = set(names)
            for name in sorted(names):
                path = directory / name
                if name.endswith(COMPRESSED) and twin_of(path).name not in present:
                    try:
                        written.append(write_twin(connection, path))
                    except (duckdb.Error, OSError) as error:
                        if path.exists():  # else retention took it meanwhile
                            log.error("cannot compact %s (searched as gzip): %s", path,
                                      str(error).splitlines()[0])
                            failed.append(path)
                elif is_stale(directory, name, present):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
    finally:
        if own:
            connection.close()
    return Pass(written, removed, failed)


def run(root: Path, watch_seconds: float | None) -> int:
    """One pass, or (with `watch_seconds`) a pass every so often until SIGTERM or Ctrl-C; at
    the lowest CPU priority (DuckDB's threads, started after, inherit it)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    connection = connect()
    try:
        while True:
            done = compact(root, connection)
            log.info("compacted %d files under %s (%d stale twins removed, %d failed)",
                     len(done.written), root, len(done.removed), len(done.failed))
            if watch_seconds is None:
                return 1 if done.failed else 0
            if not wait_for_parent(watch_seconds):
                return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:  # DuckDB's form of a KeyboardInterrupt during a query
        if "interrupted" not in str(error):
            raise
        return 0
    finally:
        connection.close()


def wait_for_parent(seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the process that started this one alongside itself
    (PARENT_ENV) is gone, even killed by SIGKILL, so no compactor outlives its page."""
    parent = os.environ.get(PARENT_ENV)
    deadline = time.monotonic() + seconds
    while True:
        if parent is not None and str(os.getppid()) != parent:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(1.0, left))


def start_alongside(root: Path) -> subprocess.Popen[bytes]:
    """`drain-receiver compact --watch` as a child process, stopped when this one exits."""
    return start_child(["compact", "--dir", str(root), "--watch", str(WATCH_SECONDS)],
                       f"compactor over {root}", env={**os.environ, PARENT_ENV: str(os.getpid())})
