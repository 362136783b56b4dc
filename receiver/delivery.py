"""The hot path: request -> verify -> decode -> records -> sinks -> acknowledge.

Every way a delivery can be refused is a `Refusal` with the status Vercel should see: 4xx for a
request that must not be retried as is, 503 when the receiver could not write and Vercel should
try again. A 200 is sent only once every sink has written every record of the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response

from receiver.decode import BadGzip, Batch, BodyTooLarge, gunzip, split_records
from receiver.protocol import SIGNATURE_HEADER, content_encoding, is_handshake, signature_matches
from receiver.sinks import Sink, SinkError

log = logging.getLogger("receiver")

HANDSHAKE_PEEK_BYTES = 1024
RETRY_AFTER_SECONDS = "5"


@dataclass
class Refusal(Exception):
    status: int
    code: str
    message: str

    def response(self) -> Response:
        headers = {"retry-after": RETRY_AFTER_SECONDS} if self.status == 503 else None
        return json_response(self.status, {"code": self.code, "error": self.message}, headers)


@dataclass(frozen=True)
class Limits:
    body_bytes: int
    decompressed_bytes: int


async def deliver(
    request: Request, secrets: Sequence[bytes], sinks: Sequence[Sink], limits: Limits
) -> Response:
    """Handle one `POST /` from Vercel."""
    try:
        gzipped = _is_gzipped(request.headers.get("content-encoding"))
        body = await read_body(request, limits.body_bytes)
        claimed = request.headers.get(SIGNATURE_HEADER)
        if claimed is None:
            if is_handshake(_unsigned_peek(body, gzipped)):
                return json_response(200, {"accepted": 0, "rejected": 0})
            raise Refusal(403, "missing_signature",
                          f"{SIGNATURE_HEADER} header is missing; only Vercel's signed "
                          "deliveries and its {} endpoint check are accepted")
        payload = verified_payload(body, claimed, gzipped, secrets, limits.decompressed_bytes)
        batch = split_records(payload) if not is_handshake(payload) else Batch()
        write_batch(batch, sinks)
    except Refusal as refusal:
        client = request.client.host if request.client else "-"
        log.warning("refused a delivery from %s: %d %s", client, refusal.status, refusal.message)
        return refusal.response()
    if batch.rejects:
        log.warning("kept %d rejected records of a delivery aside (first: %s)",
                    len(batch.rejects), batch.rejects[0].reason)
    return json_response(200, {"accepted": len(batch.records), "rejected": len(batch.rejects)})


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "body_too_large", f"body is larger than {limit} bytes; "
                      "raise --max-body-bytes if such batches are expected")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "body_too_large", f"body is larger than {limit} bytes; "
                          "raise --max-body-bytes if such batches are expected")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def verified_payload(
    body: bytes, claimed: str, gzipped: bool, secrets: Sequence[bytes], limit: int
) -> bytes:
    """The delivery's JSON bytes, once the signature matched the body as sent or as inflated."""
    if signature_matches(body, claimed, secrets):
        return _inflate(body, limit) if gzipped else body
    if gzipped:
        payload = _inflate(body, limit)
        if signature_matches(payload, claimed, secrets):
            return payload
    raise Refusal(403, "invalid_signature", "signature didn't match")


def write_batch(batch: Batch, sinks: Sequence[Sink]) -> None:
    """Hand the batch to every sink; the first that fails turns the answer into a 503."""
    for sink in sinks:
        try:
            sink.write(batch)
        except SinkError as error:
            log.error("%s sink could not write a batch of %d records: %s",
                      sink.name, len(batch.records), error)
            message = f"the {sink.name} sink could not write the records; retry later"
            raise Refusal(503, "sink_unavailable", message) from None


def json_response(status: int, content: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


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
        raise Refusal(413, "decompressed_body_too_large", f"body inflates past {limit} bytes; "
                      "raise --max-decompressed-bytes if such batches are expected") from None
    except BadGzip as error:
        raise Refusal(400, "bad_gzip", str(error)) from None


def _unsigned_peek(body: bytes, gzipped: bool) -> bytes:
    """Enough of an unsigned body to tell the `{}` handshake, never inflating much of it."""
    if not gzipped:
        return body
    try:
        return gunzip(body, HANDSHAKE_PEEK_BYTES)
    except (BodyTooLarge, BadGzip):
        return b""
