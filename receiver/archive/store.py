"""Uploads to S3-compatible storage with boto3, each one checked by the store.

boto3 because it is the reference client of the S3 API: it reads the whole standard AWS
credential and region chain (environment, shared config and profiles, web identity for IRSA,
container and instance roles) with nothing of ours to configure, works against R2, MinIO, GCS
and Ceph through `endpoint_url`, and its transfer manager does multipart uploads.

A file below `multipart_bytes` goes in one PutObject with `Content-MD5`, which every
S3-compatible store verifies before it stores anything (a mismatch is refused, never kept).
A larger one goes through the transfer manager in parts, each with the SDK's checksum
(CRC32, verified by AWS S3 per part), and its stored size is compared with the file's after.
A multipart upload that fails is aborted by the transfer manager; one a kill left behind holds
parts of the same key, and `abort_incomplete` removes it once the file is uploaded whole.

Each request waits at most `connect_timeout` to connect and `read_timeout` for each read of an
answer (a store that stops answering is given up on, not waited on forever), and is tried
`MAX_ATTEMPTS` times in all, with botocore's standard retry mode (exponential backoff with
jitter, on 500, 503 SlowDown, throttling, timeouts and dropped connections). What still fails
is the uploader's to retry, in its next round.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from receiver.archive.keys import ArchiveTarget

MIB = 1024 * 1024
MULTIPART_BYTES = 16 * MIB
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0  # botocore's default; a 16 MiB part is answered once it is received
MAX_ATTEMPTS = 3  # in all (botocore's `max_attempts` would count retries only: 4 in all)
CONTENT_TYPE = "application/gzip"  # not Content-Encoding: readers must get the .gz bytes as stored


class UploadError(Exception):
    """An upload did not complete; the file stays on disk for the next try."""


def make_client(endpoint: str | None, read_timeout: float = READ_TIMEOUT) -> Any:
    """An S3 client with the standard AWS chain's credentials and region (us-east-1 if none is
    configured, which S3-compatible stores accept), path-style addressing for `endpoint`."""
    session = boto3.session.Session()
    config = Config(
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return session.client("s3", endpoint_url=endpoint or None, config=config,
                           region_name=session.region_name or "us-east-1")


def upload(client: Any, file: BinaryIO, size: int, target: ArchiveTarget, key: str,
           multipart_bytes: int = MULTIPART_BYTES) -> None:
    """Upload the `size` bytes of `file` (open, at its start) to `key`; returns once the store
    has confirmed them, raises UploadError (saying what to do next where that is known)."""
    try:
        if size < multipart_bytes:
            data = file.read()
            if len(data) != size:
                raise UploadError(f"read {len(data)} bytes of a {size}-byte file (was it changed?)")
            digest = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")
            client.put_object(Bucket=target.bucket, Key=key, Body=data, ContentMD5=digest,
                              ContentType=CONTENT_TYPE)
            return
        chunk = max(multipart_bytes, 8 * MIB)
        client.upload_fileobj(file, target.bucket, key, ExtraArgs={"ContentType": CONTENT_TYPE},
                              Config=TransferConfig(multipart_threshold=multipart_bytes,
                                                    multipart_chunksize=chunk, max_concurrency=4))
        stored = client.head_object(Bucket=target.bucket, Key=key)["ContentLength"]
    except UploadError:
        raise
    except Exception as error:  # botocore's, s3transfer's and OSError: all mean "not uploaded"
        raise UploadError(describe(error)) from error
    if stored != size:
        raise UploadError(f"the store holds {stored} bytes for {target.url(key)}, the file has {size}")


def abort_incomplete(client: Any, target: ArchiveTarget, key: str) -> int:
    """Abort the multipart uploads of `key` left incomplete (by a kill mid-upload: their parts
    are kept, and billed, until aborted); returns how many. Call it only while holding the
    file's lock, after its upload is complete, so none of them is still in progress."""
    aborted = 0
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket, Prefix=key)
        for page in pages:
            for stale in page.get("Uploads", []):
                if stale["Key"] == key:
                    client.abort_multipart_upload(Bucket=target.bucket, Key=key,
                                                  UploadId=stale["UploadId"])
                    aborted += 1
    except Exception as error:
        raise UploadError(f"{describe(error)} (the credentials need s3:ListBucketMultipartUploads "
                          "on the bucket and s3:AbortMultipartUpload on the prefix; else let the "
                          "bucket's lifecycle rule AbortIncompleteMultipartUpload remove them)") from error
    return aborted


def describe(error: Exception) -> str:
    """What went wrong, and for the common cases what to do about it."""
    name = type(error).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (f"{error}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give "
                "the pod or instance a role")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return f"{error} (is the store up, and --archive-endpoint right?)"
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    if code == "NoSuchBucket":
        return f"{error} (create the bucket, or fix --archive)"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"{error} (the credentials need s3:PutObject on the archive's prefix)"
    return f"{name}: {error}"
