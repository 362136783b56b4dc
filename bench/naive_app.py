"""A naive drain receiver, as a user would write it from Vercel's docs.

Starlette, stdlib `json`, `hmac.compare_digest` on the raw body, then every record appended to
a file with `json.dumps`. Correct (verify before parse, 403 on mismatch, 200 after the write),
just not tuned. Configuration by environment: DRAIN_SECRET, NAIVE_OUT (the output file).

    NAIVE_OUT=/tmp/out.ndjson DRAIN_SECRET=... python -m uvicorn naive_app:app --app-dir bench
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SECRET = os.environ.get("DRAIN_SECRET", "")
OUT = os.environ.get("NAIVE_OUT", "naive-drain.ndjson")


async def drain(request: Request) -> Response:
    body = await request.body()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-vercel-signature", "")):
        return JSONResponse(
            {"code": "invalid_signature", "error": "signature didn't match"}, status_code=403
        )
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    text = body.decode()
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    with open(OUT, "a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return PlainTextResponse("ok")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", drain, methods=["POST"]), Route("/healthz", healthz)])
