"""From a delivery's bytes to records: gzip, format detection, one line per record.

A record is kept as the exact bytes Vercel sent for it (validated as one JSON object, never
parsed into Python objects and dumped again), so every field, unknown ones and big numbers
included, reaches the sinks unchanged. Whatever cannot be a record becomes a `Reject` that
keeps the bytes, so nothing is silently lost.
"""

from __future__ import annotations

import io
import json
import math
import re
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import filterfalse, repeat

import msgspec
import simdjson
from isal import isal_zlib

from receiver.protocol import JSON_WHITESPACE

GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_MEMBERS = 1024
GZIP_FEED_BYTES = 64 * 1024
GZIP_PIECE_BYTES = 1024 * 1024
_NOT_ZERO = re.compile(rb"[^\0]")
_ARRAY_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},]', re.DOTALL)

_decode_value = msgspec.json.Decoder(msgspec.Raw).decode
_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode
PARSE_ERRORS = (msgspec.DecodeError, RecursionError)
_simdjson_parse = simdjson.Parser().parse
SIMDJSON_ERRORS = (ValueError, RuntimeError)  # RuntimeError: too deep, or an integer past 64 bits
# simdjson keeps a buffer as large as the largest document it has parsed: longer lines take the
# slow way, so one huge line does not pin that much memory for the rest of the process's life.
CLEAN_LINE_MAX_BYTES = 1024 * 1024


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
    joined: bytes | None = None
    """The records as NDJSON (final newline included) when already at hand: a clean NDJSON
    body is written as it came, without splitting and joining it again."""
    streams: list[str] | None = None
    """Each record's stream (`receiver.streams`), or None when every record is in `stream`."""
    stream: str = "logs"
    """The stream of every record when `streams` is None, and of the rejects."""

    def ndjson(self) -> bytes:
        """The records, one a line, each line ending in a newline; built once per batch."""
        if self.joined is None:
            self.joined = b"\n".join([*self.records, b""])
        return self.joined

    def keep(self, records: list[bytes], streams: list[str] | None = None) -> None:
        """Keep only `records` (a subset, in order), and `streams`, their streams."""
        if len(records) != len(self.records):
            self.records = records
            self.joined = None
            self.streams = streams

    def by_stream(self) -> dict[str, list[bytes]]:
        """The records of each stream, in order."""
        if self.streams is None:
            return {self.stream: self.records} if self.records else {}
        groups: dict[str, list[bytes]] = {}
        for record, stream in zip(self.records, self.streams, strict=True):
            groups.setdefault(stream, []).append(record)
        return groups

    def counts(self) -> dict[str, int]:
        """How many records each stream holds."""
        return {stream: len(records) for stream, records in self.by_stream().items()}


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body (several members allowed), never producing more than `limit` bytes.

    Raises `BodyTooLarge` as soon as the output would pass `limit`, so a gzip bomb costs at
    most `limit` bytes of memory, and `BadGzip` for a corrupt, truncated or non-gzip stream.
    isa-l inflates ~2.3x faster than zlib (bench bodies, ~100 KB of NDJSON: 100 us against
    230 us).
    """
    parts = list(inflated_pieces(body, limit))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def inflated_pieces(body: bytes, limit: int) -> Iterator[bytes]:
    """The inflated bytes of a gzip body, a piece at a time; see `gunzip` for the errors.

    Linear in the body: the input is fed `GZIP_FEED_BYTES` at a time, so the end of a member
    never copies the rest of the body (`gzip.compress(b"") * 200_000`, 4 MiB, took 9.8 s
    that way). At most `MAX_GZIP_MEMBERS` members (Vercel sends one), so a body of empty
    members is refused at once; zero bytes between members are skipped, as gzip(1) does.
    """
    view = memoryview(body)
    offset = 0
    room = limit + 1
    members = 0
    while offset < len(body):
        if body[offset : offset + 2] != GZIP_MAGIC:
            where = "body" if offset == 0 else f"data after gzip member {members}"
            if len(body) - offset < 2 and GZIP_MAGIC.startswith(body[offset:]):
                raise BadGzip("gzip stream is truncated")
            raise BadGzip(f"{where} is not gzip (no 1f 8b magic bytes) although Content-Encoding "
                          "says gzip; send the body as is without Content-Encoding, or gzip it")
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BadGzip(f"body has more than {MAX_GZIP_MEMBERS} gzip members; send one")
        inflater = isal_zlib.decompressobj(GZIP_WBITS)
        while not inflater.eof:
            data = inflater.unconsumed_tail
            if not data:
                data = view[offset : offset + GZIP_FEED_BYTES]
                offset += len(data)
                if not data:
                    raise BadGzip("gzip stream is truncated")
            try:
                piece = inflater.decompress(data, min(room, GZIP_PIECE_BYTES))
            except isal_zlib.error as error:
                raise BadGzip(f"body is not valid gzip ({error})") from None
            room -= len(piece)
            if room <= 0:
                raise BodyTooLarge(f"decompressed body is larger than {limit} bytes")
            if piece:
                yield piece
        offset -= len(inflater.unused_data)
        padding_end = _NOT_ZERO.search(body, offset)
        offset = padding_end.start() if padding_end else len(body)


def split_records(body: bytes) -> Batch:
    """The records in a JSON array, NDJSON, or single-object body, detected from the body."""
    clean = _clean_ndjson(body)
    if clean is not None:
        return clean
    is_array = body.lstrip(JSON_WHITESPACE)[:1] == b"["
    batch = _from_array(body) if is_array else _from_lines(body)
    if not body.isascii():
        _reject_invalid_utf8(batch)
    return batch


def _clean_ndjson(body: bytes) -> Batch | None:
    """The common case at C speed: NDJSON whose every line is one JSON object in valid UTF-8,
    with nothing around it, kept as it came. None sends the body the slow way, which decides
    line by line (and turns a CR between tokens into a space).

    simdjson checks a line's JSON and its UTF-8 in one pass; each line is parsed on its own, so
    a line is a record only if it is a whole JSON value. No Python runs per line: the lines come
    from `readlines`, which finds newlines with memchr, and are checked by C functions mapped
    over them (bench, 100 realistic records a batch: ~107 us, against ~127 us for `split` and a
    Python check per line, 155 us for one msgspec parse of all the lines joined into an array
    plus a UTF-8 decode, and ~220 us for that parse plus per-record UTF-8 checks).
    """
    if body[:1] != b"{" or b"\r" in body:
        return None
    if not body.endswith(b"\n"):
        body += b"\n"
    lines = io.BytesIO(body).readlines()
    if not (
        all(map(bytes.startswith, lines, repeat(b"{")))
        and all(map(bytes.endswith, lines, repeat(b"}\n")))
        and max(map(len, lines)) <= CLEAN_LINE_MAX_BYTES
    ):
        return None
    try:
        deque(map(_simdjson_parse, lines), maxlen=0)
    except SIMDJSON_ERRORS:
        return None
    return Batch(records=[line[:-1] for line in lines], joined=body)


def _from_array(body: bytes) -> Batch:
    """The elements of an array body. The common case (one msgspec scan, every element an
    object, no raw newline) runs no Python per element: 100 realistic records a batch,
    283 -> 199 us (see bench/RESULTS.md, "Issue 15")."""
    try:
        elements = list(map(bytes, _decode_array(body)))
    except PARSE_ERRORS as error:
        checked = _elements_by_stdlib(body)
        if checked is None:
            return Batch(rejects=[Reject(f"body is not a valid JSON array: {_describe(error)}", body)])
        return _array_batch(checked, body)
    if b"\n" not in body and b"\r" not in body and all(map(bytes.startswith, elements, repeat(b"{"))):
        return Batch(records=elements)
    return _array_batch(elements, body)


def _array_batch(elements: Sequence[bytes | Reject], body: bytes) -> Batch:
    batch = Batch()
    multiline = b"\n" in body or b"\r" in body
    for raw in elements:
        if isinstance(raw, Reject):
            batch.rejects.append(raw)
        elif raw[:1] != b"{":
            batch.rejects.append(Reject("array element is not a JSON object", raw))
        else:
            batch.records.append(_one_line(raw) if multiline else raw)
    return batch


def _from_lines(body: bytes) -> Batch:
    lines = [stripped for line in body.split(b"\n") if (stripped := line.strip(JSON_WHITESPACE))]
    batch = Batch()
    for line in lines:
        problem = _json_problem(line)
        if problem is not None:
            batch.rejects.append(Reject(f"line is not valid JSON: {problem}", line))
        elif line[:1] == b"{":
            batch.records.append(_one_line(line))
        else:
            batch.rejects.append(Reject("line is not a JSON object", line))
    if batch.rejects and len(lines) > 1:
        return _as_one_object(body) or batch
    return batch


def _as_one_object(body: bytes) -> Batch | None:
    """A pretty-printed single object spans lines; it is one record, not broken NDJSON."""
    raw = body.strip(JSON_WHITESPACE)
    if raw[:1] == b"{" and _json_problem(raw) is None:
        return Batch(records=[_one_line(raw)])
    return None


def _json_problem(data: bytes) -> str | None:
    """Why `data` is not one JSON value, or None when it is."""
    try:
        _decode_value(data)
    except PARSE_ERRORS as error:
        try:
            return None if _valid_by_stdlib(data) else _describe(error)
        except NumberTooLarge as too_large:
            return str(too_large)
    return None


def _valid_by_stdlib(data: bytes) -> bool:
    """The slow second opinion, for the few valid JSON texts msgspec refuses (a lone surrogate
    escape such as `"\\ud83d"`, written by JSON.stringify for a string cut mid-emoji). Raises
    `NumberTooLarge` for a number no JSON reader can hold (`1e400`)."""
    try:
        json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except NumberTooLarge:
        raise
    except (ValueError, RecursionError):
        return False
    return True


def _elements_by_stdlib(body: bytes) -> list[bytes | Reject] | None:
    """The elements of an array msgspec refused, each as its exact bytes, or None when the body
    is not a valid JSON array (unbalanced, an empty element, anything after the closing `]`, an
    element the standard library refuses too).

    The boundaries come from a scan that skips strings (escapes included) and counts depth;
    each element is then checked on its own, so one odd element (a lone surrogate escape)
    does not rewrite the rest, and one holding a number no reader can hold (`1e400`, read as
    Infinity) becomes a `Reject` of its own.
    """
    elements = _array_elements(body)
    if elements is None:
        return None
    checked: list[bytes | Reject] = []
    for element in elements:
        try:
            _decode_value(element)
        except PARSE_ERRORS:
            try:
                if not _valid_by_stdlib(element):
                    return None
            except NumberTooLarge as error:
                checked.append(Reject(f"array element is not valid JSON: {error}", element))
                continue
        checked.append(element)
    return checked


def _array_elements(body: bytes) -> list[bytes] | None:
    """The bytes of each element of what looks like a JSON array, or None if it does not."""
    position = len(body) - len(body.lstrip(JSON_WHITESPACE))
    if body[position : position + 1] != b"[":
        return None
    elements: list[bytes] = []
    depth = 0
    start = position + 1
    for token in _ARRAY_TOKENS.finditer(body, position):
        mark = token.group()
        if mark[:1] == b'"':
            continue
        if mark in b"[{":
            depth += 1
        elif mark in b"]}":
            depth -= 1
            if depth == 0:
                last = body[start : token.start()].strip(JSON_WHITESPACE)
                if last:
                    elements.append(last)
                elif elements:
                    return None
                rest = body[token.end() :]
                return elements if not rest.strip(JSON_WHITESPACE) and mark == b"]" else None
        elif mark == b"," and depth == 1:
            element = body[start : token.start()].strip(JSON_WHITESPACE)
            if not element:
                return None
            elements.append(element)
            start = token.end()
    return None


class NumberTooLarge(ValueError):
    """A number past the range of a double: readers would see Infinity, which is not JSON."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NumberTooLarge(f"the number {text[:40]} is too large for a double")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _describe(error: Exception) -> str:
    return "nested too deeply" if isinstance(error, RecursionError) else str(error)


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
    """JSON text is UTF-8; a record that is not would make every reader of the file fail.

    Checked record by record, skipping ASCII ones: decoding a whole body that holds one emoji
    builds a 4-bytes-per-character string of all of it (bench: 100 records, 41 of them
    non-ASCII, 382 us for the body against 92 us record by record).
    """
    try:
        deque(map(bytes.decode, filterfalse(bytes.isascii, batch.records)), maxlen=0)
        return
    except UnicodeDecodeError:
        pass
    valid: list[bytes] = []
    for record in batch.records:
        if record.isascii() or _is_utf8(record):
            valid.append(record)
        else:
            batch.rejects.append(Reject("record is not valid UTF-8", record))
    batch.keep(valid)
