"""The Starlette application: routes, and the sinks' lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.delivery import Limits, deliver, json_response
from receiver.protocol import VERIFY_HEADER
from receiver.secret_file import WatchedLines
from receiver.settings import Settings
from receiver.sinks import Sink
from receiver.sinks.files import FileSink
from receiver.sinks.stdout import StdoutSink

log = logging.getLogger("receiver")

DRAIN_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass
class Drain:
    """What a request needs: where secrets and the verify code come from, and the sinks."""

    sinks: list[Sink]
    limits: Limits
    env_secrets: tuple[str, ...]
    secret_file: WatchedLines
    verify_token: str | None
    verify_file: WatchedLines

    def secrets(self) -> list[bytes]:
        return [s.encode() for s in (*self.env_secrets, *self.secret_file.current())]

    def verify_code(self) -> str | None:
        if self.verify_token:
            return self.verify_token
        codes = self.verify_file.current()
        return codes[0] if codes else None


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    for name in settings.sinks:
        if name == "file":
            sinks.append(FileSink(settings.dir, settings.path_template, settings.max_file_bytes,
                                  settings.keep_days, settings.fsync))
        else:
            sinks.append(StdoutSink(fsync=settings.fsync))
    return sinks


def create_app(settings: Settings) -> Starlette:
    drain = Drain(
        sinks=build_sinks(settings),
        limits=Limits(settings.max_body_bytes, settings.max_decompressed_bytes),
        env_secrets=settings.secrets,
        secret_file=WatchedLines(settings.secret_file),
        verify_token=settings.verify_token,
        verify_file=WatchedLines(settings.verify_file),
    )

    async def drain_endpoint(request: Request) -> Response:
        if request.method == "POST":
            response = await deliver(request, drain.secrets(), drain.sinks, drain.limits)
        elif request.method in ("GET", "HEAD"):
            response = json_response(200, {"service": "vercel-drain-receiver"})
        else:
            response = json_response(405, {"code": "method_not_allowed",
                                           "error": "use POST for deliveries"},
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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for sink in drain.sinks:
            sink.start()
        log.info("ready: sinks %s; %d secrets accepted", ", ".join(settings.sinks),
                 len(drain.secrets()))
        try:
            yield
        finally:
            for sink in drain.sinks:
                sink.close()
            log.info("sinks flushed and closed")

    return Starlette(
        routes=[
            Route("/", drain_endpoint, methods=DRAIN_METHODS),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
    )
