"""Where records go. A sink writes a whole batch or raises `SinkError`; it never half-succeeds."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Awaitable
from typing import Protocol

import orjson

from receiver.decode import Batch, Reject


class SinkError(Exception):
    """A sink could not write a batch; the message says why, for the operator's log."""


class Sink(Protocol):
    name: str

    def start(self) -> None:
        """Prepare to write (create directories, start background work)."""

    def write(self, batch: Batch) -> None:
        """Hand every record and reject of `batch` to the OS, or raise `SinkError`."""

    def synced(self) -> Awaitable[None] | None:
        """What a delivery awaits before its 200 so that what it wrote is on disk (`--fsync`),
        or None when `write` returning is enough."""

    def unready_reason(self) -> str | None:
        """None when the sink can write now, otherwise what is wrong."""

    def close(self) -> None:
        """Flush and release everything; called once at shutdown."""


def reject_line(reject: Reject, received_at: float | None = None) -> bytes:
    """A reject as one JSON line (no newline) that keeps its bytes exactly.

    The bytes go in `raw` as a JSON string when they are UTF-8, else base64 in `rawBase64`.
    """
    entry: dict[str, object] = {
        "rejectedAt": _utc_iso(time.time() if received_at is None else received_at),
        "reason": reject.reason,
    }
    try:
        entry["raw"] = reject.raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["rawBase64"] = base64.b64encode(reject.raw).decode("ascii")
    return orjson.dumps(entry)


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte of `data` is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _utc_iso(timestamp: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{seconds}.{int(timestamp % 1 * 1000):03d}Z"
