"""Helpers shared by the end-to-end tests: a real receiver process on a loopback port."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sign(body: bytes, secret: str) -> str:
    """The `x-vercel-signature` Vercel sends for `body`."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


@dataclass
class Receiver:
    """A receiver process started by a test; stdout and stderr go to files."""

    url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def post(self, body: bytes, secret: str | None, **headers: str) -> httpx.Response:
        """POST `body` to `/`, signed with `secret` unless it is None."""
        sent = {key.replace("_", "-"): value for key, value in headers.items()}
        if secret is not None:
            sent["x-vercel-signature"] = sign(body, secret)
        return httpx.post(self.url + "/", content=body, headers=sent, timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def wait_until_serving(url: str, process: subprocess.Popen[bytes], stderr: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}:\n{stderr.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"receiver did not start:\n{stderr.read_text()}")


@contextmanager
def running_receiver(
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Receiver]:
    """Run `python -m receiver` on 127.0.0.1 with `args`; stop it with SIGTERM afterwards.

    The child's environment is the test's, without any `DRAIN_*` variable, plus `env`;
    `DRAIN_SECRET_FILE` defaults to `workdir/drain-secret` so no test touches the user's home.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("DRAIN_")}
    child_env["DRAIN_SECRET_FILE"] = str(workdir / "drain-secret")
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    stdout_path = workdir / f"stdout-{port}.log"
    stderr_path = workdir / f"stderr-{port}.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=REPO_ROOT,
            env=child_env,
            stdout=out,
            stderr=err,
        )
    receiver = Receiver(f"http://127.0.0.1:{port}", process, stdout_path, stderr_path)
    try:
        wait_until_serving(receiver.url, process, stderr_path)
        yield receiver
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
