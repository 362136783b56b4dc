"""End to end, issue 16: what an unauthenticated client could make the receiver do, with the
default limits (32 MiB bodies, 256 MiB inflated)."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Receiver, running_receiver, sign

SECRET = "hardening-secret-0123456789abcdefghijklm"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("hardening")
    args = ["--sink", "file", "--dir", str(workdir / "data")]
    with running_receiver(workdir, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        yield receiver


def peak_rss_bytes(receiver: Receiver) -> int:
    status = Path(f"/proc/{receiver.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def zeros_bomb(inflated_bytes: int) -> bytes:
    """Gzip members of 64 MiB of zeros each, ~1000x smaller than what they inflate to."""
    member = gzip.compress(b"\0" * (64 << 20), 9)
    return member * (inflated_bytes // (64 << 20))


def test_a_gzip_bomb_with_a_wrong_signature_is_403_without_inflating_far(server: Receiver) -> None:
    wire = zeros_bomb(10 << 30)  # 10 GiB of zeros in ~10 MB
    peak_before = peak_rss_bytes(server)
    started = time.monotonic()
    response = server.post(wire, None, content_encoding="gzip", x_vercel_signature=sign(wire, "wrong"))
    elapsed = time.monotonic() - started
    assert response.status_code == 403, response.text
    assert response.json() == {"code": "invalid_signature", "error": "signature didn't match"}
    assert elapsed < 3
    assert peak_rss_bytes(server) - peak_before < 80 << 20, "the bomb was inflated and held"


def raw_request(server: Receiver, data: bytes, read_timeout: float = 10) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.settimeout(read_timeout)
        conn.sendall(data)
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply


def json_body(reply: bytes) -> dict[str, object]:
    return json.loads(reply.partition(b"\r\n\r\n")[2])


def test_chunked_trailers_past_the_header_cap_are_431_and_not_held(server: Receiver) -> None:
    """Issue 16.1: 50 MiB of trailer fields after the last chunk took the RSS to 1.2 GiB."""
    peak_before = peak_rss_bytes(server)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.settimeout(10)
        conn.sendall(head)
        sent = 0
        try:
            while sent < 50 << 20:
                conn.sendall(b"a:b\r\n" * 20_000)
                sent += 100_000
        except OSError:
            pass  # refused and closed mid-way, as it should be
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b"request trailers are larger than 16384 bytes" in reply
    assert sent < 10 << 20, "the receiver kept reading trailers"
    assert peak_rss_bytes(server) - peak_before < 30 << 20


def test_small_trailers_are_accepted_and_not_taken_for_headers(server: Receiver) -> None:
    body = b'{"id":"t1"}\n'
    signature = sign(body, SECRET).encode()
    reply = raw_request(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                        b"Connection: close\r\nx-vercel-signature: %s\r\n\r\n%x\r\n%s\r\n0\r\n"
                        b"x-vercel-signature: 00\r\nx-note: 1\r\n\r\n" % (signature, len(body), body))
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert json_body(reply) == {"accepted": 1, "rejected": 0}


@pytest.fixture(scope="module")
def small_bodies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("small-bodies")
    with running_receiver(workdir, ["--max-body-bytes", "1MiB"], env={"DRAIN_SECRET": SECRET}) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("small-budget")
    args = ["--max-inflight-bytes", "512KiB"]
    with running_receiver(workdir, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        yield receiver


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(("limited", "status", "hint"), [
    ("small_bodies", 413, b"raise --max-body-bytes"),
    ("small_budget", 503, b"too many bytes in flight; retry later"),
])
def test_an_early_refusal_reaches_a_client_that_asked_to_close(
    request: pytest.FixtureRequest, limited: str, framing: str, status: int, hint: bytes
) -> None:
    """Issue 16.5: with `Connection: close` and the body still coming, the refusal was lost to a reset."""
    receiver: Receiver = request.getfixturevalue(limited)
    body = b" " * (8 << 20)
    if framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in [body[i : i + 65536]
                        for i in range(0, len(body), 65536)]) + b"0\r\n\r\n"
    else:
        head = b"Content-Length: %d\r\n" % len(body)
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-vercel-signature: " + b"0" * 40
               + b"\r\n" + head + b"\r\n" + body)
    host, port = receiver.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.settimeout(10)
        sender = threading.Thread(target=lambda: _send_ignoring_errors(conn, request))
        sender.start()
        reply = b""
        while chunk := conn.recv(65536):  # a reset here is the bug: raises ConnectionResetError
            reply += chunk
        sender.join(10)
    head = reply.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 %d" % status), reply[:200]
    assert json_body(reply)["code"] == {413: "body_too_large", 503: "busy"}[status]
    assert hint in reply
    assert (b"retry-after: 5" in head) == (status == 503)


def _send_ignoring_errors(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)
