"""The file sink: NDJSON files under one directory, partitioned, rotated, compressed, pruned.

Layout under `root`, for each stream (`logs`, `traces`, `speed_insights`, ...):

    <partition>/<stream>.ndjson                          the active file, appended to
    <partition>/<stream>-20261126T134501.123456Z.ndjson  rotated, waiting for compression
    <partition>/<stream>-20261126T134501.123456Z.ndjson.gz
    rejected/<stream>.ndjson                             rejects, one JSON line each, same rotation

`<partition>` comes from the path template (default `{stream}/{date}`: `logs/2026-11-26/`); the
file is named after its stream too, so streams stay apart under any template. With `--workers
N` every worker process owns its own files (`logs-w1.ndjson`, ...), claimed by a lock on
`.worker-<n>.lock`, so no two processes ever append to, cut back or rotate one file.
Partitions are opened one directory at a time from `root` without following symlinks, and
files with `O_NOFOLLOW`: a symlink planted under `root` is refused, never written through.
A batch is written with one `write` per file and the file is cut back to its previous length if
that write fails, so a file never holds a torn line. With `fsync`, a write marks its file dirty
and the delivery waits (`synced`) for a group commit (`group_commit.py`) that fsyncs it, and a
new file's directory, before the answer; new directories are fsynced into their parent as they
are made. Rotation renames the active file and
leaves compression and retention to a background thread, off the request path, at the lowest
CPU priority; when more than `COMPRESS_BACKLOG_FILES` rotated files wait, a second compressor
at the receiver's own priority helps it, taking CPU from ingest until the backlog is down, so
the disk cannot fill with uncompressed files under a load that never lets up. With
`rotate_every`, that thread also rotates an active file holding data once it has been open that
long (so a quiet receiver's records still leave for the archive within minutes), and a start
rotates the active files a previous run left with data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from isal import igzip

from receiver import metrics
from receiver.decode import Batch, Reject
from receiver.durable import fsync_directory
from receiver.sinks import SinkError, reject_line, write_all
from receiver.sinks.group_commit import GroupCommit

log = logging.getLogger("receiver.files")

REJECTED_PARTITION = "rejected"
DEFAULT_TEMPLATE = "{stream}/{date}"
TEMPLATE_FIELDS = frozenset({"date", "stream", "projectId", "source"})
RECORD_FIELDS = TEMPLATE_FIELDS - {"date", "stream"}
UNSAFE_PATH_CHARACTERS = re.compile(r"[^A-Za-z0-9_.=-]")
OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The umask decides the final modes (the service sets one at start-up).
FILE_MODE = 0o666
DIRECTORY_MODE = 0o777
RETENTION_INTERVAL_SECONDS = 3600.0
# isa-l's level 1 compresses NDJSON logs about 5.5x, at ~490 MB/s against ~56 MB/s for zlib's
# default level 6 (~7x): at full load, level 6 took more CPU than receiving (bench/RESULTS.md).
COMPRESS_LEVEL = 1
COMPRESS_CHUNK_BYTES = 4 * 1024 * 1024
# How many rotated files may wait for the nice-19 compressor before the catch-up one joins in:
# on one core at full load the nice-19 thread gets almost no CPU (560 files waited after the
# 5-minute soak, ~75 GB), while a short burst should not slow ingest at all.
COMPRESS_BACKLOG_FILES = 2


STREAM_NAME = "[a-z0-9_]+"  # what `receiver.streams` makes; no `-`, so `-w<n>` is unambiguous


def stream_of_file(name: str) -> str | None:
    """The stream whose records a data file of this sink holds, from its name:
    `<stream>[-w<n>][-<stamp>].ndjson[.gz]`."""
    match = re.match(rf"({STREAM_NAME})(?:-w\d+)?(?:-\d{{8}}T|\.ndjson)", name)
    return match.group(1) if match else None


@dataclass(frozen=True)
class FileNames:
    """The names of one worker's files, one set per stream; worker 0's are `<stream>.ndjson`."""

    worker: str

    @classmethod
    def for_slot(cls, slot: int) -> FileNames:
        return cls("" if slot == 0 else f"-w{slot}")

    def active(self, stream: str) -> str:
        return f"{stream}{self.worker}.ndjson"

    def rotated(self, stream: str, stamp: str, suffix: int) -> str:
        return f"{stream}{self.worker}-{stamp}{f'-{suffix}' if suffix else ''}.ndjson"

    def stream_of_active(self, name: str) -> str | None:
        """The stream whose active file is called `name`, if it is one of this worker's."""
        match = re.fullmatch(rf"({STREAM_NAME}){re.escape(self.worker)}\.ndjson", name)
        return match.group(1) if match else None

    def is_rotated(self, name: str, extension: str = ".ndjson") -> bool:
        pattern = (rf"{STREAM_NAME}{re.escape(self.worker)}-\d{{8}}T\d{{6}}\.\d{{6}}Z(-\d+)?"
                   rf"{re.escape(extension)}")
        return re.fullmatch(pattern, name) is not None


class _PartitionFields(msgspec.Struct):
    projectId: object = None
    source: object = None


_decode_partition_fields = msgspec.json.Decoder(_PartitionFields).decode


def check_template(template: str) -> str:
    """The template if it is safe (relative, no `..`, known fields only); else ValueError."""
    fields = set(re.findall(r"{([^{}]*)}", template))
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        allowed = ", ".join(sorted(TEMPLATE_FIELDS))
        raise ValueError(f"unknown field {sorted(unknown)[0]!r} in path template (use {allowed})")
    parts = template.split("/")
    if template.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError("path template must be relative, without empty, '.' or '..' parts")
    if parts[0] == REJECTED_PARTITION:
        raise ValueError(f"path template cannot start with {REJECTED_PARTITION!r} (for rejects)")
    return template


def safe_component(value: object) -> str:
    """A record's value as one path component that cannot leave its directory."""
    if not isinstance(value, str) or not value:
        return "unknown"
    cleaned = UNSAFE_PATH_CHARACTERS.sub("_", value)[:100]
    return "_" + cleaned[1:] if cleaned.startswith(".") else cleaned


@dataclass
class _ActiveFile:
    path: Path
    fd: int
    size: int
    inode: tuple[int, int]
    dir_fd: int | None = None
    opened: float = field(default_factory=time.monotonic)


@dataclass
class FileSink:
    """Appends batches to the active file of each partition under `root`."""

    root: Path
    template: str = DEFAULT_TEMPLATE
    max_file_bytes: int = 128 * 1024 * 1024
    keep_days: int = 0
    fsync: bool = False
    clock: Callable[[], float] = time.time
    rotate_every: float = 0.0
    name: str = "file"
    _files: dict[tuple[str, str], _ActiveFile] = field(default_factory=dict, init=False)
    _day: str = field(default="", init=False)
    _compress_queue: queue.Queue[Path | None] = field(default_factory=queue.Queue, init=False)
    _worker: threading.Thread | None = field(default=None, init=False)
    _failed_bytes: int = field(default=0, init=False)
    _slot: int = field(default=0, init=False)
    _slot_fd: int | None = field(default=None, init=False)
    _names: FileNames = field(default=FileNames(""), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _commit: GroupCommit | None = field(default=None, init=False)
    _waiting: int = field(default=0, init=False)  # rotated files queued or being compressed
    _backlog: threading.Condition = field(default_factory=threading.Condition, init=False)
    _stopping: bool = field(default=False, init=False)
    _catch_up: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_template(self.template)
        self._needs_record_fields = any(f"{{{name}}}" in self.template for name in RECORD_FIELDS)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._slot, self._slot_fd = _claim_slot(self.root)
        self._names = FileNames.for_slot(self._slot)
        self._day = _utc_day(self.clock())
        self._recover_active_files()
        if self.fsync:
            self._commit = GroupCommit()
            self._commit.start()
        self._worker = threading.Thread(target=self._background, name="file-sink", daemon=True)
        self._worker.start()
        self._catch_up = threading.Thread(target=self._compress_backlog, name="file-sink-catch-up",
                                          daemon=True)
        self._catch_up.start()
        for partial in self._find(lambda name: self._names.is_rotated(name, ".ndjson.gz.partial")):
            partial.unlink()
        for rotated in self._find(self._names.is_rotated):
            self._queue_compression(rotated)

    def write(self, batch: Batch) -> None:
        with self._lock:  # the background thread rotates by age (`rotate_every`) under it too
            self._write(batch)

    def synced(self) -> asyncio.Future[None] | None:
        """With `fsync`, a future done once everything written so far is on disk."""
        return None if self._commit is None else self._commit.wait()

    def _write(self, batch: Batch) -> None:
        if self._commit is not None and self._commit.failure is not None:
            raise SinkError(f"{self._commit.failure} under {self.root}; check the disk, then restart "
                            "the receiver")
        now = self.clock()
        day = _utc_day(now)
        if day != self._day:
            self._rotate_all()
            self._day = day
        chunks = self._partition(batch, day) if batch.records else {}
        if batch.rejects:
            rejects = b"".join(reject_line(r, now) + b"\n" for r in batch.rejects)
            chunks[(REJECTED_PARTITION, batch.stream)] = rejects
        written: list[tuple[_ActiveFile, int]] = []
        total = 0
        try:
            for key, data in chunks.items():
                total += len(data)
                active = self._active_file(key, len(data))
                written.append((active, active.size))
                write_all(active.fd, data)
                active.size += len(data)
                if self._commit is not None:
                    self._commit.dirty(active.fd)
        except OSError as error:
            self._undo(written)
            self._failed_bytes = total
            raise SinkError(f"cannot write under {self.root}: {error.strerror or error}") from error
        self._failed_bytes = 0
        metrics.ACTIVE_FILE_BYTES.set(sum(active.size for active in self._files.values()))

    def unready_reason(self) -> str | None:
        """Unready while a probe file cannot be written, or while the last batch that failed
        would still not fit in the free space (a nearly full disk takes a byte but not a batch),
        and for good once an fsync failed."""
        if self._commit is not None and self._commit.failure is not None:
            return f"{self._commit.failure} under {self.root}; check the disk, then restart the receiver"
        if self._failed_bytes:
            try:
                stat = os.statvfs(self.root)
            except OSError as error:
                return f"cannot write under {self.root}: {error.strerror or error}"
            free = stat.f_bavail * stat.f_frsize
            if free < self._failed_bytes:
                return f"{self.root} has {free} bytes free, the last batch needed {self._failed_bytes}"
        probe = self.root / f".readyz-probe-{self._slot}"
        try:
            probe.unlink(missing_ok=True)  # a symlink planted here is removed, its target untouched
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"\n")
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as error:
            return f"cannot write under {self.root}: {error.strerror or error}"
        return None

    def close(self) -> None:
        with self._lock:
            if self._commit is not None:
                self._commit.close()
            for active in self._files.values():
                _close_quietly(active.fd, fsync=True)
                _close_quietly(active.dir_fd)
            self._files.clear()
        with self._backlog:
            self._stopping = True
            self._backlog.notify_all()
        if self._worker is not None:
            self._compress_queue.put(None)
            self._worker.join(timeout=10)
        if self._catch_up is not None:
            self._catch_up.join(timeout=10)
        if self._slot_fd is not None:
            os.close(self._slot_fd)

    def _partition(self, batch: Batch, day: str) -> dict[tuple[str, str], bytes]:
        """The batch's NDJSON for each (partition, stream) it goes to."""
        if batch.streams is None and not self._needs_record_fields:
            return {(_unreserved(self.template.format(date=day, stream=batch.stream)), batch.stream):
                    batch.ndjson()}
        groups: dict[tuple[str, str], list[bytes]] = {}
        for stream, records in batch.by_stream().items():
            if not self._needs_record_fields:
                groups[(_unreserved(self.template.format(date=day, stream=stream)), stream)] = records
                continue
            for record in records:
                try:
                    fields = _decode_partition_fields(record)
                except (msgspec.DecodeError, RecursionError):
                    fields = _PartitionFields()
                partition = self.template.format(
                    date=day,
                    stream=stream,
                    projectId=safe_component(fields.projectId),
                    source=safe_component(fields.source),
                )
                groups.setdefault((_unreserved(partition), stream), []).append(record)
        return {key: b"\n".join([*records, b""]) for key, records in groups.items()}

    def _active_file(self, key: tuple[str, str], incoming: int) -> _ActiveFile:
        """The open active file of a (partition, stream), rotated first when `incoming` would
        overflow it."""
        active = self._files.get(key)
        if active is not None and os.fstat(active.fd).st_nlink == 0:
            log.warning("%s was deleted by someone else; opening a new one", active.path)
            self._release(active.fd)
            self._release(active.dir_fd)
            del self._files[key]
            active = None
        if active is None:
            active = self._open(key)
        if active.size and active.size + incoming > self.max_file_bytes:
            self._rotate(key)
            active = self._open(key)
        return active

    def _open(self, key: tuple[str, str]) -> _ActiveFile:
        partition, stream = key
        if not self.root.is_dir():
            raise FileNotFoundError(2, f"directory {self.root} is missing")
        name = self._names.active(stream)
        dir_fd = open_partition(self.root, partition, durable=self.fsync)
        try:
            fd = open_file_in(dir_fd, name, self.root / partition)
        except BaseException:
            os.close(dir_fd)
            raise
        stat = os.fstat(fd)
        inode = (stat.st_dev, stat.st_ino)
        active = _ActiveFile(self.root / partition / name, fd, stat.st_size, inode, dir_fd)
        if active.size:
            _move_torn_tail(active, self.root, self._names.active(stream))
        elif self._commit is not None:
            self._commit.dirty(dir_fd)
        self._files[key] = active
        return active

    def _rotate(self, key: tuple[str, str]) -> None:
        """Close and rename the active file; the compressor makes the `.gz` durable before it
        removes the original, so nothing is fsynced here, on the request path (an fsync of a
        128 MiB file took the p99 latency from ~25 ms to ~90 ms in the benchmark)."""
        active = self._files.pop(key)
        self._release(active.fd)
        try:
            if _still_at_its_path(active):
                self._queue_compression(self._rename_rotated(active.path, key[1], active.dir_fd))
            else:
                log.warning("%s was moved by someone else; leaving it where it is", active.path)
        finally:
            self._release(active.dir_fd)

    def _release(self, fd: int | None) -> None:
        """Close a file or directory the sink is done with; with `fsync`, once a group commit
        has synced it."""
        if fd is not None and self._commit is not None:
            self._commit.retire(fd)
        else:
            _close_quietly(fd)

    def _rotate_all(self) -> None:
        for key in list(self._files):
            self._rotate(key)

    def rotate_now(self) -> None:
        """Rotate every active file (at shutdown, so the archive can ship all that was written)."""
        with self._lock:
            self._rotate_all()

    def _rotate_old(self) -> None:
        """Rotate every active file that holds data and has been open `rotate_every` seconds."""
        with self._lock:
            cutoff = time.monotonic() - self.rotate_every
            for key, active in list(self._files.items()):
                if active.size and active.opened <= cutoff:
                    self._rotate(key)

    def _recover_active_files(self) -> None:
        """This worker's active files, as a crash or a stop left them: a torn last line is
        moved to the rejects (the rejects file's own first), and a file last written on an
        earlier day (a restart after midnight), or any file with `rotate_every`, is rotated."""
        rejected = self.root / REJECTED_PARTITION
        paths = sorted(self._find(lambda name: self._names.stream_of_active(name) is not None),
                       key=lambda p: p.parent != rejected)
        for path in paths:
            stream = self._names.stream_of_active(path.name) or "logs"
            if path.is_symlink():
                log.warning("%s is a symlink; leaving it alone and refusing to write through it", path)
                continue
            stat = path.lstat()
            if not stat.st_size:
                continue
            fd = os.open(path, OPEN_FLAGS)
            try:
                active = _ActiveFile(path, fd, stat.st_size, (stat.st_dev, stat.st_ino))
                _move_torn_tail(active, self.root, self._names.active(stream))
            finally:
                os.close(fd)
            if self.rotate_every or _utc_day(stat.st_mtime) != self._day:
                self._rename_rotated(path, stream)

    def _rename_rotated(self, path: Path, stream: str, dir_fd: int | None = None) -> Path:
        """Rename an active file to its rotated name (a UTC timestamp), for compression; with
        `dir_fd`, inside that directory (the one the file was opened in)."""
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        suffix = 0
        target = self._names.rotated(stream, stamp, suffix)
        where = path.parent if dir_fd is None else None
        while _exists(target, dir_fd, where) or _exists(target + ".gz", dir_fd, where):
            suffix += 1
            target = self._names.rotated(stream, stamp, suffix)
        if dir_fd is None:
            os.replace(path, path.with_name(target))
        else:
            os.replace(path.name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return path.with_name(target)

    def _undo(self, written: Iterable[tuple[_ActiveFile, int]]) -> None:
        """Cut each file back to its length before this batch; close a file that resists."""
        for active, size in written:
            try:
                os.ftruncate(active.fd, size)
                active.size = size
            except OSError as error:
                log.error("cannot cut %s back after a failed write: %s", active.path, error)
                self._release(active.fd)
                self._release(active.dir_fd)
                self._files = {k: v for k, v in self._files.items() if v is not active}

    def _find(self, wanted: Callable[[str], bool]) -> list[Path]:
        found: list[Path] = []
        for directory, _, names in os.walk(self.root):
            found.extend(Path(directory) / name for name in names if wanted(name))
        return found

    def _background(self) -> None:
        """Compress rotated files as they come; prune old files every hour.

        The thread runs at the lowest CPU priority: on a busy core, answering Vercel comes
        first and compression catches up when load drops (bench: with rotation, the receiver
        lost about a fifth of its throughput to compression at normal priority).
        """
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        next_prune = 0.0
        wait = min(60.0, self.rotate_every / 4) if self.rotate_every else 60.0
        while True:
            if self.keep_days and self._slot == 0 and time.monotonic() >= next_prune:
                self._prune()
                next_prune = time.monotonic() + RETENTION_INTERVAL_SECONDS
            if self.rotate_every:
                self._rotate_old()
            try:
                rotated = self._compress_queue.get(timeout=wait)
            except queue.Empty:
                continue
            if rotated is None:
                return
            self._compress_one(rotated)

    def _compress_backlog(self) -> None:
        """Compress at the receiver's own priority while more than `COMPRESS_BACKLOG_FILES`
        rotated files wait: the scheduler then shares the core between ingest and this thread,
        so ingest slows down until the backlog is back under the limit."""
        while True:
            with self._backlog:
                while not self._stopping and self._waiting <= COMPRESS_BACKLOG_FILES:
                    self._backlog.wait()
                if self._stopping:
                    return
            try:
                rotated = self._compress_queue.get_nowait()
            except queue.Empty:  # every waiting file is being compressed already
                with self._backlog:
                    self._backlog.wait(timeout=0.1)
                continue
            if rotated is None:  # the background thread's signal to stop: leave it to it
                self._compress_queue.put(None)
                return
            self._compress_one(rotated)

    def _queue_compression(self, rotated: Path) -> None:
        with self._backlog:
            self._compress_queue.put(rotated)
            self._waiting += 1
            metrics.COMPRESS_WAITING_FILES.set(self._waiting)
            self._backlog.notify_all()

    def _compress_one(self, rotated: Path) -> None:
        try:
            _compress(rotated)
        except OSError as error:
            log.error("cannot compress %s (kept as is): %s", rotated, error)
        with self._backlog:
            self._waiting -= 1
            metrics.COMPRESS_WAITING_FILES.set(self._waiting)

    def _prune(self) -> None:
        cutoff = time.time() - self.keep_days * 86400
        for path in self._find(lambda name: name.endswith(".ndjson.gz")):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    log.info("deleted %s (older than %d days)", path, self.keep_days)
            except OSError as error:
                log.error("cannot delete %s: %s", path, error)


def _utc_day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def _unreserved(partition: str) -> str:
    """A partition that cannot be taken for the rejects' own."""
    return "_" + partition if partition.split("/", 1)[0] == REJECTED_PARTITION else partition


def open_partition(root: Path, partition: str, durable: bool = False) -> int:
    """A directory fd of `root/partition`, made as needed one part at a time from `root`,
    refusing any part that is a symlink or not a directory (it could lead outside `root`).
    With `durable`, a directory made here is fsynced into its parent before going on."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in partition.split("/"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, DIRECTORY_MODE, dir_fd=fd)
                if durable:
                    os.fsync(fd)
            try:
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(error.errno, f"{root / partition} is not a real directory under "
                                  f"{root} (a symlink?); refusing to write through it") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file_in(dir_fd: int, name: str, directory: Path) -> int:
    """Open `name` in `dir_fd` for appending, refusing a symlink in its place."""
    try:
        return os.open(name, OPEN_FLAGS, FILE_MODE, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            message = f"{directory / name} is a symlink; refusing to write through it"
            raise OSError(error.errno, message) from None
        raise


def _exists(name: str, dir_fd: int | None, directory: Path | None) -> bool:
    try:
        if dir_fd is None:
            assert directory is not None
            os.lstat(directory / name)
        else:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _still_at_its_path(active: _ActiveFile) -> bool:
    try:
        if active.dir_fd is None:
            stat = os.lstat(active.path)
        else:
            stat = os.stat(active.path.name, dir_fd=active.dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == active.inode


def _claim_slot(root: Path) -> tuple[int, int]:
    """The lowest worker slot no live process holds, and the open lock file that holds it."""
    slot = 0
    while True:
        fd = os.open(root / f".worker-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        return slot, fd


def _compress(path: Path) -> None:
    """`x.ndjson` -> `x.ndjson.gz`, durable before the original is removed."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.partial")
    with path.open("rb") as source, igzip.open(partial, "wb", compresslevel=COMPRESS_LEVEL) as sink:
        shutil.copyfileobj(source, sink, COMPRESS_CHUNK_BYTES)
    with partial.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, target)
    fsync_directory(path.parent)
    path.unlink()


def _move_torn_tail(active: _ActiveFile, root: Path, rejects_name: str) -> None:
    """A file that does not end in a newline was cut mid-write (a crash): move the tail out.

    The file is cut back to its last complete line and the torn bytes are appended, as a
    reject, to `rejected/<rejects_name>` under `root` (which may be this very file).
    """
    with open(active.fd, "rb", closefd=False) as reader:
        reader.seek(active.size - 1)
        if reader.read(1) == b"\n":
            return
        window = 64 * 1024
        while True:
            start = max(0, active.size - window)
            reader.seek(start)
            tail = reader.read()
            if b"\n" in tail or start == 0:
                break
            window *= 4
    cut = start + tail.rfind(b"\n") + 1
    torn = tail[cut - start :]
    os.ftruncate(active.fd, cut)
    rejects_dir = open_partition(root, REJECTED_PARTITION)
    try:
        reject_fd = open_file_in(rejects_dir, rejects_name, root / REJECTED_PARTITION)
    finally:
        os.close(rejects_dir)
    try:
        reason = f"torn line at the end of {active.path.name} (the receiver stopped mid-write)"
        write_all(reject_fd, reject_line(Reject(reason, torn)) + b"\n")
        os.fsync(reject_fd)
    finally:
        os.close(reject_fd)
    active.size = os.fstat(active.fd).st_size
    log.warning("moved a torn last line of %s (%d bytes) to rejected/", active.path, len(torn))


def _close_quietly(fd: int | None, fsync: bool = False) -> None:
    if fd is None:
        return
    if fsync:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
