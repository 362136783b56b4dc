"""The stdout sink: one record per line on stdout, rejects on stderr."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from receiver.decode import Batch
from receiver.sinks import SinkError, reject_line, write_all

STDOUT_FD = 1
STDERR_FD = 2


@dataclass
class StdoutSink:
    """Writes each batch with one `write` to stdout, so lines of concurrent batches never mix.

    With `fsync`, stdout is also fsynced when it is a file (a pipe or terminal cannot be).
    """

    fsync: bool = False
    name: str = "stdout"

    def start(self) -> None:
        os.set_blocking(STDOUT_FD, True)

    def write(self, batch: Batch) -> None:
        try:
            if batch.records:
                write_all(STDOUT_FD, b"\n".join([*batch.records, b""]))
            if batch.rejects:
                write_all(STDERR_FD, b"".join(reject_line(r) + b"\n" for r in batch.rejects))
            if self.fsync:
                _fsync_if_file(STDOUT_FD)
        except OSError as error:
            raise SinkError(f"cannot write to stdout: {error.strerror or error}") from error

    def unready_reason(self) -> str | None:
        try:
            os.fstat(STDOUT_FD)
        except OSError as error:
            return f"stdout is not writable: {error.strerror}"
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _fsync_if_file(STDOUT_FD)


def _fsync_if_file(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
            raise
