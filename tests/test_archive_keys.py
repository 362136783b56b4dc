"""Object keys for finished files, the archive URL, and the archive's settings."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from receiver.archive.keys import ArchiveTarget, is_finished, object_key, parse_archive_url
from receiver.settings import load_settings

STAMP = "20261202T135901.123456Z"


def key(relative: str, template: str = "{stream}/{date}", prefix: str = "drains", host: str = "pod-a") -> str:
    return object_key(PurePosixPath(relative), template, prefix, host)


def test_a_key_is_hive_style_with_the_host_worker_and_rotation_stamp() -> None:
    assert key(f"logs/2026-12-02/logs-{STAMP}.ndjson.gz") == (
        f"drains/stream=logs/date=2026-12-02/hour=13/pod-a-w0-{STAMP}.ndjson.gz")
    assert key(f"traces/2026-12-02/traces-w3-{STAMP}-2.ndjson.gz", prefix="") == (
        f"stream=traces/date=2026-12-02/hour=13/pod-a-w3-{STAMP}-2.ndjson.gz")


def test_the_templates_other_fields_become_key_value_parts_in_order() -> None:
    assert key(f"prj_1/edge/2026-12-02/logs-{STAMP}.ndjson.gz", "{projectId}/{source}/{date}") == (
        f"drains/stream=logs/projectId=prj_1/source=edge/date=2026-12-02/hour=13/pod-a-w0-{STAMP}.ndjson.gz")
    # a partition another template made: no fields rather than wrong ones
    assert key(f"old/logs-{STAMP}.ndjson.gz", "{projectId}/{source}/{date}") == (
        f"drains/stream=logs/date=2026-12-02/hour=13/pod-a-w0-{STAMP}.ndjson.gz")


def test_rejects_go_under_their_own_prefix() -> None:
    assert key(f"rejected/logs-w1-{STAMP}.ndjson.gz") == (
        f"drains/rejected/stream=logs/date=2026-12-02/hour=13/pod-a-w1-{STAMP}.ndjson.gz")


def test_a_host_name_cannot_add_parts_to_the_key() -> None:
    assert key(f"logs/d/logs-{STAMP}.ndjson.gz", host="../x/y") == (
        f"drains/stream=logs/date=2026-12-02/hour=13/_._x_y-w0-{STAMP}.ndjson.gz")


@pytest.mark.parametrize("name", [
    f"logs-{STAMP}.ndjson", f"logs-{STAMP}.ndjson.gz.partial", "logs.ndjson", "logs-w1.ndjson",
    f"Logs-{STAMP}.ndjson.gz", f"logs-{STAMP}.ndjson.gz.tmp", ".worker-0.lock",
])
def test_only_finished_files_are_finished(name: str) -> None:
    assert not is_finished(name)
    with pytest.raises(ValueError, match="not a finished file"):
        key(f"logs/d/{name}")


def test_finished_names() -> None:
    assert is_finished(f"logs-{STAMP}.ndjson.gz")
    assert is_finished(f"speed_insights-w12-{STAMP}-3.ndjson.gz")


def test_archive_urls() -> None:
    assert parse_archive_url("s3://my-bucket") == ArchiveTarget("my-bucket", "")
    assert parse_archive_url("s3://my-bucket/a/b/") == ArchiveTarget("my-bucket", "a/b")
    for bad in ("my-bucket", "https://my-bucket/x", "s3://", "s3://ab", "s3://bkt/a//c", "s3://bkt/../x"):
        with pytest.raises(ValueError, match=r"s3://BUCKET|empty"):
            parse_archive_url(bad)


def test_archive_settings_and_their_defaults() -> None:
    settings = load_settings(["--sink", "file", "--archive", "s3://logs-bucket/prod"], env={})
    assert (settings.archive, settings.rotate_every) == ("s3://logs-bucket/prod", 300.0)
    assert load_settings([], env={}).rotate_every == 0.0
    env = {"DRAIN_SINK": "file", "DRAIN_ARCHIVE": "s3://logs-bucket", "DRAIN_ROTATE_EVERY": "90s",
           "DRAIN_ARCHIVE_ENDPOINT": "http://minio:9000", "DRAIN_ARCHIVE_HOST": "pod-7"}
    settings = load_settings([], env=env)
    assert (settings.rotate_every, settings.archive_endpoint, settings.archive_host) == (
        90.0, "http://minio:9000", "pod-7")
    assert load_settings(["--rotate-every", "0"], env=env).rotate_every == 0.0


def test_archive_settings_refused_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--archive", "s3://logs-bucket"], "add --sink file"),
        (["--sink", "file", "--archive", "bucket"], "use s3://BUCKET or s3://BUCKET/PREFIX"),
        (["--rotate-every", "5 minutes"], "not a duration"),
    ]:
        with pytest.raises(SystemExit):
            load_settings(argv, env={})
        assert message in capsys.readouterr().err
