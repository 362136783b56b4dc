"""The file sink on its own, with a clock the test moves across midnight."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

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
