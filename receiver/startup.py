"""Checks made before serving, so a bad setting is one line naming it, not a traceback later;
and the one line that says what the receiver is about to do."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from receiver.secret_file import read_secrets
from receiver.settings import Settings


class StartupError(Exception):
    """A setting the receiver cannot start with; the message names it and what to do."""


STANDARD_STREAMS = (0, 1, 2)


def hold_standard_streams(settings: Settings) -> None:
    """A closed stdin, stdout or stderr is a number the next file or socket opened would take,
    and then get the records or logs meant for it. Fail when the stdout sink would have no
    stdout; hold any other closed one open on /dev/null."""
    for fd in filter(_is_closed, STANDARD_STREAMS):
        if fd == 1 and "stdout" in settings.sinks:
            raise StartupError("stdout is closed, and the stdout sink writes every record there: give "
                               "the receiver a stdout (a pipe or a file), or choose --sink file")
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def _is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def check_settings(settings: Settings) -> None:
    """Raise `StartupError` for the first setting that cannot work on this machine."""
    with contextlib.ExitStack() as bound:
        bound.enter_context(_bind(settings.host, settings.port, "--host/HOST and --port/PORT"))
        if settings.metrics_port:
            bound.enter_context(_bind(metrics_host(settings), settings.metrics_port,
                                      "--metrics-host/DRAIN_METRICS_HOST and "
                                      "--metrics-port/DRAIN_METRICS_PORT"))
    if "file" in settings.sinks:
        check_writable_directory(settings.dir)
    if settings.workers > 1:
        check_temporary_directory()


def metrics_host(settings: Settings) -> str:
    """The metrics listener's address: `--metrics-host`, else the address the receiver listens on."""
    return settings.metrics_host or settings.host


@contextlib.contextmanager
def _bind(host: str, port: int, names: str) -> Iterator[None]:
    """Hold `host:port` bound for the block, as uvicorn will bind it (SO_REUSEADDR)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port} ({names}): {error}") from None
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except socket.gaierror:
            raise StartupError(
                f"cannot listen on {host}:{port} ({names}): {host!r} is not an address of this "
                "machine; use 0.0.0.0 for every IPv4 address, :: for IPv6, or 127.0.0.1"
            ) from None
        except OSError as error:
            raise StartupError(
                f"cannot listen on {host}:{port} ({names}): {error.strerror or error}; "
                "choose another port or address, or stop what uses it"
            ) from None
        yield


def check_writable_directory(path: Path) -> None:
    """`--dir` exists or can be created, and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".drain-startup-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise StartupError(
            f"--dir (env DRAIN_DIR) {path.absolute()}: cannot create or write it "
            f"({error.strerror or error}); choose a directory this user can write"
        ) from None


def check_temporary_directory() -> None:
    """`--workers` keeps a lock and the workers' metrics in a temporary directory."""
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix="drain-receiver-check-"))
    except OSError as error:
        raise StartupError(
            f"--workers (env DRAIN_WORKERS) above 1 needs a writable temporary directory for the "
            f"workers' lock and metrics ({error.strerror or error}); set TMPDIR to one"
        ) from None


def describe(settings: Settings) -> str:
    """The resolved setup on one line, for the log; never a secret or the verification code."""
    scheme_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    workers = f"{settings.workers} worker{'s' if settings.workers > 1 else ''}"
    if settings.metrics_port:
        host = metrics_host(settings)
        metrics = f"/metrics on {f'[{host}]' if ':' in host else host}:{settings.metrics_port} only"
    else:
        metrics = "/metrics on the same port"
    sinks = []
    for name in settings.sinks:
        if name == "file":
            sinks.append(f"file {settings.dir.absolute() / settings.path_template}")
        else:
            sinks.append("stdout")
    secrets = f"secret file {settings.secret_file.absolute()}"
    if settings.secrets:
        secrets += f" and {len(settings.secrets)} from DRAIN_SECRET"
    if settings.verify_token:
        verify = "verify code: from DRAIN_VERIFY_TOKEN"
    elif _has_entries(settings.verify_file):
        verify = f"verify code: from {settings.verify_file.absolute()}"
    else:
        verify = "verify code: none"
    return (f"listening on {scheme_host}:{settings.port} with {workers}; {metrics}; "
            f"sinks: {', '.join(sinks)}; {secrets}; {verify}; umask {settings.umask:03o}")


def _has_entries(path: Path) -> bool:
    try:
        return bool(read_secrets(path))
    except (OSError, UnicodeDecodeError):
        return False
