"""Unit tests for the pure middle: signatures, handshake, gzip, record splitting."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest

from receiver.decode import BadGzip, BodyTooLarge, gunzip, split_records
from receiver.protocol import content_encoding, is_handshake, signature, signature_matches
from receiver.sinks import reject_line
from tests.support import sign

SECRETS = [b"old-secret", b"new-secret"]


def test_signature_is_hex_hmac_sha1_of_the_raw_body() -> None:
    fox = b"The quick brown fox jumps over the lazy dog"
    assert signature(fox, b"key") == "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"


def test_any_configured_secret_verifies() -> None:
    body = b'[{"id":"1"}]'
    assert signature_matches(body, sign(body, "old-secret"), SECRETS)
    assert signature_matches(body, sign(body, "new-secret").upper(), SECRETS)
    assert not signature_matches(body, sign(body, "other"), SECRETS)
    assert not signature_matches(body + b" ", sign(body, "new-secret"), SECRETS)
    assert not signature_matches(body, "", SECRETS)
    assert not signature_matches(body, "z\u00e9", SECRETS)
    assert not signature_matches(body, sign(body, "new-secret"), [])


@pytest.mark.parametrize("body", [b"{}", b" {}\n", b"\r\n{}\r\n", b"{\n}", b"{ }"])
def test_handshake_body(body: bytes) -> None:
    assert is_handshake(body)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"a":1}', b"{}{}"])
def test_not_a_handshake(body: bytes) -> None:
    assert not is_handshake(body)


def test_content_encoding() -> None:
    assert content_encoding(None) == ""
    assert content_encoding(" GZIP ") == "gzip"
    assert content_encoding("x-gzip") == "gzip"
    assert content_encoding("identity") == ""
    assert content_encoding("br") == "br"


def test_gunzip_round_trip_and_multi_member() -> None:
    assert gunzip(gzip.compress(b"abc"), 10) == b"abc"
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 10) == b"abcdef"


def test_gunzip_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(BodyTooLarge):
        gunzip(bomb, 1_000_000)
    assert len(gunzip(bomb, 10_000_000)) == 10_000_000


def test_gunzip_refuses_truncated_and_corrupt_streams() -> None:
    whole = gzip.compress(b'{"id":"1"}\n' * 100)
    with pytest.raises(BadGzip, match="truncated"):
        gunzip(whole[:-10], 1 << 20)
    with pytest.raises(BadGzip):
        gunzip(b"not gzip at all", 1 << 20)
    with pytest.raises(BadGzip):
        gunzip(zlib.compress(b"zlib, not gzip"), 1 << 20)


def test_ndjson_lines_pass_through_byte_for_byte() -> None:
    lines = [b'{"id":"1","n":123456789012345678901234567890}', b'{ "id" : "2", "x": [1, 2.50] }']
    batch = split_records(b"\n".join(lines) + b"\n")
    assert batch.records == lines
    assert batch.rejects == []


def test_ndjson_tolerates_crlf_blank_lines_and_no_trailing_newline() -> None:
    batch = split_records(b'\r\n{"id":"1"}\r\n\r\n  \n{"id":"2"}')
    assert batch.records == [b'{"id":"1"}', b'{"id":"2"}']


def test_json_array_elements_become_single_lines() -> None:
    body = b'[\n  {\n    "id": "1",\n    "m": "a\\nb"\n  },\r\n  {"id":"2"}\n]'
    batch = split_records(body)
    assert [json.loads(r) for r in batch.records] == json.loads(body)
    assert all(b"\n" not in r and b"\r" not in r for r in batch.records)


def test_single_object_and_pretty_printed_object() -> None:
    assert split_records(b'{"id":"1"}').records == [b'{"id":"1"}']
    pretty = json.dumps({"id": "1", "proxy": {"path": "/x"}}, indent=2).encode()
    batch = split_records(pretty)
    assert batch.rejects == []
    assert [json.loads(r) for r in batch.records] == [json.loads(pretty)]


def test_bad_lines_are_rejected_with_their_bytes_and_good_ones_kept() -> None:
    batch = split_records(b'{"id":"1"}\nnot json\n[1,2]\n"text"\n{"id":"2"}\n{"id":')
    assert batch.records == [b'{"id":"1"}', b'{"id":"2"}']
    assert [r.raw for r in batch.rejects] == [b"not json", b"[1,2]", b'"text"', b'{"id":']
    assert "not valid JSON" in batch.rejects[0].reason
    assert "not a JSON object" in batch.rejects[1].reason


def test_invalid_array_body_is_one_reject_keeping_the_whole_body() -> None:
    body = b'[{"id":"1"}, {"id":'
    batch = split_records(body)
    assert batch.records == []
    assert [r.raw for r in batch.rejects] == [body]


def test_array_elements_that_are_not_objects_are_rejected() -> None:
    batch = split_records(b'[{"id":"1"}, 3, null, "x", [{"id":"2"}]]')
    assert batch.records == [b'{"id":"1"}']
    assert [r.raw for r in batch.rejects] == [b"3", b"null", b'"x"', b'[{"id":"2"}]']


def test_invalid_utf8_record_is_rejected_not_written() -> None:
    batch = split_records(b'{"id":"1","m":"\xc3\xa9"}\n{"id":"2","m":"\xff"}\n')
    assert batch.records == ['{"id":"1","m":"é"}'.encode()]
    assert [r.raw for r in batch.rejects] == [b'{"id":"2","m":"\xff"}']


def test_reject_line_keeps_bytes_losslessly() -> None:
    batch = split_records(b'{"id":"2","m":"\xff"}\nnot json \xe2\x9c\x93\n')
    entries = [json.loads(reject_line(r)) for r in batch.rejects]
    assert entries[0]["raw"] == "not json \u2713"
    assert entries[1]["rawBase64"] == "eyJpZCI6IjIiLCJtIjoi/yJ9"
    assert all(entry["reason"] and entry["rejectedAt"].endswith("Z") for entry in entries)


def test_lines_that_only_parse_when_joined_are_not_taken_for_records() -> None:
    body = b'{"a":[1\n{"x":2}]}\n{"p":1},{"q":2}\n{"id":"ok"}\n'
    batch = split_records(body)
    assert batch.records == [b'{"id":"ok"}']
    assert [r.raw for r in batch.rejects] == [b'{"a":[1', b'{"x":2}]}', b'{"p":1},{"q":2}']


@pytest.mark.parametrize(
    "body",
    [b'{"id":"1"}\n{"id":"2"}\n', b'{"id":"1"}\n{"id":"2"}', b'{"id":"1"}\r\n\n{"id":"2"}\n',
     b'[{"id":"1"},\n{"id":"2"}]', b'{"id":"1"}\n{"id":"2","m":"\xff"}\n', b'{"id":"1"}\nnope\n'],
)
def test_ndjson_of_a_batch_is_always_its_records_one_a_line(body: bytes) -> None:
    batch = split_records(body)
    assert batch.ndjson() == b"".join(record + b"\n" for record in batch.records)
    batch.keep(batch.records[1:])
    assert batch.ndjson() == b"".join(record + b"\n" for record in batch.records)


def test_a_clean_ndjson_body_is_written_as_it_came() -> None:
    body = b'{"id":"1"}\n{"id":"2"}\n'
    assert split_records(body).ndjson() is body


def test_many_empty_gzip_members_are_refused_at_once() -> None:
    """Issue 16.2: each member's end copied the rest of the body (4 MiB of members took 9.8 s)."""
    started = time.perf_counter()
    with pytest.raises(BadGzip, match="more than 1024 gzip members"):
        gunzip(gzip.compress(b"") * 200_000, 32 << 20)
    assert time.perf_counter() - started < 1
    assert gunzip(gzip.compress(b"") * 1023 + gzip.compress(b"x") + b"\0\0", 10) == b"x"


def test_a_body_that_is_not_gzip_is_called_so() -> None:
    with pytest.raises(BadGzip, match="body is not gzip"):
        gunzip(b"notgzip", 1 << 20)
    with pytest.raises(BadGzip, match="data after gzip member 1 is not gzip"):
        gunzip(gzip.compress(b"a") + b"trailing", 1 << 20)
    with pytest.raises(BadGzip, match="truncated"):
        gunzip(b"\x1f", 1 << 20)


def test_an_array_msgspec_refuses_keeps_every_element_as_it_came() -> None:
    """Issue 11.8: the whole array was parsed and dumped again, and 1e400 written as Infinity."""
    body = b'[{"m":"cut \\ud83d","v":1e400},{"id":"b","x":1E5,"t":"caf\\u00e9"}]'
    batch = split_records(body)
    assert batch.records == [b'{"id":"b","x":1E5,"t":"caf\\u00e9"}']
    assert [r.raw for r in batch.rejects] == [b'{"m":"cut \\ud83d","v":1e400}']
    assert "1e400 is too large" in batch.rejects[0].reason
    spaced = b'[ {"m" : "\\ud83d, ]", "n": [1, {"k": "}"}]} ,\n\t{"id":"2"} ]'
    assert split_records(spaced).records == [b'{"m" : "\\ud83d, ]", "n": [1, {"k": "}"}]}', b'{"id":"2"}']


@pytest.mark.parametrize("body", [b'[{"m":"\\ud83d"},]', b'[{"m":"\\ud83d"}] x', b'[{"m":"\\ud83d"}',
                                  b'[{"m":"\\ud83d"}}', b'[,{"m":"\\ud83d"}]'])
def test_an_array_that_is_not_one_stays_one_reject(body: bytes) -> None:
    batch = split_records(body)
    assert batch.records == []
    assert [r.raw for r in batch.rejects] == [body]
