"""Traces over OTLP/HTTP: protobuf and JSON, gzip or not, through a real receiver, one span a line."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import Receiver, running_receiver, sign

SECRET = "traces-secret-0123456789abcdefghijklmnopq"
ENV = {"DRAIN_SECRET": SECRET}
EXAMPLE = Path(__file__).parent / "data" / "vercel" / "traces.json"
PROTOBUF = "application/x-protobuf"

# Two resources (two deployments), three spans, as OTLP JSON: what the protobuf request below
# must come out as, span by span.
RESOURCES = [
    {"attributes": [{"key": "vercel.projectId", "value": {"stringValue": "prj_1"}},
                    {"key": "vercel.deploymentId", "value": {"stringValue": "dpl_1"}}]},
    {"attributes": [{"key": "vercel.projectId", "value": {"stringValue": "prj_2"}}]},
]
SCOPE = {"name": "vercel", "version": "1.0"}
SPANS = [
    [{"traceId": "7bba9f33312b3dbb8b2c2c62bb7abe2d", "spanId": "086e83747d0e381e", "name": "GET /api/users",
      "kind": 2, "startTimeUnixNano": "1694723400000000000", "endTimeUnixNano": "1694723400150000000",
      "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
      "status": {"code": 1}},
     {"traceId": "7bba9f33312b3dbb8b2c2c62bb7abe2d", "spanId": "1111111111111111",
      "parentSpanId": "086e83747d0e381e", "name": "db.query", "kind": 3,
      "startTimeUnixNano": "1694723400010000000", "endTimeUnixNano": "1694723400090000000"}],
    [{"traceId": "00000000000000000000000000000abc", "spanId": "2222222222222222", "name": "GET /",
      "kind": 2, "startTimeUnixNano": "18446744073709551615", "endTimeUnixNano": "18446744073709551615"}],
]


def otlp_json() -> dict[str, object]:
    return copy.deepcopy({"resourceSpans": [
        {"resource": resource, "scopeSpans": [{"scope": SCOPE, "spans": spans}]}
        for resource, spans in zip(RESOURCES, SPANS, strict=True)
    ]})


def one_span_requests() -> list[dict[str, object]]:
    """Each span of `otlp_json()` as a request of its own, under its resource and scope."""
    return [{"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": SCOPE, "spans": [span]}]}]}
            for resource, spans in zip(RESOURCES, SPANS, strict=True) for span in spans]


def protobuf_request() -> bytes:
    """The same spans built with the OpenTelemetry proto classes."""
    request = ExportTraceServiceRequest()
    for resource, spans in zip(RESOURCES, SPANS, strict=True):
        entry = request.resource_spans.add()
        for attribute in resource["attributes"]:
            added = entry.resource.attributes.add()
            added.key = attribute["key"]
            added.value.string_value = attribute["value"]["stringValue"]
        scope_entry = entry.scope_spans.add()
        scope_entry.scope.name, scope_entry.scope.version = SCOPE["name"], SCOPE["version"]
        for span in spans:
            added = scope_entry.spans.add()
            added.trace_id = bytes.fromhex(span["traceId"])
            added.span_id = bytes.fromhex(span["spanId"])
            if "parentSpanId" in span:
                added.parent_span_id = bytes.fromhex(span["parentSpanId"])
            added.name, added.kind = span["name"], span["kind"]
            added.start_time_unix_nano = int(span["startTimeUnixNano"])
            added.end_time_unix_nano = int(span["endTimeUnixNano"])
            for attribute in span.get("attributes", []):
                extra = added.attributes.add()
                extra.key, extra.value.int_value = attribute["key"], int(attribute["value"]["intValue"])
            if "status" in span:
                added.status.code = span["status"]["code"]
    return request.SerializeToString()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    work = tmp_path_factory.mktemp("traces")
    args = ["--sink", "file,stdout", "--dir", str(work / "data")]
    with running_receiver(work, args, env=ENV) as running:
        running.data = work / "data"  # type: ignore[attr-defined]
        yield running


def export(receiver: Receiver, body: bytes, content_type: str, path: str = "/v1/traces",
           gzipped: bool = False, signature: str | None = None) -> httpx.Response:
    headers = {"content-type": content_type}
    if gzipped:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    headers["x-vercel-signature"] = signature or sign(body, SECRET)
    return httpx.post(receiver.url + path, content=body, headers=headers, timeout=30)


def spans_file(receiver: Receiver, name: str = "traces") -> Path:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return receiver.data / "traces" / day / f"{name}.ndjson"  # type: ignore[attr-defined]


def logs_file(receiver: Receiver) -> Path:
    return spans_file(receiver).parents[2] / "logs" / spans_file(receiver).parent.name / "logs.ndjson"


def written_since(path: Path, before: int) -> list[bytes]:
    return path.read_bytes()[before:].splitlines() if path.exists() else []


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("path", ["/v1/traces", "/"])
def test_protobuf_spans_are_written_one_a_line_as_otlp_json(
    receiver: Receiver, gzipped: bool, path: str
) -> None:
    before, stdout_before = size(spans_file(receiver)), len(receiver.stdout())
    response = export(receiver, protobuf_request(), PROTOBUF, path, gzipped)
    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    lines = written_since(spans_file(receiver), before)
    assert [json.loads(line) for line in lines] == one_span_requests()
    assert receiver.stdout()[stdout_before:].splitlines() == lines


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("path", ["/v1/traces", "/"])
def test_json_spans_are_kept_as_sent(receiver: Receiver, gzipped: bool, path: str) -> None:
    """Also when a trace drain was given the receiver's base URL: a JSON export to `/` is
    recognised by its one field, `resourceSpans`, and answered as OTLP."""
    body = json.dumps(otlp_json(), indent=2).encode()
    before, logs_before = size(spans_file(receiver)), size(logs_file(receiver))
    response = export(receiver, body, "application/json", path, gzipped=gzipped)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert [json.loads(line) for line in written_since(spans_file(receiver), before)] == one_span_requests()
    assert size(logs_file(receiver)) == logs_before


def test_a_log_line_that_mentions_resource_spans_stays_a_log(receiver: Receiver) -> None:
    lines = [b'{"resourceSpans": [], "message": "a log record with a field of that name"}',
             b'{"id": "x1", "message": "\\"resourceSpans\\" in a message", "source": "lambda"}']
    before, spans_before = size(logs_file(receiver)), size(spans_file(receiver))
    for line in lines:
        response = export(receiver, line + b"\n", "application/json", "/")
        assert response.json() == {"accepted": 1, "rejected": 0}
    assert written_since(logs_file(receiver), before) == lines
    assert size(spans_file(receiver)) == spans_before


def test_vercels_own_example_is_kept_even_with_its_string_kind(receiver: Receiver) -> None:
    body = EXAMPLE.read_bytes()
    before = size(spans_file(receiver))
    assert export(receiver, body, "application/json; charset=utf-8").status_code == 200
    (line,) = written_since(spans_file(receiver), before)
    assert json.loads(line) == json.loads(body)
    assert b'"kind": "server"' in line, "the span's own bytes"


def test_a_span_without_valid_ids_is_a_partial_success(receiver: Receiver) -> None:
    request = otlp_json()
    request["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"  # type: ignore[index]
    rejects_file = spans_file(receiver).parents[2] / "rejected" / "traces.ndjson"
    before, rejected_before = size(spans_file(receiver)), size(rejects_file)
    response = export(receiver, json.dumps(request).encode(), "application/json")
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "traceId" in partial["errorMessage"]
    written = written_since(spans_file(receiver), before)
    assert [json.loads(line) for line in written] == one_span_requests()[:2]
    (reject,) = written_since(rejects_file, rejected_before)
    kept = json.loads(json.loads(reject)["raw"])
    assert kept == {"resourceSpans": [{"resource": RESOURCES[1], "scopeSpans": [
        {"scope": SCOPE, "spans": [{**SPANS[1][0], "traceId": "not-hex"}]}]}]}


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"resourceSpans": {"not": "a list"}}', "application/json"),
    (b"not json at all", "application/json"),
    (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF),
])
def test_an_invalid_body_is_kept_as_a_reject_and_answered_400(
    receiver: Receiver, body: bytes, content_type: str
) -> None:
    rejects_file = spans_file(receiver).parents[2] / "rejected" / "traces.ndjson"
    before, spans_before = size(rejects_file), size(spans_file(receiver))
    response = export(receiver, body, content_type)
    assert response.status_code == 400
    assert response.headers["content-type"] == content_type
    if content_type == PROTOBUF:
        assert response.content[:2] == b"\x08\x03", "google.rpc.Status, code INVALID_ARGUMENT"
        assert b"not a protobuf ExportTraceServiceRequest" in response.content
    else:
        assert response.json()["code"] == "invalid_otlp"
    (reject,) = written_since(rejects_file, before)
    entry = json.loads(reject)
    kept = entry["raw"].encode() if "raw" in entry else base64.b64decode(entry["rawBase64"])
    assert kept == body
    assert size(spans_file(receiver)) == spans_before


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/json"])
def test_a_bad_signature_is_403_and_writes_nothing(receiver: Receiver, content_type: str) -> None:
    body = protobuf_request() if content_type == PROTOBUF else json.dumps(otlp_json()).encode()
    before, stdout_before = size(spans_file(receiver)), len(receiver.stdout())
    response = export(receiver, body, content_type, signature="0" * 40)
    assert response.status_code == 403
    assert response.headers["content-type"] == content_type
    unsigned = httpx.post(receiver.url + "/v1/traces", content=body, headers={"content-type": content_type})
    assert unsigned.status_code == 403
    assert size(spans_file(receiver)) == before
    assert len(receiver.stdout()) == stdout_before


def test_other_content_types_are_415(receiver: Receiver) -> None:
    response = export(receiver, b"{}", "text/plain")
    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["error"]
