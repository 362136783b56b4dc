"""`FileSink(rotate_every=...)`: a quiet receiver's active files are rotated by age, for the archive."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

from receiver.decode import Batch
from receiver.sinks.files import FileSink


def finished(root: Path) -> list[Path]:
    return sorted(root.rglob("logs-*.ndjson.gz"))


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_an_active_file_with_data_is_rotated_and_compressed_once_it_is_old(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, rotate_every=0.4)
    sink.start()
    try:
        sink.write(Batch(records=[b'{"id":"1"}', b'{"id":"2"}']))
        wait_for(lambda: finished(tmp_path))
        assert [gzip.decompress(p.read_bytes()) for p in finished(tmp_path)] == [b'{"id":"1"}\n{"id":"2"}\n']
        assert not list(tmp_path.rglob("logs.ndjson"))
        sink.write(Batch(records=[b'{"id":"3"}']))
        wait_for(lambda: len(finished(tmp_path)) == 2)
        time.sleep(1.0)  # nothing more written: no empty file is rotated
        assert len(finished(tmp_path)) == 2
        assert b"".join(gzip.decompress(p.read_bytes()) for p in finished(tmp_path)) == (
            b'{"id":"1"}\n{"id":"2"}\n{"id":"3"}\n')
    finally:
        sink.close()


def test_without_rotate_every_an_active_file_stays(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    sink.start()
    try:
        sink.write(Batch(records=[b'{"id":"1"}']))
        time.sleep(0.5)
        assert not finished(tmp_path)
    finally:
        sink.close()
    assert [p.read_bytes() for p in tmp_path.rglob("logs.ndjson")] == [b'{"id":"1"}\n']


def test_a_start_with_rotate_every_rotates_what_the_last_run_left_active(tmp_path: Path) -> None:
    first = FileSink(tmp_path)
    first.start()
    first.write(Batch(records=[b'{"id":"1"}']))
    first.close()
    second = FileSink(tmp_path, rotate_every=3600)
    second.start()
    try:
        wait_for(lambda: finished(tmp_path))
        assert [gzip.decompress(p.read_bytes()) for p in finished(tmp_path)] == [b'{"id":"1"}\n']
    finally:
        second.close()
