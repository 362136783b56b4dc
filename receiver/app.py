"""The ASGI app: deliveries go straight to the hot path, other routes to Starlette; sink lifetimes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver import metrics
from receiver.archive.keys import parse_archive_url
from receiver.archive.spool import SpoolGuard
from receiver.archive.uploader import Uploader
from receiver.dedupe import RecentIds
from receiver.delivery import Drain, Limits, deliver, deliver_traces, header
from receiver.otlp import PROTOBUF, media_type
from receiver.protocol import VERIFY_HEADER
from receiver.secret_file import WatchedLines
from receiver.settings import Settings, settings_from_environment
from receiver.sinks import Sink
from receiver.sinks.files import FileSink
from receiver.sinks.stdout import StdoutSink

log = logging.getLogger("receiver")

TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path, where Vercel's trace drains post
ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}
ERROR_MESSAGES = {
    404: "no such path: deliveries go to POST / (traces to POST /v1/traces), probes to /healthz and /readyz",
    405: "method not allowed on this path",
}
OTHER_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]  # POST goes to `deliver`


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    for name in settings.sinks:
        if name == "file":
            sinks.append(FileSink(settings.dir, settings.path_template, settings.max_file_bytes,
                                  settings.keep_days, settings.fsync,
                                  rotate_every=settings.rotate_every))
        else:
            sinks.append(StdoutSink(fsync=settings.fsync, lock_path=settings.stdout_lock))
    return sinks


def build_uploader(settings: Settings) -> Uploader | None:
    if not settings.archive:
        return None
    return Uploader(settings.dir, parse_archive_url(settings.archive), settings.path_template,
                    settings.archive_host or socket.gethostname(), settings.archive_endpoint or None,
                    read_timeout=settings.archive_timeout)


def create_app(settings: Settings) -> ASGIApp:
    """The receiver as one ASGI app: deliveries go straight to `deliver`, the rest to Starlette."""
    uploader = build_uploader(settings)
    sinks = build_sinks(settings)
    if uploader is not None and settings.spool_max_bytes:
        sinks.insert(0, SpoolGuard(uploader, settings.spool_max_bytes))  # first: a refusal writes nothing
    drain = Drain(
        sinks=sinks,
        limits=Limits(settings.max_body_bytes, settings.max_decompressed_bytes,
                      settings.max_inflight_bytes, settings.body_timeout),
        env_secrets=settings.secrets,
        secret_file=WatchedLines(settings.secret_file),
        verify_token=settings.verify_token,
        verify_file=WatchedLines(settings.verify_file),
        recent_ids=RecentIds(settings.dedupe_window) if settings.dedupe_window > 0 else None,
    )

    async def service_info(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            response = json_response(200, {"service": "vercel-drain-receiver"})
        else:
            response = json_response(405, {"code": "method_not_allowed", "error": "use POST for deliveries"},
                                     {"allow": "GET, HEAD, POST"})
        code = drain.verify_code()
        if code:
            response.headers[VERIFY_HEADER] = code
        return response

    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = [reason for sink in drain.sinks if (reason := sink.unready_reason())]
        if problems:
            return json_response(503, {"status": "unready", "problems": problems})
        return json_response(200, {"status": "ready"})

    async def metrics_page(request: Request) -> Response:
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        code = ERROR_CODES.get(error.status_code, "http_error")
        message = ERROR_MESSAGES.get(error.status_code, error.detail)
        return json_response(error.status_code, {"code": code, "error": message},
                             dict(error.headers or {}))

    async def lifespan(receive: Receive, send: Send) -> None:
        """Sinks start before the first request, and are flushed and closed after the last. A
        sink that cannot start fails the start-up with one line (uvicorn then exits with 3)."""
        await receive()  # lifespan.startup
        started: list[Sink] = []
        try:
            for sink in drain.sinks:
                sink.start()
                started.append(sink)
        except OSError as error:
            for sink in started:
                sink.close()
            await send({"type": "lifespan.startup.failed", "message": sink_start_failure(sink, error)})
            return
        if uploader is not None:
            uploader.start()
        log.info("worker %d ready: sinks %s; %d secrets accepted", os.getpid(),
                 ", ".join(settings.sinks), len(drain.secrets()))
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if uploader is not None:  # ship what was written, within the shutdown timeout
            for sink in drain.sinks:
                if isinstance(sink, FileSink):
                    sink.rotate_now()
        for sink in drain.sinks:
            sink.close()
        if uploader is not None:
            await asyncio.to_thread(uploader.finish, settings.shutdown_timeout)
        log.info("worker %d: sinks flushed and closed", os.getpid())
        await send({"type": "lifespan.shutdown.complete"})

    starlette = Starlette(
        routes=[
            Route("/", service_info, methods=OTHER_METHODS),
            Route(TRACES_PATH, service_info, methods=OTHER_METHODS),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            *([] if settings.metrics_port else [Route("/metrics", metrics_page, methods=["GET"])]),
        ],
        exception_handlers={HTTPException: http_error},
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/":
            if media_type(header(scope, b"content-type")) == PROTOBUF:
                await deliver_traces(scope, receive, send, drain)
            else:
                await deliver(scope, receive, send, drain)
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == TRACES_PATH:
            await deliver_traces(scope, receive, send, drain)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await starlette(scope, receive, send)

    return app


START_ADVICE = {
    "file": "--dir (env DRAIN_DIR) and the files in it must belong to the receiver's user and be no symlinks",
    "stdout": "stdout must be open for writing",
}


def sink_start_failure(sink: Sink, error: OSError) -> str:
    """The one line that says why a sink could not start, and what to do."""
    where = f": {error.filename}" if error.filename else ""
    advice = START_ADVICE.get(sink.name, "check the file named")
    return (f"the {sink.name} sink cannot start: {error.strerror or error}{where}; {advice}; "
            "fix that and restart")


def json_response(status: int, content: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def app_from_environment() -> ASGIApp:
    """The app of a worker process started by `--workers N` (settings come from the supervisor)."""
    return create_app(settings_from_environment())
