"""A fake Vercel REST API for the register.py tests: a real HTTP server on a loopback port.

It knows the endpoints register.py uses, checks every request body and every answer against
the JSON Schemas derived from @vercel/sdk (tests/vercel_sdk_schemas), records every
request, and can be told to fail the next matching requests in any way the real API can:
an error status with Vercel's error body, `429` with `Retry-After`, a body that is not JSON,
a dropped connection, or a slow answer.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import hmac
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema

from tests.support import REPO_ROOT

INTEGRATION_TOKEN = "oauth2-integration-token-0123456789"
PERSONAL_TOKEN = "personal-access-token-9876543210"
TEAM_ID = "team_fake123"
TEAM_SLUG = "fake-team"
OWNER_ID = "kr1PsOIzqEL5Xg6M4VZcZosf"

# The integration API's create body as its documentation describes it, with the name, secret and
# project id patterns the SDK's schema leaves out; `additionalProperties: false`, so register.py
# sending an undocumented field fails a test. The SDK's own schema is checked as well.
INTEGRATION_CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "url"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-z0-9_ -]+$", "maxLength": 100},
        "projectIds": {
            "type": "array", "items": {"type": "string", "pattern": "^[a-zA-z0-9_]+$"},
        },
        "secret": {"type": "string", "pattern": "^[A-z0-9_ -]+$", "maxLength": 100},
        "deliveryFormat": {"enum": ["json", "ndjson"]},
        "url": {"type": "string", "format": "uri", "pattern": "^https?://"},
        "sources": {
            "type": "array",
            "items": {
                "type": "string",
                "enum": ["static", "lambda", "build", "edge", "external", "firewall"],
            },
        },
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "environments": {
            "type": "array", "items": {"type": "string", "enum": ["preview", "production"]},
        },
    },
}

# What the fake delivers for `POST /v1/drains/test`: a log record as Vercel's reference shows one.
TEST_RECORD = {"id": "test-delivery-1", "deploymentId": "dpl_test", "source": "lambda",
               "host": "test.vercel.app", "timestamp": 1700000000000, "projectId": "prj_test",
               "level": "info", "message": "test delivery from the fake Vercel API"}

SDK_SCHEMA_DIR = Path(__file__).with_name("vercel_sdk_schemas")
SDK_VERSION = (SDK_SCHEMA_DIR / "SDK_VERSION").read_text().strip()

# Which derived @vercel/sdk schema (tests/vercel_sdk_schemas/) every request body and every 2xx
# answer of a route must match, wire keys as sent.
SDK_REQUESTS = {
    "POST /v1/drains": "create-drain.request",
    "POST /v1/drains/test": "test-drain.request",
    "POST /v2/integrations/log-drains": "create-log-drain.request",
}
SDK_RESPONSES = {
    "GET /v1/drains": "get-drains.response",
    "POST /v1/drains": "create-drain.response",
    "POST /v1/drains/test": "test-drain.response",
    "GET /v2/integrations/log-drains": "get-integration-log-drains.response",
    "POST /v2/integrations/log-drains": "create-log-drain.response",
}


@functools.cache
def sdk_validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SDK_SCHEMA_DIR / f"{name}.json").read_text())
    return jsonschema.Draft7Validator(schema)


def sdk_errors(name: str, value: Any) -> list[str]:
    """Where `value` departs from the SDK's schema `name`; [] when it matches."""
    return [f"{name} {'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
            for e in sdk_validator(name).iter_errors(value)]


def schema_errors(schema: Mapping[str, Any], value: Any, where: str = "$") -> list[str]:
    """The JSON-Schema keywords the two schemas above use, checked; [] when `value` is valid."""
    errors: list[str] = []
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "number": (int, float)}
    if kind and not isinstance(value, types[kind]):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if schema.get("format") == "uri" and not urlsplit(value).netloc:
            errors.append(f"{where}: {value!r} is not a URI")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        for index, item in enumerate(value):
            errors += schema_errors(schema.get("items", {}), item, f"{where}[{index}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(properties[key], item, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected field {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(extra, item, f"{where}.{key}")
    return errors


def drains_body_errors(body: Any) -> list[str]:
    """A `POST /v1/drains` body checked against the SDK, and `projectIds` with `projects`."""
    errors = sdk_errors("create-drain.request", body)
    if not errors and (body["projects"] == "some") != bool(body.get("projectIds")):
        errors.append("$: projectIds goes with projects 'some', and only with it")
    return errors


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    """How to answer the next `times` requests matching `method` and `path`."""

    method: str
    path: str
    times: int
    status: int = 500
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    action: str = "respond"  # respond | invalid-json | drop | slow
    delay: float = 0.0


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeVercel:
    """The fake API. Start once per test module, `reset()` before each test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeVercel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.requests: list[Recorded] = []
            self.scripts: list[Scripted] = []
            self.validation_errors: list[str] = []
            self.integration_drains: list[dict[str, Any]] = []
            self.drains: list[dict[str, Any]] = []
            self.secrets: dict[str, str] = {}  # drain id -> the secret it was created with
            self.verification_code = "verify-code-first"
            self.watch_file: Path | None = None
            self.file_at_create: list[str | None] = []
            self.test_deliveries: list[tuple[str, int]] = []

    # Telling it what to do.

    def fail(self, method: str, path: str, times: int = 1, **how: Any) -> None:
        """Answer the next `times` requests to `method path` (a path prefix) as `how` says."""
        with self._lock:
            self.scripts.append(Scripted(method, path, times, **how))

    def add_integration_drain(self, url: str, name: str = "existing", secret: str = "") -> str:
        drain = self._integration_drain({"name": name, "url": url, "deliveryFormat": "json"})
        self.integration_drains.append(drain)
        self.secrets[drain["id"]] = secret
        return drain["id"]

    def add_drain(
        self, url: str, name: str = "existing", secret: str = "", *,
        schemas: Sequence[str] = ("log",), body: Mapping[str, Any] | None = None, **fields: Any,
    ) -> str:
        """A drain made elsewhere; `body` adds create-body fields, `fields` answer fields."""
        if "trace" in schemas:
            delivery = {"type": "otlphttp", "endpoint": {"traces": url}, "encoding": "proto",
                        "headers": {}}
        else:
            delivery = {"type": "http", "endpoint": url, "encoding": "json",
                        "compression": "none", "headers": {}}
        drain = self._drain({
            "name": name, "projects": "all", "schemas": {s: {"version": "v1"} for s in schemas},
            "delivery": delivery, **(body or {}),
        }, **fields)
        self.drains.append(drain)
        self.secrets[drain["id"]] = secret
        return drain["id"]

    # Reading what happened.

    def sent(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def calls(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # Answering.

    def check_against_sdk(self, request: Recorded, status: int, body: Any) -> None:
        """Record where a request body or a 2xx answer departs from the SDK's schemas."""
        route = f"{request.method} {request.path}"
        errors: list[str] = []
        if route in SDK_REQUESTS and request.body:
            try:
                errors += sdk_errors(SDK_REQUESTS[route], request.json())
            except ValueError:
                errors.append(f"{route}: the body is not JSON")
        if route in SDK_RESPONSES and 200 <= status < 300:
            errors += [f"answer to {route}: {e}" for e in sdk_errors(SDK_RESPONSES[route], body)]
        with self._lock:
            self.validation_errors += errors

    def _script_for(self, method: str, path: str) -> Scripted | None:
        with self._lock:
            for script in self.scripts:
                if script.method == method and path.startswith(script.path) and script.times:
                    script.times -= 1
                    return script
        return None

    def answer(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body or None, headers) for a request no script took."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in (INTEGRATION_TOKEN, PERSONAL_TOKEN):
            return 401, error_body("forbidden", "Not authorized"), {}
        team_id, slug = request.query.get("teamId"), request.query.get("slug")
        if (team_id and team_id != TEAM_ID) or (slug and slug != TEAM_SLUG):
            return 403, error_body("forbidden", "You don't have permission to access this team"), {}
        route = f"{request.method} {request.path}"
        if route == "GET /v1/verify-endpoint":
            return 200, {"verificationCode": self.verification_code}, {}
        if route == "GET /v2/integrations/log-drains":
            return 200, self.integration_drains if token == INTEGRATION_TOKEN else [], {}
        if route == "POST /v2/integrations/log-drains":
            if token != INTEGRATION_TOKEN:
                return 400, error_body("bad_request", "The provided token is not from an OAuth2 "
                                       "Client"), {}
            return self._create(request, INTEGRATION_CREATE_SCHEMA, self.integration_drains)
        if route == "GET /v1/drains":
            return 200, {"drains": self.drains}, {}
        if route == "POST /v1/drains":
            return self._create(request, None, self.drains)
        if route == "POST /v1/drains/test":
            return self._test_delivery(request)
        if request.method == "DELETE":
            for prefix, drains in (("/v1/integrations/log-drains/", self.integration_drains),
                                   ("/v1/drains/", self.drains)):
                if request.path.startswith(prefix):
                    return self._delete(request.path.removeprefix(prefix), drains)
        return 404, error_body("not_found", f"{route} does not exist"), {}

    def _create(
        self, request: Recorded, schema: Mapping[str, Any] | None, store: list[dict[str, Any]]
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            body = request.json()
        except ValueError:
            return 400, error_body("bad_request", "Invalid JSON"), {}
        errors = schema_errors(schema, body) if schema else drains_body_errors(body)
        if errors:
            self.validation_errors += errors
            return 400, error_body("bad_request", "; ".join(errors)[:500]), {}
        if self.watch_file is not None:
            path = self.watch_file
            self.file_at_create.append(path.read_text() if path.exists() else None)
        drain = self._integration_drain(body) if schema else self._drain(body)
        store.append(drain)
        secret = body.get("secret") or body.get("delivery", {}).get("secret", "")
        self.secrets[drain["id"]] = secret
        if schema:
            return 200, drain, {}
        # The Drains API echoes the delivery, secret included (CreateDrainResponseBody).
        echoed = json.loads(json.dumps(drain))
        if "delivery" in echoed and secret:
            echoed["delivery"]["secret"] = secret
        return 200, echoed, {}

    def _test_delivery(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        """Deliver one signed sample log record to the body's endpoint, over real HTTP, and
        answer as Vercel does: `{}` when it took it, else the endpoint, error and status."""
        try:
            delivery = request.json()["delivery"]
        except (ValueError, KeyError, TypeError):
            return 400, error_body("bad_request", "Invalid request body"), {}
        endpoint = delivery["endpoint"]
        if isinstance(endpoint, dict):
            endpoint = endpoint["traces"]
        body = json.dumps(TEST_RECORD).encode() + b"\n"
        if delivery.get("compression") == "gzip":
            body = gzip.compress(body)
        headers = {"content-type": "application/x-ndjson", **delivery.get("headers", {}),
                   "x-vercel-signature": hmac.new(delivery.get("secret", "").encode(), body,
                                                  hashlib.sha1).hexdigest()}
        if delivery.get("compression") == "gzip":
            headers["content-encoding"] = "gzip"
        try:
            answer = httpx.post(endpoint, content=body, headers=headers, timeout=5)
        except httpx.HTTPError as error:
            return 200, {"endpoint": endpoint, "error": type(error).__name__,
                         "status": "unreachable"}, {}
        self.test_deliveries.append((endpoint, answer.status_code))
        if answer.is_success:
            return 200, {}, {}
        return 200, {"endpoint": endpoint, "error": answer.text[:200],
                     "status": str(answer.status_code)}, {}

    def _delete(self, drain_id: str, store: list[dict[str, Any]]) -> tuple[int, Any, dict]:
        for drain in store:
            if drain["id"] == drain_id:
                store.remove(drain)
                return 204, None, {}
        return 404, error_body("not_found", f"Log drain {drain_id} not found"), {}

    def _integration_drain(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The integration API's 200 answer for `body` (no secret: its answer carries none)."""
        return {
            "id": f"ld_{next(self._ids):04d}fake",
            "name": body["name"],
            "url": body["url"],
            "ownerId": OWNER_ID,
            "createdAt": int(time.time() * 1000),
            "clientId": "oac_fakeclient",
            "configurationId": "icfg_fakeconfig",
            "deliveryFormat": body.get("deliveryFormat", "json"),
            "sources": body.get("sources", ["static", "lambda", "build", "edge", "external"]),
            "environments": body.get("environments", ["production", "preview"]),
            "projectIds": body.get("projectIds", []),
            "headers": body.get("headers", {}),
            "createdFrom": "integration",
            "source": {"kind": "integration", "integrationId": "oac_fakeclient",
                       "integrationConfigurationId": "icfg_fakeconfig"},
        }

    def _drain(self, body: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        """A `/v1/drains` object for `body`, as listed (the secret is not listed); `fields`
        add or replace top-level fields (`status`, `disabledReason`, `sampling`...)."""
        drain: dict[str, Any] = {
            "id": f"drn_{next(self._ids):04d}fake",
            "name": body["name"],
            "ownerId": OWNER_ID,
            "teamId": TEAM_ID,
            "createdAt": int(time.time() * 1000),
            "updatedAt": int(time.time() * 1000),
            "status": "enabled",
            # Answers carry each schema as `{}`, keyed as on the wire (`speed_insights`).
            "schemas": {name: {} for name in body["schemas"]},
            "source": {"kind": "self-served"},
            "projectAccess": {"access": body["projects"], "managedBy": "drain"},
        }
        if "delivery" in body:
            drain["delivery"] = {k: v for k, v in body["delivery"].items() if k != "secret"}
        if body.get("projectIds"):
            drain["projectIds"] = body["projectIds"]
            drain["projectAccess"]["projectIds"] = body["projectIds"]
        if "filter" in body:
            drain["filterV2"] = body["filter"]
        if "sampling" in body:
            drain["sampling"] = body["sampling"]
        drain.update(fields)
        return drain


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVercel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        request = Recorded(
            method=self.command,
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        with self.fake._lock:
            self.fake.requests.append(request)
        script = self.fake._script_for(request.method, request.path)
        if script is None:
            status, body, headers = self.fake.answer(request)
            self.fake.check_against_sdk(request, status, body)
            self._send(status, body, headers)
        elif script.action == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif script.action == "invalid-json":
            self._send_raw(script.status if script.status < 400 else 200,
                           b"<html>not json", {"content-type": "application/json"})
        else:
            time.sleep(script.delay)
            body = script.body if script.body is not None else error_body(
                "internal_server_error" if script.status >= 500 else "bad_request",
                f"scripted {script.status}")
            self._send(script.status, body, dict(script.headers))

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            headers = {"content-type": "application/json; charset=utf-8", **headers}
        self._send_raw(status, payload, headers)

    def _send_raw(self, status: int, payload: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a --timeout test)


# --- Running register.py ------------------------------------------------------------------------

PLATFORM_VARIABLES = ("RENDER_EXTERNAL_URL", "RAILWAY_PUBLIC_DOMAIN", "FLY_APP_NAME")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def error_lines(self) -> list[str]:
        """stderr without the retry/warning notes."""
        return [line for line in self.stderr.splitlines() if ": warning: " not in line]

    def one_error_line(self) -> str:
        """The single error line every failure prints (besides warnings)."""
        lines = self.error_lines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("register.py: error: ")
        return lines[0]

    def checked(self, api: FakeVercel) -> Run:
        """What every run must hold: no traceback, every body sent valid for its API, and no
        token or secret in the output."""
        assert "Traceback" not in self.stderr
        assert api.validation_errors == []
        for secret in [INTEGRATION_TOKEN, PERSONAL_TOKEN, *api.secrets.values()]:
            if secret:
                assert secret not in self.stdout + self.stderr
        return self


@contextmanager
def fake_vercel() -> Iterator[FakeVercel]:
    fake = FakeVercel().start()
    try:
        yield fake
    finally:
        fake.stop()


def run_register(
    args: Sequence[str],
    *,
    home: Path,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60,
) -> Run:
    """`python register.py ARGS` from the repo root, with no `DRAIN_*`, `VERCEL_*` or platform
    variable from the test's environment; `env` adds (or, with None, leaves out) variables."""
    child = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("DRAIN_", "VERCEL_")) and k not in PLATFORM_VARIABLES
    }
    child.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = value
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "register.py", *args], cwd=REPO_ROOT, env=child,
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
