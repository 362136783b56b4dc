"""The file sink on its own, with a clock the test moves across midnight."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from receiver.decode import Batch, Reject
from receiver.sinks.files import FileSink, check_template, safe_component

MIDNIGHT = 1_795_000_000 - 1_795_000_000 % 86400  # a UTC midnight


def wait_for_compression(root: Path) -> None:
    deadline = time.monotonic() + 10
    while list(root.rglob("logs-*.ndjson")):
        assert time.monotonic() < deadline, "rotated files were not compressed"
        time.sleep(0.02)


def test_day_boundary_rotates_and_starts_a_new_partition(tmp_path: Path) -> None:
    now = [MIDNIGHT - 1.0]
    sink = FileSink(tmp_path, clock=lambda: now[0])
    sink.start()
    try:
        sink.write(Batch(records=[b'{"id":"1"}', b'{"id":"2"}']))
        now[0] = MIDNIGHT + 1.0
        sink.write(Batch(records=[b'{"id":"3"}'], rejects=[Reject("line is not valid JSON", b"x")]))
        wait_for_compression(tmp_path)
    finally:
        sink.close()
    before = time.strftime("%Y-%m-%d", time.gmtime(MIDNIGHT - 1))
    after = time.strftime("%Y-%m-%d", time.gmtime(MIDNIGHT + 1))
    rotated = list((tmp_path / "logs" / before).glob("logs-*.ndjson.gz"))
    assert len(rotated) == 1
    assert gzip.decompress(rotated[0].read_bytes()) == b'{"id":"1"}\n{"id":"2"}\n'
    assert not (tmp_path / "logs" / before / "logs.ndjson").exists()
    assert (tmp_path / "logs" / after / "logs.ndjson").read_bytes() == b'{"id":"3"}\n'
    assert b'"raw":"x"' in (tmp_path / "rejected" / "logs.ndjson").read_bytes()


def test_fsync_mode_writes_the_same_bytes(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, fsync=True)
    sink.start()
    sink.write(Batch(records=[b'{"id":"1"}']))
    sink.close()
    assert [p.read_bytes() for p in tmp_path.rglob("logs.ndjson")] == [b'{"id":"1"}\n']


@pytest.mark.parametrize("template", ["/abs", "a/../b", "a//b", "{date}/{hostname}", "rejected/{date}", "."])
def test_unsafe_or_unknown_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        check_template(template)


@pytest.mark.parametrize(
    ("value", "component"),
    [("prj_1", "prj_1"), ("../x", "_._x"), ("a/b", "a_b"), ("", "unknown"), (None, "unknown"),
     (3, "unknown"), (".hidden", "_hidden"), ("\u00e9t\u00e9", "_t_"), ("x" * 300, "x" * 100)],
)
def test_record_values_become_safe_path_components(value: object, component: str) -> None:
    assert safe_component(value) == component


def test_every_stream_rotates_compresses_and_keeps_its_rejects_apart(tmp_path: Path) -> None:
    now = [MIDNIGHT - 1.0]
    sink = FileSink(tmp_path, clock=lambda: now[0], max_file_bytes=40)
    sink.start()
    span = b'{"resourceSpans":[]}'
    try:
        sink.write(Batch(records=[b'{"id":"1"}', b'{"schema":"vercel.analytics.v2"}'],
                         streams=["logs", "analytics"]))
        sink.write(Batch(records=[span, span], stream="traces"))  # 42 bytes: past the limit next time
        sink.write(Batch(records=[span], stream="traces", rejects=[Reject("bad span", b"{}")]))
        now[0] = MIDNIGHT + 1.0
        sink.write(Batch(records=[b'{"schema":"vercel.analytics.v2","n":2}'], streams=["analytics"]))
        deadline = time.monotonic() + 10
        while list(tmp_path.rglob("*-*.ndjson")):
            assert time.monotonic() < deadline, "rotated files were not compressed"
            time.sleep(0.02)
    finally:
        sink.close()
    before = time.strftime("%Y-%m-%d", time.gmtime(MIDNIGHT - 1))
    after = time.strftime("%Y-%m-%d", time.gmtime(MIDNIGHT + 1))
    traces = sorted((tmp_path / "traces" / before).glob("traces-*.ndjson.gz"))
    assert [gzip.decompress(p.read_bytes()) for p in traces] == [span + b"\n" + span + b"\n", span + b"\n"]
    (analytics,) = (tmp_path / "analytics" / before).glob("analytics-*.ndjson.gz")
    assert gzip.decompress(analytics.read_bytes()) == b'{"schema":"vercel.analytics.v2"}\n'
    assert (tmp_path / "analytics" / after / "analytics.ndjson").read_bytes() == (
        b'{"schema":"vercel.analytics.v2","n":2}\n')
    (rejects,) = (tmp_path / "rejected").glob("traces-*.ndjson.gz")  # rotated at midnight too
    assert b'"reason":"bad span"' in gzip.decompress(rejects.read_bytes())
    assert not list((tmp_path / "rejected").glob("logs*"))


def test_a_torn_line_of_any_stream_goes_to_that_streams_rejects(tmp_path: Path) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    (tmp_path / "traces" / day).mkdir(parents=True)
    (tmp_path / "traces" / day / "traces.ndjson").write_bytes(b'{"resourceSpans":[]}\n{"resourceSp')
    sink = FileSink(tmp_path)
    sink.start()
    sink.close()
    assert (tmp_path / "traces" / day / "traces.ndjson").read_bytes() == b'{"resourceSpans":[]}\n'
    assert b'"raw":"{\\"resourceSp"' in (tmp_path / "rejected" / "traces.ndjson").read_bytes()


def waiting_files() -> float:
    return REGISTRY.get_sample_value("drain_compress_waiting_files") or 0.0


def test_a_backlog_of_rotated_files_is_compressed_and_counted(tmp_path: Path) -> None:
    directory = tmp_path / "logs" / "2026-11-26"
    directory.mkdir(parents=True)
    contents = {}
    for n in range(8):
        path = directory / f"logs-20261126T13450{n}.000000Z.ndjson"
        contents[path] = b"".join(b'{"id":"%d-%d","message":"%s"}\n' % (n, i, b"y" * 200)
                                  for i in range(20000))
        path.write_bytes(contents[path])
    sink = FileSink(tmp_path)
    sink.start()
    try:
        assert waiting_files() > 0
        deadline = time.monotonic() + 60
        while waiting_files() > 0:
            assert time.monotonic() < deadline, "the backlog was not compressed"
            time.sleep(0.02)
        sink.write(Batch(records=[b'{"id":"after"}']))
    finally:
        sink.close()
    for path, data in contents.items():
        assert not path.exists()
        assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == data
    assert not [t for t in threading.enumerate() if t.name.startswith("file-sink")]
