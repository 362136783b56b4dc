"""`--archive` for search and stats: the bucket's objects a search needs, in a local cache.

No DuckDB extension is used (httpfs would be downloaded at run time, and a search must work
with no internet): the prefix is listed with boto3 (the standard AWS credential chain, as the
receiver's uploader), the objects are chosen by their Hive key parts, and only those are
downloaded, by key, into the cache directory, where the next search finds them again. The
search then reads them as it reads the file sink's compressed files.

Choosing by key (`stream=`, `date=`, `hour=`; receiver/archive/keys.py): an object's date and
hour are when the receiver cut the file, which is after every record in it arrived. So an
object cut before `--since` (less a margin for clocks, SKEW_MS) holds nothing newer and is
skipped, exactly. Records have no such bound from below: an object cut more than `slack`
after `--until` is skipped, which misses a record only if it reached the receiver more than
`slack` after its own timestamp, or sat in a file open for longer (`--rotate-every`).

`--dir` and `--archive` together: a file uploaded and not yet deleted is in both. The local
snapshot is taken first, then the bucket listed (so a file uploaded and deleted in between is
in the listing), and an object is left out when the snapshot holds the same file: same
rejected-or-not, stream, worker and rotation stamp (unique per replica and worker: the sink
never gives two files one stamp). When the local copy is the `.gz` and the object's ETag is
its MD5 (a single-part upload), the bytes are compared too, and both are read if they differ.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from receiver.archive.keys import ArchiveTarget, parse_archive_url
from receiver.search.filters import Filters
from receiver.search.snapshot import GZIP_KIND, OpenFile, Snapshot
from receiver.sinks.files import REJECTED_PARTITION, STREAM_NAME

HOUR_MS = 3_600_000
SKEW_MS = 10 * 60_000
DEFAULT_SLACK_MS = HOUR_MS
CHUNK = 1024 * 1024
STAMP = r"\d{8}T\d{6}\.\d{6}Z(?:-\d+)?"
OBJECT_KEY = re.compile(
    rf"(?:(?P<rejected>{REJECTED_PARTITION})/)?stream=(?P<stream>{STREAM_NAME})/(?:[^/]+/)*?"
    rf"date=(?P<date>\d{{4}}-\d\d-\d\d)/hour=(?P<hour>\d\d)/"
    rf"(?P<host>[^/]+)-w(?P<worker>\d+)-(?P<stamp>{STAMP})\.ndjson\.gz"
)
LOCAL_NAME = re.compile(rf"(?P<stream>{STREAM_NAME})(?:-w(?P<worker>\d+))?-(?P<stamp>{STAMP})\.ndjson")
MD5_ETAG = re.compile(r"[0-9a-f]{32}")


class ArchiveError(Exception):
    """The archive cannot be read; the message says what to do next."""


@dataclass(frozen=True)
class ArchivedObject:
    """One object of the archive, as its key and listing describe it."""

    key: str
    size: int
    etag: str
    rejected: bool
    stream: str
    hour_start_ms: int
    worker: str
    stamp: str

    @property
    def identity(self) -> tuple[bool, str, str, str]:
        return self.rejected, self.stream, self.worker, self.stamp


def parse_object(key: str, prefix: str, size: int, etag: str) -> ArchivedObject | None:
    """The object at `key` if it is one the receiver's archive writes under `prefix`."""
    relative = key[len(prefix) + 1:] if prefix else key
    if prefix and not key.startswith(prefix + "/"):
        return None
    match = OBJECT_KEY.fullmatch(relative)
    if match is None:
        return None
    hour = datetime.strptime(f"{match['date']} {match['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return ArchivedObject(key, size, etag.strip('"'), match["rejected"] is not None, match["stream"],
                          int(hour.timestamp() * 1000), str(int(match["worker"])), match["stamp"])


def wanted(obj: ArchivedObject, filters: Filters, rejected: bool,
           slack_ms: int = DEFAULT_SLACK_MS) -> bool:
    """Whether `obj` may hold a record the search asks for (see the module's docstring)."""
    if obj.rejected != rejected:
        return False
    if filters.stream and not any(fnmatch.fnmatchcase(obj.stream, value) if "*" in value
                                  else obj.stream == value for value in filters.stream):
        return False
    if filters.since_ms is not None and obj.hour_start_ms + HOUR_MS + SKEW_MS <= filters.since_ms:
        return False
    return filters.until_ms is None or obj.hour_start_ms <= filters.until_ms + slack_ms


def local_identity(path: Path, root: Path) -> tuple[bool, str, str, str] | None:
    """The identity (as ArchivedObject.identity) of a rotated file of the sink under `root`."""
    match = LOCAL_NAME.match(path.name)
    if match is None:
        return None
    rejected = path.relative_to(root).parts[0] == REJECTED_PARTITION
    return rejected, match["stream"], str(int(match["worker"] or 0)), match["stamp"]


def md5_of(fd: int) -> str:
    digest = hashlib.md5()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def not_in_snapshot(objects: Iterable[ArchivedObject], local: Snapshot) -> list[ArchivedObject]:
    """`objects` less those whose file the local snapshot already holds."""
    held: dict[tuple[bool, str, str, str], OpenFile] = {}
    for opened in local.files:
        identity = local_identity(opened.path, local.root)
        if identity is not None:
            held[identity] = opened
    kept = []
    for obj in objects:
        opened = held.get(obj.identity)
        if opened is None:
            kept.append(obj)
        elif opened.kind == GZIP_KIND and MD5_ETAG.fullmatch(obj.etag):
            same = os.fstat(opened.fd).st_size == obj.size and md5_of(opened.fd) == obj.etag
            if not same:
                kept.append(obj)
    return kept


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drain-receiver" / "archive"


@dataclass
class Bucket:
    """The archive at `target`, read through `client`, cached under `cache_dir`."""

    target: ArchiveTarget
    client: Any
    cache_dir: Path

    def list(self, rejected: bool) -> list[ArchivedObject]:
        """Every object of the archive (the rejects' when `rejected`), oldest key first."""
        prefix = self.target.prefix
        listed = "/".join(p for p in (prefix, REJECTED_PARTITION if rejected else "") if p)
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=listed + "/" if listed else "")
            for page in pages:
                for item in page.get("Contents", []):
                    obj = parse_object(item["Key"], prefix, item["Size"], item.get("ETag", ""))
                    if obj is not None:
                        found.append(obj)
        except Exception as error:  # botocore's: each one means "cannot list"
            raise ArchiveError(explain(error, self.target, "list")) from None
        return found

    def cache_path(self, obj: ArchivedObject) -> Path:
        return self.cache_dir / self.target.bucket / obj.key

    def cached(self, obj: ArchivedObject) -> bool:
        """Whether the cache holds `obj` as listed (same size and ETag)."""
        path = self.cache_path(obj)
        try:
            etag = path.with_name(path.name + ".etag").read_text().strip()
            return etag == obj.etag and path.stat().st_size == obj.size
        except (FileNotFoundError, NotADirectoryError):
            return False

    def fetch(self, obj: ArchivedObject) -> Path:
        """`obj` in the cache: reused when it is there as listed, else downloaded and checked
        (size, and MD5 when the ETag is one) before it takes its place."""
        path = self.cache_path(obj)
        if self.cached(obj):
            return path
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            size, md5 = self._download(obj, partial)
            if size != obj.size or (MD5_ETAG.fullmatch(obj.etag) and md5 != obj.etag):
                raise ArchiveError(f"{self.target.url(obj.key)} changed or broke while downloading "
                                   f"({size} bytes, {obj.size} listed); run the search again")
            path.with_name(path.name + ".etag").write_text(obj.etag + "\n")
            os.replace(partial, path)
        except OSError as error:
            raise ArchiveError(f"cannot write {path}: {error.strerror or error} "
                               "(give a writable --cache-dir)") from None
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
        return path

    def _download(self, obj: ArchivedObject, partial: Path) -> tuple[int, str]:
        """Write `obj` to `partial` (mode 0600: logs are private); its size and MD5."""
        partial.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.md5()
        size = 0
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as out:
            try:
                body = self.client.get_object(Bucket=self.target.bucket, Key=obj.key)["Body"]
                for chunk in iter(lambda: body.read(CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            except Exception as error:  # botocore's and urllib3's: the object cannot be read
                raise ArchiveError(explain(error, self.target, "read", obj.key)) from None
        return size, digest.hexdigest()


def open_cached(paths: list[tuple[ArchivedObject, Path]]) -> list[OpenFile]:
    return [OpenFile(path, os.open(path, os.O_RDONLY | os.O_CLOEXEC), GZIP_KIND, obj.stream)
            for obj, path in paths]


def explain(error: Exception, target: ArchiveTarget, action: str, key: str | None = None) -> str:
    """One line: what failed, and what to do about it."""
    name = type(error).__name__
    where = target.url(key) if key else target.url(target.prefix)
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (f"cannot {action} {where}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with a role)")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError"):
        return f"cannot {action} {where}: {error} (is the store up, and --archive-endpoint right?)"
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    if code == "NoSuchBucket":
        return f"cannot {action} {where}: no bucket {target.bucket!r} (check --archive)"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return (f"cannot {action} {where}: {code} (the credentials need s3:ListBucket on the bucket "
                "and s3:GetObject on the prefix)")
    first = str(error).splitlines()[0] if str(error) else name
    return f"cannot {action} {where}: {first}"


def open_bucket(url: str, endpoint: str | None, cache_dir: Path) -> Bucket:
    """The archive at `url`; ArchiveError for a bad URL or endpoint."""
    from receiver.archive.store import make_client

    try:
        target = parse_archive_url(url)
    except ValueError as error:
        raise ArchiveError(str(error)) from None
    try:
        client = make_client(endpoint)
    except ValueError as error:  # botocore: "Invalid endpoint: ..."
        raise ArchiveError(f"{error} (give --archive-endpoint as http(s)://host:port)") from None
    return Bucket(target, client, cache_dir)
