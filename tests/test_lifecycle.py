"""End to end: start-up, secrets, the stdout sink, and shutdown with deliveries in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from receiver.decode import split_records
from receiver.sinks import SinkError
from receiver.sinks.stdout import STDOUT_FD, StdoutSink
from tests.support import REPO_ROOT, free_port, running_receiver, sign, wait_until_serving


def ndjson(ids: range) -> bytes:
    return b"".join(json.dumps({"id": str(i), "message": "x" * 300}).encode() + b"\n" for i in ids)


def test_help_lists_every_option_with_its_variable_and_default() -> None:
    result = subprocess.run([sys.executable, "-m", "receiver", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.split())
    for option, variable, default in [
        ("--host", "HOST", "0.0.0.0"), ("--port", "PORT", "8080"), ("--sink", "DRAIN_SINK", "stdout"),
        ("--dir", "DRAIN_DIR", "drain-data"), ("--max-body-bytes", "DRAIN_MAX_BODY_BYTES", "32MiB"),
        ("--max-decompressed-bytes", "DRAIN_MAX_DECOMPRESSED_BYTES", "256MiB"),
        ("--fsync", "DRAIN_FSYNC", "false"), ("--max-file-bytes", "DRAIN_MAX_FILE_BYTES", "128MiB"),
        ("--keep-days", "DRAIN_KEEP_DAYS", "0"),
    ]:
        assert re.search(rf"{option} .*?\[env {variable}\] \(default: {re.escape(default)}\)", text), option
    assert "DRAIN_SECRET_FILE" in text and "DRAIN_VERIFY_TOKEN" in text


def test_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "receiver", "--sink", "kafka"], cwd=REPO_ROOT,
                            capture_output=True, text=True, env={**os.environ, "DRAIN_SECRET": "s"})
    assert result.returncode == 2
    assert "unknown sink 'kafka'" in result.stderr


def test_generates_a_secret_file_when_no_secret_exists(tmp_path: Path) -> None:
    secret_file = tmp_path / "config" / "drain-secret"
    with running_receiver(tmp_path, env={"DRAIN_SECRET_FILE": str(secret_file)}) as receiver:
        secret = secret_file.read_text().strip()
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", secret)
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert str(secret_file) in receiver.stderr()
        body = ndjson(range(1))
        assert receiver.post(body, secret).json() == {"accepted": 1, "rejected": 0}
        assert receiver.stdout() == body
    assert secret not in receiver.stderr()
    with running_receiver(tmp_path, env={"DRAIN_SECRET_FILE": str(secret_file)}):
        assert secret_file.read_text().strip() == secret


def test_secret_file_and_verify_file_are_reread_without_restart(tmp_path: Path) -> None:
    secret_file = tmp_path / "drain-secret"
    verify_file = tmp_path / "drain-verify"
    secret_file.write_text("first-secret\n")
    env = {"DRAIN_SECRET_FILE": str(secret_file), "DRAIN_SECRET": "env-secret-a,env-secret-b"}
    with running_receiver(tmp_path, env=env) as receiver:
        assert receiver.post(ndjson(range(1)), "first-secret").status_code == 200
        assert receiver.post(ndjson(range(1)), "second-secret").status_code == 403
        assert "x-vercel-verify" not in httpx.get(receiver.url + "/").headers

        secret_file.write_text("second-secret\nfirst-secret\n")
        verify_file.write_text("code-from-vercel\n")
        assert receiver.post(ndjson(range(1, 2)), "second-secret").status_code == 200
        assert receiver.post(ndjson(range(2, 3)), "first-secret").status_code == 200
        assert httpx.get(receiver.url + "/").headers["x-vercel-verify"] == "code-from-vercel"

        secret_file.write_text("# first-secret retired\nsecond-secret\n")
        assert receiver.post(ndjson(range(3, 4)), "first-secret").status_code == 403
        for env_secret in ("env-secret-a", "env-secret-b"):
            assert receiver.post(ndjson(range(4, 5)), env_secret).status_code == 200
        ids = [json.loads(line)["id"] for line in receiver.stdout().splitlines()]
        assert ids == ["0", "1", "2", "4", "4"]
    for secret in ("first-secret", "second-secret", "env-secret-a"):
        assert secret not in receiver.stderr()


def test_stdout_sink_sends_rejects_to_stderr_and_records_alone_to_stdout(tmp_path: Path) -> None:
    with running_receiver(tmp_path, env={"DRAIN_SECRET": "s3cret"}) as receiver:
        body = ndjson(range(2)) + b"garbage line\n"
        assert receiver.post(body, "s3cret").json() == {"accepted": 2, "rejected": 1}
        assert receiver.stdout() == ndjson(range(2))
        rejects = [json.loads(line) for line in receiver.stderr().splitlines() if line.startswith("{")]
        assert [r["raw"] for r in rejects] == ["garbage line"]


def test_sigterm_with_clients_sending_loses_no_acknowledged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = "shutdown-secret"
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    with running_receiver(tmp_path, ["--sink", "file,stdout", "--dir", str(data)],
                          env={"DRAIN_SECRET": secret}) as receiver:

        def client(worker: int) -> None:
            with httpx.Client(timeout=10) as http:
                for batch in range(10_000):
                    if stop.is_set():
                        return
                    ids = range((worker * 10_000 + batch) * 50, (worker * 10_000 + batch + 1) * 50)
                    body = ndjson(ids)
                    try:
                        response = http.post(receiver.url + "/", content=body,
                                             headers={"x-vercel-signature": sign(body, secret)})
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        with lock:
                            acknowledged.extend(str(i) for i in ids)

        clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        receiver.process.send_signal(signal.SIGTERM)
        exit_code = receiver.process.wait(timeout=30)
        stop.set()
        for thread in clients:
            thread.join(timeout=30)

    assert exit_code == 0
    assert len(acknowledged) > 0
    active = next(data.glob("logs/*/logs.ndjson"))
    in_file = [json.loads(line)["id"] for line in active.read_bytes().splitlines()]
    in_stdout = [json.loads(line)["id"] for line in receiver.stdout().splitlines()]
    assert set(acknowledged) <= set(in_file)
    assert set(acknowledged) <= set(in_stdout)
    assert len(in_file) == len(set(in_file))
    assert "sinks flushed and closed" in receiver.stderr()


def _receiver_with_stdout(tmp_path: Path, stdout: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAIN_")}
    env.update({"DRAIN_SECRET": "s3cret", "DRAIN_SECRET_FILE": str(tmp_path / "drain-secret")})
    stderr_path = tmp_path / f"stderr-{port}.log"
    with stderr_path.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "receiver", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=REPO_ROOT, env=env,
                                   stdout=stdout, stderr=err)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, stderr_path)
    return process, url, stderr_path


def _post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/", content=body, headers={"x-vercel-signature": sign(body, "s3cret")})


def test_readyz_is_unready_after_stdout_fails_a_write_to_dev_full(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        process, url, _ = _receiver_with_stdout(tmp_path, full.fileno())
    try:
        assert httpx.get(url + "/readyz").status_code == 200
        assert _post(url, ndjson(range(3))).status_code == 503
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unready",
                                "problems": ["the last write to stdout failed: No space left on device"]}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_readyz_is_unready_while_stdout_readers_are_gone_and_ready_after_a_good_write(
    tmp_path: Path,
) -> None:
    read_end, write_end = os.pipe()
    process, url, _ = _receiver_with_stdout(tmp_path, write_end)
    os.close(write_end)
    try:
        assert _post(url, ndjson(range(1))).status_code == 200
        assert os.read(read_end, 65536) == ndjson(range(1))
        os.close(read_end)
        assert _post(url, ndjson(range(1, 2))).status_code == 503
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["the last write to stdout failed: Broken pipe"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_readyz_recovers_with_the_next_good_write() -> None:
    saved = os.dup(STDOUT_FD)
    read_end, write_end = os.pipe()
    try:
        sink = StdoutSink()
        with open("/dev/full", "wb") as full:
            os.dup2(full.fileno(), STDOUT_FD)
        batch = split_records(ndjson(range(1)))
        with pytest.raises(SinkError, match="No space left on device"):
            sink.write(batch)
        assert sink.unready_reason() == "the last write to stdout failed: No space left on device"
        os.dup2(write_end, STDOUT_FD)
        sink.write(batch)
        assert sink.unready_reason() is None
        assert os.read(read_end, 65536) == ndjson(range(1))
    finally:
        os.dup2(saved, STDOUT_FD)
        os.close(saved)
        os.close(read_end)
        os.close(write_end)
