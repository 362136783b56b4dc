"""End to end: option ranges, start-up checks, the resolved-setup line, the metrics listener,
JSON 404/405, the umask, and `drain-receiver send-test`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from receiver.settings import load_settings
from tests.support import REPO_ROOT, Receiver, free_port, running_receiver, sign, wait_until_serving

SECRET = "settings-secret-0123456789abcdefghijkl"


def receiver_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any `DRAIN_*` variable, plus the secret and `env`."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DRAIN_")}
    return {**child_env, "DRAIN_SECRET": SECRET, **(env or {})}


def run_receiver(args: list[str], env: Mapping[str, str] | None = None,
                 timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=REPO_ROOT, env=receiver_env(env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, env, expected", [
    (["--port", "70000"], {}, "--port (env PORT) must be a port from 1 to 65535, not 70000"),
    ([], {"PORT": "70000"}, "--port (env PORT) must be a port from 1 to 65535, not 70000"),
    ([], {"PORT": "eighty"}, "PORT='eighty' (for --port): not a whole number"),
    (["--metrics-port", "-1"], {}, "--metrics-port (env DRAIN_METRICS_PORT) must be a port"),
    ([], {"DRAIN_MAX_BODY_BYTES": "0"}, "--max-body-bytes (env DRAIN_MAX_BODY_BYTES) must be more than 0"),
    (["--header-timeout", "0"], {}, "--header-timeout (env DRAIN_HEADER_TIMEOUT) must be more than 0"),
    ([], {"DRAIN_BODY_TIMEOUT": "nan"}, "not a finite number of seconds"),
    ([], {"DRAIN_KEEP_DAYS": "-1"}, "--keep-days (env DRAIN_KEEP_DAYS) must be at least 0"),
    ([], {"DRAIN_WORKERS": "0"}, "--workers (env DRAIN_WORKERS) must be at least 1, not 0"),
    ([], {"DRAIN_LOG_LEVEL": "verbose"}, "--log-level (env DRAIN_LOG_LEVEL) must be one of debug"),
    ([], {"DRAIN_LOG_FORMAT": "xml"}, "--log-format (env DRAIN_LOG_FORMAT) must be one of plain, json"),
    ([], {"DRAIN_UMASK": "999"}, "DRAIN_UMASK='999' (for --umask): not an octal umask"),
])
def test_out_of_range_settings_are_one_line_usage_errors(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run_receiver(args, env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_flag_replaces_an_environment_value_that_does_not_parse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings(["--port", "8080", "--max-body-bytes", "1MiB"],
                             {"PORT": "eighty", "DRAIN_MAX_BODY_BYTES": "lots"})
    assert (settings.port, settings.max_body_bytes) == (8080, 1024 * 1024)
    with pytest.raises(SystemExit) as exited:
        load_settings(["--port", "8080"], {"PORT": "eighty", "DRAIN_MAX_BODY_BYTES": "lots"})
    assert exited.value.code == 2
    assert "DRAIN_MAX_BODY_BYTES='lots' (for --max-body-bytes)" in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--host", "999.1.1.1", "--port", "18080"],
     "cannot listen on 999.1.1.1:18080 (--host/HOST and --port/PORT): '999.1.1.1' is not an address"),
    (["--host", "127.0.0.1", "--sink", "file", "--dir", "/proc/nope"],
     "--dir (env DRAIN_DIR) /proc/nope: cannot create or write it"),
])
def test_settings_that_cannot_work_here_are_one_line_and_exit_2(args: list[str], expected: str) -> None:
    result = run_receiver(args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_sink_that_cannot_start_is_one_line_and_no_traceback(tmp_path: Path) -> None:
    """A planted symlink where a worker's lock file goes (the receiver never follows one)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / ".worker-0.lock").symlink_to(tmp_path / "elsewhere")
    result = run_receiver(["--host", "127.0.0.1", "--port", str(free_port()), "--sink", "file",
                           "--dir", str(data)])
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert errors[0].endswith(f"the file sink cannot start: Too many levels of symbolic links: "
                              f"{data}/.worker-0.lock; --dir (env DRAIN_DIR) and the files in it must "
                              "belong to the receiver's user and be no symlinks; fix that and restart")
    assert not (tmp_path / "elsewhere").exists()


def start_with_stdout_closed(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    env = receiver_env({"DRAIN_SECRET_FILE": str(stderr.parent / "drain-secret")})
    with stderr.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "receiver", "--host", "127.0.0.1", *args],
                                cwd=REPO_ROOT, env=env, stderr=err, preexec_fn=lambda: os.close(1))


def test_the_stdout_sink_refuses_to_start_without_a_stdout(tmp_path: Path) -> None:
    process = start_with_stdout_closed(["--port", str(free_port())], tmp_path / "stderr")
    assert process.wait(timeout=20) == 2
    (line,) = (tmp_path / "stderr").read_text().splitlines()
    assert line.endswith("stdout is closed, and the stdout sink writes every record there: give the "
                         "receiver a stdout (a pipe or a file), or choose --sink file")


def test_a_closed_stdout_is_held_on_dev_null_so_no_file_takes_its_number(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    process = start_with_stdout_closed(["--port", str(port), "--sink", "file", "--dir", str(data)],
                                       tmp_path / "stderr")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, tmp_path / "stderr")
        assert os.readlink(f"/proc/{process.pid}/fd/1") == os.devnull
        body = b'{"id": "fd-1", "message": "kept"}\n'
        response = httpx.post(url, content=body, headers={"x-vercel-signature": sign(body, SECRET)})
        assert response.json() == {"accepted": 1, "rejected": 0}
        (written,) = data.glob("logs/*/logs.ndjson")
        assert written.read_bytes() == body
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_port_in_use_is_named_before_starting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_receiver(["--host", "127.0.0.1", "--port", str(port)])
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (--host/HOST and --port/PORT): Address already in use" \
        in result.stderr


def test_help_lists_the_sub_commands() -> None:
    result = run_receiver(["--help"])
    assert result.returncode == 0
    assert "drain-receiver send-test --help: Send one signed sample record" in result.stdout
    assert "--metrics-port" in result.stdout and "DRAIN_UMASK" in result.stdout


@pytest.fixture(scope="module")
def separate_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, int, Path]]:
    workdir = tmp_path_factory.mktemp("metrics")
    metrics_port = free_port()
    data = workdir / "data"
    verify = workdir / "drain-verify"
    verify.write_text("verify-code-from-vercel\n")
    env = {"DRAIN_SECRET": SECRET, "DRAIN_METRICS_PORT": str(metrics_port), "DRAIN_VERIFY_FILE": str(verify)}
    with running_receiver(workdir, ["--sink", "file,stdout", "--dir", str(data), "--workers", "2"],
                          env=env) as receiver:
        yield receiver, metrics_port, data


def test_metrics_port_serves_metrics_of_every_worker_and_the_public_port_does_not(
    separate_metrics: tuple[Receiver, int, Path],
) -> None:
    receiver, metrics_port, _ = separate_metrics
    body = b"".join(json.dumps({"id": str(i), "message": "m"}).encode() + b"\n" for i in range(7))
    for _ in range(4):
        assert receiver.post(body, SECRET).status_code == 200
    public = httpx.get(receiver.url + "/metrics")
    assert public.status_code == 404
    assert public.json()["code"] == "not_found"
    page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert page.status_code == 200
    assert 'drain_records_accepted_total{stream="logs"} 28.0' in page.text
    other = httpx.get(f"http://127.0.0.1:{metrics_port}/")
    assert other.status_code == 404 and other.json()["code"] == "not_found"


def test_one_line_gives_the_resolved_setup_without_secrets(
    separate_metrics: tuple[Receiver, int, Path],
) -> None:
    receiver, metrics_port, data = separate_metrics
    lines = [line for line in receiver.stderr().splitlines() if "listening on" in line]
    assert len(lines) == 1
    line = lines[0]
    port = receiver.url.rsplit(":", 1)[1]
    assert f"listening on 127.0.0.1:{port} with 2 workers" in line
    assert f"/metrics on 127.0.0.1:{metrics_port} only" in line
    assert f"sinks: file {data}/{{stream}}/{{date}}, stdout" in line
    assert f"secret file {data.parent / 'drain-secret'} and 1 from DRAIN_SECRET" in line
    assert f"verify code: from {data.parent / 'drain-verify'}" in line
    assert SECRET not in receiver.stderr() and "verify-code-from-vercel" not in receiver.stderr()


def test_data_files_follow_the_umask_and_the_secret_file_stays_private(
    separate_metrics: tuple[Receiver, int, Path], tmp_path: Path,
) -> None:
    _, _, data = separate_metrics
    files = [path for path in data.rglob("*.ndjson")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    secret_file = tmp_path / "state" / "drain-secret"
    with running_receiver(tmp_path, env={"DRAIN_SECRET_FILE": str(secret_file), "DRAIN_UMASK": "000"}):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_unknown_path_and_method_have_json_bodies(separate_metrics: tuple[Receiver, int, Path]) -> None:
    receiver, _, _ = separate_metrics
    missing = httpx.get(receiver.url + "/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"code": "not_found", "error": "no such path: deliveries go to POST / "
                                                              "(traces to POST /v1/traces), probes to "
                                                              "/healthz and /readyz"}
    wrong = httpx.post(receiver.url + "/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def send_test(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DRAIN_")}
    child_env.update(env)
    return subprocess.run([sys.executable, "-m", "receiver", "send-test", *args], cwd=REPO_ROOT,
                          env=child_env, capture_output=True, text=True, timeout=30)


def test_send_test_lands_a_signed_record_and_says_where(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"DRAIN_SECRET": SECRET, "DRAIN_SINK": "file,stdout", "DRAIN_DIR": str(data),
           "DRAIN_PATH_TEMPLATE": "{projectId}/{date}"}
    with running_receiver(tmp_path, env=env) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        result = send_test([], {**env, "PORT": port})
        assert result.returncode == 0, result.stderr
        record = json.loads(receiver.stdout())
    assert 'answered 200: {"accepted":1,"rejected":0}' in result.stdout
    assert f"record id {record['id']} should now be in:" in result.stdout
    assert "stdout of the receiver process" in result.stdout
    landed = list(data.glob("prj_drainreceiversendtest/*/logs*.ndjson"))
    assert len(landed) == 1 and json.loads(landed[0].read_bytes()) == record
    assert f"file sink: {landed[0].parent}/logs*.ndjson" in result.stdout
    assert record["source"] == "lambda" and record["proxy"]["method"] == "GET"


def test_send_test_explains_a_wrong_secret_and_a_missing_receiver(tmp_path: Path) -> None:
    other = tmp_path / "other-secret"
    other.write_text("not-the-receivers-secret\n")
    with running_receiver(tmp_path, env={"DRAIN_SECRET": SECRET}) as receiver:
        refused = send_test(["--url", receiver.url + "/", "--secret-file", str(other)], {})
        assert receiver.stdout() == b""
    assert refused.returncode == 1
    assert f"refused the signature made with the secret from {other}" in refused.stderr
    unreachable = send_test(["--url", f"http://127.0.0.1:{free_port()}/"], {"DRAIN_SECRET": SECRET})
    assert unreachable.returncode == 1
    assert "cannot connect to http://127.0.0.1:" in unreachable.stderr
    assert "is the receiver running there?" in unreachable.stderr
    assert "Traceback" not in refused.stderr + unreachable.stderr
