"""End to end: the file sink's layout, rotation, retention, failures and recovery."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import running_receiver

SECRET = "file-sink-secret-0123456789abcdefghijklmn"
ENV = {"DRAIN_SECRET": SECRET}


def body_of(ids: range, **fields: object) -> bytes:
    return b"".join(
        json.dumps({"id": str(i), "source": "lambda", "message": "m" * 200, **fields}).encode()
        + b"\n"
        for i in ids
    )


def all_records(root: Path) -> list[dict[str, object]]:
    """Every record under `root` except rejects, rotated files first (they are older)."""
    records: list[dict[str, object]] = []
    for path in sorted(root.rglob("logs-*.ndjson.gz")) + sorted(root.rglob("logs.ndjson")):
        if "rejected" in path.parts:
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        records.extend(json.loads(line) for line in data.splitlines())
    return records


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_rotation_by_size_compresses_off_the_request_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data), "--max-file-bytes", "20KiB"]
    with running_receiver(tmp_path, args, env=ENV) as receiver:
        for start in range(0, 500, 50):
            response = receiver.post(body_of(range(start, start + 50)), SECRET)
            assert response.json() == {"accepted": 50, "rejected": 0}
        wait_for(lambda: not list(data.rglob("logs-*.ndjson")))
        rotated = sorted(data.rglob("logs-*.ndjson.gz"))
        assert len(rotated) >= 3
        assert all(path.stat().st_size < 20 * 1024 for path in rotated)
        assert [r["id"] for r in all_records(data)] == [str(i) for i in range(500)]


def test_path_template_partitions_by_project_and_source_safely(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--sink", "file", "--dir", str(data), "--path-template", "{projectId}/{source}/{date}"]
    with running_receiver(tmp_path, args, env=ENV) as receiver:
        records = [
            {"id": "1", "projectId": "prj_a", "source": "lambda"},
            {"id": "2", "projectId": "prj_b", "source": "edge"},
            {"id": "3", "projectId": "../../escape", "source": "/etc/passwd"},
            {"id": "4", "projectId": "..", "source": "."},
            {"id": "5"},
            {"id": "6", "projectId": 7, "source": None},
            {"id": "7", "projectId": "rejected", "source": "lambda"},
        ]
        assert receiver.post(json.dumps(records).encode(), SECRET).json()["accepted"] == 7
        day = time.strftime("%Y-%m-%d", time.gmtime())
        found = {
            path.relative_to(data).as_posix(): [json.loads(x)["id"] for x in path.read_bytes().splitlines()]
            for path in data.rglob("logs.ndjson")
        }
        assert found == {
            f"prj_a/lambda/{day}/logs.ndjson": ["1"],
            f"prj_b/edge/{day}/logs.ndjson": ["2"],
            f"_._.._escape/_etc_passwd/{day}/logs.ndjson": ["3"],
            f"_./_/{day}/logs.ndjson": ["4"],
            f"unknown/unknown/{day}/logs.ndjson": ["5", "6"],
            f"_rejected/lambda/{day}/logs.ndjson": ["7"],
        }
        assert not (tmp_path / "escape").exists()


def test_startup_rotates_yesterdays_file_prunes_old_ones_and_repairs_a_torn_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    yesterday_dir = data / "2020-01-01"
    yesterday_dir.mkdir(parents=True)
    stale = yesterday_dir / "logs.ndjson"
    stale.write_bytes(body_of(range(3)))
    old_time = time.time() - 3 * 86400
    os.utime(stale, (old_time, old_time))
    ancient = yesterday_dir / "logs-20200101T000000.000000Z.ndjson.gz"
    ancient.write_bytes(gzip.compress(body_of(range(100, 102))))
    very_old = time.time() - 40 * 86400
    os.utime(ancient, (very_old, very_old))
    today_dir = data / time.strftime("%Y-%m-%d", time.gmtime())
    today_dir.mkdir()
    (today_dir / "logs.ndjson").write_bytes(body_of(range(10, 12)) + b'{"id": "12", "mess')

    # the layout before streams, kept working by naming its template explicitly
    args = ["--sink", "file", "--dir", str(data), "--keep-days", "30", "--path-template", "{date}"]
    with running_receiver(tmp_path, args, env=ENV) as receiver:
        assert receiver.post(body_of(range(13, 15)), SECRET).status_code == 200
        wait_for(lambda: not ancient.exists() and not stale.exists()
                 and list(yesterday_dir.glob("logs-*.ndjson.gz")))
        rotated = list(yesterday_dir.glob("logs-*.ndjson.gz"))
        assert len(rotated) == 1
        assert gzip.decompress(rotated[0].read_bytes()) == body_of(range(3))
        today = (today_dir / "logs.ndjson").read_bytes()
        assert today == body_of(range(10, 12)) + body_of(range(13, 15))
        rejects = [json.loads(x) for x in (data / "rejected" / "logs.ndjson").read_bytes().splitlines()]
        assert [r["raw"] for r in rejects] == ['{"id": "12", "mess']
        assert "torn line" in rejects[0]["reason"]


def test_missing_directory_is_503_then_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_receiver(tmp_path, ["--sink", "file", "--dir", str(data)], env=ENV) as receiver:
        assert receiver.post(body_of(range(2)), SECRET).status_code == 200
        subprocess.run(["rm", "-rf", str(data)], check=True)
        response = receiver.post(body_of(range(2, 4)), SECRET)
        assert response.status_code == 503
        assert response.json()["code"] == "sink_unavailable"
        assert response.headers["retry-after"]
        assert httpx.get(receiver.url + "/readyz").status_code == 503
        assert not data.exists()
        assert "file sink could not write" in receiver.stderr()
        data.mkdir()
        assert httpx.get(receiver.url + "/readyz").status_code == 200
        assert receiver.post(body_of(range(2, 4)), SECRET).json()["accepted"] == 2
        assert [r["id"] for r in all_records(data)] == ["2", "3"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_is_503_leaves_no_torn_line_and_recovers(tmp_path: Path, small_tmpfs: Path) -> None:
    data = small_tmpfs / "data"
    with running_receiver(tmp_path, ["--sink", "file", "--dir", str(data)], env=ENV) as receiver:
        acknowledged: list[str] = []
        statuses: list[int] = []
        for start in range(0, 3000, 100):
            response = receiver.post(body_of(range(start, start + 100)), SECRET)
            statuses.append(response.status_code)
            if response.status_code == 200:
                acknowledged.extend(str(i) for i in range(start, start + 100))
        assert statuses[0] == 200
        assert 503 in statuses, "the 256 KiB tmpfs should have filled up"
        assert set(statuses) == {200, 503}
        assert httpx.get(receiver.url + "/readyz").status_code == 503
        written = [r["id"] for r in all_records(data)]
        assert written == acknowledged
        assert "No space left on device" in receiver.stderr()

        for path in data.rglob("logs.ndjson"):
            path.unlink()
        response = receiver.post(body_of(range(5000, 5010)), SECRET)
        assert response.json() == {"accepted": 10, "rejected": 0}
        assert [r["id"] for r in all_records(data)] == [str(i) for i in range(5000, 5010)]
        assert httpx.get(receiver.url + "/readyz").status_code == 200
