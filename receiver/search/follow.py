"""`search --follow`: new matching records as they are written, like `tail -f`, across rotation.

Every poll lists the data files again and reads each file from where the previous poll stopped,
up to its last complete line; a file is known by its inode, so a rotated file (renamed) keeps
its offset, a compressed copy of a known file is skipped, and a new active file starts at 0.
The new lines go through the same SQL filters as a search, in DuckDB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from receiver.search.engine import TABLE_COLUMNS, records_sql
from receiver.search.filters import Filters, where_clause
from receiver.search.snapshot import list_data_files

POLL_SECONDS = 0.2
READ_CHUNK = 16 * 1024 * 1024


def known_offsets(root: Path, rejected: bool) -> dict[tuple[int, int], int]:
    """Where each plain file ends now (at its last newline): following starts there."""
    offsets: dict[tuple[int, int], int] = {}
    for candidates in list_data_files(root, rejected).values():
        for path in candidates:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            offsets[(stat.st_dev, stat.st_ino)] = stat.st_size
            break
    return offsets


def new_lines(root: Path, rejected: bool, offsets: dict[tuple[int, int], int]) -> list[str]:
    """Complete lines appended to plain files since `offsets`; updates `offsets`."""
    lines: list[str] = []
    for candidates in list_data_files(root, rejected).values():
        plain = candidates[0]
        if plain.name.endswith(".gz"):
            continue  # only compressed: its lines were read when it was plain (or before we began)
        try:
            fd = os.open(plain, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            stat = os.fstat(fd)
            inode = (stat.st_dev, stat.st_ino)
            start = offsets.get(inode, 0)
            if stat.st_size <= start:
                offsets.setdefault(inode, start)
                continue
            data = os.pread(fd, stat.st_size - start, start)
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1
        offsets[inode] = start + end
        lines.extend(line.decode("utf-8", "replace") for line in data[:end].splitlines())
    return lines


def matching(connection: duckdb.DuckDBPyConnection, lines: list[str], filters: Filters) -> list[tuple]:
    where, params = where_clause(filters)
    columns = ", ".join(f'"{c}"' for c in TABLE_COLUMNS)
    source = records_sql("SELECT unnest(?::VARCHAR[]) AS raw")
    sql = f"SELECT {columns} FROM ({source}) WHERE {where}"
    return connection.execute(sql, [lines, *params]).fetchall()


def follow(root: Path, filters: Filters, rejected: bool, emit: Callable[[Sequence[tuple]], None],
           offsets: dict[tuple[int, int], int], already_shown: set[str], poll: float = POLL_SECONDS) -> int:
    """Print matches of `filters` among records after `offsets` until interrupted; records in
    `already_shown` (the search's own results, which can overlap the first poll) are skipped."""
    raw = TABLE_COLUMNS.index("raw")
    connection = duckdb.connect()
    try:
        while True:
            lines = new_lines(root, rejected, offsets)
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
