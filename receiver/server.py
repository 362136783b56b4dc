"""Running the app under uvicorn: one process, or a supervisor and `--workers` processes."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver import metrics
from receiver.app import create_app
from receiver.logs import client_host
from receiver.settings import WORKER_SETTINGS_ENV, Settings, settings_to_environment

HEADER_TIMEOUT_ENV = "DRAIN_HEADER_TIMEOUT"
SUPERVISOR_PID_ENV = "DRAIN_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1
MAX_HEADER_BYTES = 16 * 1024  # h11's limit, which this receiver had before
DRAIN_SECONDS = 5.0
DRAIN_MAX_BYTES = 64 * 1024 * 1024


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the two guards it lacks: a cap on the size of each
    request's headers, and a deadline for them.

    httptools (llhttp) rather than h11, and uvloop, for speed: 120k -> 166k records/s with
    httptools, 190k with uvloop too (bench, NDJSON, 100-record batches; bench/RESULTS.md).
    But httptools buffers request headers of any size until they end, where h11 refused them
    past 16 KiB. Here a request line and headers past `MAX_HEADER_BYTES` get a 431 (JSON, as
    every refusal) and the connection is closed: checked exactly once they are complete, and
    for every read while they are still arriving, so at most the cap plus one read is ever
    held. Chunked trailers (fields after the last chunk, which llhttp reports through
    `on_header`, and uvicorn added to the request's headers without limit: 50 MiB of them took
    1.2 GiB) are dropped and held to the same cap: the bytes between two pieces of body (chunk
    framing, then trailers) are counted read by read, and past the cap the request gets a 431
    too.

    uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
    not one that connects and then sends nothing, or sends its headers a byte at a time. Here a
    connection whose next request's headers are not complete within `--header-timeout` seconds
    of its start (or of its previous response) is closed. The body has its own limit in the app.
    A refusal sent before the body has arrived (413, 503 busy, 403...) to a client that asked
    for `Connection: close` was lost: uvicorn closed the socket with the body's rest unread,
    which makes the kernel answer with a reset that the client sees before the status. Here
    the answer is followed by a half-close (FIN), and the rest of the body is read and dropped
    until it ends, the client closes, `DRAIN_MAX_BYTES` have come or `DRAIN_SECONDS` passed.
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
        self._body_bytes_read = 0
        self._framing_bytes = 0
        self._drained_bytes: int | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _set_nodelay(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._drained_bytes is not None:
            self._drained_bytes += len(data)
            if self._drained_bytes > DRAIN_MAX_BYTES:
                self.transport.close()
                return
        events = self._parser_events
        self._body_bytes_read = 0
        in_body = not self._awaiting_headers
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._awaiting_headers and events == self._parser_events:  # all of `data` was headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_large_headers()
        elif in_body and events == self._parser_events:  # body, chunk framing and trailers
            if self._body_bytes_read:
                self._framing_bytes = 0
            self._framing_bytes += len(data) - self._body_bytes_read
            if self._framing_bytes > MAX_HEADER_BYTES:
                self._refuse_large_headers("request trailers")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._awaiting_headers:  # not a trailer: those are counted in data_received, dropped here
            super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self._body_bytes_read += len(body)
        super().on_body(body)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._parser_events += 1
        self._header_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEADER_BYTES:
            self._headers_too_large = True
            raise HeadersTooLarge  # stops httptools; uvicorn then calls send_400_response
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _CloseAfterTheBody(self.transport, self._close_after_the_body)

    def _close_after_the_body(self) -> None:
        """Close now if the request was read whole, else once the rest of its body is dropped."""
        if self._awaiting_headers or self.transport.is_closing():
            self.transport.close()
            return
        self._drained_bytes = 0
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            self.transport.write_eof()
        self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def on_message_complete(self) -> None:
        self._awaiting_headers = True
        self._framing_bytes = 0
        if self._drained_bytes is not None:
            self.transport.close()
            return
        self._parser_events += 1
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._refuse_large_headers()
        else:
            super().send_400_response(msg)

    def _refuse_large_headers(self, what: str = "request headers") -> None:
        message = f"{what} are larger than {MAX_HEADER_BYTES} bytes"
        self.logger.warning("refused a request from %s: %s", client_host(self.client), message)
        body = orjson.dumps({"code": "headers_too_large", "error": message})
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
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


class _CloseAfterTheBody:
    """The transport as a request's cycle sees it: closing it goes through the protocol."""

    def __init__(self, transport: Any, close: Callable[[], None]) -> None:
        self._transport = transport
        self.close = close

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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


def exit_with_supervisor() -> None:
    """In a `--workers` process: be sent SIGTERM when the supervisor dies, even by SIGKILL, so
    no orphan keeps the port (Linux `PR_SET_PDEATHSIG`; elsewhere workers outlive a killed
    supervisor). Runs when a worker imports this module, to unpickle `GuardedHttpProtocol`."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor is None or supervisor == str(os.getpid()) or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != supervisor:  # died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


exit_with_supervisor()


def serve(settings: Settings, log_config: dict[str, Any]) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown.

    With `--metrics-port`, this process serves /metrics there (with `--workers`, the supervisor,
    adding up every worker's numbers)."""
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
    with contextlib.ExitStack() as cleanup:
        if settings.workers > 1:
            runtime = Path(tempfile.mkdtemp(prefix="drain-receiver-"))
            cleanup.callback(shutil.rmtree, runtime, ignore_errors=True)
            (runtime / "metrics").mkdir()
            os.environ[metrics.MULTIPROC_ENV] = str(runtime / "metrics")
        if settings.metrics_port:
            listener = metrics.MetricsListener(settings.metrics_host or settings.host,
                                               settings.metrics_port)
            cleanup.callback(listener.close)
        if settings.workers == 1:
            uvicorn.run(create_app(settings), **options)
            return
        worker_settings = Settings(**{**settings.__dict__, "stdout_lock": runtime / "stdout.lock"})
        os.environ[WORKER_SETTINGS_ENV] = settings_to_environment(worker_settings)
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
        uvicorn.run("receiver.app:app_from_environment", factory=True, workers=settings.workers,
                    **options)
