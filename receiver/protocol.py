"""What Vercel's log drain protocol says, in one place (the README's "Protocol" section says why).

Pure functions only: no I/O, so every rule here is easy to test on its own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

SIGNATURE_HEADER = "x-vercel-signature"
VERIFY_HEADER = "x-vercel-verify"
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})
HANDSHAKE_MAX_BYTES = 64
JSON_WHITESPACE = b" \t\r\n"


def signature(body: bytes, secret: bytes) -> str:
    """Lowercase hex HMAC-SHA1 of `body` keyed with `secret`: the `x-vercel-signature`."""
    return hmac.new(secret, body, hashlib.sha1).hexdigest()


def signature_matches(body: bytes, claimed: str, secrets: Sequence[bytes]) -> bool:
    """True when `claimed` is the signature of `body` under any of `secrets`.

    Every secret is tried, in constant time per comparison, so the time taken says nothing
    about which secret (if any) came close.
    """
    return signature_matches_pieces((body,), claimed, secrets)


def signature_matches_pieces(pieces: Iterable[bytes], claimed: str, secrets: Sequence[bytes]) -> bool:
    """`signature_matches` over the concatenation of `pieces`, never holding them all."""
    claimed_bytes = claimed.strip().lower().encode("ascii", "replace")
    macs = [hmac.new(secret, digestmod=hashlib.sha1) for secret in secrets]
    for piece in pieces:
        for mac in macs:
            mac.update(piece)
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(mac.hexdigest().encode("ascii"), claimed_bytes)
    return matched


def is_handshake(body: bytes) -> bool:
    """Vercel's endpoint check: a POST whose body is `{}`, whitespace aside."""
    return len(body) <= HANDSHAKE_MAX_BYTES and body.translate(None, JSON_WHITESPACE) == b"{}"


def content_encoding(header: str | None) -> str:
    """The normalised `Content-Encoding`: `"gzip"`, `""` for none, or the unsupported value."""
    value = (header or "").strip().lower()
    if value in GZIP_ENCODINGS:
        return "gzip"
    if value in IDENTITY_ENCODINGS:
        return ""
    return value
