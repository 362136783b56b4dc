"""End to end: a receiver with `--archive` against a real S3 API (moto's server) on loopback."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from receiver.archive.keys import ArchiveTarget
from receiver.archive.store import make_client, upload
from tests.support import free_port, running_receiver

SECRET = "archive-secret-0123456789abcdefghijklmnop"
KEY = r"stream=logs/date=\d{4}-\d\d-\d\d/hour=\d\d/HOST-w0-\d{8}T\d{6}\.\d{6}Z(-\d+)?\.ndjson\.gz"


def aws_env(tmp_path: Path) -> dict[str, str]:
    """Dummy credentials, and nothing read from the user's ~/.aws."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def s3_server(port: int) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1:`port`, stopped afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "moto.server exited"
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto.server did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_client(endpoint: str, tmp_path: Path) -> Any:
    os.environ.update(aws_env(tmp_path))
    return boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server(free_port()) as url:
        yield url


@pytest.fixture
def s3(endpoint: str, tmp_path: Path) -> Any:
    return s3_client(endpoint, tmp_path)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"drain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def lines_of(ids: range, tag: str = "") -> list[bytes]:
    return [json.dumps({"id": f"{tag}{i}", "message": "m" * 300, "source": "lambda"}).encode()
            for i in ids]


def post_all(receiver: Any, lines: list[bytes], per_batch: int = 50) -> None:
    for start in range(0, len(lines), per_batch):
        batch = lines[start:start + per_batch]
        response = receiver.post(b"".join(line + b"\n" for line in batch), SECRET)
        assert response.json() == {"accepted": len(batch), "rejected": 0}


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`, gunzipped."""
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = gzip.decompress(body)
    return found


def archived_lines(s3: Any, bucket: str, prefix: str = "") -> list[bytes]:
    return [line for data in objects(s3, bucket, prefix).values() for line in data.splitlines()]


def local_data(root: Path) -> list[Path]:
    """Files under `root` that still hold records (finished or active, not rejects)."""
    found = []
    for path in root.rglob("logs*.ndjson*"):
        with contextlib.suppress(FileNotFoundError):  # compressed or uploaded meanwhile
            if path.stat().st_size and "rejected" not in path.parts:
                found.append(path)
    return found


def wait_for(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        time.sleep(0.1)


def archive_args(data: Path, url: str, endpoint: str, host: str, *extra: str) -> list[str]:
    return ["--sink", "file", "--dir", str(data), "--archive", url, "--archive-endpoint", endpoint,
            "--archive-host", host, *extra]


def test_every_acknowledged_record_lands_in_the_bucket_once_and_leaves_the_disk(
        tmp_path: Path, endpoint: str, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}/drains/prod", endpoint, "pod-a",
                        "--max-file-bytes", "20KiB", "--rotate-every", "1s")
    sent = lines_of(range(600))
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    with running_receiver(tmp_path, args, env=env) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: len(archived_lines(s3, bucket)) >= len(sent) and not local_data(data),
                 what="every record archived and gone from the disk")
        wait_for(lambda: "drain_archive_waiting_files 0.0" in httpx.get(receiver.url + "/metrics").text,
                 what="no file counted as waiting")
        page = httpx.get(receiver.url + "/metrics").text
    archived = objects(s3, bucket)
    assert len(archived) >= 3  # rotated by size as well as by age
    assert all(key.startswith("drains/prod/") for key in archived)
    pattern = "drains/prod/" + KEY.replace("HOST", "pod-a")
    assert all(re.fullmatch(pattern, key) for key in archived), sorted(archived)
    # In key order (the rotation stamp), the objects hold the bytes sent, in order, once each.
    assert b"".join(archived[key] for key in sorted(archived)) == b"".join(line + b"\n" for line in sent)
    assert f"drain_archive_uploaded_objects_total {float(len(archived))}" in page
    assert "drain_archive_upload_errors_total 0.0" in page


def test_a_store_that_is_down_at_start_gets_the_waiting_files_once_it_is_up(tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    args = archive_args(data, "s3://late-bucket/p", endpoint, "pod-a", "--max-file-bytes", "20KiB",
                        "--rotate-every", "1s")
    sent = lines_of(range(300))
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    with running_receiver(tmp_path, args, env=env) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: "cannot upload" in receiver.stderr(), what="an upload failure logged")
        wait_for(lambda: not list(data.rglob("logs.ndjson")) and not list(data.rglob("logs-*.ndjson")),
                 what="everything rotated and compressed")
        assert len(list(data.rglob("logs-*.ndjson.gz"))) >= 2  # waiting on disk
        assert "is the store up, and --archive-endpoint right?" in receiver.stderr()
        with s3_server(port):
            s3 = s3_client(endpoint, tmp_path)
            s3.create_bucket(Bucket="late-bucket")
            wait_for(lambda: not local_data(data), timeout=60, what="the waiting files uploaded")
            archived = objects(s3, "late-bucket")
    assert sorted(line for data_ in archived.values() for line in data_.splitlines()) == sorted(sent)


def test_a_receiver_killed_with_sigkill_finishes_the_upload_at_its_next_start(
        tmp_path: Path, endpoint: str, s3: Any) -> None:
    data = tmp_path / "data"
    bucket = f"drain-{uuid.uuid4().hex[:12]}"  # created only after the kill: uploads fail until then
    args = archive_args(data, f"s3://{bucket}", endpoint, "pod-a", "--max-file-bytes", "20KiB",
                        "--rotate-every", "1h")
    sent = lines_of(range(300))
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    with running_receiver(tmp_path, args, env=env) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: "NoSuchBucket" in receiver.stderr(), timeout=90, what="an upload refused")
        wait_for(lambda: not list(data.rglob("logs-*.ndjson")), timeout=90, what="rotated files compressed")
        assert list(data.rglob("logs-*.ndjson.gz")) and list(data.rglob("logs.ndjson"))
        receiver.stop(signal.SIGKILL)
    s3.create_bucket(Bucket=bucket)
    with running_receiver(tmp_path, args, env=env):
        wait_for(lambda: not local_data(data), timeout=90, what="the last run's files uploaded")
    archived = objects(s3, bucket)
    assert b"".join(archived[key] for key in sorted(archived)) == b"".join(line + b"\n" for line in sent)


def test_two_replicas_into_one_bucket_never_share_a_key(
        tmp_path: Path, endpoint: str, s3: Any, bucket: str) -> None:
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    sent = {host: lines_of(range(200), tag=host) for host in ("pod-a", "pod-b")}
    with contextlib.ExitStack() as stack:
        receivers = {
            host: stack.enter_context(running_receiver(
                tmp_path / host,
                archive_args(tmp_path / host / "data", f"s3://{bucket}/shared", endpoint, host,
                             "--max-file-bytes", "20KiB", "--rotate-every", "1s"),
                env=env))
            for host in sent
        }
        for host, receiver in receivers.items():
            post_all(receiver, sent[host])
        wait_for(lambda: all(not local_data(tmp_path / host / "data") for host in sent),
                 what="both replicas' files uploaded")
    archived = objects(s3, bucket)
    for host, lines in sent.items():
        mine = {key: value for key, value in archived.items() if f"/{host}-w0-" in key}
        assert b"".join(mine[key] for key in sorted(mine)) == b"".join(line + b"\n" for line in lines)
    assert len(archived) == sum(1 for key in archived if "/pod-a-w0-" in key or "/pod-b-w0-" in key)


def test_a_large_file_goes_in_parts_and_arrives_whole(tmp_path: Path, s3: Any, bucket: str,
                                                       endpoint: str) -> None:
    content = os.urandom(12 * 1024 * 1024 + 123)
    client = make_client(endpoint)
    upload(client, io.BytesIO(content), len(content), ArchiveTarget(bucket, ""), "big.ndjson.gz",
           multipart_bytes=5 * 1024 * 1024)
    head = s3.head_object(Bucket=bucket, Key="big.ndjson.gz")
    assert head["ETag"].strip('"').endswith("-2")  # two parts (8 MiB chunks)
    assert s3.get_object(Bucket=bucket, Key="big.ndjson.gz")["Body"].read() == content


def test_sigterm_rotates_the_active_files_and_uploads_them_before_exiting(
        tmp_path: Path, endpoint: str, s3: Any, bucket: str) -> None:
    data = tmp_path / "data"
    args = archive_args(data, f"s3://{bucket}/p", endpoint, "pod-a", "--rotate-every", "1h")
    sent = lines_of(range(120))
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    with running_receiver(tmp_path, args, env=env) as receiver:
        post_all(receiver, sent)
        assert not objects(s3, bucket)  # nothing is finished yet: the records are in the active file
        assert receiver.stop(signal.SIGTERM) == 0
        assert "every finished file uploaded before shutdown" in receiver.stderr()
    assert not local_data(data)
    assert archived_lines(s3, bucket) == sent


def test_past_spool_max_bytes_deliveries_get_a_503_that_writes_nothing_until_the_store_is_back(
        tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    args = archive_args(data, "s3://spool-bucket", endpoint, "pod-a", "--rotate-every", "0.5s",
                        "--spool-max-bytes", "100")
    first, refused, last = lines_of(range(50)), lines_of(range(50, 60)), lines_of(range(60, 70))
    env = {"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}
    with running_receiver(tmp_path, args, env=env) as receiver:
        post_all(receiver, first)
        wait_for(lambda: httpx.get(receiver.url + "/readyz").status_code == 503, what="unready")
        problems = httpx.get(receiver.url + "/readyz").json()["problems"]
        assert any("past --spool-max-bytes 100 " in problem for problem in problems), problems
        response = receiver.post(b"".join(line + b"\n" for line in refused), SECRET)
        assert response.status_code == 503
        assert response.json()["code"] == "sink_unavailable"
        assert "past --spool-max-bytes 100 " in receiver.stderr()
        assert all(path.name.endswith(".gz") for path in local_data(data))  # no active file with data
        with s3_server(port):
            s3 = s3_client(endpoint, tmp_path)
            s3.create_bucket(Bucket="spool-bucket")
            wait_for(lambda: httpx.get(receiver.url + "/readyz").status_code == 200, timeout=60,
                     what="ready again once the files shipped")
            post_all(receiver, last)
            wait_for(lambda: not local_data(data), what="everything shipped")
            archived = archived_lines(s3, "spool-bucket")
    assert sorted(archived) == sorted(first + last)  # the refused batch was written nowhere
