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
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver import metrics
from receiver.app import create_app
from receiver.logs import client_host
from receiver.settings import WORKER_SETTINGS_ENV, Settings, settings_to_environment

HEADER_TIMEOUT_ENV = "DRAIN_HEADER_TIMEOUT"
MAX_HEADER_BYTES = 16 * 1024  # h11's limit, which this receiver had before


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the two guards it lacks: a cap on the size of each
    request's headers, and a deadline for them.

    httptools (llhttp) rather than h11, and uvloop, for speed: 120k -> 166k records/s with
    httptools, 190k with uvloop too (bench, NDJSON, 100-record batches; bench/RESULTS.md).
    But httptools buffers request headers of any size until they end, where h11 refused them
    past 16 KiB. Here a request line and headers past `MAX_HEADER_BYTES` get a 431 and the
    connection is closed: checked exactly once they are complete, and for every read while
    they are still arriving, so at most the cap plus one read is ever held.

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
        self._awaiting_headers = True
        self._header_bytes = 0
        self._parser_events = 0
        self._headers_too_large = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _set_nodelay(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        events = self._parser_events
        super().data_received(data)
        if self._awaiting_headers and events == self._parser_events:  # all of `data` was headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self._refuse_large_headers()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._parser_events += 1
        self._header_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEADER_BYTES:
            self._headers_too_large = True
            raise HeadersTooLarge  # stops httptools; uvicorn then calls send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_headers = True
        self._parser_events += 1
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._refuse_large_headers()
        else:
            super().send_400_response(msg)

    def _refuse_large_headers(self) -> None:
        message = f"request headers are larger than {MAX_HEADER_BYTES} bytes"
        self.logger.warning("refused a request from %s: %s", client_host(self.client), message)
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(message), message.encode()))
        self.transport.close()

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


class HeadersTooLarge(Exception):
    """Raised inside the parser's callback to stop it; answered with a 431."""


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
    if settings.ui:
        from receiver.search.web_cli import start_ui_alongside

        start_ui_alongside(settings.dir)
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        limit_concurrency=settings.max_connections,
        http=GuardedHttpProtocol,
        loop="auto",
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
