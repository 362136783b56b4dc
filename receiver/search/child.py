"""A `drain-receiver` sub-command run beside this process, and stopped when this one exits."""

from __future__ import annotations

import atexit
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence

log = logging.getLogger("receiver")


def start_child(
    args: Sequence[str], what: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m receiver ARGS` as a child process: SIGTERM at exit, SIGKILL 10 s later."""
    child = subprocess.Popen([sys.executable, "-m", "receiver", *args], env=env)
    log.info("started the %s (pid %d)", what, child.pid)

    def stop() -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    atexit.register(stop)
    return child
