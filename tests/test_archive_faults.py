"""The archive under faults of the store: a receiver with `--archive` pointed at a fault proxy
(tests/s3_faults.py) in front of moto's server, one of each per module.

After each fault, the bucket is re-read and compared with what the receiver acknowledged:
every record once (ids are unique), every object whole (it gunzips, every line is JSON, the
last one ends in a newline), and no record-holding file left under --dir.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.archive.keys import FINISHED_NAME, ArchiveTarget
from receiver.archive.store import MIB, UploadError, make_client, upload
from tests.s3_faults import Fault, FaultProxy
from tests.support import Receiver, free_port, running_receiver
from tests.test_archive import (
    SECRET,
    archive_args,
    aws_env,
    lines_of,
    local_data,
    objects,
    post_all,
    s3_client,
    s3_server,
    wait_for,
)

FAST = ("--max-file-bytes", "20KiB", "--rotate-every", "1s", "--archive-timeout", "10s")


@pytest.fixture(scope="module")
def store() -> Iterator[str]:
    with s3_server(free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def module_proxy(store: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(store)
    proxy.up()
    yield proxy
    proxy.clear()
    proxy.down()


@pytest.fixture
def proxy(module_proxy: FaultProxy) -> Iterator[FaultProxy]:
    module_proxy.reset()
    if not module_proxy.listening:
        module_proxy.up()
    yield module_proxy
    module_proxy.clear()


@pytest.fixture
def s3(store: str, tmp_path: Path) -> Any:
    return s3_client(store, tmp_path)  # straight to the store, past the proxy


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def env_for(tmp_path: Path) -> dict[str, str]:
    return {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}


def metric(receiver: Receiver, name: str) -> float:
    page = httpx.get(receiver.url + "/metrics").text
    match = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
    assert match, f"{name} not on /metrics"
    return float(match.group(1))


def assert_archived_exactly(s3: Any, bucket: str, sent: list[bytes]) -> dict[str, bytes]:
    """Every line of `sent` in the bucket once, and no object with a torn line."""
    archived = objects(s3, bucket)
    for key, data in archived.items():
        assert data.endswith(b"\n"), f"{key} ends in a torn line"
        for line in data.splitlines():
            json.loads(line)
    lines = [line for data in archived.values() for line in data.splitlines()]
    assert len(lines) == len(set(lines)), "a record is in the bucket twice"
    assert sorted(lines) == sorted(sent)
    return archived


def no_stale_multipart(s3: Any, bucket: str) -> list[str]:
    return [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_a_store_that_goes_down_in_the_middle_gets_the_waiting_files_once_it_is_back(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}/p", proxy.url, "pod-a", *FAST)
    before, during = lines_of(range(150), "before-"), lines_of(range(150), "during-")
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, before)
        wait_for(lambda: not local_data(data), what="the first records uploaded")
        proxy.down()
        post_all(receiver, during)  # acknowledged while the store is unreachable
        wait_for(lambda: "cannot upload" in receiver.stderr(), what="an upload failure logged")
        wait_for(lambda: metric(receiver, "drain_archive_waiting_files") > 0, what="files waiting")
        assert "is the store up, and --archive-endpoint right?" in receiver.stderr()
        proxy.up()
        wait_for(lambda: not local_data(data), timeout=60, what="the waiting files uploaded")
        assert metric(receiver, "drain_archive_upload_errors_total") >= 1
        wait_for(lambda: metric(receiver, "drain_archive_waiting_files") == 0, what="none waiting")
    assert_archived_exactly(s3, bucket, before + during)


@pytest.mark.parametrize("status", [500, 503])
def test_errors_from_the_store_are_retried_with_backoff_and_counted(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str, status: int) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", *FAST)
    sent = lines_of(range(200))
    proxy.add(Fault("error", frozenset({"PutObject"}), times=7, status=status))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: not local_data(data), timeout=60, what="every file uploaded at last")
        errors = metric(receiver, "drain_archive_upload_errors_total")
        log = receiver.stderr()
    # 7 refusals, tried 3 times a round by botocore: two rounds failed, the third went through.
    assert proxy.count("PutObject", f"error {status}") == 7
    assert errors == 2, log
    assert ("SlowDown" if status == 503 else "InternalError") in log
    assert len(re.findall(r"next try in (\d+\.\d) s", log)) == 2
    assert_archived_exactly(s3, bucket, sent)


def test_a_store_that_answers_too_slowly_is_given_up_on_and_retried(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", *FAST, "--archive-timeout", "2s")
    sent = lines_of(range(100))
    # Past --archive-timeout; the store still acts on each one, later, as a real one would.
    proxy.add(Fault("delay", frozenset({"PutObject"}), times=3, seconds=5))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: not local_data(data), timeout=60, what="every file uploaded at last")
        errors = metric(receiver, "drain_archive_upload_errors_total")
        log = receiver.stderr()
    assert proxy.count("PutObject", "delay") == 3
    assert errors >= 1, log  # 3 tries of one file in one round, all given up on
    assert "Read timeout" in log
    wait_for(lambda: proxy.count("PutObject", "delayed, then forwarded") == 3, what="the late writes")
    assert_archived_exactly(s3, bucket, sent)  # the late writes of a key left no second object


def test_a_connection_dropped_mid_body_is_retried(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", *FAST)
    sent = lines_of(range(100))
    proxy.add(Fault("drop", frozenset({"PutObject"}), times=2))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: not local_data(data), timeout=60, what="every file uploaded")
    assert proxy.count("PutObject", "drop") == 2
    assert_archived_exactly(s3, bucket, sent)


def test_a_body_corrupted_on_the_way_is_refused_by_its_checksum_and_sent_again(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", *FAST)
    sent = lines_of(range(100))
    proxy.add(Fault("corrupt", frozenset({"PutObject"}), times=1))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: not local_data(data), timeout=60, what="every file uploaded")
        errors = metric(receiver, "drain_archive_upload_errors_total")
        log = receiver.stderr()
    assert proxy.count("PutObject", "refused: Content-MD5") == 1
    assert errors == 1 and "BadDigest" in log
    assert_archived_exactly(s3, bucket, sent)


def test_a_part_refused_by_its_checksum_aborts_the_multipart_upload(
        proxy: FaultProxy, s3: Any, bucket: str) -> None:
    content = os.urandom(12 * 1024 * 1024 + 5)
    client = make_client(proxy.url)
    target = ArchiveTarget(bucket, "")
    proxy.add(Fault("corrupt", frozenset({"UploadPart"}), times=1))
    with pytest.raises(UploadError, match="BadDigest"):
        upload(client, io.BytesIO(content), len(content), target, "big.ndjson.gz", multipart_bytes=5 * MIB)
    assert proxy.count("UploadPart", "refused: x-amz-checksum-crc32") == 1, proxy.seen
    assert proxy.count("AbortMultipartUpload") == 1
    assert no_stale_multipart(s3, bucket) == [] and not objects(s3, bucket)
    upload(client, io.BytesIO(content), len(content), target, "big.ndjson.gz", multipart_bytes=5 * MIB)
    assert s3.get_object(Bucket=bucket, Key="big.ndjson.gz")["Body"].read() == content


def stamp_of(name: str) -> str:
    match = FINISHED_NAME.fullmatch(name)
    assert match, name
    return match["stamp"]


def finished_files(data: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in data.rglob("logs-*.ndjson.gz")}


def test_a_receiver_killed_mid_put_uploads_the_file_once_at_its_next_start(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", "--rotate-every", "1h",
                        "--archive-timeout", "60s")
    sent = lines_of(range(120))
    proxy.add(Fault("stall", frozenset({"PutObject"})))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent)
        receiver.stop(signal.SIGKILL)  # the records are in the active file; the next start rotates it
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        proxy.wait_stalled()  # the start rotated the file; its PutObject now hangs
        on_disk = finished_files(data)
        assert len(on_disk) == 1
        receiver.stop(signal.SIGKILL)
    assert not objects(s3, bucket)
    proxy.clear()
    with running_receiver(tmp_path, args, env=env_for(tmp_path)):
        wait_for(lambda: not local_data(data), timeout=60, what="the file uploaded")
    archived = assert_archived_exactly(s3, bucket, sent)
    assert len(archived) == 1
    [key] = archived
    [(name, content)] = on_disk.items()
    assert key.endswith(f"-{stamp_of(name)}.ndjson.gz")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == content


def big_lines(count: int, tag: str) -> list[bytes]:
    """Records of random text, which gzip cannot shrink much: a file stays past 16 MiB."""
    return [json.dumps({"id": f"{tag}{i}", "message": base64.b64encode(os.urandom(96 * 1024)).decode()})
            .encode() for i in range(count)]


def test_a_receiver_killed_mid_multipart_uploads_the_file_whole_once_and_aborts_the_parts(
        tmp_path: Path, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}", proxy.url, "pod-a", "--rotate-every", "1h",
                        "--max-file-bytes", "30MiB", "--archive-timeout", "60s")
    sent = big_lines(300, "big-")  # ~37 MiB: one file of 30 MiB (~23 MiB gzipped) and the rest
    proxy.add(Fault("stall", frozenset({"UploadPart"})))
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        post_all(receiver, sent, per_batch=24)
        proxy.wait_stalled(timeout=90)  # the big file's parts hang, its upload is created
        big = finished_files(data)
        assert len(big) == 1 and len(next(iter(big.values()))) > 16 * 1024 * 1024
        receiver.stop(signal.SIGKILL)
    assert no_stale_multipart(s3, bucket), "the kill did not land mid-multipart"
    assert not objects(s3, bucket)
    proxy.clear()
    with running_receiver(tmp_path, args, env=env_for(tmp_path)) as receiver:
        wait_for(lambda: not local_data(data), timeout=90, what="every file uploaded")
        log = receiver.stderr()
    assert "aborted 1 incomplete multipart uploads" in log
    archived = assert_archived_exactly(s3, bucket, sent)
    assert len(archived) == 2  # the big file and the rest, rotated at the start
    [(name, content)] = big.items()
    [key] = [key for key in archived if key.endswith(f"-{stamp_of(name)}.ndjson.gz")]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == content
    assert no_stale_multipart(s3, bucket) == []
