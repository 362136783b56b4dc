"""`python register.py test` (issue 11 item 6): Vercel's test delivery, through the fake over
real HTTP, to a real receiver on loopback that reads the same secret file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vercel import FakeVercel, run_register
from tests.support import Receiver, running_receiver
from tests.test_register_drains import register


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, Path]]:
    base = tmp_path_factory.mktemp("rx")
    secret_file = base / "state" / "drain-secret"
    secret_file.parent.mkdir()
    secret_file.write_text("receiver-secret-0123456789abcdefghijklmn\n")
    env = {"DRAIN_SECRET_FILE": str(secret_file)}
    with running_receiver(base / "rx", ["--sink", "file", "--dir", str(base / "data")], env) as rx:
        yield rx, base


def test_the_test_delivery_reaches_the_receiver_and_is_kept(
    api: FakeVercel, receiver: tuple[Receiver, Path]
) -> None:
    rx, base = receiver
    run = register(api, base / "state" / "drain-secret", "test", "--url", rx.url + "/")
    assert run.returncode == 0, run.stderr
    assert f"Vercel's test log delivery to {rx.url}/ went through." in run.stdout
    assert api.test_deliveries == [(rx.url + "/", 200)]
    written = b"".join(p.read_bytes() for p in (base / "data").rglob("*.ndjson"))
    assert b"test-delivery-1" in written


def test_a_wrong_secret_is_reported_with_vercels_verdict(
    api: FakeVercel, receiver: tuple[Receiver, Path], tmp_path: Path
) -> None:
    rx, _ = receiver
    wrong = tmp_path / "state" / "drain-secret"
    wrong.parent.mkdir()
    wrong.write_text("not-the-receivers-secret-0123456789abcd\n")
    run = register(api, wrong, "test", "--url", rx.url + "/", "--compression", "none")
    assert run.returncode == 1
    assert "failed (403:" in run.stdout and "secret file" in run.stdout
    assert "test deliveries failed" in run.one_error_line()
    assert api.test_deliveries == [(rx.url + "/", 403)]


def test_test_needs_a_secret_and_the_drains_api(api: FakeVercel, tmp_path: Path) -> None:
    empty = register(api, tmp_path / "none" / "secret", "test")
    assert empty.returncode == 2 and "holds no secret" in empty.one_error_line()
    integration = run_register(["test", "--api", "integration", "--url", "https://x.example/"],
                               home=tmp_path, env={"VERCEL_TOKEN": "t0ken-0123456789"})
    assert integration.returncode == 2 and "--api drains" in integration.one_error_line()
    assert api.requests == []
