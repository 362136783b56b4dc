"""End to end: `drain-receiver search --archive` and `stats --archive` against moto's S3 server.

Objects are put the way the uploader puts them (receiver.archive.store.upload, under
receiver.archive.keys.object_key), six hours of them in two streams, and once by a real
receiver with --archive. Every search is compared with a brute-force pass over the records.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from receiver.archive.keys import ArchiveTarget, object_key
from receiver.archive.store import upload
from tests.support import REPO_ROOT, free_port, running_receiver
from tests.test_archive import (
    SECRET,
    archive_args,
    archived_lines,
    aws_env,
    local_data,
    post_all,
    s3_client,
    s3_server,
    wait_for,
)

sys.path.insert(0, str(REPO_ROOT / "bench"))
from gen import RecordFactory, dump_record

BUCKET = "search-archive"
PREFIX = "drains/prod"
TEMPLATE = "{stream}/{date}"
DAY = "2026-11-30"
HOURS = range(6)
STREAMS = ("logs", "traces")
Store = tuple[str, Any, dict[str, list[bytes]], dict[str, str]]  # endpoint, client, key -> lines, env


def hour_ms(hour: int) -> int:
    return int(datetime.fromisoformat(f"{DAY}T{hour:02d}:00:00+00:00").timestamp() * 1000)


def local_name(stream: str, hour: int, worker: int = 0) -> str:
    """The name the file sink gives a file it cut at `hour`:59:59 of DAY."""
    stamp = f"{DAY.replace('-', '')}T{hour:02d}5959.000000Z"
    return f"{stream}{f'-w{worker}' if worker else ''}-{stamp}.ndjson.gz"


def put(s3: Any, local: str, data: bytes, host: str = "pod-a") -> str:
    """Upload `data` as the uploader uploads the finished file `local` of DAY; its key."""
    stream = local.split("-", 1)[0]
    key = object_key(PurePosixPath(f"{stream}/{DAY}") / local, TEMPLATE, PREFIX, host)
    upload(s3, io.BytesIO(data), len(data), ArchiveTarget(BUCKET, PREFIX), key)
    return key


def gz(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines))


def make_lines(seed: int, start_ms: int, count: int) -> list[bytes]:
    factory = RecordFactory(seed)
    factory.clock_ms = start_ms
    lines = [dump_record(factory.record()) for _ in range(count)]
    # a line whose bytes differ from what a re-encoding would give: ndjson must be the raw line
    record = json.loads(lines[0])
    lines[0] = json.dumps(record, ensure_ascii=True, indent=None).encode()
    return lines


def newest_first(lines: list[bytes]) -> list[bytes]:
    return sorted(lines, key=lambda line: (json.loads(line)["timestamp"], json.loads(line)["id"]),
                  reverse=True)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """moto on loopback with six hours of objects in two streams; (endpoint, client, key ->
    lines, environment for the command)."""
    workdir = tmp_path_factory.mktemp("archive-search")
    with s3_server(free_port()) as endpoint:
        s3 = s3_client(endpoint, workdir)
        s3.create_bucket(Bucket=BUCKET)
        written: dict[str, list[bytes]] = {}
        for hour in HOURS:
            for index, stream in enumerate(STREAMS):
                lines = make_lines(100 * hour + index, hour_ms(hour) + 1000, 120)
                written[put(s3, local_name(stream, hour), gz(lines))] = lines
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/README.txt", Body=b"not an archive object")
        env = {**os.environ, **aws_env(workdir), "DRAIN_ARCHIVE": f"s3://{BUCKET}/{PREFIX}",
               "DRAIN_ARCHIVE_ENDPOINT": endpoint}
        env.pop("DRAIN_DIR", None)
        yield endpoint, s3, written, env


def cached_keys(cache: Path) -> set[str]:
    root = cache / BUCKET
    return {p.relative_to(root).as_posix() for p in root.rglob("*.ndjson.gz")} if root.exists() else set()


def test_ndjson_from_the_archive_is_every_record_byte_for_byte_newest_first(
        store: Store, tmp_path: Path) -> None:
    _, _, written, env = store
    everything = [line for lines in written.values() for line in lines]
    result = cli(env, "search", "--format", "ndjson", "--limit", "100000", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"".join(line + b"\n" for line in newest_first(everything))
    assert cached_keys(tmp_path) == set(written)  # no window: every object, and the README left out


def test_objects_outside_since_until_and_stream_are_not_downloaded(
        store: Store, tmp_path: Path) -> None:
    _, _, written, env = store
    since, until = hour_ms(3), hour_ms(3) + 1800_000
    result = cli(env, "search", "--format", "ndjson", "--limit", "100000", "--cache-dir", str(tmp_path),
                 "--since", f"{DAY}T03:00Z", "--until", f"{DAY}T03:30Z", "--stream", "logs",
                 "--level", "info", "--level", "error")
    assert result.returncode == 0, result.stderr.decode()
    expected = [line for key, lines in written.items() if "stream=logs/" in key for line in lines
                if since <= json.loads(line)["timestamp"] < until
                and json.loads(line)["level"] in ("info", "error")]
    assert expected
    assert result.stdout == b"".join(line + b"\n" for line in newest_first(expected))
    # hour 3's records can be in an object cut in hour 3 or, with the 1 h slack, hour 4; an object
    # cut at 01:59 or before holds nothing from 03:00 on, one cut at 05:00 or later is past the slack
    fetched = cached_keys(tmp_path)
    assert fetched == {k for k in written
                       if "stream=logs/" in k and any(f"hour={h:02d}/" in k for h in (2, 3, 4))}


def test_a_second_search_reuses_the_cache(
        store: Store, tmp_path: Path) -> None:
    _, _, _, env = store
    args = ("search", "--format", "ndjson", "--cache-dir", str(tmp_path), "--since", f"{DAY}T05:00Z")
    first = cli(env, *args)
    assert first.returncode == 0, first.stderr.decode()
    inodes = {p: p.stat().st_ino for p in (tmp_path / BUCKET).rglob("*.ndjson.gz")}
    assert inodes
    modes = {oct(p.stat().st_mode & 0o777) for p in inodes}
    assert modes == {"0o600"}  # logs are private
    second = cli(env, *args)
    assert second.stdout == first.stdout
    assert {p: p.stat().st_ino for p in (tmp_path / BUCKET).rglob("*.ndjson.gz")} == inodes
    # a cached copy that does not match the listing is downloaded again
    broken = next(iter(inodes))
    broken.write_bytes(b"not the object")
    third = cli(env, *args)
    assert third.stdout == first.stdout
    assert broken.stat().st_ino != inodes[broken]


def test_stats_over_the_archive(store: Store, tmp_path: Path) -> None:
    _, _, written, env = store
    result = cli(env, "stats", "--cache-dir", str(tmp_path), "--since", f"{DAY}T00:00Z",
                 "--until", f"{DAY}T06:00Z", "--intervals", "6", "--stream", "traces")
    assert result.returncode == 0, result.stderr.decode()
    total = sum(len(lines) for key, lines in written.items() if "stream=traces/" in key)
    assert result.stdout.decode().splitlines()[-1].startswith(f"{total} records in 6 intervals")


def test_a_file_both_in_dir_and_in_the_bucket_is_read_once(
        store: Store, tmp_path: Path) -> None:
    """Uploaded and not yet deleted: as the `.gz`, as the plain file mid-compression, and a
    file of the same name whose bytes differ (another replica's), which is read too."""
    _, s3, _, env = store
    root = tmp_path / "data"
    day_dir = root / "logs" / DAY
    day_dir.mkdir(parents=True)
    hour = 9
    gz_lines = make_lines(901, hour_ms(hour), 50)
    put(s3, local_name("logs", hour), gz(gz_lines))
    hour_prefix = f"{PREFIX}/stream=logs/date={DAY}/hour={hour:02d}/"
    stored = s3.get_object(Bucket=BUCKET, Key=objects_under(s3, hour_prefix)[0])["Body"].read()
    (day_dir / local_name("logs", hour)).write_bytes(stored)
    plain_lines = make_lines(902, hour_ms(hour) + 600_000, 50)
    put(s3, local_name("logs", hour, worker=1), gz(plain_lines))
    (day_dir / local_name("logs", hour, worker=1).removesuffix(".gz")).write_bytes(
        b"".join(x + b"\n" for x in plain_lines))
    other_lines = make_lines(903, hour_ms(hour) + 1200_000, 50)
    put(s3, local_name("logs", hour, worker=2), gz(other_lines), host="pod-b")
    mine = make_lines(904, hour_ms(hour) + 1300_000, 50)
    (day_dir / local_name("logs", hour, worker=2)).write_bytes(gz(mine))
    active = make_lines(905, hour_ms(hour) + 1800_000, 30)
    (day_dir / "logs.ndjson").write_bytes(b"".join(x + b"\n" for x in active))
    try:
        result = cli(env, "search", "--dir", str(root), "--format", "ndjson", "--limit", "100000",
                     "--cache-dir", str(tmp_path / "cache"), "--since", f"{DAY}T{hour:02d}:00Z")
        assert result.returncode == 0, result.stderr.decode()
        expected = gz_lines + plain_lines + other_lines + mine + active
        assert result.stdout == b"".join(line + b"\n" for line in newest_first(expected))
        assert len(cached_keys(tmp_path / "cache")) == 1  # only pod-b's: the others are read from --dir
    finally:
        for key in objects_under(s3, hour_prefix):
            s3.delete_object(Bucket=BUCKET, Key=key)


def objects_under(s3: Any, prefix: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_records_a_real_receiver_archived_are_found_exactly_once(
        store: Store, tmp_path: Path) -> None:
    endpoint, s3, _, env = store
    bucket = "from-a-receiver"
    s3.create_bucket(Bucket=bucket)
    data = tmp_path / "data"
    sent = make_lines(77, hour_ms(0), 400)
    args = archive_args(data, f"s3://{bucket}/p", endpoint, "pod-a", "--max-file-bytes", "20KiB",
                        "--rotate-every", "1s")
    with running_receiver(tmp_path, args, env={"DRAIN_SECRET": SECRET, **aws_env(tmp_path)}) as receiver:
        post_all(receiver, sent)
        wait_for(lambda: len(archived_lines(s3, bucket)) >= len(sent) and not local_data(data),
                 what="every record archived")
        both = cli(env, "search", "--archive", f"s3://{bucket}/p", "--dir", str(data), "--format", "ndjson",
                   "--limit", "100000", "--cache-dir", str(tmp_path / "cache"))
    assert both.returncode == 0, both.stderr.decode()
    assert both.stdout == b"".join(line + b"\n" for line in newest_first(sent))


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert result.stdout == b""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_bad_url_is_one_line_and_exit_2(store: Store,
                                          tmp_path: Path) -> None:
    cache = ("--cache-dir", str(tmp_path))
    err = one_line_error(cli(store[3], "search", "--archive", "http://bucket/x", *cache))
    assert "not an archive URL: 'http://bucket/x' (use s3://BUCKET or s3://BUCKET/PREFIX)" in err
    err = one_line_error(cli(store[3], "stats", "--archive-endpoint", "not a url", *cache))
    assert "--archive-endpoint" in err


def test_a_missing_bucket_is_one_line_and_exit_2(store: Store,
                                                 tmp_path: Path) -> None:
    err = one_line_error(cli(store[3], "search", "--archive", "s3://no-such-bucket/p",
                             "--cache-dir", str(tmp_path)))
    assert "no bucket 'no-such-bucket' (check --archive)" in err


def test_no_credentials_is_one_line_and_exit_2(store: Store,
                                               tmp_path: Path) -> None:
    env = {k: v for k, v in store[3].items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    err = one_line_error(cli(env, "search", "--cache-dir", str(tmp_path)))
    assert "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in err


def test_a_store_that_is_down_is_one_line_and_exit_2(store: Store,
                                                     tmp_path: Path) -> None:
    env = {**store[3], "DRAIN_ARCHIVE_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    err = one_line_error(cli(env, "search", "--cache-dir", str(tmp_path)))
    assert "is the store up, and --archive-endpoint right?" in err


def test_follow_needs_dir(store: Store, tmp_path: Path) -> None:
    err = one_line_error(cli(store[3], "search", "--follow", "--cache-dir", str(tmp_path)))
    assert "--follow prints new records as the receiver writes them: give its --dir" in err


def test_an_unwritable_cache_is_one_line_and_exit_2(store: Store,
                                                    tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = one_line_error(cli(store[3], "search", "--cache-dir", str(blocker / "cache")))
    assert "(give a writable --cache-dir)" in err
    shutil.rmtree(tmp_path, ignore_errors=True)
