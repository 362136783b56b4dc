"""Which stream a record belongs to, from its `schema` field: the one place that knows the names.

Vercel's drains carry logs (no `schema`), Speed Insights, Web Analytics, audit logs and traces
(OTLP, see `receiver.otlp`) to one URL. Each kind is kept in its own stream, so the file sink
can keep them apart and the metrics can count them apart.
"""

from __future__ import annotations

import re

import msgspec

LOGS = "logs"
TRACES = "traces"
SPEED_INSIGHTS = "speed_insights"
ANALYTICS = "analytics"
AUDIT_LOG = "audit_log"
UNKNOWN_SCHEMA = "unknown_schema"
"""A `schema` that is not of the form `vercel.<name>.v<N>` (or not a string): kept, apart from
every known stream, so a reader can find it and nothing is mixed into `logs`."""

DEDUPED_STREAMS = frozenset({LOGS, AUDIT_LOG})
"""Streams whose records carry an `id` that names the event (a redelivery repeats it)."""

SCHEMA_MARKER = b'"schema"'
_KNOWN = {"log": LOGS, "speed_insights": SPEED_INSIGHTS, "analytics": ANALYTICS, "audit_log": AUDIT_LOG}
_VERCEL_SCHEMA = re.compile(r"vercel\.([A-Za-z0-9_.-]+)\.v[0-9]+")
_UNSAFE = re.compile(r"[^a-z0-9_]+")
STREAM_NAME_MAX = 64


class _Schema(msgspec.Struct):
    schema: object = None


_decode_schema = msgspec.json.Decoder(_Schema).decode


def stream_of_schema(schema: object) -> str:
    """The stream of a record whose `schema` field is `schema` (None when it has none)."""
    if schema is None:
        return LOGS
    if not isinstance(schema, str):
        return UNKNOWN_SCHEMA
    match = _VERCEL_SCHEMA.fullmatch(schema)
    if match is None:
        return UNKNOWN_SCHEMA
    name = match.group(1)
    if name in _KNOWN:
        return _KNOWN[name]
    safe = _UNSAFE.sub("_", name.lower()).strip("_")[:STREAM_NAME_MAX]
    return safe if safe and safe not in (LOGS, TRACES, UNKNOWN_SCHEMA) else UNKNOWN_SCHEMA


def stream_of_record(record: bytes) -> str:
    """The stream of one record (a JSON object's bytes)."""
    try:
        return stream_of_schema(_decode_schema(record).schema)
    except (msgspec.DecodeError, RecursionError):
        return LOGS


def streams_of(body: bytes, records: list[bytes]) -> list[str] | None:
    """Each record's stream, or None when all are logs: a body without `"schema"` anywhere
    costs one search and no work per record."""
    if SCHEMA_MARKER not in body:
        return None
    streams = [stream_of_record(record) for record in records]
    return None if all(stream == LOGS for stream in streams) else streams
