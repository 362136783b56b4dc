"""A fault-injecting HTTP proxy for the archive tests, in front of a real S3 API server.

`FaultProxy` runs in the test's process, on a loopback port the OS picks. It forwards every
request to the store as it came (the signature still matches: the Host header is kept) and
answers with the store's answer, unless a `Fault` added by the test matches the request first:

    error    answer `status` with an S3 error document (500 InternalError, 503 SlowDown)
    delay    wait `seconds`, then forward (the client has given up by then; the store still
             acts on the request, as a real one does)
    drop     read half of the body, then close the connection without an answer
    stall    read the body, then hold the connection open, unanswered, until `release()`
    corrupt  flip one byte of the body, then go on as for a forwarded request

Before forwarding, the proxy checks the body against the checksums the client sent with it
(`Content-MD5`, `x-amz-checksum-crc32`, a hex `X-Amz-Content-SHA256`), and refuses a mismatch
with 400 BadDigest, as AWS S3 does: moto's server stores what it gets without that check.

A fault applies to the next `times` matching requests (None: to every one until `clear()`),
where a request matches if its kind (see `kind_of`) is in `kinds` (empty: every kind).
`down()` stops listening (connections are refused, open ones are cut) and `up()` listens again
on the same port. Test support, not product: one request at a time per connection, bodies in
memory, no TLS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ERROR_CODES = {400: "BadDigest", 500: "InternalError", 503: "SlowDown"}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


@dataclass
class Fault:
    action: str  # "error", "delay", "drop", "stall" or "corrupt"
    kinds: frozenset[str] = frozenset()
    times: int | None = None
    status: int = 500
    seconds: float = 0.0


def kind_of(method: str, target: str) -> str:
    """The S3 operation a request is: PutObject, UploadPart, CreateMultipartUpload, ..."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = parts.path.strip("/").count("/") >= 1
    if method == "PUT" and "partNumber" in query:
        return "UploadPart"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and "uploads" in query:
        return "ListMultipartUploads"
    if method == "PUT" and has_key:
        return "PutObject"
    if method == "HEAD" and has_key:
        return "HeadObject"
    return f"{method} {'object' if has_key else 'bucket'}"


@dataclass
class FaultProxy:
    """Forwards to `upstream` (http://host:port), injecting the faults the test adds."""

    upstream: str
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (kind, action or "forwarded")
    _released: threading.Event = field(default_factory=threading.Event)
    _stalled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _connections: set[socket.socket] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        proxy = self

        class Handler(ProxyHandler):
            owner = proxy

        self._server = QuietServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection: the store is unreachable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        """Remove every fault and let stalled connections go (closed, unanswered)."""
        with self._lock:
            self.faults.clear()
        self.release()

    def release(self) -> None:
        self._released.set()

    def reset(self) -> None:
        self.clear()
        with self._lock:
            self.seen.clear()
            self._stalled = 0
        self._released = threading.Event()

    @property
    def stalled(self) -> int:
        return self._stalled

    def count(self, kind: str, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, a in self.seen if k == kind and (action is None or a == action))

    def wait_stalled(self, at_least: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._stalled < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self._stalled} requests stalled in {timeout} s, not {at_least}")
            time.sleep(0.05)

    def _take(self, kind: str) -> Fault | None:
        """The first fault matching `kind`, counted as used once."""
        with self._lock:
            for fault in self.faults:
                if fault.kinds and kind not in fault.kinds:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up, or a store stopped after its test: nothing to report."""


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered as boto3 asks
    owner: FaultProxy

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read `seen`."""

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _handle(self) -> None:
        kind = kind_of(self.command, self.path)
        fault = self.owner._take(kind)
        length = int(self.headers.get("Content-Length") or 0)
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            raise RuntimeError("the fault proxy reads Content-Length bodies only")
        if fault is not None and fault.action == "drop":
            self.rfile.read(length // 2)
            self._record(kind, "drop")
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self._record(kind, "cut short by the client")
            self.close_connection = True
            return
        if fault is not None and fault.action == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:] if body else body
        if fault is None or fault.action == "corrupt":
            problem = self._mismatch(body)
            if problem:
                self._record(kind, f"refused: {problem}")
                self._error(400)
                return
            self._record(kind, "forwarded")
            self._forward(body)
        elif fault.action == "error":
            self._record(kind, f"error {fault.status}")
            self._error(fault.status)
        elif fault.action == "delay":
            self._record(kind, "delay")
            time.sleep(fault.seconds)
            self._forward(body)
            self._record(kind, "delayed, then forwarded")
        elif fault.action == "stall":
            self._record(kind, "stall")
            with self.owner._lock:
                self.owner._stalled += 1
            self.owner._released.wait()
            self.close_connection = True
        else:
            raise ValueError(f"unknown fault action {fault.action!r}")

    def _mismatch(self, body: bytes) -> str | None:
        """Which checksum sent with `body` does not match it, if one does not."""
        md5 = self.headers.get("Content-MD5")
        if md5 and base64.b64decode(md5) != hashlib.md5(body).digest():
            return "Content-MD5"
        crc = self.headers.get("x-amz-checksum-crc32")
        if crc and base64.b64decode(crc) != zlib.crc32(body).to_bytes(4, "big"):
            return "x-amz-checksum-crc32"
        sha = self.headers.get("X-Amz-Content-SHA256", "")
        if len(sha) == 64 and sha != hashlib.sha256(body).hexdigest():
            return "X-Amz-Content-SHA256"
        return None

    def _record(self, kind: str, action: str) -> None:
        with self.owner._lock:
            self.owner.seen.append((kind, action))

    def _forward(self, body: bytes) -> None:
        upstream = urlsplit(self.owner.upstream)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_HEADERS}
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
        finally:
            connection.close()
        try:
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                    self.send_header(name, value)
            length = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
        except OSError:
            self.close_connection = True  # the client gave up (a delay past its timeout)

    def _error(self, status: int) -> None:
        code = ERROR_CODES.get(status, "InternalError")
        content = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                   f"<Message>injected by the test's fault proxy</Message></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)
        self.close_connection = True
