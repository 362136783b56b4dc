"""End to end: several workers, metrics, dedupe, hostile clients, JSON logs."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from receiver.dedupe import RecentIds
from tests.support import Receiver, running_receiver, sign

SECRET = "production-secret-0123456789abcdefghijk"


def batch(ids: range, message_bytes: int = 300) -> bytes:
    return b"".join(
        json.dumps({"id": str(i), "source": "lambda", "message": "x" * message_bytes}).encode() + b"\n"
        for i in ids
    )


def metric(page: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", page, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def lines_under(root: Path) -> list[bytes]:
    """Every record line in the active and rotated files under `root` (rejects aside)."""
    lines: list[bytes] = []
    for path in sorted(root.glob("logs/2*/*.ndjson*")):
        if path.name.endswith((".ndjson", ".ndjson.gz")):
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            lines.extend(data.splitlines())
    return lines


def wait_for_compression(root: Path) -> None:
    """Until no rotated file waits for compression (active files are logs.ndjson, logs-wN.ndjson)."""
    deadline = time.monotonic() + 20
    while any(not re.fullmatch(r"logs(-w\d+)?\.ndjson", path.name) for path in root.glob("logs/2*/*.ndjson")):
        assert time.monotonic() < deadline, "rotated files were not compressed"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("workers")
    args = ["--workers", "2", "--sink", "file,stdout", "--dir", str(workdir / "data"),
            "--max-file-bytes", "256KiB"]
    with running_receiver(workdir, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        wait_for_both_workers(workdir / "data")
        yield receiver


def wait_for_both_workers(data: Path) -> None:
    """`running_receiver` returns once one worker answers; on a loaded machine the second may
    start much later, and every connection of a test would go to the first."""
    locks = {".worker-0.lock", ".worker-1.lock"}
    deadline = time.monotonic() + 60
    while {path.name for path in data.glob(".worker-*.lock")} != locks:
        assert time.monotonic() < deadline, "the second worker did not start within 60 s"
        time.sleep(0.05)


def test_two_workers_never_interleave_lose_or_duplicate_records(two_workers: Receiver) -> None:
    acknowledged: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            for b in range(15):
                ids = range((n * 100 + b) * 100, (n * 100 + b + 1) * 100)
                body = batch(ids, message_bytes=2000)
                response = http.post(two_workers.url + "/", content=body,
                                     headers={"x-vercel-signature": sign(body, SECRET)})
                assert response.status_code == 200
                with lock:
                    acknowledged.extend(str(i) for i in ids)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    data = two_workers.stdout_path.parent / "data"
    wait_for_compression(data)
    in_files = [json.loads(line)["id"] for line in lines_under(data)]
    in_stdout = [json.loads(line)["id"] for line in two_workers.stdout().splitlines()]
    assert sorted(in_files) == sorted(acknowledged)
    assert sorted(in_stdout) == sorted(acknowledged)
    assert {path.name for path in data.glob(".worker-*.lock")} == {".worker-0.lock", ".worker-1.lock"}
    names = {path.name for path in data.glob("logs/2*/*.ndjson")}
    assert names and names <= {"logs.ndjson", "logs-w1.ndjson"}, "each worker writes its own file"
    rotated = [path.name for path in data.glob("logs/2*/*.ndjson.gz")]
    assert rotated and all(re.match(r"logs(-w1)?-\d{8}T\d{6}\.\d{6}Z", name) for name in rotated)


def test_metrics_add_up_across_workers(two_workers: Receiver) -> None:
    def scrape() -> str:
        response = httpx.get(two_workers.url + "/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    sent_wire = 0
    with httpx.Client() as http:  # new connections, so both workers take some
        for n in range(20):
            body = batch(range(10_000_000 + n * 5, 10_000_000 + n * 5 + 5)) + b"not json\n"
            sent_wire += len(body)
            http.post(two_workers.url + "/", content=body,
                      headers={"x-vercel-signature": sign(body, SECRET), "connection": "close"})
        for _ in range(3):
            http.post(two_workers.url + "/", content=b"[]", headers={"x-vercel-signature": "0" * 40})
        http.post(two_workers.url + "/", content=b"[]")
    for _ in range(4):  # whichever worker answers, the totals are the same
        after = scrape()

        def grew(name: str, labels: str = "") -> float:
            return metric(after, name, labels) - metric(before, name, labels)  # noqa: B023

        assert grew("drain_records_accepted_total", '{stream="logs"}') == 100
        assert grew("drain_records_rejected_total", '{stream="logs"}') == 20
        assert grew("drain_received_bytes_total", '{stage="wire"}') == sent_wire + 4 * len(b"[]")
        assert grew("drain_deliveries_total", '{status="200"}') == 20
        assert grew("drain_signature_failures_total", '{reason="invalid"}') == 3
        assert grew("drain_signature_failures_total", '{reason="missing"}') == 1
        assert metric(after, "drain_request_duration_seconds_count") >= 24
        assert metric(after, "drain_active_file_bytes") > 0
        assert abs(metric(after, "drain_last_write_timestamp_seconds") - time.time()) < 60


def test_sigterm_stops_every_worker_cleanly(tmp_path: Path) -> None:
    with running_receiver(tmp_path, ["--workers", "2"], env={"DRAIN_SECRET": SECRET}) as receiver:
        assert receiver.post(batch(range(3)), SECRET).status_code == 200
        assert receiver.stop() == 0
    assert receiver.stderr().count("sinks flushed and closed") == 2


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """Issue 16.7: orphaned workers kept the port, and a restart failed with "Address in use"."""
    with running_receiver(tmp_path / "first", ["--workers", "2"], env={"DRAIN_SECRET": SECRET}) as first:
        workers = children(first.process.pid)
        assert len(workers) >= 2
        first.stop(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), "workers outlived their supervisor"
    port = int(first.url.rsplit(":", 1)[1])
    with running_receiver(tmp_path / "second", ["--workers", "2"], env={"DRAIN_SECRET": SECRET},
                          port=port) as second:
        assert second.post(batch(range(2)), SECRET).json() == {"accepted": 2, "rejected": 0}


def test_dedupe_window_drops_redelivered_records(tmp_path: Path) -> None:
    args = ["--dedupe-window", "60", "--sink", "file", "--dir", str(tmp_path / "data")]
    with running_receiver(tmp_path, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        first = batch(range(10))
        assert receiver.post(first, SECRET).json() == {"accepted": 10, "rejected": 0}
        again = batch(range(5, 15))
        assert receiver.post(again, SECRET).json() == {"accepted": 5, "rejected": 0, "duplicates": 5}
        ids = [json.loads(line)["id"] for line in lines_under(tmp_path / "data")]
        assert ids == [str(i) for i in range(15)]
        page = httpx.get(receiver.url + "/metrics").text
        assert metric(page, "drain_duplicate_records_dropped_total") == 5


def test_fsync_deliveries_are_written_and_their_rounds_counted(tmp_path: Path) -> None:
    """That rounds group deliveries is tests/test_group_commit.py's; here the metric counts them."""
    args = ["--fsync", "--sink", "file", "--dir", str(tmp_path / "data")]
    with running_receiver(tmp_path, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        bodies = [batch(range(start, start + 20)) for start in range(0, 640, 20)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda body: receiver.post(body, SECRET).json(), bodies))
        assert answers == [{"accepted": 20, "rejected": 0}] * 32
        ids = sorted(int(json.loads(line)["id"]) for line in lines_under(tmp_path / "data"))
        assert ids == list(range(640))
        page = httpx.get(receiver.url + "/metrics").text
        rounds = metric(page, "drain_fsync_duration_seconds_count")
        assert 1 <= rounds <= 32, "at most one round a delivery"
        assert 0 < metric(page, "drain_fsync_duration_seconds_sum") < rounds * 1.0


def test_recent_ids_remember_only_what_was_written() -> None:
    window = RecentIds(window_seconds=10, max_ids=3)
    records = [b'{"id":"a"}', b'{"id":"b"}', b'{"id":"a"}', b'{"no":"id"}', b'{"id":7}']
    fresh, ids, dropped = window.split(records, now=100)
    assert fresh == [b'{"id":"a"}', b'{"id":"b"}', b'{"no":"id"}', b'{"id":7}']
    assert (ids, dropped) == (["a", "b"], 1)
    assert window.split(records[:2], now=100)[0] == records[:2], "not written yet: not a duplicate"
    window.remember(ids, now=100)
    assert window.split(records[:2], now=105)[2] == 2
    assert window.split(records[:2], now=111)[2] == 0, "the window has passed"
    window.remember(["c", "d", "e", "f"], now=120)
    assert window.split([b'{"id":"c"}', b'{"id":"f"}'], now=121)[2] == 1, "oldest forgotten first"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("guarded")
    args = ["--header-timeout", "1", "--body-timeout", "1.5", "--max-inflight-bytes", "1MiB",
            "--max-connections", "20", "--log-format", "json"]
    with running_receiver(workdir, args, env={"DRAIN_SECRET": SECRET}) as receiver:
        yield receiver


def connect(receiver: Receiver) -> socket.socket:
    host, port = receiver.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    conn.settimeout(10)
    return conn


def read_all(conn: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_idle_and_slowloris_connections_are_cut_without_blocking_others(guarded: Receiver) -> None:
    idle = connect(guarded)
    trickle = connect(guarded)
    started = time.monotonic()
    trickle.sendall(b"POST / HTTP/1.1\r\n")
    for _ in range(3):
        time.sleep(0.3)
        trickle.sendall(b"x-slow: 1\r\n")
        body = batch(range(2))
        assert guarded.post(body, SECRET).json() == {"accepted": 2, "rejected": 0}
    assert read_all(idle) == b""
    assert read_all(trickle) == b""
    assert time.monotonic() - started < 8


def test_slow_body_is_408(guarded: Receiver) -> None:
    conn = connect(guarded)
    body = batch(range(50))
    conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nx-vercel-signature: %s\r\n\r\n"
                 % (len(body), sign(body, SECRET).encode()) + body[:100])
    reply = read_all(conn)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert b"body-timeout" in reply


def test_bytes_in_flight_over_the_budget_are_503_with_retry_after(guarded: Receiver) -> None:
    conn = connect(guarded)
    conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n"
                 b"x-vercel-signature: 00\r\n\r\n" + b" " * 1000)
    body = batch(range(500), message_bytes=1000)
    for _ in range(50):  # until the receiver has taken the first body's headers
        response = guarded.post(body, SECRET)
        if response.status_code == 503:
            break
        time.sleep(0.1)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "busy"
    conn.close()
    for _ in range(50):  # the budget comes back once the receiver sees the client gone
        response = guarded.post(body, SECRET)
        if response.status_code == 200:
            break
        time.sleep(0.1)
    assert response.json()["accepted"] == 500
    assert "closed the connection mid-body" in guarded.stderr()
    assert "Traceback" not in guarded.stderr()


def test_oversized_headers_are_refused(guarded: Receiver) -> None:
    conn = connect(guarded)
    conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n")
    reply = read_all(conn)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head
    assert json.loads(body) == {"code": "headers_too_large",
                                "error": "request headers are larger than 16384 bytes"}


def test_headers_that_never_end_are_refused_while_they_arrive(guarded: Receiver) -> None:
    """The parser would hold unfinished headers forever: the cap applies before they end."""
    conn = connect(guarded)
    conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(40):
        try:
            conn.sendall(b"x-more: " + b"b" * 1000 + b"\r\n")
        except OSError:  # refused and closed mid-way, as it should be
            break
        time.sleep(0.005)
    reply = read_all(conn)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert "request headers are larger than" in guarded.stderr()


def test_headers_just_under_the_cap_are_served(guarded: Receiver) -> None:
    body = batch(range(3))
    response = httpx.post(guarded.url + "/", content=body, headers={
        "x-vercel-signature": sign(body, SECRET), "x-padding": "p" * 15_000})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "rejected": 0}


def test_json_logs_one_object_a_line_with_the_refusal_reason(guarded: Receiver) -> None:
    guarded.post(b'[{"id":"1"}]', "not-the-secret")
    entries = [json.loads(line) for line in guarded.stderr().splitlines()]
    refusals = [e for e in entries if e["message"].startswith("refused a delivery")]
    assert refusals and "signature didn't match" in refusals[-1]["message"]
    assert {"time", "level", "logger", "message"} <= set(refusals[-1])
    assert SECRET not in guarded.stderr()
