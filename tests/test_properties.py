"""Property-based tests (issue 4 point 5): the decoder, and a real receiver, against anything.

Pure: `split_records` and `gunzip` on arbitrary bytes never fail in an unexpected way, every
record is one JSON object on one line, nothing is lost, and well-formed bodies round-trip.
End to end: one real receiver gets arbitrary bodies, encodings and signatures; it answers only
as specified (never 500, never a dropped connection), never changes a file for a request that is
not correctly signed, and a 200 accounts for exactly the records of the body.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from receiver.decode import BadGzip, BodyTooLarge, _clean_ndjson, _from_lines, gunzip, split_records
from tests.support import Receiver, running_receiver, sign

WHITESPACE = b" \t\r\n"
SECRET = "property-secret-0123456789abcdefghijklmnopq"
OTHER_SECRET = "another-secret-0123456789abcdefghijklmnopqr"
MAX_BODY = 64 * 1024
MAX_DECOMPRESSED = 128 * 1024
# Sized so that the module runs in about 30 s on a busy 2-core machine.
PURE = settings(max_examples=250, deadline=None)
END_TO_END = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WELL_FORMED_END_TO_END = settings(END_TO_END, max_examples=120)

# --- strategies -----------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**256), max_value=2**256)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text, json_values, max_size=6)


def dumps(value: object, ascii_only: bool, indent: int | None = None) -> bytes:
    separators = (",", ":") if indent is None else None
    return json.dumps(value, ensure_ascii=ascii_only, indent=indent, separators=separators).encode()


@st.composite
def well_formed_bodies(draw: st.DrawFn) -> tuple[list[dict[str, object]], bytes]:
    """Objects and a body that carries them: NDJSON (CRLF, blank lines), or an array."""
    objects = draw(st.lists(json_objects, min_size=1, max_size=8))
    ascii_only = draw(st.booleans())
    shape = draw(st.sampled_from(["ndjson", "array", "indented-array", "indented-object"]))
    if shape == "ndjson":
        newline = draw(st.sampled_from([b"\n", b"\r\n"]))
        lines = [dumps(value, ascii_only) for value in objects]
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), b" \t")
        body = newline.join(lines) + draw(st.sampled_from([b"", newline]))
    elif shape == "array":
        body = dumps(objects, ascii_only)
    elif shape == "indented-array":
        body = dumps(objects, ascii_only, indent=draw(st.integers(0, 4)))
    else:
        objects = objects[:1]
        body = dumps(objects[0], ascii_only, indent=draw(st.integers(0, 4)))
    return objects, body


line_fragments = st.one_of(
    json_objects.map(lambda value: dumps(value, True)),
    json_objects.map(lambda value: dumps(value, False)),
    json_values.map(lambda value: dumps(value, False)),
    st.binary(max_size=30),
    st.sampled_from([b"", b" ", b"\r", b"{", b"}", b"[", b"{}", b"[]", b"\xff", b"\xc3", b'"\xed\xa0\x80"']),
)


@st.composite
def messy_bodies(draw: st.DrawFn) -> bytes:
    """NDJSON-like bodies mixing objects, other JSON values, garbage and odd separators."""
    parts = draw(st.lists(line_fragments, max_size=8))
    separators = st.sampled_from([b"\n", b"\r\n", b"\n\n", b" \n"])
    body = b"".join(part + draw(separators) for part in parts)
    return draw(st.sampled_from([b"", b"[", b" ", b"\xef\xbb\xbf"])) + body


arbitrary_bodies = st.one_of(
    st.binary(max_size=400), messy_bodies(), well_formed_bodies().map(lambda case: case[1])
)


def non_blank_lines(body: bytes) -> list[bytes]:
    return [line.strip(WHITESPACE) for line in body.split(b"\n") if line.strip(WHITESPACE)]


def as_object(record: bytes) -> dict[str, object]:
    value = json.loads(record.decode("utf-8"))
    assert isinstance(value, dict)
    return value


# --- pure: split_records --------------------------------------------------------------------


@PURE
@given(arbitrary_bodies)
@example(b'{"a":1}\n{"b":2')
@example(b'{\n  "a": {"b": 1}\n}\n')
@example(b'[{"a":1}, 2, "x", {"b":\n[]}]')
@example(b'{"a":"\xff"}\n{"b":1}\n')
def test_split_records_never_raises_and_accounts_for_every_line(body: bytes) -> None:
    batch = split_records(body)
    for record in batch.records:
        assert b"\n" not in record
        as_object(record)
    raws = [reject.raw for reject in batch.rejects]
    lenient = body.decode("utf-8", "surrogateescape")  # invalid UTF-8 kept, for json.loads
    if body.lstrip(WHITESPACE)[:1] == b"[":
        if raws == [body]:
            assert batch.records == []  # not an array at all: the whole body is one reject
            return
        elements = json.loads(lenient)
        assert isinstance(elements, list)
        assert len(batch.records) + len(raws) == len(elements)
        objects = [element for element in elements if isinstance(element, dict)]
        assert is_subsequence([as_object(record) for record in batch.records], objects)
        if is_utf8(body):
            assert len(batch.records) == len(objects)
        return
    lines = non_blank_lines(body)
    items = batch.records + raws
    if len(lines) > 1 and len(items) == 1 and items[0] not in lines:
        # One pretty-printed object spanning lines is one record (a reject if not UTF-8).
        whole = json.loads(lenient)
        assert isinstance(whole, dict)
        assert json.loads(items[0].decode("utf-8", "surrogateescape")) == whole
        return
    # Otherwise every non-blank line is a record or a reject, byte for byte, records in order.
    assert Counter(items) == Counter(lines)
    assert is_subsequence(batch.records, lines)


def is_subsequence(items: list[object], sequence: list[object]) -> bool:
    remaining = iter(sequence)
    return all(item in remaining for item in items)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@PURE
@given(st.one_of(arbitrary_bodies, st.lists(line_fragments, min_size=1, max_size=6).map(b"\n".join)))
@example(b'{"a":[1\n{"x":2}]}\n{"p":1},{"q":2}')
@example(b'{"n":123456789012345678901234567890}\n{"m":"\\ud83d"}\n{"x":1e999}')
def test_the_fast_ndjson_path_agrees_with_the_slow_one(body: bytes) -> None:
    """`_clean_ndjson` (simdjson, line by line) may only take a body the slow way would take
    whole, record for record, and with the same bytes."""
    fast = _clean_ndjson(body)
    event("fast path" if fast is not None else "slow path")
    if fast is not None:
        slow = _from_lines(body)
        assert (fast.records, fast.rejects) == (slow.records, [])
        assert fast.ndjson() == slow.ndjson()
        assert is_utf8(body)


@PURE
@given(well_formed_bodies())
def test_well_formed_bodies_round_trip_in_order(case: tuple[list[dict[str, object]], bytes]) -> None:
    objects, body = case
    batch = split_records(body)
    assert batch.rejects == []
    assert [as_object(record) for record in batch.records] == objects
    assert all(b"\n" not in record and b"\r" not in record for record in batch.records)


@st.composite
def spaced_objects(draw: st.DrawFn) -> bytes:
    """A one-line JSON object with arbitrary JSON whitespace other than \\n between its tokens."""
    keys = draw(st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=3, unique=True))
    space = st.text(" \t\r", max_size=2).map(str.encode)
    parts = [b"{"]
    for number, key in enumerate(keys):
        if number:
            parts.append(b",")
        parts += [draw(space), json.dumps(key).encode(), draw(space), b":", draw(space), b"1", draw(space)]
    return b"".join([*parts, b"}"])


@PURE
@given(spaced_objects())
@example(b'{"a":\r1}')
def test_ndjson_records_never_hold_a_carriage_return(body: bytes) -> None:
    (record,) = split_records(body + b"\n").records
    assert b"\r" not in record


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"],
                         ids=["array", "ndjson"])
def test_split_records_survives_deep_nesting(body: bytes) -> None:
    batch = split_records(body)
    assert [reject.raw for reject in batch.rejects] + batch.records != []


def test_lone_surrogate_escapes_are_records() -> None:
    record = json.dumps({"id": "1", "message": "cut emoji \ud83d"}).encode()
    assert split_records(record).records == [record]


@st.composite
def arrays_with_lone_surrogates(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """An array msgspec refuses (one element holds a lone surrogate escape), and the exact
    bytes of each element, spaced and encoded in any way JSON allows."""
    objects = draw(st.lists(json_objects, min_size=1, max_size=6))
    cut = draw(st.integers(0, len(objects) - 1))
    objects[cut] = {**objects[cut], "message": "cut emoji " + draw(st.sampled_from(["\ud83d", "\udc00"]))}
    indent = draw(st.sampled_from([None, 0, 2]))
    elements = [dumps(value, n == cut or draw(st.booleans()), indent) for n, value in enumerate(objects)]
    space = st.sampled_from([b"", b" ", b"\n", b"\r\n  ", b"\t"])
    body = b"[" + b",".join(draw(space) + element + draw(space) for element in elements) + b"]"
    return elements, body


@PURE
@given(arrays_with_lone_surrogates())
def test_arrays_msgspec_refuses_keep_each_element_exactly(case: tuple[list[bytes], bytes]) -> None:
    elements, body = case
    batch = split_records(body)
    assert batch.rejects == []
    one_line = [element.replace(b"\r", b" ").replace(b"\n", b" ") for element in elements]
    assert batch.records == one_line


# --- pure: gunzip ---------------------------------------------------------------------------


@st.composite
def gzip_like(draw: st.DrawFn) -> bytes:
    """Gzip members (possibly several, padded, truncated or corrupted), or arbitrary bytes."""
    members = [gzip.compress(draw(st.binary(max_size=3000)), mtime=0) for _ in range(draw(st.integers(1, 3)))]
    body = draw(st.sampled_from([b"", b"\0\0"])).join(members)
    damage = draw(st.sampled_from(["none", "truncate", "flip", "append"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    elif damage == "append":
        body += draw(st.binary(min_size=1, max_size=20))
    return body


@PURE
@given(st.one_of(st.binary(max_size=200), gzip_like()), st.integers(0, 5000))
@example(gzip.compress(b"x" * 10_000_000), 1000)
def test_gunzip_raises_only_its_own_errors(body: bytes, limit: int) -> None:
    try:
        inflated = gunzip(body, limit)
    except (BadGzip, BodyTooLarge):
        return
    assert len(inflated) <= limit
    # What it inflates is what the standard library inflates.
    assert inflated == gzip.decompress(body)


@PURE
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=3), st.integers(0, 5000))
def test_gunzip_inflates_valid_members_within_the_limit(parts: list[bytes], limit: int) -> None:
    body = b"".join(gzip.compress(part) for part in parts)
    expected = b"".join(parts)
    if len(expected) <= limit:
        assert gunzip(body, limit) == expected
    else:
        with pytest.raises(BodyTooLarge):
            gunzip(body, limit)


# --- end to end -----------------------------------------------------------------------------


@dataclass
class Drain:
    receiver: Receiver
    client: httpx.Client
    data: Path


@pytest.fixture(scope="module")
def drain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drain]:
    workdir = tmp_path_factory.mktemp("properties")
    data = workdir / "data"
    args = ["--sink", "file", "--dir", str(data), "--max-body-bytes", str(MAX_BODY),
            "--max-decompressed-bytes", str(MAX_DECOMPRESSED)]
    with running_receiver(workdir, args, env={"DRAIN_SECRET": SECRET}) as receiver, \
            httpx.Client(base_url=receiver.url, timeout=60) as client:
        yield Drain(receiver, client, data)
        assert receiver.process.poll() is None, "the receiver died"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".readyz-probe")
    }


def appended(before: dict[str, bytes], after: dict[str, bytes], rejects: bool) -> bytes:
    """What was appended to the record files (or to the rejects files); nothing else changed."""
    grown = b""
    for name in sorted(after):
        old = before.get(name, b"")
        assert after[name].startswith(old), f"{name} was rewritten, not appended to"
        if name.startswith("rejected/") == rejects:
            grown += after[name][len(old) :]
    assert set(before) <= set(after), "a file disappeared"
    return grown


def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


payloads = st.one_of(
    st.binary(max_size=300),
    messy_bodies(),
    well_formed_bodies().map(lambda case: case[1]),
    st.sampled_from([b"{}", b" { }\n", b"[]", b"", b"\n"]),
    st.integers(MAX_BODY - 100, MAX_BODY + 100).map(lambda size: b'{"a":"' + b"x" * size + b'"}'),
    st.integers(MAX_DECOMPRESSED - 10, MAX_DECOMPRESSED + 10).map(lambda size: b" " * (size - 2) + b"{}"),
)
GZIP_NAMES = ["gzip", "x-gzip", "GZIP", "X-Gzip"]
unsupported_encodings = st.one_of(
    st.sampled_from(["deflate", "br", "gzip, identity", "compress"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
    # Raw obs-text bytes; not 0xA0 (NBSP), which Python's str.strip() in content_encoding() drops.
    st.binary(min_size=1, max_size=8).map(lambda raw: bytes(b % 0x5F + 0xA1 for b in raw)),
)
# Branches are drawn about equally often: a third none, a third gzip, then identity, then the rest.
encodings = st.one_of(
    st.none(), st.none(), st.sampled_from(GZIP_NAMES), st.sampled_from(GZIP_NAMES),
    st.sampled_from(["", "identity", "IDENTITY"]), unsupported_encodings,
)
WIRE_FORMS = ["as is", "gzip", "truncated gzip"]
SIGNATURES = ["none", "right", "right", "right", "right for the inflated body", "right for the inflated body",
              "wrong secret", "other bytes", "garbage", "non-ascii", "empty"]


def normalised(encoding: str | bytes | None) -> str | None:
    """What the receiver should make of a Content-Encoding: "gzip", "" (none), or None (415)."""
    if encoding is None:
        return ""
    if isinstance(encoding, bytes):
        return None
    value = encoding.strip().lower()
    return "gzip" if value in ("gzip", "x-gzip") else "" if value in ("", "identity") else None


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes, dict[str, str | bytes], str]:
    """(payload, wire body, headers, signature kind) for one POST."""
    payload = draw(payloads)
    encoding = draw(encodings)
    wire = payload
    if normalised(encoding) == "gzip" or draw(st.booleans()):
        form = draw(st.sampled_from(WIRE_FORMS))
        if form != "as is":
            wire = gzip_member(payload)
        if form == "truncated gzip":
            wire = wire[: draw(st.integers(0, len(wire) - 1))]
    kind = draw(st.sampled_from(SIGNATURES))
    headers: dict[str, str | bytes] = {}
    if encoding is not None:
        headers["content-encoding"] = encoding
    if kind == "right":
        headers["x-vercel-signature"] = sign(wire, SECRET)
    elif kind == "right for the inflated body":
        headers["x-vercel-signature"] = sign(payload, SECRET)
    elif kind == "wrong secret":
        headers["x-vercel-signature"] = sign(wire, OTHER_SECRET)
    elif kind == "other bytes":
        headers["x-vercel-signature"] = sign(wire + draw(st.binary(min_size=1, max_size=4)), SECRET)
    elif kind == "garbage":
        headers["x-vercel-signature"] = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                                     min_size=1, max_size=50))
    elif kind == "non-ascii":
        raw = draw(st.binary(min_size=1, max_size=40))
        headers["x-vercel-signature"] = bytes(b % 0x5F + 0xA0 for b in raw)
    elif kind == "empty":
        headers["x-vercel-signature"] = ""
    return payload, wire, headers, kind


def inflate(wire: bytes) -> bytes | None:
    try:
        return gunzip(wire, MAX_DECOMPRESSED)
    except (BadGzip, BodyTooLarge):
        return None


def expected_statuses(payload: bytes, wire: bytes, headers: dict[str, str | bytes], kind: str) -> set[int]:
    """The answers the README's table allows for this request."""
    encoding = normalised(headers.get("content-encoding"))  # type: ignore[arg-type]
    over_wire = kind == "right" or (kind == "right for the inflated body" and wire == payload)
    over_inflated = kind == "right for the inflated body" and wire != payload
    if encoding is None:
        return {415} if over_wire else {403, 415}
    if len(wire) > MAX_BODY:
        return {413}
    gzipped = encoding == "gzip"
    if kind == "none":
        peek = inflate(wire) if gzipped else wire
        handshake = peek is not None and len(peek) <= 64 and peek.translate(None, WHITESPACE) == b"{}"
        return {200} if handshake else {403}
    if not gzipped:
        return {200} if over_wire else {403}
    try:
        inflated = gunzip(wire, MAX_DECOMPRESSED)
    except BodyTooLarge:
        return {413} if over_wire or over_inflated else {403, 413}
    except BadGzip:
        # A signature over the inflated bytes cannot be checked without inflating them.
        return {400} if over_wire else {400, 403}
    if over_wire or (over_inflated and inflated == payload):
        return {200}
    return {403}


def check_written(before: dict[str, bytes], after: dict[str, bytes], payload: bytes, answer: object) -> None:
    """A 200 wrote exactly the body's records, in order, and exactly its rejects."""
    handshake = len(payload) <= 64 and payload.translate(None, WHITESPACE) == b"{}"
    batch = split_records(payload) if not handshake else split_records(b"")
    assert answer == {"accepted": len(batch.records), "rejected": len(batch.rejects)}
    assert appended(before, after, rejects=False) == b"".join(record + b"\n" for record in batch.records)
    rejects = appended(before, after, rejects=True)
    entries = [json.loads(line) for line in rejects.split(b"\n")[:-1]]
    assert rejects == b"" or rejects.endswith(b"\n")
    kept = [base64.b64decode(e["rawBase64"]) if "rawBase64" in e else e["raw"].encode() for e in entries]
    assert kept == [reject.raw for reject in batch.rejects]
    assert [e["reason"] for e in entries] == [reject.reason for reject in batch.rejects]


@END_TO_END
@given(requests())
@example((b'{"a":1}\n', gzip_member(b'{"a":1}\n'), {"content-encoding": "gzip",
         "x-vercel-signature": sign(b'{"a":1}\n', SECRET)}, "right for the inflated body"))
@example((b"{}", gzip_member(b"{}"), {"content-encoding": "gzip"}, "none"))
def test_any_request_is_answered_as_specified(
    drain: Drain, request_: tuple[bytes, bytes, dict[str, str | bytes], str]
) -> None:
    payload, wire, headers, kind = request_
    before = snapshot(drain.data)
    response = drain.client.post("/", content=wire, headers=headers)
    after = snapshot(drain.data)
    event(f"{response.status_code} ({kind})")
    assert response.status_code in {200, 400, 403, 413, 415}, response.text
    assert response.status_code in expected_statuses(payload, wire, headers, kind), response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    if response.status_code != 200:
        assert set(answer) == {"code", "error"}
    signed = kind in ("right", "right for the inflated body")
    if not signed or response.status_code != 200:
        assert after == before, "a request that was refused or not signed changed the files"
        return
    inflated = inflate(wire) if normalised(headers.get("content-encoding")) == "gzip" else wire  # type: ignore[arg-type]
    assert inflated is not None
    check_written(before, after, inflated, answer)


@WELL_FORMED_END_TO_END
@given(well_formed_bodies(), st.booleans())
def test_signed_well_formed_batches_are_written_as_sent(
    drain: Drain, case: tuple[list[dict[str, object]], bytes], gzipped: bool
) -> None:
    objects, body = case
    wire = gzip_member(body) if gzipped else body
    headers = {"x-vercel-signature": sign(wire, SECRET), **({"content-encoding": "gzip"} if gzipped else {})}
    assume(len(wire) <= MAX_BODY)
    before = snapshot(drain.data)
    response = drain.client.post("/", content=wire, headers=headers)
    after = snapshot(drain.data)
    assert response.status_code == 200, response.text
    written = appended(before, after, rejects=False).split(b"\n")[:-1]
    assert appended(before, after, rejects=True) == b""
    if objects == [{}] and body.translate(None, WHITESPACE) == b"{}":
        assert written == [] and response.json() == {"accepted": 0, "rejected": 0}  # the handshake
        return
    assert response.json() == {"accepted": len(objects), "rejected": 0}
    assert [as_object(line) for line in written] == objects


def test_deeply_nested_signed_body_is_not_a_500(drain: Drain) -> None:
    body = b"[" * 5000 + b"]" * 5000
    response = drain.client.post("/", content=body, headers={"x-vercel-signature": sign(body, SECRET)})
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "rejected": 1}
