"""From a delivery's bytes to records: gzip, format detection, one line per record.

A record is kept as the exact bytes Vercel sent for it (validated as one JSON object, never
parsed into Python objects and dumped again), so every field, unknown ones and big numbers
included, reaches the sinks unchanged. Whatever cannot be a record becomes a `Reject` that
keeps the bytes, so nothing is silently lost.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import msgspec

from receiver.protocol import JSON_WHITESPACE

GZIP_WBITS = 16 + zlib.MAX_WBITS

_decode_value = msgspec.json.Decoder(msgspec.Raw).decode
_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode


class BodyTooLarge(Exception):
    """The decompressed body is larger than the configured limit."""


class BadGzip(Exception):
    """The body is not a complete gzip stream."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Bytes that could not be a record, and why."""

    reason: str
    raw: bytes


@dataclass(slots=True)
class Batch:
    """One delivery's records, each one JSON object on one line (no newline), and rejects."""

    records: list[bytes] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body (several members allowed), never producing more than `limit` bytes.

    Raises `BodyTooLarge` as soon as the output would pass `limit`, so a gzip bomb costs at
    most `limit` bytes of memory, and `BadGzip` for a corrupt or truncated stream.
    """
    parts: list[bytes] = []
    room = limit + 1
    remaining = body
    while remaining:
        inflater = zlib.decompressobj(GZIP_WBITS)
        try:
            part = inflater.decompress(remaining, room)
        except zlib.error as error:
            raise BadGzip(f"body is not valid gzip ({error})") from None
        room -= len(part)
        if room <= 0:
            raise BodyTooLarge(f"decompressed body is larger than {limit} bytes")
        if not inflater.eof:
            raise BadGzip("gzip stream is truncated")
        parts.append(part)
        remaining = inflater.unused_data.lstrip(b"\0")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def split_records(body: bytes) -> Batch:
    """The records in a JSON array, NDJSON, or single-object body, detected from the body."""
    is_array = body.lstrip(JSON_WHITESPACE)[:1] == b"["
    batch = _from_array(body) if is_array else _from_lines(body)
    if not body.isascii() and not _is_utf8(body):
        _reject_invalid_utf8(batch)
    return batch


def _from_array(body: bytes) -> Batch:
    try:
        values = _decode_array(body)
    except msgspec.DecodeError as error:
        return Batch(rejects=[Reject(f"body is not a valid JSON array: {error}", body)])
    batch = Batch()
    for value in values:
        raw = bytes(value)
        if raw[:1] == b"{":
            batch.records.append(_one_line(raw))
        else:
            batch.rejects.append(Reject("array element is not a JSON object", raw))
    return batch


def _from_lines(body: bytes) -> Batch:
    batch = Batch()
    lines = 0
    for line in body.split(b"\n"):
        line = line.strip(JSON_WHITESPACE)
        if not line:
            continue
        lines += 1
        try:
            _decode_value(line)
        except msgspec.DecodeError as error:
            batch.rejects.append(Reject(f"line is not valid JSON: {error}", line))
            continue
        if line[:1] == b"{":
            batch.records.append(line)
        else:
            batch.rejects.append(Reject("line is not a JSON object", line))
    if batch.rejects and lines > 1:
        return _as_one_object(body) or batch
    return batch


def _as_one_object(body: bytes) -> Batch | None:
    """A pretty-printed single object spans lines; it is one record, not broken NDJSON."""
    try:
        raw = bytes(_decode_value(body))
    except msgspec.DecodeError:
        return None
    return Batch(records=[_one_line(raw)]) if raw[:1] == b"{" else None


def _one_line(raw: bytes) -> bytes:
    """A JSON value on one line: raw newlines in JSON can only be whitespace between tokens."""
    if b"\n" in raw or b"\r" in raw:
        return raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return raw


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reject_invalid_utf8(batch: Batch) -> None:
    """JSON text is UTF-8; a record that is not would make every reader of the file fail."""
    valid: list[bytes] = []
    for record in batch.records:
        if _is_utf8(record):
            valid.append(record)
        else:
            batch.rejects.append(Reject("record is not valid UTF-8", record))
    batch.records[:] = valid
