"""The filters of a search, as the command line and the web API give them, and their SQL.

Every filter is a list of values: values of one filter are ORed, different filters ANDed.
`--status`, `--host` and `--path` match the record's top-level field or its `proxy.` one.
A filter is turned into a SQL condition over the `logs` view with `?` parameters, never by
pasting a value into the SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime

RELATIVE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
STATUS_PATTERN = re.compile(r"(\d)xx|(-?\d+)(?:-(\d+))?", re.IGNORECASE)


class FilterError(ValueError):
    """A filter value that does not parse; the message says what to write instead."""


@dataclass(frozen=True)
class Filters:
    """What to look for. Times are Unix milliseconds, matched against the record's `timestamp`."""

    text: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    project: tuple[str, ...] = ()
    deployment: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    level: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    request_id: tuple[str, ...] = ()
    branch: tuple[str, ...] = ()
    stream: tuple[str, ...] = ()


# filter name -> the view's column(s) it matches (any of them)
EQUALITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "project": ("projectId", "projectName"),
    "deployment": ("deploymentId",),
    "env": ("environment",),
    "source": ("source",),
    "level": ("level",),
    "request_id": ("requestId",),
    "branch": ("branch",),
    "host": ("host", "proxy_host"),
    "path": ("path", "proxy_path"),
    "stream": ("stream",),
}
LIST_FILTERS = tuple(f.name for f in fields(Filters) if f.name not in ("since_ms", "until_ms"))


def parse_time(text: str, now_ms: int) -> int:
    """`15m`, `1h`, `7d` (before now), `2026-12-01T10:00Z`, `2026-12-01` or Unix ms -> Unix ms."""
    value = text.strip()
    match = re.fullmatch(r"(\d+)\s*([smhdw])", value, re.IGNORECASE)
    if match:
        return now_ms - int(match.group(1)) * RELATIVE_UNITS[match.group(2).lower()] * 1000
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise FilterError(
            f"not a time: {text!r} (use 15m, 1h, 7d, or 2026-12-01T10:00Z; times without a zone are UTC)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def status_range(text: str) -> tuple[int, int]:
    """`5xx` -> (500, 599), `404` -> (404, 404), `200-299` -> (200, 299), `-1` -> (-1, -1)."""
    match = STATUS_PATTERN.fullmatch(text.strip())
    if not match:
        raise FilterError(f"not a status: {text!r} (use 5xx, 404, 200-299 or -1)")
    if match.group(1):
        low = int(match.group(1)) * 100
        return low, low + 99
    low = int(match.group(2))
    high = int(match.group(3)) if match.group(3) else low
    if high < low:
        raise FilterError(f"not a status range: {text!r} (the low end comes first)")
    return low, high


def check(filters: Filters) -> Filters:
    """The filters if every value parses; FilterError otherwise."""
    for value in filters.status:
        status_range(value)
    return filters


def where_clause(filters: Filters) -> tuple[str, list[object]]:
    """`filters` as one SQL condition over the `logs` view and its parameters."""
    conditions: list[str] = []
    params: list[object] = []
    if filters.since_ms is not None:
        conditions.append("timestamp >= ?")
        params.append(filters.since_ms)
    if filters.until_ms is not None:
        conditions.append("timestamp < ?")
        params.append(filters.until_ms)
    if filters.text:
        conditions.append("(" + " OR ".join("contains(message_lower, lower(?))" for _ in filters.text) + ")")
        params.extend(filters.text)
    for name, columns in EQUALITY_COLUMNS.items():
        values: tuple[str, ...] = getattr(filters, name)
        if not values:
            continue
        options = []
        for value in values:
            for column in columns:
                if "*" in value:
                    options.append(f"{column} GLOB ?")
                else:
                    options.append(f"{column} = ?")
                params.append(value)
        conditions.append("(" + " OR ".join(options) + ")")
    if filters.status:
        options = []
        for value in filters.status:
            low, high = status_range(value)
            options.append("(statusCode BETWEEN ? AND ? OR proxy_statusCode BETWEEN ? AND ?)")
            params.extend((low, high, low, high))
        conditions.append("(" + " OR ".join(options) + ")")
    return (" AND ".join(conditions) or "TRUE"), params
