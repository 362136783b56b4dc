"""Every drain type in its own stream: Vercel's example bodies through a real receiver."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.streams import stream_of_record, stream_of_schema, streams_of
from tests.support import REPO_ROOT, Receiver, running_receiver

SECRET = "streams-secret-0123456789abcdefghijklmnop"
ENV = {"DRAIN_SECRET": SECRET}
EXAMPLES = Path(__file__).parent / "data" / "vercel"
RECORD_STREAMS = {"logs": "logs", "speed_insights": "speed_insights", "analytics": "analytics",
                  "audit_log": "audit_log"}


def example(name: str) -> list[bytes]:
    """The records of an example file, each as compact JSON bytes (what an NDJSON line holds)."""
    values = json.loads((EXAMPLES / f"{name}.json").read_text())
    return [json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() for value in values]


def as_array(records: list[bytes]) -> bytes:
    return b"[" + b",".join(records) + b"]"


def as_ndjson(records: list[bytes]) -> bytes:
    return b"".join(record + b"\n" for record in records)


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    work = tmp_path_factory.mktemp("streams")
    args = ["--sink", "file,stdout", "--dir", str(work / "data")]
    with running_receiver(work, args, env=ENV) as running:
        running.data = work / "data"  # type: ignore[attr-defined]
        yield running


def stream_file(receiver: Receiver, stream: str) -> Path:
    return receiver.data / stream / today() / f"{stream}.ndjson"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(RECORD_STREAMS))
@pytest.mark.parametrize("shape", ["array", "ndjson"])
@pytest.mark.parametrize("gzipped", [False, True])
def test_each_example_lands_in_its_stream_unchanged(
    receiver: Receiver, name: str, shape: str, gzipped: bool
) -> None:
    records = example(name)
    body = as_array(records) if shape == "array" else as_ndjson(records)
    headers = {}
    if gzipped:
        body = gzip.compress(body)
        headers["content_encoding"] = "gzip"
    before = {stream: lines_of(stream_file(receiver, stream)) for stream in RECORD_STREAMS.values()}
    stdout_before = len(receiver.stdout())
    response = receiver.post(body, SECRET, **headers)
    assert response.status_code == 200, response.text
    stream = RECORD_STREAMS[name]
    expected_answer = {"accepted": len(records), "rejected": 0}
    if stream != "logs":
        expected_answer["streams"] = {stream: len(records)}
    assert response.json() == expected_answer
    for other in RECORD_STREAMS.values():
        after = lines_of(stream_file(receiver, other))
        if other == stream:
            assert after[len(before[other]):] == records, "byte for byte, in order, once each"
        else:
            assert after == before[other], f"nothing of {name} in {other}"
    assert receiver.stdout()[stdout_before:] == as_ndjson(records), "stdout gets the bytes unchanged"


def test_a_mixed_batch_is_split_by_stream_in_order(receiver: Receiver) -> None:
    by_stream = {stream: example(name) for name, stream in RECORD_STREAMS.items()}
    mixed: list[bytes] = []
    for row in range(max(map(len, by_stream.values()))):
        mixed.extend(records[row] for records in by_stream.values() if row < len(records))
    before = {stream: len(lines_of(stream_file(receiver, stream))) for stream in by_stream}
    stdout_before = len(receiver.stdout())
    response = receiver.post(as_ndjson(mixed), SECRET)
    assert response.status_code == 200
    assert response.json() == {"accepted": len(mixed), "rejected": 0,
                               "streams": {stream: len(records) for stream, records in by_stream.items()}}
    for stream, records in by_stream.items():
        assert lines_of(stream_file(receiver, stream))[before[stream]:] == records
    assert receiver.stdout()[stdout_before:] == as_ndjson(mixed), "stdout keeps the batch's own order"


def test_other_and_malformed_schemas_get_streams_of_their_own(receiver: Receiver) -> None:
    records = [b'{"schema":"vercel.edge_config.v3","key":"a"}', b'{"schema":"vercel.Some-New.Kind.v1"}',
               b'{"schema":"acme.thing","x":1}', b'{"schema":7}', b'{"id":"plain-log"}']
    response = receiver.post(as_ndjson(records), SECRET)
    assert response.json()["streams"] == {"edge_config": 1, "some_new_kind": 1, "unknown_schema": 2,
                                          "logs": 1}
    assert lines_of(stream_file(receiver, "edge_config"))[-1:] == records[:1]
    assert lines_of(stream_file(receiver, "unknown_schema"))[-2:] == records[2:4]
    assert lines_of(stream_file(receiver, "logs"))[-1:] == records[4:]


def test_stream_counts_reach_the_metrics(receiver: Receiver) -> None:
    records = example("speed_insights")
    def accepted() -> float:
        page = httpx.get(receiver.url + "/metrics").text
        for line in page.splitlines():
            if line.startswith('drain_records_accepted_total{stream="speed_insights"}'):
                return float(line.split()[-1])
        return 0.0
    before = accepted()
    assert receiver.post(as_array(records), SECRET).status_code == 200
    assert accepted() - before == len(records)


def test_stream_names() -> None:
    assert stream_of_schema(None) == "logs"
    assert stream_of_schema("vercel.speed_insights.v1") == "speed_insights"
    assert stream_of_schema("vercel.analytics.v1") == stream_of_schema("vercel.analytics.v2") == "analytics"
    assert stream_of_schema("vercel.audit_log.v1") == "audit_log"
    assert stream_of_schema("vercel.log.v1") == "logs"
    assert stream_of_schema("vercel.../../etc.v1") == "unknown_schema", "no path in a name"
    assert stream_of_schema("vercel..odd..name.v1") == "odd_name"
    assert stream_of_schema("vercel.logs.v1") == "unknown_schema", "a name that would mix into logs"
    assert stream_of_schema("vercel.traces.v2") == "unknown_schema", "traces hold OTLP spans only"
    assert stream_of_schema("vercel.speed_insights") == "unknown_schema"
    assert stream_of_schema(["vercel.analytics.v2"]) == "unknown_schema"
    assert stream_of_record(b'{"message":"has \\"schema\\" in text"}') == "logs"
    assert streams_of(b'{"id":"1"}\n', [b'{"id":"1"}']) is None


@pytest.fixture(scope="module")
def deduping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    work = tmp_path_factory.mktemp("dedupe")
    args = ["--sink", "file", "--dir", str(work / "data"), "--dedupe-window", "60"]
    with running_receiver(work, args, env=ENV) as running:
        running.data = work / "data"  # type: ignore[attr-defined]
        yield running


def test_dedupe_drops_repeated_log_and_audit_ids_only(deduping: Receiver) -> None:
    logs, audit, speed = example("logs"), example("audit_log"), example("speed_insights")
    speed_twice = [speed[0], speed[0]]  # no id: the same measurement twice is two measurements
    colliding = b'{"schema":"vercel.audit_log.v1","id":"' + json.loads(logs[0])["id"].encode() + b'"}'
    body = as_ndjson(logs + audit + speed_twice + [colliding])
    first = deduping.post(body, SECRET).json()
    assert first["accepted"] == len(logs) + len(audit) + 3 and "duplicates" not in first
    second = deduping.post(body, SECRET).json()
    assert second["duplicates"] == len(logs) + len(audit) + 1
    assert second["streams"] == {"speed_insights": 2}
    assert lines_of(stream_file(deduping, "logs")) == logs
    assert lines_of(stream_file(deduping, "audit_log")) == [*audit, colliding]
    assert lines_of(stream_file(deduping, "speed_insights")) == speed_twice * 2


def test_a_symlinked_partition_is_refused_not_followed(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (data / "evil").symlink_to(elsewhere)
    args = ["--sink", "file", "--dir", str(data), "--path-template", "{projectId}/{date}"]
    with running_receiver(tmp_path / "run", args, env=ENV) as running:
        response = running.post(b'{"id":"1","projectId":"evil"}\n', SECRET)
        assert response.status_code == 503
        assert running.post(b'{"id":"2","projectId":"good"}\n', SECRET).status_code == 200
        assert "not a real directory" in running.stderr()
    assert list(elsewhere.rglob("*")) == [], "nothing written through the symlink"
    assert lines_of(data / "good" / today() / "logs.ndjson") == [b'{"id":"2","projectId":"good"}']


def test_a_symlinked_active_file_is_refused(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "target"
    target.write_bytes(b"precious\n")
    (data / "logs" / today()).mkdir(parents=True)
    (data / "logs" / today() / "logs.ndjson").symlink_to(target)
    with running_receiver(tmp_path / "run", ["--sink", "file", "--dir", str(data)], env=ENV) as running:
        assert running.post(b'{"id":"1"}\n', SECRET).status_code == 503
    assert target.read_bytes() == b"precious\n"


def test_readyz_never_truncates_a_symlinked_probe_target(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "target"
    data.mkdir()
    target.write_bytes(b"precious\n")
    (data / ".readyz-probe-0").symlink_to(target)
    with running_receiver(tmp_path / "run", ["--sink", "file", "--dir", str(data)], env=ENV) as running:
        assert httpx.get(running.url + "/readyz").status_code == 200
    assert target.read_bytes() == b"precious\n"


def test_files_and_directories_take_their_mode_from_the_umask(tmp_path: Path) -> None:
    from receiver.decode import Batch
    from receiver.sinks.files import FileSink

    old = os.umask(0o002)
    try:
        sink = FileSink(tmp_path)
        sink.start()
        sink.write(Batch(records=[b'{"id":"1"}']))
        sink.close()
    finally:
        os.umask(old)
    assert (tmp_path / "logs" / today() / "logs.ndjson").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "logs" / today()).stat().st_mode & 0o777 == 0o775


def test_search_finds_each_stream_apart(receiver: Receiver) -> None:
    """`drain-receiver search --stream` gives exactly the records the receiver kept in that stream."""
    mixed = [*example("speed_insights"), *example("logs"), *example("audit_log")]
    assert receiver.post(as_ndjson(mixed), SECRET).status_code == 200
    root = receiver.data  # type: ignore[attr-defined]
    for stream in ("speed_insights", "logs", "audit_log"):
        found = subprocess.run(
            [sys.executable, "-m", "receiver", "search", "--dir", str(root), "--stream", stream,
             "--format", "ndjson", "--limit", "100000"],
            cwd=REPO_ROOT, capture_output=True, timeout=60, check=True,
        ).stdout.splitlines()
        on_disk = [line for path in sorted((root / stream).rglob("*.ndjson")) for line in lines_of(path)]
        assert on_disk and sorted(found) == sorted(on_disk)
        assert set(example(stream)) <= set(found)
        others = {line for name in RECORD_STREAMS if name != stream for line in example(name)}
        assert not others & set(found), f"--stream {stream} returned another stream's records"
