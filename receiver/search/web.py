"""The search page's Starlette app: the static page, `/api/search` and `/api/histogram`.

Every `/api/` request needs `Authorization: Bearer <token>` (compared in constant time);
without it the answer is a 401 with a JSON message and no data. The page itself holds no data:
it asks for the token and keeps it in the browser's session storage. Queries run in worker
threads (receiver/search/running.py), so a slow one never stops the page from answering.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from receiver.search.engine import TABLE_COLUMNS, SearchError, now_ms
from receiver.search.filters import FilterError, Filters, check, parse_time
from receiver.search.running import ClientGone, QueryRunner

STATIC = Path(__file__).parent / "static"
RAW = TABLE_COLUMNS.index("raw")
MAX_LIMIT = 1000
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
LIST_PARAMS = {"q": "text", "project": "project", "deployment": "deployment", "env": "env",
               "source": "source", "level": "level", "status": "status", "host": "host",
               "path": "path", "requestId": "request_id", "branch": "branch",
               "stream": "stream"}


def filters_from_query(request: Request) -> Filters:
    query = request.query_params
    now = now_ms()
    values = {name: tuple(v for v in query.getlist(param) if v) for param, name in LIST_PARAMS.items()}
    since, until = query.get("since"), query.get("until")
    return check(Filters(
        since_ms=parse_time(since, now) if since else None,
        until_ms=parse_time(until, now) if until else None,
        **values,
    ))


CLIENT_CLOSED = 499  # as nginx logs it: the client left before the answer


def create_ui_app(root: Path, token: str) -> Starlette:
    runner = QueryRunner(root)

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "style.css"):
            return refuse(404, "no such file")
        return FileResponse(STATIC / name, headers=SECURITY_HEADERS)

    async def api_search(request: Request) -> Response:
        if not authorized(request):
            return refuse(401, "missing or wrong token: send Authorization: Bearer <DRAIN_UI_TOKEN>")
        try:
            filters = filters_from_query(request)
            limit = min(MAX_LIMIT, max(1, int(request.query_params.get("limit", "100"))))
            offset = max(0, int(request.query_params.get("offset", "0")))
            rows = await runner.run(request, lambda engine: engine.search(filters, limit, offset))
        except ClientGone:
            return refuse(CLIENT_CLOSED, "the client closed the connection; the search was stopped")
        except (FilterError, ValueError) as error:
            return refuse(400, str(error))
        except (SearchError, FileNotFoundError) as error:
            return refuse(500, str(error))
        body = b'{"records":[' + b",".join(row[RAW].encode() for row in rows) + b"]}"
        return Response(body, media_type="application/json", headers=SECURITY_HEADERS)

    async def api_histogram(request: Request) -> Response:
        if not authorized(request):
            return refuse(401, "missing or wrong token: send Authorization: Bearer <DRAIN_UI_TOKEN>")
        try:
            filters = filters_from_query(request)
            buckets = min(200, max(1, int(request.query_params.get("buckets", "60"))))
            histogram = await runner.run(request, lambda engine: engine.histogram(filters, buckets))
        except ClientGone:
            return refuse(CLIENT_CLOSED, "the client closed the connection; the histogram was stopped")
        except (FilterError, ValueError) as error:
            return refuse(400, str(error))
        except (SearchError, FileNotFoundError) as error:
            return refuse(500, str(error))
        return JSONResponse({"start": histogram.start_ms, "end": histogram.end_ms,
                             "width": histogram.width_ms,
                             "counts": [list(c) for c in histogram.counts]}, headers=SECURITY_HEADERS)

    return Starlette(routes=[
        Route("/", page),
        Route("/static/{name}", asset),
        Route("/api/search", api_search),
        Route("/api/histogram", api_histogram),
    ])
