"""The stdout sink: one record per line on stdout, rejects on stderr."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from receiver.decode import Batch
from receiver.sinks import SinkError, reject_line, write_all

STDOUT_FD = 1
STDERR_FD = 2


@dataclass
class StdoutSink:
    """Writes each batch with one `write` to stdout, so lines of concurrent batches never mix.

    Worker processes share one stdout, where a large write to a pipe is not atomic, so with
    `--workers` each batch is written under an exclusive lock on `lock_path`. With `fsync`,
    stdout is also fsynced when it is a file (a pipe or terminal cannot be).
    """

    fsync: bool = False
    lock_path: Path | None = None
    name: str = "stdout"
    _lock_fd: int | None = field(default=None, init=False)
    _failure: str | None = field(default=None, init=False)

    def start(self) -> None:
        os.set_blocking(STDOUT_FD, True)
        if self.lock_path is not None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, batch: Batch) -> None:
        try:
            if batch.records:
                data = batch.ndjson()
                if self._lock_fd is None:
                    write_all(STDOUT_FD, data)
                else:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                    try:
                        write_all(STDOUT_FD, data)
                    finally:
                        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if batch.rejects:
                write_all(STDERR_FD, b"".join(reject_line(r) + b"\n" for r in batch.rejects))
            if self.fsync:
                _fsync_if_file(STDOUT_FD)
        except OSError as error:
            self._failure = f"the last write to stdout failed: {error.strerror or error}"
            raise SinkError(f"cannot write to stdout: {error.strerror or error}") from error
        self._failure = None

    def synced(self) -> None:
        """Nothing to wait for: with `fsync`, `write` has fsynced already."""

    def unready_reason(self) -> str | None:
        """Unready after a failed write, until a write succeeds again, or while stdout is closed."""
        try:
            os.fstat(STDOUT_FD)
        except OSError as error:
            return f"stdout is not writable: {error.strerror}"
        return self._failure

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _fsync_if_file(STDOUT_FD)
        if self._lock_fd is not None:
            os.close(self._lock_fd)


def _fsync_if_file(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
            raise
