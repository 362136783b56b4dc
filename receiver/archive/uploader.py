"""The uploader: a background thread in each worker that ships the file sink's finished files.

Every `scan_seconds` it lists the finished files under the sink's root (any worker's: a
receiver restarted with fewer workers still ships the others' files), oldest first, and for
each one: takes an exclusive `flock` on it (so two workers never upload one file at once),
uploads it under its key (`keys.object_key`), and once the store has confirmed the bytes,
deletes it (and, for a file sent in parts, aborts any multipart upload of its key that a kill
left incomplete). A crash at any point leaves the file on disk, and the next run uploads it again
under the same key, with the same bytes: the object is written whole or not at all, never
twice with different content. When an upload fails, the round stops and the next one waits
longer (1 s, doubling, at most `MAX_BACKOFF_SECONDS`), so a store that is down is not hammered.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from receiver import metrics
from receiver.archive.keys import ArchiveTarget, is_finished, object_key
from receiver.archive.store import (
    MULTIPART_BYTES,
    READ_TIMEOUT,
    UploadError,
    abort_incomplete,
    make_client,
    upload,
)

log = logging.getLogger("receiver.archive")

MAX_BACKOFF_SECONDS = 30.0


def backoff_seconds(failures: int) -> float:
    """The wait after `failures` rounds in a row failed: 1, 2, 4 ... up to the cap, +-20%."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 1)) * random.uniform(0.8, 1.2)


@dataclass
class Uploader:
    """Uploads the finished files under `root` to `target`, then deletes them."""

    root: Path
    target: ArchiveTarget
    template: str
    host: str
    endpoint: str | None = None
    scan_seconds: float = 1.0
    multipart_bytes: int = MULTIPART_BYTES
    read_timeout: float = READ_TIMEOUT
    _client: Any = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _refused: set[Path] = field(default_factory=set, init=False)
    waiting_bytes: int = field(default=0, init=False)

    def start(self) -> None:
        self._client = make_client(self.endpoint, self.read_timeout)
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the upload in progress (a file not done stays for the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def finish(self, seconds: float) -> None:
        """At shutdown: stop the thread, then upload what waits, starting no upload after
        `seconds`; what is left stays on disk for the next start, and is logged."""
        deadline = time.monotonic() + seconds
        self.close(seconds)
        failed = self.upload_waiting(deadline)
        left = self._waiting()
        if failed is not None:
            metrics.ARCHIVE_UPLOAD_ERRORS.inc()
            log.error("cannot upload %s at shutdown: %s", failed[0], failed[1])
        if left:
            log.warning("%d finished files (%d bytes) not uploaded at shutdown; they stay under %s "
                        "for the next start", len(left), sum(size for _, size, _ in left), self.root)
        elif self._client is not None:
            log.info("archive: every finished file uploaded before shutdown")

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                failed = self.upload_waiting()
            except Exception:  # a bug must not stop the archive for good: log it, try again later
                log.exception("the archive's uploader failed; trying again")
                failed = (self.root, UploadError("unexpected error"))
            if failed is None:
                failures = 0
                wait = self.scan_seconds
            else:
                failures += 1
                wait = backoff_seconds(failures)
                path, error = failed
                metrics.ARCHIVE_UPLOAD_ERRORS.inc()
                log.error("cannot upload %s to %s (kept on disk; next try in %.1f s): %s",
                          path, self.target.url(self.target.prefix), wait, error)
            self._stop.wait(wait)

    def upload_waiting(self, deadline: float | None = None) -> tuple[Path, UploadError] | None:
        """Upload every finished file, oldest first; stop at the first failure and return it.
        Without `deadline`, stop when `close` is called; with it, start no upload after it."""
        waiting = self._waiting()
        self._count_waiting(waiting)
        for done, (_, _, path) in enumerate(waiting, 1):
            if self._stop.is_set() if deadline is None else time.monotonic() > deadline:
                return None
            try:
                self._upload_one(path)
            except UploadError as error:
                return path, error
            self._count_waiting(waiting[done:])
        return None

    def _waiting(self) -> list[tuple[float, int, Path]]:
        """The finished files under `root` (mtime, size, path), oldest first."""
        found: list[tuple[float, int, Path]] = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                if is_finished(name):
                    path = Path(directory) / name
                    with contextlib.suppress(FileNotFoundError):
                        stat = path.lstat()
                        found.append((stat.st_mtime, stat.st_size, path))
        found.sort()
        return found

    def _upload_one(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # another worker's uploader shipped it
        except OSError as error:
            if path not in self._refused:
                self._refused.add(path)
                log.warning("not uploading %s: %s (a symlink is never followed)", path, error)
            return
        with open(fd, "rb") as file:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is uploading it
            stat = os.fstat(fd)
            if stat.st_nlink == 0:
                return  # shipped and deleted while this one waited for the lock
            key = object_key(PurePosixPath(path.relative_to(self.root).as_posix()), self.template,
                             self.target.prefix, self.host)
            started = time.monotonic()
            upload(self._client, file, stat.st_size, self.target, key, self.multipart_bytes)
            path.unlink(missing_ok=True)
            if stat.st_size >= self.multipart_bytes:
                self._abort_incomplete(key)
        metrics.ARCHIVE_UPLOADED_BYTES.inc(stat.st_size)
        metrics.ARCHIVE_UPLOADED_OBJECTS.inc()
        metrics.ARCHIVE_LAST_SUCCESS_TIMESTAMP.set(time.time())
        log.info("uploaded %s to %s (%d bytes, %.2f s); deleted it here", path, self.target.url(key),
                 stat.st_size, time.monotonic() - started)

    def _abort_incomplete(self, key: str) -> None:
        try:
            aborted = abort_incomplete(self._client, self.target, key)
        except UploadError as error:
            log.warning("uploaded %s, but cannot look for incomplete uploads of it: %s",
                        self.target.url(key), error)
            return
        if aborted:
            log.info("aborted %d incomplete multipart uploads of %s (left by an earlier run)",
                     aborted, self.target.url(key))

    def _count_waiting(self, waiting: list[tuple[float, int, Path]]) -> None:
        self.waiting_bytes = sum(size for _, size, _ in waiting)
        metrics.ARCHIVE_WAITING_FILES.set(len(waiting))
        metrics.ARCHIVE_WAITING_BYTES.set(self.waiting_bytes)
        metrics.ARCHIVE_OLDEST_WAITING_SECONDS.set(max(0.0, time.time() - waiting[0][0]) if waiting else 0)
