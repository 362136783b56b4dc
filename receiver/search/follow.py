"""`search --follow`: new matching records as they are written, like `tail -f`, across rotation.

Every poll lists the data files again; each plain file not seen before is opened and kept
open, so its last lines are still read after the sink renames it (rotation) or removes it
(after compressing it). Each open file is read from where the previous poll stopped, up to its
last complete line; a file is known by its inode, so nothing is read twice. A file that is
created, rotated, compressed and removed within one poll interval (0.2 s) is not seen.
The new lines go through the same SQL filters as a search, in DuckDB.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from receiver.search.engine import TABLE_COLUMNS, records_sql
from receiver.search.filters import Filters, where_clause
from receiver.search.snapshot import PLAIN, list_data_files
from receiver.sinks.files import stream_of_file
from receiver.streams import LOGS

POLL_SECONDS = 0.2


@dataclass
class Tail:
    fd: int
    offset: int
    stream: str


@dataclass
class Tails:
    """The plain files being followed, by inode."""

    root: Path
    rejected: bool
    files: dict[tuple[int, int], Tail]

    def discover(self, at_end: bool) -> None:
        for candidates in list_data_files(self.root, self.rejected).values():
            if not candidates[0].name.endswith(PLAIN):
                continue
            try:
                fd = os.open(candidates[0], os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            stat = os.fstat(fd)
            inode = (stat.st_dev, stat.st_ino)
            if inode in self.files:
                os.close(fd)
                continue
            stream = stream_of_file(candidates[0].name) or LOGS
            self.files[inode] = Tail(fd, stat.st_size if at_end else 0, stream)

    def read(self) -> list[tuple[str, str]]:
        """Complete lines appended since the last read, each with its file's stream; files
        removed meanwhile are let go."""
        lines: list[tuple[str, str]] = []
        for inode, tail in list(self.files.items()):
            stat = os.fstat(tail.fd)
            if stat.st_size > tail.offset:
                data = os.pread(tail.fd, stat.st_size - tail.offset, tail.offset)
                end = data.rfind(b"\n") + 1
                tail.offset += end
                lines.extend((line.decode("utf-8", "replace"), tail.stream)
                             for line in data[:end].splitlines())
            if stat.st_nlink == 0 and stat.st_size <= tail.offset:
                os.close(tail.fd)
                del self.files[inode]
        return lines

    def close(self) -> None:
        for tail in self.files.values():
            with contextlib.suppress(OSError):
                os.close(tail.fd)
        self.files.clear()


def start_tails(root: Path, rejected: bool) -> Tails:
    """The files under `root`, to be followed from their current end."""
    tails = Tails(root, rejected, {})
    tails.discover(at_end=True)
    return tails


def matching(
    connection: duckdb.DuckDBPyConnection, lines: list[tuple[str, str]], filters: Filters
) -> list[tuple]:
    where, params = where_clause(filters)
    columns = ", ".join(f'"{c}"' for c in TABLE_COLUMNS)
    source = records_sql("SELECT unnest(?::VARCHAR[]) AS raw, unnest(?::VARCHAR[]) AS stream")
    sql = f"SELECT {columns} FROM ({source}) WHERE {where}"
    raws, streams = [raw for raw, _ in lines], [stream for _, stream in lines]
    return connection.execute(sql, [raws, streams, *params]).fetchall()


def follow(tails: Tails, filters: Filters, emit: Callable[[Sequence[tuple]], None],
           already_shown: set[str], poll: float = POLL_SECONDS) -> int:
    """Print matches of `filters` among records after `tails` began until interrupted; records
    in `already_shown` (the search's own results, which can overlap the first poll) are skipped."""
    raw = TABLE_COLUMNS.index("raw")
    connection = duckdb.connect()
    try:
        while True:
            tails.discover(at_end=False)
            lines = tails.read()
            if lines:
                rows = [r for r in matching(connection, lines, filters) if r[raw] not in already_shown]
                already_shown = set()
                if rows:
                    emit(rows)
            time.sleep(poll)
    except KeyboardInterrupt:
        return 0
    finally:
        connection.close()
        tails.close()
