"""Crash safety (issue 4 point 3): `kill -9` under load, then a restart on the same `--dir`.

Four client threads send signed NDJSON and JSON-array batches as fast as they can, some records
carrying a 50-200 KB message so that one batch is one large `write`; the receiver is killed with
SIGKILL mid-load. A second receiver started on the same directory must then hold every record
that was acknowledged, every line of every file must be one complete record exactly as sent, a
torn tail must have been moved to `rejected/logs.ndjson` (never glued to the next record), and
the restarted receiver must go on appending and compressing.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import running_receiver, sign

SECRET = "crash-secret-0123456789abcdefghijklmnopqrstu"
ENV = {"DRAIN_SECRET": SECRET}
CLIENTS = 4
LOAD_SECONDS = 1.5
ACTIVE = "logs.ndjson"
REJECTS = Path("rejected") / ACTIVE
# A long message with multi-byte characters, so that a tear can also fall inside a character.
BIG_TEXT = ("crash test payload é漢字 0123456789 " * 8000)[:200_000]


@dataclass
class Load:
    """What the clients sent (id -> the record's exact bytes) and which ids were acknowledged."""

    sent: dict[str, bytes] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    batches: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_batch(rng: random.Random, prefix: str, big: bool = True) -> tuple[dict[str, bytes], bytes]:
    """A batch of 50-200 records with unique ids, as NDJSON or as a JSON array."""
    records: dict[str, bytes] = {}
    count = rng.randint(50, 200)
    big_ones = set(rng.sample(range(count), rng.randint(1, 8))) if big else set()
    for index in range(count):
        record_id = f"{prefix}-{index}"
        size = rng.randint(50_000, 200_000) if index in big_ones else rng.randint(10, 300)
        record = {
            "id": record_id,
            "deploymentId": "dpl_crash",
            "source": "lambda",
            "host": "crash.vercel.app",
            "timestamp": 1764000000000 + index,
            "projectId": "prj_crash",
            "level": "info",
            "message": BIG_TEXT[:size],
        }
        records[record_id] = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    array = b"[" + b",".join(records.values()) + b"]"
    return records, ndjson(records) if rng.random() < 0.5 else array


def ndjson(records: dict[str, bytes]) -> bytes:
    return b"".join(line + b"\n" for line in records.values())


def post(client: httpx.Client, url: str, body: bytes) -> httpx.Response:
    return client.post(url + "/", content=body, headers={"x-vercel-signature": sign(body, SECRET)})


def client_loop(url: str, number: int, load: Load, stop: threading.Event) -> None:
    rng = random.Random(number)
    with httpx.Client(timeout=60) as client:
        sequence = 0
        while not stop.is_set():
            records, body = make_batch(rng, f"c{number}-b{sequence}")
            sequence += 1
            with load.lock:
                load.sent.update(records)
            try:
                response = post(client, url, body)
            except httpx.TransportError:
                return  # the receiver was killed while this batch was in flight
            expected = {"accepted": len(records), "rejected": 0}
            with load.lock:
                if response.status_code == 200 and response.json() == expected:
                    load.acked.update(records)
                    load.batches += 1
                else:
                    load.unexpected.append(f"{response.status_code} {response.text[:200]}")


def read_file(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def data_files(root: Path) -> list[Path]:
    """Record files outside `rejected/`, oldest first: rotated ones by name, then the active one."""
    found = [
        path for path in root.rglob("logs*")
        if path.is_file() and "rejected" not in path.relative_to(root).parts
        and (path.name.endswith(".ndjson") or path.name.endswith(".ndjson.gz"))
    ]
    return sorted(found, key=lambda path: (path.parent, path.name == ACTIVE, path.name))


def pending_rotated(root: Path) -> list[Path]:
    return [path for path in root.rglob("logs-*.ndjson") if path.is_file()]


def torn_tails(root: Path) -> dict[Path, bytes]:
    """The bytes after the last newline of each active file (only a crash leaves any)."""
    tails: dict[Path, bytes] = {}
    for path in root.rglob(ACTIVE):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            tails[path] = data[data.rfind(b"\n") + 1 :]
    return tails


def reject_entries(root: Path) -> list[dict[str, object]]:
    """Every line of the rejects files, each of which must be a JSON object."""
    entries: list[dict[str, object]] = []
    for path in sorted((root / "rejected").glob("logs*")):
        for number, line in enumerate(split_lines(read_file(path), path)):
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{path} line {number} is not JSON: {line[:300]!r}")
            assert isinstance(entry, dict), (path, line[:200])
            entries.append(entry)
    return entries


def raw_of(entry: dict[str, object]) -> bytes:
    if "raw" in entry:
        return str(entry["raw"]).encode()
    return base64.b64decode(str(entry["rawBase64"]))


def split_lines(data: bytes, path: Path) -> list[bytes]:
    """The lines of a complete file: it must be empty or end with a newline."""
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line: {data[-200:]!r}"
    return data.split(b"\n")[:-1]


def records_in_order(root: Path, sent: dict[str, bytes]) -> list[str]:
    """The ids of every record line, oldest first; each line must be a record exactly as sent."""
    ids: list[str] = []
    for path in data_files(root):
        for number, line in enumerate(split_lines(read_file(path), path)):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{path} line {number} is not JSON: {line[:300]!r}")
            assert isinstance(record, dict), (path, number, line[:200])
            assert sent.get(record["id"]) == line, f"{path} line {number} is not a record as sent"
            ids.append(record["id"])
    return ids


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def kill_mid_write(process: subprocess.Popen[bytes], data: Path, patience: float = 1.0) -> bool:
    """SIGKILL the receiver, if possible while a batch is being appended (the active file then
    ends with something else than a newline), else after `patience` seconds; True if mid-write."""
    deadline = time.monotonic() + patience
    mid_write = False
    while not mid_write and time.monotonic() < deadline:
        for path in data.rglob(ACTIVE):
            try:
                with path.open("rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    mid_write = size > 0 and os.pread(file.fileno(), 1, size - 1) != b"\n"
            except FileNotFoundError:
                continue  # rotated away meanwhile
            if mid_write:
                break
    process.kill()
    process.wait(timeout=20)
    return mid_write


@pytest.mark.parametrize("max_file_bytes", [None, "256KiB"], ids=["one-file", "rotating"])
def test_kill_9_under_load_keeps_every_acknowledged_record(
    tmp_path: Path, max_file_bytes: str | None
) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data)]
    if max_file_bytes:
        args += ["--max-file-bytes", max_file_bytes]
    load = Load()
    stop = threading.Event()
    with running_receiver(tmp_path / "first", args, env=ENV) as receiver:
        clients = [
            threading.Thread(target=client_loop, args=(receiver.url, n, load, stop), daemon=True)
            for n in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(LOAD_SECONDS)
        mid_write = kill_mid_write(receiver.process, data)
        stop.set()
        for client in clients:
            client.join(timeout=60)
        assert not any(client.is_alive() for client in clients)
    assert load.batches > 0, "no batch was acknowledged before the kill"
    assert load.unexpected == []
    torn = torn_tails(data)
    pending_before = pending_rotated(data)
    partial = list(data.rglob("*.partial"))
    print(f"killed {'mid-write' if mid_write else 'at a random point'}: "
          f"{load.batches} batches / {len(load.acked)} records acknowledged, "
          f"{len(torn)} torn tails, {len(pending_before)} rotated files left uncompressed, "
          f"{len(partial)} compressions interrupted")

    rng = random.Random(99)
    with running_receiver(tmp_path / "second", args, env=ENV) as receiver, httpx.Client(timeout=60) as client:
        # The first delivery after the restart opens the active file, which repairs its tail.
        first, body = make_batch(rng, "after-0", big=False)
        load.sent.update(first)
        assert post(client, receiver.url, body).json() == {"accepted": len(first), "rejected": 0}
        torn_raws = [raw_of(e) for e in reject_entries(data) if "torn line" in str(e["reason"])]
        assert sorted(torn_raws) == sorted(torn.values())
        assert torn_tails(data) == {}

        after = list(first)
        for number in range(1, 6):
            records, body = make_batch(rng, f"after-{number}")
            load.sent.update(records)
            response = post(client, receiver.url, body)
            assert response.json() == {"accepted": len(records), "rejected": 0}
            after.extend(records)
        # Rotated files left by the crash (and by these batches) get compressed.
        wait_for(lambda: not pending_rotated(data))
        for path in pending_before:
            assert path.with_name(path.name + ".gz").is_file()
            assert not path.exists()

    assert not list(data.rglob("*.partial"))
    ids = records_in_order(data, load.sent)
    assert len(ids) == len(set(ids)), "the receiver wrote a record twice"
    missing = load.acked - set(ids)
    assert not missing, f"{len(missing)} acknowledged records are missing, e.g. {sorted(missing)[:3]}"
    # Everything sent after the restart is there, after every record written before the crash.
    assert ids[-len(after):] == after
    entries = reject_entries(data)
    assert len(entries) == len(torn)
    assert all("torn line" in str(entry["reason"]) for entry in entries)


def fill_and_stop(tmp_path: Path, args: list[str], rng: random.Random) -> dict[str, bytes]:
    """Run a receiver, write three batches, stop it cleanly; returns what was written."""
    sent: dict[str, bytes] = {}
    with running_receiver(tmp_path / "first", args, env=ENV) as receiver:
        for number in range(3):
            records, body = make_batch(rng, f"before-{number}", big=number == 0)
            assert receiver.post(body, SECRET).json() == {"accepted": len(records), "rejected": 0}
            sent.update(records)
    return sent


def the_active_file(data: Path) -> Path:
    (active,) = [path for path in data.rglob(ACTIVE) if "rejected" not in path.relative_to(data).parts]
    return active


def tear(line: bytes, inside_a_character: bool) -> bytes:
    """The first half of a record's line, cut between two bytes of a character if asked."""
    cut = len(line) // 2
    if inside_a_character:
        cut = line.index("漢".encode()) + 1
    return line[:cut]


@pytest.mark.parametrize("inside_a_character", [False, True], ids=["ascii-cut", "utf8-cut"])
def test_restart_moves_exactly_the_torn_bytes_to_rejects(tmp_path: Path, inside_a_character: bool) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data)]
    rng = random.Random(7)
    sent = fill_and_stop(tmp_path, args, rng)
    active = the_active_file(data)
    complete = active.read_bytes()
    records, _ = make_batch(rng, "torn", big=True)
    torn = tear(max(records.values(), key=len), inside_a_character)
    with active.open("ab") as file:
        file.write(torn)

    with running_receiver(tmp_path / "second", args, env=ENV) as receiver:
        after, body = make_batch(rng, "after", big=False)
        assert receiver.post(body, SECRET).json() == {"accepted": len(after), "rejected": 0}
        sent.update(after)
    assert active.read_bytes() == complete + b"".join(line + b"\n" for line in after.values())
    (entry,) = reject_entries(data)
    assert raw_of(entry) == torn
    assert ("rawBase64" in entry) == inside_a_character
    assert "torn line" in str(entry["reason"])
    assert records_in_order(data, sent) == list(sent)


def test_torn_tail_is_repaired_at_start_before_any_delivery(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data)]
    fill_and_stop(tmp_path, args, random.Random(8))
    active = the_active_file(data)
    with active.open("ab") as file:
        file.write(b'{"id":"torn-1","message":"half a rec')
    with running_receiver(tmp_path / "second", args, env=ENV):
        assert torn_tails(data) == {}
        assert [raw_of(entry) for entry in reject_entries(data)] == [b'{"id":"torn-1","message":"half a rec']


def test_torn_tail_of_an_earlier_day_is_moved_to_rejects_not_compressed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data)]
    sent = fill_and_stop(tmp_path, args, random.Random(9))
    active = the_active_file(data)
    torn = b'{"id":"torn-2","message":"half a rec'
    with active.open("ab") as file:
        file.write(torn)
    yesterday = time.time() - 86400
    os.utime(active, (yesterday, yesterday))
    with running_receiver(tmp_path / "second", args, env=ENV):
        wait_for(lambda: not active.exists() and not pending_rotated(data))
    (rotated,) = list(data.rglob("logs-*.ndjson.gz"))
    assert read_file(rotated).endswith(b"\n"), f"{rotated.name} ends with the torn line"
    assert records_in_order(data, sent) == list(sent)
    assert [raw_of(entry) for entry in reject_entries(data)] == [torn]


def test_torn_rejects_file_is_not_glued_to_the_next_reject(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data)]
    rng = random.Random(10)
    sent: dict[str, bytes] = {}
    with running_receiver(tmp_path / "first", args, env=ENV) as receiver:
        records, _ = make_batch(rng, "before", big=False)
        response = receiver.post(ndjson(records) + b"not json\n", SECRET)
        assert response.json() == {"accepted": len(records), "rejected": 1}
        sent.update(records)
    rejects = data / REJECTS
    torn_reject = b'{"rejectedAt":"2026-11-26T13:45:01.123Z","reason":"line is not valid JSON'
    torn_record = b'{"id":"torn-3","message":"half a rec'
    with rejects.open("ab") as file:
        file.write(torn_reject)
    with the_active_file(data).open("ab") as file:
        file.write(torn_record)

    with running_receiver(tmp_path / "second", args, env=ENV) as receiver:
        after, _ = make_batch(rng, "after", big=False)
        response = receiver.post(ndjson(after) + b"[1]\n", SECRET)
        assert response.json() == {"accepted": len(after), "rejected": 1}
        sent.update(after)
    entries = reject_entries(data)  # every line of the rejects file must parse
    expected = [b"not json", torn_reject, torn_record, b"[1]"]
    assert sorted(raw_of(entry) for entry in entries) == sorted(expected)
    assert records_in_order(data, sent) == list(sent)
