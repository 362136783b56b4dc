"""Traces: an OTLP/HTTP `ExportTraceServiceRequest` (protobuf or JSON) -> one span a line.

Each line written is itself a complete OTLP JSON `ExportTraceServiceRequest` holding exactly
one span, under its own resource and scope: a line stands alone (grep by `traceId` finds a
request's spans), and any OTLP tool that reads the OpenTelemetry Collector's JSON file format
can read the files as they are. A JSON body is kept as sent, piece by piece: the span's bytes,
and every field of its resource and scope entries, are copied, not parsed and dumped again.
A protobuf body is written in the OTLP JSON mapping (hex trace and span ids, int64 as strings,
enums as integers). Pure functions: no I/O here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgspec
import orjson
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from receiver.decode import Batch, Reject
from receiver.streams import TRACES

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
EXPORT_MARKER = b'"resourceSpans"'
EXPORT_HEAD_BYTES = 64
_BAD_PROTOBUF_IDS = "span has no valid traceId (16 bytes) and spanId (8 bytes)"

_decode_request = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_entries = msgspec.json.Decoder(list[dict[str, msgspec.Raw]]).decode
_decode_spans = msgspec.json.Decoder(list[msgspec.Raw]).decode
_PARSE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class InvalidOtlp(Exception):
    """The body is not an `ExportTraceServiceRequest`; the message says what is wrong."""


class _SpanIds(msgspec.Struct):
    traceId: object = None
    spanId: object = None


_decode_span_ids = msgspec.json.Decoder(_SpanIds).decode


@dataclass(frozen=True)
class Spans:
    """A trace request's spans as lines (`batch.records`), and what was rejected."""

    batch: Batch
    rejected_spans: int
    error_message: str


def is_otlp_content_type(content_type: str | None) -> bool:
    return media_type(content_type) in (PROTOBUF, JSON)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_export(body: bytes) -> bool:
    """Whether a JSON body posted to `/` is an OTLP export (an object whose one field is
    `resourceSpans`: a trace drain given the receiver's base URL) rather than logs. Any other
    body costs one look at its first bytes."""
    head = body[:EXPORT_HEAD_BYTES].lstrip()
    if not head.startswith(b"{") or EXPORT_MARKER not in head:
        return False
    try:
        return list(_decode_request(body)) == ["resourceSpans"]
    except _PARSE_ERRORS:
        return False


def spans_from_json(body: bytes) -> Spans:
    """The spans of an OTLP JSON body; `InvalidOtlp` when the body is not one."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidOtlp("body is not valid UTF-8") from None
    try:
        request = _decode_request(body)
        resource_spans = _decode_entries(request.get("resourceSpans", b"[]"))
        lines: list[tuple[bytes, bytes]] = []
        for entry in resource_spans:
            for scope_entry in _decode_entries(entry.get("scopeSpans", b"[]")):
                for span in _decode_spans(scope_entry.get("spans", b"[]")):
                    lines.append((_request_line(entry, scope_entry, bytes(span)), bytes(span)))
    except _PARSE_ERRORS as error:
        raise InvalidOtlp(f"body is not an OTLP JSON ExportTraceServiceRequest: {error}") from None
    batch = Batch(stream=TRACES)
    for line, span in lines:
        problem = _json_span_problem(span)
        if problem is None:
            batch.records.append(line)
        else:
            batch.rejects.append(Reject(problem, line))
    return _counted(batch)


def spans_from_protobuf(body: bytes) -> Spans:
    """The spans of an OTLP protobuf body, in the OTLP JSON mapping; `InvalidOtlp` when the
    body is not an `ExportTraceServiceRequest`."""
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError) as error:
        raise InvalidOtlp(f"body is not a protobuf ExportTraceServiceRequest: {error}") from None
    batch = Batch(stream=TRACES)
    for entry in request.resource_spans:
        for scope_entry in entry.scope_spans:
            for span in scope_entry.spans:
                single = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
                    resource=entry.resource, schema_url=entry.schema_url,
                    scope_spans=[ScopeSpans(scope=scope_entry.scope, schema_url=scope_entry.schema_url,
                                            spans=[span])],
                )])
                line = orjson.dumps(_hex_ids(MessageToDict(single, use_integers_for_enums=True)))
                if len(span.trace_id) != TRACE_ID_BYTES or len(span.span_id) != SPAN_ID_BYTES:
                    batch.rejects.append(Reject(_BAD_PROTOBUF_IDS, line))
                else:
                    batch.records.append(line)
    return _counted(batch)


def response_body(spans: Spans | None, protobuf: bool) -> bytes:
    """The `ExportTraceServiceResponse` for a request, in the request's encoding."""
    if protobuf:
        response = ExportTraceServiceResponse()
        if spans is not None and spans.rejected_spans:
            response.partial_success.rejected_spans = spans.rejected_spans
            response.partial_success.error_message = spans.error_message
        return response.SerializeToString()
    return orjson.dumps(response_object(spans))


def response_object(spans: Spans | None) -> dict[str, object]:
    """The `ExportTraceServiceResponse` in OTLP JSON, before encoding."""
    if spans is None or not spans.rejected_spans:
        return {}
    return {"partialSuccess": {"rejectedSpans": str(spans.rejected_spans),
                               "errorMessage": spans.error_message}}


def status_body(grpc_code: int, message: str) -> bytes:
    """A `google.rpc.Status` as protobuf (code = 1, message = 2): OTLP/HTTP's error body."""
    encoded = message.encode()
    return b"\x08" + _varint(grpc_code) + b"\x12" + _varint(len(encoded)) + encoded


def _request_line(entry: dict[str, msgspec.Raw], scope_entry: dict[str, msgspec.Raw], span: bytes) -> bytes:
    scope = _object({**scope_entry, "spans": b"[" + span + b"]"})
    return _one_line(b'{"resourceSpans":[' + _object({**entry, "scopeSpans": b"[" + scope + b"]"}) + b"]}")


def _object(fields: dict[str, msgspec.Raw | bytes]) -> bytes:
    return b"{" + b",".join(orjson.dumps(key) + b":" + bytes(value) for key, value in fields.items()) + b"}"


def _one_line(raw: bytes) -> bytes:
    """Raw newlines in JSON can only be whitespace between tokens."""
    return raw.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in raw or b"\r" in raw else raw


def _json_span_problem(span: bytes) -> str | None:
    if span.lstrip()[:1] != b"{":
        return "span is not a JSON object"
    ids = _decode_span_ids(span)
    if not (_is_hex_id(ids.traceId, TRACE_ID_BYTES) and _is_hex_id(ids.spanId, SPAN_ID_BYTES)):
        return "span has no valid traceId (32 hex digits) and spanId (16 hex digits)"
    return None


def _is_hex_id(value: object, size: int) -> bool:
    if not isinstance(value, str) or len(value) != 2 * size:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _hex_ids(message: object) -> object:
    """Protobuf's JSON mapping writes bytes as base64; OTLP JSON writes trace and span ids in hex."""
    if isinstance(message, dict):
        return {key: _hex(value) if key in _ID_FIELDS and isinstance(value, str) else _hex_ids(value)
                for key, value in message.items()}
    if isinstance(message, list):
        return [_hex_ids(value) for value in message]
    return message


def _hex(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value


def _counted(batch: Batch) -> Spans:
    rejected = len(batch.rejects)
    message = f"{rejected} spans had no valid traceId and spanId; kept aside as rejects" if rejected else ""
    return Spans(batch, rejected, message)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
