"""The hot path: request -> verify -> decode -> records -> sinks -> acknowledge.

`deliver` answers `POST /` as a plain ASGI app; Starlette serves every other route. On a
small batch, Starlette's middleware, request and response objects cost more than the receiver's
own work (bench, one-record batches: 7.3k -> 10.4k deliveries/s without them; 100-record
batches: +5%).

Every way a delivery can be refused is a `Refusal` with the status Vercel should see: 4xx for a
request that must not be retried as is, 503 when the receiver could not take or write it and
Vercel should try again. A 200 is sent only once every sink has written every record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from starlette.types import Receive, Scope, Send

from receiver import metrics, otlp
from receiver.deadlines import Deadlines
from receiver.decode import BadGzip, Batch, BodyTooLarge, Reject, gunzip, inflated_pieces, split_records
from receiver.dedupe import RecentIds
from receiver.logs import client_host
from receiver.protocol import (
    SIGNATURE_HEADER,
    VERIFY_HEADER,
    content_encoding,
    is_handshake,
    signature_matches,
    signature_matches_pieces,
)
from receiver.secret_file import WatchedLines
from receiver.sinks import Sink, SinkError
from receiver.streams import TRACES, streams_of

log = logging.getLogger("receiver")

HANDSHAKE_PEEK_BYTES = 1024
# OTLP/HTTP answers errors with a google.rpc.Status whose code is a gRPC code.
GRPC_CODES = {400: 3, 403: 7, 408: 4, 413: 8, 415: 3, 503: 14}
GRPC_UNKNOWN = 2
FALLBACK_INFLATION_RATIO = 16
FALLBACK_INFLATION_FLOOR = 1024 * 1024
RETRY_AFTER_SECONDS = b"5"
RawHeaders = list[tuple[bytes, bytes]]
HANDSHAKE_ANSWER: dict[str, object] = {"accepted": 0, "rejected": 0}
DELIVERY_VERIFY_MAX_AGE = 1.0
"""Vercel checks `x-vercel-verify` on its unsigned `{}` handshake, which always reads the file
afresh; a signed delivery's answer may carry a code read up to this many seconds before."""


@dataclass
class Refusal(Exception):
    status: int
    code: str
    message: str

    def headers(self) -> RawHeaders:
        return [(b"retry-after", RETRY_AFTER_SECONDS)] if self.status == 503 else []


@dataclass(frozen=True)
class Limits:
    body_bytes: int
    decompressed_bytes: int
    inflight_bytes: int
    body_seconds: float


@dataclass
class Drain:
    """Everything a delivery needs: secrets, sinks, limits, the verification code, and the
    dedupe window if any."""

    sinks: list[Sink]
    limits: Limits
    env_secrets: tuple[str, ...]
    secret_file: WatchedLines
    verify_token: str | None = None
    verify_file: WatchedLines | None = None
    recent_ids: RecentIds | None = None
    inflight_bytes: int = field(default=0, init=False)
    deadlines: Deadlines = field(init=False)
    _secrets: list[bytes] = field(default_factory=list, init=False)
    _secrets_of: tuple[str, ...] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.deadlines = Deadlines(self.limits.body_seconds)

    def secrets(self) -> list[bytes]:
        """Every accepted secret once (a secret in both places costs one HMAC, not two); the
        list is rebuilt only when the secret file's entries change."""
        entries = self.secret_file.current()
        if entries is not self._secrets_of:
            self._secrets = [s.encode() for s in dict.fromkeys((*self.env_secrets, *entries))]
            self._secrets_of = entries
        return self._secrets

    def verify_code(self, max_age: float = 0.0) -> str | None:
        """The code Vercel expects in `x-vercel-verify` on every answer of `/`, if one is set;
        `max_age` as in `WatchedLines.current`."""
        if self.verify_token:
            return self.verify_token
        codes = self.verify_file.current(max_age) if self.verify_file is not None else []
        return codes[0] if codes else None

    def verify_headers(self, max_age: float = 0.0) -> RawHeaders:
        code = self.verify_code(max_age)
        return [(VERIFY_HEADER.encode(), code.encode("latin-1"))] if code else []


async def deliver(scope: Scope, receive: Receive, send: Send, drain: Drain) -> None:
    """Answer one `POST /` from Vercel, and count it."""
    started = time.perf_counter()
    try:
        status, answer = 200, await _deliver(scope, receive, drain)
        headers = drain.verify_headers(0.0 if answer is HANDSHAKE_ANSWER else DELIVERY_VERIFY_MAX_AGE)
    except Refusal as refusal:
        log.warning("refused a delivery from %s: %d %s", client_host(scope.get("client")),
                    refusal.status, refusal.message)
        status, headers = refusal.status, refusal.headers() + drain.verify_headers()
        answer = {"code": refusal.code, "error": refusal.message}
    await send_json(send, status, answer, headers)
    _counted(status, started)


async def _deliver(scope: Scope, receive: Receive, drain: Drain) -> dict[str, object]:
    payload = await verified_body(scope, receive, drain)
    if payload is None:
        return HANDSHAKE_ANSWER
    if otlp.is_json_export(payload):
        return otlp.response_object(await write_spans(payload, otlp.JSON, drain))
    batch = split_records(payload) if not is_handshake(payload) else Batch()
    batch.streams = streams_of(payload, batch.records)
    duplicates = write_batch(batch, drain)
    await synced(drain)
    if batch.rejects:
        log.warning("kept %d rejected records of a delivery aside (first: %s)",
                    len(batch.rejects), batch.rejects[0].reason)
    answer: dict[str, object] = {"accepted": len(batch.records), "rejected": len(batch.rejects)}
    if duplicates:
        answer["duplicates"] = duplicates
    if batch.streams is not None:
        answer["streams"] = batch.counts()
    return answer


async def deliver_traces(scope: Scope, receive: Receive, send: Send, drain: Drain) -> None:
    """Answer one OTLP/HTTP trace export (`POST /v1/traces`, or `POST /` with a protobuf body),
    in the request's own encoding, and count it."""
    started = time.perf_counter()
    content_type = otlp.media_type(header(scope, b"content-type"))
    protobuf = content_type == otlp.PROTOBUF
    try:
        status, body = 200, otlp.response_body(await _deliver_traces(scope, receive, drain, content_type),
                                                protobuf)
    except Refusal as refusal:
        log.warning("refused a trace export from %s: %d %s", client_host(scope.get("client")),
                    refusal.status, refusal.message)
        status = refusal.status
        if protobuf:
            body = otlp.status_body(GRPC_CODES.get(status, GRPC_UNKNOWN), refusal.message)
        else:
            body = orjson.dumps({"code": refusal.code, "error": refusal.message})
        headers = refusal.headers()
    else:
        headers = []
    media = (otlp.PROTOBUF if protobuf else otlp.JSON).encode()
    start = [(b"content-type", media), (b"content-length", b"%d" % len(body)),
             *headers, *drain.verify_headers()]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
    _counted(status, started)


async def _deliver_traces(
    scope: Scope, receive: Receive, drain: Drain, content_type: str
) -> otlp.Spans | None:
    if content_type not in (otlp.PROTOBUF, otlp.JSON):
        raise Refusal(415, "unsupported_media_type", f"Content-Type {content_type!r} is not OTLP/HTTP; "
                      f"send {otlp.PROTOBUF} or {otlp.JSON}")
    payload = await verified_body(scope, receive, drain)
    if payload is None or (content_type == otlp.JSON and is_handshake(payload)):
        return None
    return await write_spans(payload, content_type, drain)


async def write_spans(payload: bytes, content_type: str, drain: Drain) -> otlp.Spans:
    """Write a verified trace export's spans (a body that is none is kept as a reject: 400)."""
    try:
        decode = otlp.spans_from_protobuf if content_type == otlp.PROTOBUF else otlp.spans_from_json
        spans = decode(payload)
    except otlp.InvalidOtlp as error:
        write_batch(Batch(rejects=[Reject(str(error), payload)], stream=TRACES), drain)
        raise Refusal(400, "invalid_otlp", f"{error}; the body was kept aside as a reject") from None
    write_batch(spans.batch, drain)
    await synced(drain)
    if spans.rejected_spans:
        log.warning("kept %d rejected spans of a trace export aside (first: %s)",
                    spans.rejected_spans, spans.batch.rejects[0].reason)
    return spans


async def verified_body(scope: Scope, receive: Receive, drain: Drain) -> bytes | None:
    """The body once its signature matched (inflated when it came gzipped), or None for
    Vercel's unsigned `{}` endpoint check. The same rules for every drain type."""
    gzipped = _is_gzipped(header(scope, b"content-encoding"))
    body = await read_body(receive, header(scope, b"content-length"), drain)
    metrics.TALLY.add(metrics.WIRE_BYTES, len(body))
    claimed = header(scope, SIGNATURE_HEADER.encode())
    if claimed is None:
        if is_handshake(_unsigned_peek(body, gzipped)):
            return None
        metrics.SIGNATURE_FAILURES.labels("missing").inc()
        raise Refusal(403, "missing_signature", f"{SIGNATURE_HEADER} header is missing; only Vercel's "
                      "signed deliveries and its {} endpoint check are accepted")
    payload = verified_payload(body, claimed, gzipped, drain.secrets(), drain.limits.decompressed_bytes)
    metrics.TALLY.add(metrics.DECOMPRESSED_BYTES, len(payload))
    return payload


async def read_body(receive: Receive, declared: str | None, drain: Drain) -> bytes:
    """The whole body, within the size limit, the time limit and the process's memory budget.

    413 as soon as the body is known to pass `--max-body-bytes`; 408 when it takes longer than
    `--body-timeout` to arrive (a slow upload must not hold memory forever); 503 when the bodies
    being read at once would pass `--max-inflight-bytes`, so a flood cannot exhaust memory.
    """
    limits = drain.limits
    expected = int(declared) if declared is not None and declared.isdigit() else 0
    if expected > limits.body_bytes:
        raise _too_large(limits.body_bytes)
    reserved = 0
    chunks: list[bytes] = []
    task = asyncio.current_task()
    assert task is not None
    drain.deadlines.watch(task)
    try:
        reserved = _reserve(drain, expected)
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "client_disconnected", "the client closed the connection mid-body")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limits.body_bytes:
                raise _too_large(limits.body_bytes)
            if size > reserved:
                reserved += _reserve(drain, size - reserved)
            chunks.append(chunk)
    except asyncio.CancelledError:
        if drain.deadlines.forget(task) and task.uncancel() == 0:
            raise Refusal(408, "body_timeout", f"the body did not arrive within {limits.body_seconds:g} s; "
                          "raise --body-timeout for slow links") from None
        raise
    finally:
        drain.deadlines.forget(task)
        drain.inflight_bytes -= reserved
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case, as ASGI servers give them)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def verified_payload(
    body: bytes, claimed: str, gzipped: bool, secrets: Sequence[bytes], limit: int
) -> bytes:
    """The delivery's JSON bytes, once the signature matched the body as sent or as inflated.

    Vercel signs the body as sent (README, "Protocol"); a signature over the inflated bytes
    is only a fallback, and checking it must not let an unsigned client make the receiver work
    harder than a real delivery of that size would. So the fallback hashes the inflated bytes
    a piece at a time without keeping them, and inflates at most `FALLBACK_INFLATION_RATIO`
    times the wire size (plus `FALLBACK_INFLATION_FLOOR`; log batches deflate 5-15x): a 10 MB
    bomb of zeros with a wrong signature is a 403 after ~160 MB of hashing (~0.2 s), where it
    was inflated to the limit and held in memory. Only when the inflated bytes match are they
    inflated again, to be kept. A body inflating past the limit is a 413 either way.
    """
    if signature_matches(body, claimed, secrets):
        return _inflate(body, limit) if gzipped else body
    if gzipped:
        budget = min(limit, FALLBACK_INFLATION_RATIO * len(body) + FALLBACK_INFLATION_FLOOR)
        try:
            matched = signature_matches_pieces(inflated_pieces(body, budget), claimed, secrets)
        except BodyTooLarge:
            if budget == limit:
                raise _inflated_too_large(limit) from None
            matched = False
        except BadGzip as error:
            raise Refusal(400, "bad_gzip", str(error)) from None
        if matched:
            return _inflate(body, limit)
    metrics.SIGNATURE_FAILURES.labels("invalid").inc()
    raise Refusal(403, "invalid_signature", "signature didn't match")


def write_batch(batch: Batch, drain: Drain) -> int:
    """Hand the batch to every sink (the first failure is a 503); returns duplicates dropped."""
    now = time.time()
    fresh_ids: list[str] = []
    duplicates = 0
    if drain.recent_ids is not None and batch.records:
        fresh, fresh_streams, fresh_ids, duplicates = drain.recent_ids.split_streams(batch, now)
        batch.keep(fresh, fresh_streams)
    for sink in drain.sinks:
        try:
            sink.write(batch)
        except SinkError as error:
            metrics.SINK_WRITE_ERRORS.labels(sink.name).inc()
            log.error("%s sink could not write a batch of %d records: %s",
                      sink.name, len(batch.records), error)
            message = f"the {sink.name} sink could not write the records; retry later"
            raise Refusal(503, "sink_unavailable", message) from None
    if drain.recent_ids is not None:
        drain.recent_ids.remember(fresh_ids, now)
        metrics.TALLY.add(metrics.DUPLICATES_DROPPED, duplicates)
    if batch.streams is None:
        metrics.TALLY.add(metrics.accepted_in(batch.stream), len(batch.records))
    else:
        for stream, count in batch.counts().items():
            metrics.TALLY.add(metrics.accepted_in(stream), count)
    if batch.rejects:
        metrics.TALLY.add(metrics.rejected_in(batch.stream), len(batch.rejects))
    metrics.TALLY.wrote_at(now)
    return duplicates


async def synced(drain: Drain) -> None:
    """Wait until what the sinks wrote is on disk, for the sinks that promise it (`--fsync`)."""
    for sink in drain.sinks:
        waiting = sink.synced()
        if waiting is None:
            continue
        try:
            await waiting
        except SinkError as error:
            metrics.SINK_WRITE_ERRORS.labels(sink.name).inc()
            log.error("%s sink could not make a batch durable: %s", sink.name, error)
            message = f"the {sink.name} sink could not write the records; retry later"
            raise Refusal(503, "sink_unavailable", message) from None


async def send_json(send: Send, status: int, content: object, headers: RawHeaders) -> None:
    body = orjson.dumps(content)
    start = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _counted(status: int, started: float) -> None:
    metrics.TALLY.add(metrics.deliveries_with_status(status))
    metrics.TALLY.request_took(time.perf_counter() - started)
    metrics.TALLY.flush_if_shared()


def _reserve(drain: Drain, size: int) -> int:
    if drain.inflight_bytes + size > drain.limits.inflight_bytes:
        raise Refusal(503, "busy", "too many bytes in flight; retry later")
    drain.inflight_bytes += size
    return size


def _too_large(limit: int) -> Refusal:
    return Refusal(413, "body_too_large",
                   f"body is larger than {limit} bytes; raise --max-body-bytes if such batches are expected")


def _is_gzipped(header: str | None) -> bool:
    encoding = content_encoding(header)
    if encoding not in ("", "gzip"):
        raise Refusal(415, "unsupported_encoding",
                      f"Content-Encoding {encoding!r} is not supported; send gzip or none")
    return encoding == "gzip"


def _inflate(body: bytes, limit: int) -> bytes:
    try:
        return gunzip(body, limit)
    except BodyTooLarge:
        raise _inflated_too_large(limit) from None
    except BadGzip as error:
        raise Refusal(400, "bad_gzip", str(error)) from None


def _inflated_too_large(limit: int) -> Refusal:
    return Refusal(413, "decompressed_body_too_large", f"body inflates past {limit} bytes; "
                   "raise --max-decompressed-bytes if such batches are expected")


def _unsigned_peek(body: bytes, gzipped: bool) -> bytes:
    """Enough of an unsigned body to tell the `{}` handshake, never inflating much of it."""
    if not gzipped:
        return body
    try:
        return gunzip(body, HANDSHAKE_PEEK_BYTES)
    except (BodyTooLarge, BadGzip):
        return b""
