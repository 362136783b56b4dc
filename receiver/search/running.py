"""The page's queries off the event loop: a bounded set of worker threads, and a query whose
client went away (the page aborts a search a newer one replaces) interrupted at once.

DuckDB holds the GIL only between its own steps, so while queries run in threads the event loop
keeps answering the page, its static files and other searches. At most QUERY_SLOTS queries run
at once (each with DuckDB's own threads); more wait for a slot, and one whose client leaves
while it waits never starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import duckdb
from starlette.requests import Request

from receiver.search.engine import Engine, open_engine

log = logging.getLogger("receiver.ui")

QUERY_SLOTS = 4
WATCH_SECONDS = 0.05
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before its query finished; nobody wants the answer."""


@dataclass
class Interrupter:
    """Interrupts one query's DuckDB connection, once that connection exists."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: bool = False
    connection: duckdb.DuckDBPyConnection | None = None

    def attach(self, connection: duckdb.DuckDBPyConnection | None) -> None:
        """Called in the worker thread before the query (`None` after it, before the close)."""
        with self.lock:
            if connection is not None and self.cancelled:
                raise ClientGone()
            self.connection = connection

    def interrupt(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.connection is not None:
                self.connection.interrupt()


@dataclass
class QueryRunner:
    """Runs a query over a fresh snapshot of `root` in a worker thread for one request."""

    root: Path
    slots: int = QUERY_SLOTS
    _limiter: anyio.CapacityLimiter | None = None

    async def run(self, request: Request, query: Callable[[Engine], T]) -> T:
        """`query(engine)`'s result; ClientGone if the client left first (its query is then
        interrupted, or never started)."""
        if self._limiter is None:  # made here: it needs the running event loop
            self._limiter = anyio.CapacityLimiter(self.slots)
        interrupter = Interrupter()
        started = time.monotonic()

        def work() -> T:
            with open_engine(self.root) as engine:
                interrupter.attach(engine.connection)
                try:
                    return query(engine)
                finally:
                    interrupter.attach(None)

        async def watch() -> None:
            while not await request.is_disconnected():
                await anyio.sleep(WATCH_SECONDS)
            while True:  # again and again: an interrupt just before a query starts is lost
                interrupter.interrupt()
                await anyio.sleep(WATCH_SECONDS)

        failure: Exception | None = None
        async with anyio.create_task_group() as group:  # errors kept out: it would wrap them
            group.start_soon(watch)
            try:
                result = await anyio.to_thread.run_sync(work, limiter=self._limiter)
            except Exception as error:
                failure = error
            finally:
                group.cancel_scope.cancel()
        if interrupter.cancelled or isinstance(failure, duckdb.InterruptException):
            log.info("stopped a query of %s after %.1f s: its client left", request.url.path,
                     time.monotonic() - started)
            raise ClientGone()
        if failure is not None:
            raise failure
        return result
