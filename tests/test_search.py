"""End to end: `drain-receiver search` and `stats` over files written by a real receiver.

The receiver rotates at 64 KiB, so the data holds active, rotated and compressed files; every
search is checked against a brute-force scan of the same files in Python.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.search.engine import TABLE_COLUMNS, open_engine
from receiver.search.filters import EQUALITY_COLUMNS, Filters, status_range
from receiver.search.snapshot import list_data_files
from tests.support import REPO_ROOT, Receiver, running_receiver

sys.path.insert(0, str(REPO_ROOT / "bench"))
from gen import RecordFactory, dump_record

SECRET = "search-secret-0123456789abcdefghijklmnopq"
ENV = {"DRAIN_SECRET": SECRET}
RAW = TABLE_COLUMNS.index("raw")
XSS = [
    {"message": "<script>alert(1)</script>", "path": "/<script>document.title='x'</script>"},
    {"message": "<img src=x onerror=alert(2)>", "path": "/p<img src=x onerror=alert(3)>"},
]


def make_records(count: int, seed: int, start_ms: int) -> list[bytes]:
    factory = RecordFactory(seed)
    factory.clock_ms = start_ms
    return [dump_record(factory.record()) for _ in range(count)]


def post(receiver: Receiver, lines: list[bytes]) -> None:
    response = receiver.post(b"\n".join(lines) + b"\n", SECRET, content_type="application/x-ndjson")
    assert response.status_code == 200, response.text


def all_lines_on_disk(root: Path) -> list[bytes]:
    """Brute force: every complete line of every data file, `X.ndjson` preferred to its `.gz`."""
    lines: list[bytes] = []
    for candidates in list_data_files(root).values():
        for path in candidates:  # a rotated file may be compressed and removed meanwhile
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            break
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        lines.extend(data[: data.rfind(b"\n") + 1].splitlines())
    return lines


def search_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=REPO_ROOT,
                          capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Receiver, list[bytes]]]:
    workdir = tmp_path_factory.mktemp("search")
    root = workdir / "data"
    args = ["--sink", "file", "--dir", str(root), "--max-file-bytes", "64KiB"]
    now = int(time.time() * 1000)
    sent = make_records(1500, 7, now - 3 * 3600 * 1000)
    xss = []
    for index, fields in enumerate(XSS):
        record = json.loads(sent[index])
        record.update(fields, id=f"9900000000{index}", level="error", statusCode=500)
        xss.append(dump_record(record))
    sent = xss + sent[len(XSS):]
    with running_receiver(workdir, args, env=ENV) as receiver:
        for start in range(0, len(sent), 100):
            post(receiver, sent[start : start + 100])
        deadline = time.monotonic() + 20
        while (not list(root.rglob("*.ndjson.gz")) or list(root.rglob("logs-*Z.ndjson"))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        yield root, receiver, sent


def test_the_data_holds_active_rotated_and_compressed_files(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, _, sent = data
    names = [p.name for p in root.rglob("*") if p.is_file()]
    assert "logs.ndjson" in names and any(n.endswith(".ndjson.gz") for n in names)
    assert sorted(all_lines_on_disk(root)) == sorted(sent)


def test_ndjson_output_is_every_record_byte_for_byte_newest_first(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, sent = data
    result = search_cli("search", "--dir", str(root), "--format", "ndjson", "--limit", "100000")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in out)
    assert sorted(line[:-1] for line in out) == sorted(sent)
    stamps = [json.loads(line)["timestamp"] for line in out]
    assert stamps == sorted(stamps, reverse=True)


def test_json_output_is_an_array_of_the_records(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, _, sent = data
    result = search_cli("search", "--dir", str(root), "--format", "json", "--limit", "3")
    newest = sorted((json.loads(line) for line in sent), key=lambda r: (-r["timestamp"], r["id"]))
    assert [r["timestamp"] for r in json.loads(result.stdout)] == [r["timestamp"] for r in newest[:3]]


def python_match(record: dict[str, object], filters: Filters) -> bool:
    """The filters' meaning, written out plainly, for the brute-force side."""
    proxy = record.get("proxy") if isinstance(record.get("proxy"), dict) else {}
    view = {**record, **{f"proxy_{k}": v for k, v in proxy.items()}}  # type: ignore[union-attr]
    stamp = record.get("timestamp")
    if filters.since_ms is not None and not (isinstance(stamp, int) and stamp >= filters.since_ms):
        return False
    if filters.until_ms is not None and not (isinstance(stamp, int) and stamp < filters.until_ms):
        return False
    message = record.get("message")
    if filters.text and not (isinstance(message, str)
                             and any(t.lower() in message.lower() for t in filters.text)):
        return False
    for name, columns in EQUALITY_COLUMNS.items():
        values = getattr(filters, name)
        if values and not any(view.get(c) == v for v in values for c in columns):
            return False
    if filters.status:
        codes = [view.get("statusCode"), view.get("proxy_statusCode")]
        ranges = [status_range(v) for v in filters.status]
        if not any(isinstance(c, int) and lo <= c <= hi for c in codes for lo, hi in ranges):
            return False
    return True


def field_values(sent: list[bytes], name: str) -> list[str]:
    records = [json.loads(line) for line in sent[:200]]
    found = {str(r.get(name)) for r in records if r.get(name) is not None}
    found |= {str(r["proxy"].get(name)) for r in records if isinstance(r.get("proxy"), dict)
              and r["proxy"].get(name) is not None}
    return [*sorted(found), "no-such-value"]


@pytest.fixture(scope="module")
def strategy(data: tuple[Path, Receiver, list[bytes]]) -> st.SearchStrategy[Filters]:
    _, _, sent = data
    stamps = [json.loads(line)["timestamp"] for line in sent]
    pick = lambda name: st.lists(st.sampled_from(field_values(sent, name)), max_size=2).map(tuple)  # noqa: E731
    return st.builds(
        Filters,
        text=st.lists(st.sampled_from(["cache", "ERROR", "é", "<script>", "none-"]), max_size=2).map(tuple),
        since_ms=st.one_of(st.none(), st.integers(min(stamps), max(stamps))),
        until_ms=st.one_of(st.none(), st.integers(min(stamps), max(stamps) + 1)),
        project=pick("projectId"), deployment=pick("deploymentId"), env=pick("environment"),
        source=pick("source"), level=pick("level"),
        status=st.lists(st.sampled_from(["5xx", "404", "200-299", "-1", "304"]), max_size=2).map(tuple),
        host=pick("host"), path=pick("path"), request_id=pick("requestId"), branch=pick("branch"),
    )


def test_every_filter_and_combination_matches_a_brute_force_scan(
    data: tuple[Path, Receiver, list[bytes]], strategy: st.SearchStrategy[Filters],
) -> None:
    root, _, _ = data
    records = [(line, json.loads(line)) for line in all_lines_on_disk(root)]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def check(filters: Filters) -> None:
        with open_engine(root) as engine:
            found = sorted(row[RAW].encode() for row in engine.search(filters, limit=100000))
        assert found == sorted(line for line, record in records if python_match(record, filters))

    check()


def test_a_record_written_a_moment_ago_is_found(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, receiver, _ = data
    record = json.loads(make_records(1, 99, int(time.time() * 1000))[0])
    record["requestId"] = "just-now-request"
    line = dump_record(record)
    post(receiver, [line])
    result = search_cli("search", "--dir", str(root), "--request-id", "just-now-request",
                        "--format", "ndjson")
    assert result.stdout == line + b"\n"


def test_records_in_files_being_rotated_and_compressed_are_neither_missed_nor_doubled(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    """A writer keeps posting (rotating every 64 KiB, compressing behind) while searches run:
    each search holds every record acknowledged before it began, each exactly once."""
    root, receiver, _ = data
    acknowledged: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        seed = 1000
        while not stop.is_set():
            seed += 1
            lines = make_records(50, seed, int(time.time() * 1000))
            post(receiver, lines)
            with lock:
                acknowledged.extend(lines)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(8):
            with lock:
                before = set(acknowledged)
            with open_engine(root) as engine:
                found = [row[RAW].encode() for row in engine.search(Filters(), limit=10**7)]
            assert len(found) == len(set(found)), "a record was read twice"
            assert before <= set(found), f"{len(before - set(found))} acknowledged records missed"
    finally:
        stop.set()
        writer.join()
    assert len(acknowledged) > 400


def test_sql_runs_over_the_logs_view_with_raw(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, _, _ = data
    result = search_cli("search", "--dir", str(root), "--sql",
                        "SELECT count(*) AS n FROM logs WHERE raw LIKE '%<script>%'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [b"n", b"1"]


def test_table_output_shows_time_level_source_status_path_message(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, _ = data
    result = search_cli("search", "--dir", str(root), "alert(1)")
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["TIME", "(UTC)"]
    assert len(lines) == 2 and " error " in lines[1] and " 500 " in lines[1]
    assert "<script>alert(1)</script>" in lines[1]


def test_stats_counts_records_per_interval_by_level(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, _, _ = data
    result = search_cli("stats", "--dir", str(root), "--since", "1d", "--level", "fatal", "--by", "level")
    lines = result.stdout.decode().splitlines()
    fatal = sum(1 for line in all_lines_on_disk(root) if json.loads(line)["level"] == "fatal")
    assert lines[0].split()[-1] == "F=fatal"
    assert lines[-1].startswith(f"{fatal} records in 24 intervals")
    assert sum(int(line.split()[2]) for line in lines[1:-1]) == fatal


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "not a time: 'yesterday'"),
    (["--status", "5x"], "not a status: '5x'"),
    (["--sql", "SELEC 1"], "syntax error"),
    (["--sql", "SELECT nope FROM logs"], "nope"),
    (["--colour"], "unrecognized arguments: --colour"),
])
def test_bad_input_is_one_line_and_exit_2(
    data: tuple[Path, Receiver, list[bytes]], args: list[str], message: str,
) -> None:
    root, _, _ = data
    result = search_cli("search", "--dir", str(root), *args)
    assert result.returncode == 2
    assert result.stdout == b""
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_a_missing_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = search_cli("search", "--dir", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"drain-receiver search: {tmp_path / 'missing'} is not a directory (give the receiver's --dir)")


def test_follow_prints_new_matching_records_across_rotation(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, receiver, _ = data
    follower = subprocess.Popen(
        [sys.executable, "-m", "receiver", "search", "--dir", str(root), "--follow", "--format",
         "ndjson", "--branch", "follow-me", "--limit", "1"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert b"following new records" in follower.stderr.readline()  # type: ignore[union-attr]
        wanted = []
        for seed in range(3):  # each batch is large enough to rotate the 64 KiB files
            lines = make_records(300, 500 + seed, int(time.time() * 1000))
            record = json.loads(lines[150])
            record["branch"] = "follow-me"
            lines[150] = dump_record(record)
            wanted.append(lines[150] + b"\n")
            post(receiver, lines)
            time.sleep(0.5)  # longer than a poll: a file living less than one poll is not seen
        got: list[bytes] = []
        out = follower.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: got.extend(out.readline() for _ in wanted))
        reader.start()
        reader.join(timeout=15)
        assert got == wanted
    finally:
        follower.terminate()
        follower.wait(timeout=10)
