"""The search page keeps answering while a query is slow, and stops a query nobody waits for.

Real `drain-receiver ui` processes over real files: one whose query is stuck (a data file that
is a FIFO nobody writes to: opening it blocks, as on a stalled disk), one whose query is slow
by size (a gzip file of many identical members: 9 MB on disk, 600 k records to read).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import REPO_ROOT, free_port

TOKEN = "ui-busy-token-0123456789abcdefghijklmnopqrstuv"
AUTH = {"authorization": f"Bearer {TOKEN}"}
LINES = [
    b'{"id":"1","timestamp":1796000000000,"level":"error","source":"lambda","message":"first"}',
    b'{"id":"2","timestamp":1796000001000,"level":"info","source":"edge","message":"second"}',
]
BIG_RECORDS = 600_000


@dataclass
class Ui:
    url: str
    port: int
    log: queue.Queue[tuple[float, str]]  # (time.monotonic(), line) of the UI's stderr


@contextlib.contextmanager
def running_ui(root: Path) -> Iterator[Ui]:
    port = free_port()
    env = {**os.environ, "DRAIN_UI_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "receiver", "ui", "--dir", str(root), "--port",
                                str(port), "--no-compact"], cwd=REPO_ROOT, env=env,
                               stderr=subprocess.PIPE)
    log: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            log.put((time.monotonic(), line.decode(errors="replace")))

    threading.Thread(target=read, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield Ui(url, port, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def in_background(call: object) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)  # type: ignore[operator]
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def stuck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ui, Path]]:
    """A UI over two records, and the directory to put a FIFO in."""
    root = tmp_path_factory.mktemp("stuck") / "data"
    (root / "2026-12-02").mkdir(parents=True)
    (root / "2026-12-02" / "logs.ndjson").write_bytes(b"\n".join(LINES) + b"\n")
    with running_ui(root) as ui:
        yield ui, root / "2026-12-02"


def test_the_page_files_and_a_second_search_answer_while_a_query_is_stuck(
    stuck: tuple[Ui, Path], tmp_path: Path,
) -> None:
    ui, partition = stuck
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.link(fifo, partition / "logs-stuck.ndjson")
    first, answer = in_background(lambda: httpx.get(ui.url + "/api/search", headers=AUTH, timeout=60))
    try:
        time.sleep(0.5)
        assert first.is_alive(), "the first search should be stuck opening the FIFO"
        page = httpx.get(ui.url + "/", timeout=5)
        assert page.status_code == 200 and b"<title>Drain search</title>" in page.content
        script = httpx.get(ui.url + "/static/app.js", timeout=5)
        assert script.status_code == 200 and b"AbortController" in script.content
        os.unlink(partition / "logs-stuck.ndjson")
        second = httpx.get(ui.url + "/api/search", headers=AUTH, timeout=5)
        assert second.content == b'{"records":[' + LINES[1] + b"," + LINES[0] + b"]}"
        histogram = httpx.get(ui.url + "/api/histogram", headers=AUTH, params={"buckets": "2"}, timeout=5)
        assert sorted(n for _, _, n in histogram.json()["counts"]) == [1, 1]
        assert first.is_alive(), "the first search was answered before it could be"
    finally:
        deadline = time.monotonic() + 60
        while first.is_alive() and time.monotonic() < deadline:  # each open of the FIFO blocks
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.02)
    first.join()
    response = answer[0]
    assert isinstance(response, httpx.Response)
    assert response.content == b'{"records":[' + LINES[1] + b"," + LINES[0] + b"]}"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """A UI over 600 k records in one gzip file of identical members."""
    partition = tmp_path_factory.mktemp("slow") / "data" / "2026-12-02"
    partition.mkdir(parents=True)
    lines = b"".join(json.dumps({
        "id": str(n), "timestamp": 1796000000000 + n, "level": "info", "source": "lambda",
        "message": f"request {n} handled in {n % 97} ms " + "x" * 200, "path": f"/api/{n}",
    }).encode() + b"\n" for n in range(5000))
    member = gzip.compress(lines, 1)
    with open(partition / "logs-20261202T000000.000000Z.ndjson.gz", "wb") as out:
        for _ in range(BIG_RECORDS // 5000):
            out.write(member)
    with running_ui(partition.parent) as ui:
        yield ui


def stopped_lines(ui: Ui, path: str, seconds: float) -> list[float]:
    """When the UI logged stopping a query of `path`, over the next `seconds`."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            at, line = ui.log.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if f"stopped a query of {path}" in line:
            found.append(at)
    return found


def test_a_query_whose_client_left_is_stopped_at_once(slow: Ui) -> None:
    started = time.monotonic()
    whole = httpx.get(slow.url + "/api/histogram", headers=AUTH, params={"q": "no such text"},
                      timeout=300)
    full_seconds = time.monotonic() - started
    assert whole.status_code == 200 and whole.json()["counts"] == []
    assert full_seconds > 1.0, "the data is too small to make the query slow"

    with socket.create_connection(("127.0.0.1", slow.port)) as client:
        client.sendall(b"GET /api/histogram?q=nothing+like+it HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        time.sleep(min(0.5, full_seconds / 4))
    left = time.monotonic()
    stops = stopped_lines(slow, "/api/histogram", full_seconds)
    assert stops, "the query of a client that left was not stopped"
    assert stops[0] - left < full_seconds / 3, (
        f"stopped {stops[0] - left:.2f} s after the client left; the whole query takes {full_seconds:.2f} s")

    after = httpx.get(slow.url + "/api/search", headers=AUTH, params={"q": "request 4999 "}, timeout=300)
    assert after.status_code == 200
    assert {r["id"] for r in after.json()["records"]} == {"4999"}
