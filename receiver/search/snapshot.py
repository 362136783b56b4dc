"""A consistent set of open files under the file sink's directory, taken without any lock.

The sink renames an active file when it rotates it, writes `X.ndjson.gz` next to a rotated
`X.ndjson` and then removes `X.ndjson`. A snapshot opens every data file once (an open file
keeps its content through a rename or an unlink), then lists the directory again and opens
whatever appeared meanwhile, until a listing brings nothing new. Each file is read through
its descriptor (`/proc/self/fd/N`), so a rename after the open changes nothing, and each
record is read once: `X.ndjson`, `X.ndjson.gz` and its Parquet twin `X.ndjson.v2.parquet`
(receiver/search/compact.py) are one file, and one inode is opened once. The twin is read when
it is there with its `.gz` (it is renamed into place only once complete); a twin without its
`.gz` (retention removed the archive) is never read.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from receiver.sinks.files import REJECTED_PARTITION

PLAIN = ".ndjson"
COMPRESSED = ".ndjson.gz"
TWIN = ".ndjson.v2.parquet"
PARTIAL_TWIN = TWIN + ".partial"
PLAIN_KIND, GZIP_KIND, PARQUET_KIND = "plain", "gzip", "parquet"
MAX_LISTINGS = 50


@dataclass(frozen=True)
class OpenFile:
    path: Path
    fd: int
    kind: str  # PLAIN_KIND, GZIP_KIND or PARQUET_KIND
    stream: str | None = None  # None: the stream its name says (the file sink's naming)

    @property
    def reader_path(self) -> str:
        """A path that opens this very file, whatever has been renamed since."""
        return f"/proc/self/fd/{self.fd}"


@dataclass
class Snapshot:
    """The open files of one search; close it (or use `with`) to release the descriptors."""

    root: Path
    files: list[OpenFile] = field(default_factory=list)

    def size(self) -> int:
        """Bytes on disk (compressed files as they are stored)."""
        return sum(os.fstat(opened.fd).st_size for opened in self.files)

    def close(self) -> None:
        for opened in self.files:
            with contextlib.suppress(OSError):
                os.close(opened.fd)
        self.files.clear()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SUFFIXES = {PLAIN: PLAIN_KIND, COMPRESSED: GZIP_KIND, TWIN: PARQUET_KIND}
KIND_ORDER = {PLAIN_KIND: 0, GZIP_KIND: 1, PARQUET_KIND: 2}


def data_file_key(name: str) -> str | None:
    """`logs-X.ndjson`, `logs-X.ndjson.gz` and `logs-X.ndjson.v2.parquet` share the key
    `logs-X`; other names have none."""
    kind = kind_of(name)
    if kind is None:
        return None
    return name[: -len(next(s for s, k in SUFFIXES.items() if k == kind))]


def kind_of(name: str) -> str | None:
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


def list_data_files(root: Path, rejected: bool = False) -> dict[Path, list[Path]]:
    """Every data file under `root` at any depth, grouped by key (directory + key): the plain
    file first, the compressed one second, its twin third."""
    found: dict[Path, list[Path]] = {}
    for directory, subdirectories, names in os.walk(root):
        here = Path(directory)
        if here == root and not rejected and REJECTED_PARTITION in subdirectories:
            subdirectories.remove(REJECTED_PARTITION)
        if here == root and rejected:
            subdirectories[:] = [d for d in subdirectories if d == REJECTED_PARTITION]
        for name in sorted(names, key=lambda n: KIND_ORDER.get(kind_of(n) or "", 3)):
            key = data_file_key(name)
            if key is not None:
                found.setdefault(here / key, []).append(here / name)
    return found


def take_snapshot(root: Path, rejected: bool = False) -> Snapshot:
    """Open every data file under `root` (rejects only when `rejected`). FileNotFoundError
    when `root` is not a directory."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (give the receiver's --dir)")
    snapshot = Snapshot(root)
    keys: set[Path] = set()
    inodes: set[tuple[int, int]] = set()
    for _ in range(MAX_LISTINGS):
        new = False
        for key, candidates in list_data_files(root, rejected).items():
            if key in keys:
                continue
            order = reading_order(candidates)
            if not order:  # a twin without its archive
                keys.add(key)
                continue
            opened = _open_first(order)
            if opened is None:
                new = True  # every name went away between listing and open: list again
                continue
            stat = os.fstat(opened.fd)
            keys.add(key)
            new = True
            if (stat.st_dev, stat.st_ino) in inodes:
                os.close(opened.fd)
                continue
            inodes.add((stat.st_dev, stat.st_ino))
            snapshot.files.append(opened)
        if not new:
            return snapshot
    return snapshot


def reading_order(candidates: list[Path]) -> list[Path]:
    """The names of one file to try, best first: the twin when its `.gz` is listed too, then
    the plain file (mid-compression), then the `.gz`. A twin alone is left out."""
    kinds = {kind_of(path.name): path for path in candidates}
    if GZIP_KIND not in kinds:
        return [kinds[PLAIN_KIND]] if PLAIN_KIND in kinds else []
    return [kinds[k] for k in (PARQUET_KIND, PLAIN_KIND, GZIP_KIND) if k in kinds]


def _open_first(candidates: list[Path]) -> OpenFile | None:
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        return OpenFile(path, fd, kind_of(path.name) or PLAIN_KIND)
    return None
