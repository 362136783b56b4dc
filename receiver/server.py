"""Running the app under uvicorn: one process, or a supervisor and `--workers` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from receiver import metrics
from receiver.app import create_app
from receiver.settings import WORKER_SETTINGS_ENV, Settings, settings_to_environment

HEADER_TIMEOUT_ENV = "DRAIN_HEADER_TIMEOUT"


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request's headers.

    h11 even where httptools is installed: h11 refuses request headers over 16 KiB, httptools
    takes any size (the tests cover h11's behaviour). The loop is asyncio's even where uvloop
    is installed: with h11, uvloop gained nothing in the benchmark (113-116k records/s against
    121k) and made p99 worse (28-30 ms against 21 ms), so the same loop runs everywhere.

    uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
    not one that connects and then sends nothing, or sends its headers a byte at a time. Here a
    connection whose next request's headers are not complete within `--header-timeout` seconds
    of its start (or of its previous response) is closed. The body has its own limit in the app.
    The timeout comes from the environment because `--workers` hands uvicorn this class by
    reference, to be imported again in each worker process.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, "10"))
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _set_nodelay(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_overdue)

    def _headers_overdue(self) -> None:
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():
            self.transport.close()


def _set_nodelay(transport: Any) -> None:
    """Answers leave at once. asyncio sets TCP_NODELAY only on sockets it created itself; with
    `--workers`, uvicorn binds the socket, and each answer then waited for the peer's delayed
    ACK (bench: 2 workers, p50 44 ms -> 22 ms, 34k -> 67k records/s with it set)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(settings: Settings, log_config: dict[str, Any]) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown."""
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout)
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        limit_concurrency=settings.max_connections,
        http=HeaderDeadlineProtocol,
        loop="asyncio",
        server_header=False,
    )
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    runtime = Path(tempfile.mkdtemp(prefix="drain-receiver-"))
    try:
        (runtime / "metrics").mkdir()
        os.environ[metrics.MULTIPROC_ENV] = str(runtime / "metrics")
        worker_settings = Settings(**{**settings.__dict__, "stdout_lock": runtime / "stdout.lock"})
        os.environ[WORKER_SETTINGS_ENV] = settings_to_environment(worker_settings)
        uvicorn.run("receiver.app:app_from_environment", factory=True, workers=settings.workers,
                    **options)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
