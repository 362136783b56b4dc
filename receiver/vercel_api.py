"""Everything `register.py` knows about Vercel's REST API, in one place.

Two APIs can register a drain (shapes: `@vercel/sdk`, checked by tests/vercel_sdk_schemas):

- `integration`: the deprecated Integration Log Drains API (`/v2/integrations/log-drains`). It
  accepts only an integration's OAuth2 access token; any other token type gets `400`.
- `drains`: the current Drains API (`/v1/drains`), for personal and team access tokens.

This module holds their paths, the input constraints from their request schemas, the request
bodies, how to read their responses, and an httpx client that retries `429` and `5xx` and turns
every failure into an `ApiError` whose message says what to do next. It never sees the command
line: `register.py` maps the field names used here to its options.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

DEFAULT_API_URL = "https://api.vercel.com"
VERIFY_PATH = "/v1/verify-endpoint"
DRAINS_TEST_PATH = "/v1/drains/test"
TOKEN_HELP = "README.md, section \"Register the drain\""


class Api(StrEnum):
    INTEGRATION = "integration"
    DRAINS = "drains"


@dataclass(frozen=True)
class Paths:
    """Where one API lists, creates and deletes drains (`{id}` is filled in)."""

    list: str
    create: str
    delete: str


PATHS: dict[Api, Paths] = {
    # The integration API deletes through v1, not v2 (@vercel/sdk deleteIntegrationLogDrain).
    Api.INTEGRATION: Paths(
        "/v2/integrations/log-drains", "/v2/integrations/log-drains",
        "/v1/integrations/log-drains/{id}",
    ),
    Api.DRAINS: Paths("/v1/drains", "/v1/drains", "/v1/drains/{id}"),
}

# --- Input constraints (the integration API's documented patterns; the Drains API's enums) --

# The integration API documents the patterns `^[A-z0-9_ -]+$` and `^[a-zA-z0-9_]+$`. `A-z` also spans
# ``[\]^_` ``, which is almost certainly a typo; we accept the strict subset, which the API
# accepts too.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_ -]+")
NAME_MAX_LENGTH = 100
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_ -]{32,100}")
PROJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9_]+")
URL_PATTERN = re.compile(r"https?://", re.IGNORECASE)
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FORMATS = ("json", "ndjson")
COMPRESSIONS = ("gzip", "none")
ENVIRONMENTS = ("preview", "production")
SOURCES: dict[Api, tuple[str, ...]] = {
    Api.INTEGRATION: ("static", "lambda", "build", "edge", "external", "firewall"),
    Api.DRAINS: ("static", "lambda", "build", "edge", "external", "firewall", "redirect"),
}
TRACE_ENCODINGS = ("proto", "json")
TRACES_PATH = "/v1/traces"
# The version each type's `schemas` entry asks for (analytics records are `vercel.analytics.v2`).
SCHEMA_VERSIONS = {"log": "v1", "trace": "v1", "speed_insights": "v1", "analytics": "v2",
                   "audit_log": "v1"}
DEFAULT_COMPRESSION: dict[Api, str | None] = {Api.INTEGRATION: None, Api.DRAINS: "gzip"}


@dataclass(frozen=True)
class DrainSpec:
    """What the user asked for, before the secret is added."""

    name: str
    url: str
    format: str = "ndjson"
    sources: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    project_ids: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: str | None = None
    schema: str = "log"
    trace_encoding: str = "proto"


@dataclass(frozen=True)
class InvalidInput(Exception):
    """An input the API would reject; `field` names the request field it belongs to."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def _one_of(allowed: Sequence[str]) -> str:
    return "allowed: " + ", ".join(allowed)


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if not URL_PATTERN.match(url) or not parts.hostname:
        raise InvalidInput("url", f"{url!r} is not an http:// or https:// URL with a host")


def check_spec(api: Api, spec: DrainSpec) -> None:
    """Raise `InvalidInput` for the first value the chosen API's schema would refuse."""
    if spec.schema not in DRAIN_TYPES:
        raise InvalidInput("schema", f"{spec.schema!r} is not a drain type; {_one_of(DRAIN_TYPES)}")
    if spec.schema != "log" and api is not Api.DRAINS:
        raise InvalidInput("schema", f"{spec.schema!r} drains need --api drains")
    if spec.trace_encoding not in TRACE_ENCODINGS:
        raise InvalidInput("trace_encoding", f"{spec.trace_encoding!r} is not allowed; "
                           f"{_one_of(TRACE_ENCODINGS)}")
    if not spec.name or len(spec.name) > NAME_MAX_LENGTH or not NAME_PATTERN.fullmatch(spec.name):
        raise InvalidInput(
            "name", f"{spec.name!r} must be 1-{NAME_MAX_LENGTH} characters of "
            "letters, digits, '_', '-' and spaces")
    check_url(spec.url)
    if spec.format not in FORMATS:
        raise InvalidInput("format", f"{spec.format!r} is not a format; {_one_of(FORMATS)}")
    for source in spec.sources:
        if source not in SOURCES[api]:
            raise InvalidInput(
                "sources", f"{source!r} is not a source of --api {api}; {_one_of(SOURCES[api])}")
    for environment in spec.environments:
        if environment not in ENVIRONMENTS:
            raise InvalidInput(
                "environments", f"{environment!r} is not an environment; {_one_of(ENVIRONMENTS)}")
    for project_id in spec.project_ids:
        if not PROJECT_ID_PATTERN.fullmatch(project_id):
            raise InvalidInput(
                "projectIds", f"{project_id!r} is not a project id (letters, digits and '_')")
    for name, value in spec.headers.items():
        if not HEADER_NAME_PATTERN.fullmatch(name) or "\r" in value or "\n" in value:
            raise InvalidInput("headers", f"{name!r} is not a valid header; use 'Name: value'")
    if spec.compression is not None:
        if api is not Api.DRAINS:
            raise InvalidInput("compression", "is only available with --api drains")
        if spec.compression not in COMPRESSIONS:
            raise InvalidInput(
                "compression", f"{spec.compression!r} is not allowed; {_one_of(COMPRESSIONS)}")


def check_secret(secret: str) -> None:
    if not SECRET_PATTERN.fullmatch(secret):
        raise ValueError("a drain secret must be 32-100 characters of [A-Za-z0-9_ -]")


# --- Request bodies ---------------------------------------------------------------------------


def create_body(api: Api, spec: DrainSpec, secret: str) -> dict[str, Any]:
    """The JSON body that creates `spec` through `api`, signed with `secret`."""
    check_secret(secret)
    if api is Api.INTEGRATION:
        return _integration_body(spec, secret)
    return _drains_body(spec, secret)


def _integration_body(spec: DrainSpec, secret: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec.name, "url": spec.url, "deliveryFormat": spec.format, "secret": secret,
    }
    if spec.sources:
        body["sources"] = list(spec.sources)
    if spec.environments:
        body["environments"] = list(spec.environments)
    if spec.project_ids:
        body["projectIds"] = list(spec.project_ids)
    if spec.headers:
        body["headers"] = dict(spec.headers)
    return body


def test_body(spec: DrainSpec, secret: str) -> dict[str, Any]:
    """The `POST /v1/drains/test` body: the delivery `spec` would get, and its type."""
    check_secret(secret)
    body = _drains_body(spec, secret)
    return {"schemas": body["schemas"], "delivery": body["delivery"]}


def delivery_url(url: str, schema: str) -> str:
    """Where Vercel delivers a drain of type `schema`: traces go to the OTLP path."""
    return url.rstrip("/") + TRACES_PATH if schema == "trace" else url


def _drains_body(spec: DrainSpec, secret: str) -> dict[str, Any]:
    if spec.schema == "trace":
        delivery: dict[str, Any] = {
            "type": "otlphttp",
            "endpoint": {"traces": delivery_url(spec.url, "trace")},
            "encoding": spec.trace_encoding,
            "headers": dict(spec.headers),
            "secret": secret,
        }
    else:
        delivery = {
            "type": "http",
            "endpoint": spec.url,
            "encoding": spec.format,
            "compression": spec.compression or DEFAULT_COMPRESSION[Api.DRAINS],
            "headers": dict(spec.headers),
            "secret": secret,
        }
    body: dict[str, Any] = {
        "name": spec.name,
        "projects": "some" if spec.project_ids else "all",
        "schemas": {spec.schema: {"version": SCHEMA_VERSIONS[spec.schema]}},
        "delivery": delivery,
    }
    if spec.project_ids:
        body["projectIds"] = list(spec.project_ids)
    basic: dict[str, Any] = {"type": "basic"}
    if spec.sources and spec.schema == "log":
        basic["log"] = {"sources": list(spec.sources)}
    if spec.environments:
        basic["deployment"] = {"environments": list(spec.environments)}
    if len(basic) > 1:
        body["filter"] = {"version": "v2", "filter": basic}
    return body


# --- Responses ----------------------------------------------------------------------------


# What each drain type is called in `schemas`, as on the wire (the SDK's TypeScript types say
# `speedInsights` and `auditLog`; requests and answers carry the snake_case keys).
DRAIN_TYPES = ("log", "trace", "speed_insights", "analytics", "audit_log")
HEALTHY = "enabled"


@dataclass(frozen=True)
class Drain:
    """The fields of a drain a person wants to see, read from either API's object.

    `status` is `enabled`, `disabled` or `errored` (the integration API reports none: "");
    `covers` is what the drain delivers, one line each (projects, filter, sampling, headers).
    """

    id: str
    name: str
    url: str
    format: str
    sources: tuple[str, ...]
    environments: tuple[str, ...]
    compression: str | None
    raw: Mapping[str, Any]
    schemas: tuple[str, ...] = ("log",)
    status: str = ""
    disabled_reason: str = ""
    covers: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.status in ("", HEALTHY)

    @property
    def state(self) -> str:
        """`enabled`, or `disabled (reason)` / `errored (since ...)` for a person to read."""
        if not self.status:
            return "unknown (this API does not report it)"
        if self.disabled_reason:
            return f"{self.status} ({self.disabled_reason})"
        first_error = self.raw.get("firstErrorTimestamp")
        if self.status == "errored" and isinstance(first_error, int | float):
            since = datetime.fromtimestamp(first_error / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return f"errored (since {since})"
        return self.status


def read_drain(api: Api, obj: Any) -> Drain:
    """A drain object from a create or list response; `InvalidResponse` if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
        raise InvalidResponse("a drain object without an id")
    if api is Api.INTEGRATION:
        url, fmt, compression = obj.get("url"), obj.get("deliveryFormat"), None
        sources, environments = obj.get("sources"), obj.get("environments")
        schemas: tuple[str, ...] = ("log",)
        status, reason = "", ""
        covers = _integration_covers(obj)
    else:
        delivery = obj.get("delivery") if isinstance(obj.get("delivery"), dict) else {}
        url, fmt = delivery.get("endpoint"), delivery.get("encoding")
        if isinstance(url, dict):
            url = url.get("traces")
        compression = delivery.get("compression")
        basic = _basic_filter(obj)
        sources = (basic.get("log") or {}).get("sources")
        environments = (basic.get("deployment") or {}).get("environments")
        raw_schemas = obj.get("schemas")
        schemas = tuple(raw_schemas) if isinstance(raw_schemas, dict) else ()
        status = obj.get("status") if isinstance(obj.get("status"), str) else ""
        reason = obj.get("disabledReason") if isinstance(obj.get("disabledReason"), str) else ""
        covers = _drain_covers(obj)
    return Drain(
        id=obj["id"],
        name=str(obj.get("name", "")),
        url=url if isinstance(url, str) else "",
        format=str(fmt or "?"),
        sources=_strings(sources),
        environments=_strings(environments),
        compression=compression if isinstance(compression, str) else None,
        raw=obj,
        schemas=schemas,
        status=status or "",
        disabled_reason=reason or "",
        covers=covers,
    )


def _drain_covers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    lines = []
    access = obj.get("projectAccess") if isinstance(obj.get("projectAccess"), dict) else {}
    ids = _strings(access.get("projectIds") or obj.get("projectIds"))
    if access.get("access") == "some" or ids:
        lines.append(f"projects:     {', '.join(ids) or 'none'}")
    else:
        lines.append("projects:     all")
    text = _odata_filter(obj)
    if text is not None:
        lines.append(f"filter:       {text}")
    sampling = obj.get("sampling")
    if isinstance(sampling, list) and sampling:
        rules = []
        for rule in sampling:
            if isinstance(rule, dict):
                where = " ".join(str(rule[k]) for k in ("env", "requestPath") if rule.get(k))
                rules.append(f"{rule.get('rate')}" + (f" of {where}" if where else ""))
        lines.append(f"sampling:     {'; '.join(rules)}")
    return tuple(lines)


def _integration_covers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    ids = _strings(obj.get("projectIds"))
    lines = [f"projects:     {', '.join(ids) or 'all'}"]
    if isinstance(obj.get("samplingRate"), int | float):
        lines.append(f"sampling:     {obj['samplingRate']}")
    headers = obj.get("headers")
    if isinstance(headers, dict) and headers:
        lines.append(f"headers:      {', '.join(sorted(map(str, headers)))} (values not shown)")
    return tuple(lines)


def _odata_filter(obj: Mapping[str, Any]) -> str | None:
    """The text of an odata filter, as is; None for a basic filter or none."""
    for key in ("filterV2", "filter"):
        value = obj.get(key)
        if isinstance(value, dict) and isinstance(value.get("filter"), dict):
            inner = value["filter"]
            if inner.get("type") == "odata":
                return str(inner.get("text", ""))
    return None


def _basic_filter(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("filterV2", "filter"):
        value = obj.get(key)
        if isinstance(value, dict) and isinstance(value.get("filter"), dict):
            inner = value["filter"]
            if inner.get("type") == "basic":
                return inner
    return {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def read_drain_list(api: Api, payload: Any) -> list[Drain]:
    """The integration API answers a bare array; the Drains API `{"drains": [...]}`."""
    items = payload.get("drains") if api is Api.DRAINS and isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise InvalidResponse("a drain list that is not a list")
    return [read_drain(api, item) for item in items]


def read_verification_code(payload: Any) -> str:
    code = payload.get("verificationCode") if isinstance(payload, dict) else None
    if not isinstance(code, str) or not code.strip() or any(c in code for c in "\r\n"):
        raise InvalidResponse("no verificationCode in the answer")
    return code.strip()


def same_url(a: str, b: str) -> bool:
    """URLs equal up to case of scheme and host, a default port and a trailing slash."""
    return _normal_url(a) == _normal_url(b)


def _normal_url(url: str) -> tuple[str, str, str, str]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        netloc += f":{port}"
    return scheme, netloc, parts.path.rstrip("/"), parts.query


SECRET_KEYS = frozenset({"secret", "clientSecret"})


def without_secrets(value: Any) -> Any:
    """`value` with every `secret` key removed, at any depth (for --json output)."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def masked(value: Any) -> Any:
    """`value` with every `secret` replaced by `***` (for --dry-run output)."""
    if isinstance(value, dict):
        return {k: "***" if k in SECRET_KEYS else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


# --- The HTTP client ------------------------------------------------------------------------


class ApiError(Exception):
    """A failed call, explained in one line that says what to do next.

    `maybe_done` is true when the request may have taken effect anyway (a timeout, a dropped
    connection, a `5xx`, an unreadable success), so the caller must not assume it did not.
    """

    def __init__(self, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done


class InvalidResponse(Exception):
    """An answer that is not what the API documents."""


@dataclass(frozen=True)
class Team:
    """The `teamId` or `slug` query parameter sent with every call (neither: personal account)."""

    team_id: str | None = None
    slug: str | None = None

    def params(self) -> dict[str, str]:
        if self.team_id:
            return {"teamId": self.team_id}
        return {"slug": self.slug} if self.slug else {}


@dataclass(frozen=True)
class RetryPolicy:
    """`429` and `5xx` are retried `attempts - 1` times; waits honour `Retry-After` and never
    add up to more than `budget` seconds."""

    attempts: int = 4
    first_delay: float = 0.5
    budget: float = 60.0


def is_retried(status: int) -> bool:
    """Rate limited, or a server error: worth another attempt after a wait."""
    return status == 429 or status >= 500


class VercelClient:
    """Calls one API for one team. Every failure becomes an `ApiError`."""

    def __init__(
        self,
        api: Api,
        base_url: str,
        token: str,
        team: Team,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")
        self.team = team
        self.retry = retry or RetryPolicy()
        self.notify = notify
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "vercel-drain-receiver"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )

    def __enter__(self) -> VercelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def url(self, path: str) -> str:
        """The full URL of `path` with the team query, for messages and --dry-run."""
        return str(httpx.URL(self.base_url + path, params=self.team.params()))

    # The calls register.py makes.

    def list_drains(self) -> list[Drain]:
        return self._read(read_drain_list, self._call("GET", PATHS[self.api].list))

    def create_drain(self, body: Mapping[str, Any]) -> Drain:
        return self._read(read_drain, self._call("POST", PATHS[self.api].create, body))

    def delete_drain(self, drain_id: str) -> None:
        self._call("DELETE", PATHS[self.api].delete.format(id=drain_id), expect_json=False)

    def test_drain(self, body: Mapping[str, Any]) -> str:
        """Ask Vercel to deliver a test to `body`'s delivery; "" when it went through, else
        Vercel's verdict (the endpoint's status and error) in one line."""
        payload = self._call("POST", DRAINS_TEST_PATH, body)
        if not isinstance(payload, dict):
            raise ApiError(f"POST {DRAINS_TEST_PATH}: Vercel answered with something that is not "
                           "an object; check --api-url")
        if not payload.get("error") and not payload.get("status"):
            return ""
        return _one_line(f"{payload.get('status', '')}: {payload.get('error', '')}")[:300]

    def verification_code(self) -> str:
        payload = self._call("GET", VERIFY_PATH)
        try:
            return read_verification_code(payload)
        except InvalidResponse as error:
            raise ApiError(f"GET {VERIFY_PATH}: {error}") from None

    # Plumbing.

    def _read(self, reader: Callable[[Api, Any], Any], payload: Any) -> Any:
        try:
            return reader(self.api, payload)
        except InvalidResponse as error:
            raise ApiError(
                f"Vercel answered with {error}, not what its API documents; check --api-url "
                f"({self.base_url}) and --api ({self.api})", maybe_done=True) from None

    def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None,
        *, expect_json: bool = True,
    ) -> Any:
        response, attempts = self._send_with_retries(method, path, body)
        if response.status_code >= 400:
            raise ApiError(
                self._explain(method, path, response, attempts),
                maybe_done=response.status_code >= 500)
        if not expect_json:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(
                f"{method} {path}: Vercel answered {response.status_code} with a body that is not "
                "JSON; try again later, and check --api-url if it persists", maybe_done=True
            ) from None

    def _send_with_retries(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> tuple[httpx.Response, int]:
        """The first answer that is not retried, and how many attempts it took."""
        deadline = time.monotonic() + self.retry.budget
        delay = self.retry.first_delay
        for attempt in range(1, self.retry.attempts + 1):
            response = self._send(method, path, body)
            if not is_retried(response.status_code) or attempt == self.retry.attempts:
                return response, attempt
            wait = retry_after(response.headers.get("retry-after"))
            wait = delay if wait is None else wait
            if time.monotonic() + wait > deadline:
                return response, attempt
            self.notify(
                f"Vercel answered {response.status_code} to {method} {path}; retrying in "
                f"{wait:g}s (attempt {attempt + 1} of {self.retry.attempts})")
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, path, params=self.team.params(), json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise ApiError(
                f"{method} {path}: could not connect to {self.base_url} "
                f"({_one_line(str(error)) or type(error).__name__}); check your network and "
                "--api-url") from None
        except httpx.TimeoutException:
            raise ApiError(
                f"{method} {path}: no answer from {self.base_url} in time; check your network "
                "and --api-url, or raise --timeout", maybe_done=True) from None
        except httpx.HTTPError as error:
            raise ApiError(
                f"{method} {path}: the connection to {self.base_url} failed "
                f"({_one_line(str(error)) or type(error).__name__}); check your network and "
                "--api-url, then try again", maybe_done=True) from None

    def _explain(self, method: str, path: str, response: httpx.Response, attempts: int) -> str:
        status = response.status_code
        code, message = error_details(response)
        said = f" ({code}: {message})" if code or message else ""
        where = f"{method} {path}: Vercel answered {status}{said}"
        if status == 400 and self.api is Api.INTEGRATION and _blames_token(code, message):
            return (
                f"{where}. The integration API (--api integration) needs an integration's OAuth2 "
                "access token, which this token is not. With a personal or team access token, "
                f"rerun with --api drains; how to get either token: {TOKEN_HELP}")
        if status == 400 and message:
            return f"{where}. Vercel refused the request as invalid; check the options you " \
                "passed for the field it names (see --help)"
        if status == 400:
            return f"{where}. Check the options you passed (see --help)"
        if status == 402:
            return (
                f"{where}. Drains need a Pro or Enterprise plan: upgrade the team "
                "(https://vercel.com/pricing) or pass --team-id/--slug of a team that has one")
        if status == 410:
            other = " rerun with --api drains" if self.api is Api.INTEGRATION \
                else " update register.py"
            return f"{where}. Vercel has retired this endpoint;{other}"
        if status == 401:
            return (
                f"{where}. VERCEL_TOKEN was not accepted: it is wrong, expired or revoked; "
                f"create a new one ({TOKEN_HELP})")
        if status == 403:
            plan = " and that its plan includes drains (Pro or Enterprise)" \
                if self.api is Api.DRAINS else ""
            return (
                f"{where}. The token may not do this: check --team-id/--slug, that the token "
                f"has access to that team{plan}")
        if status == 404:
            return f"{where}. Check --api-url ({self.base_url}), --team-id/--slug and the drain id"
        tries = f"{attempts} attempt" + ("s" if attempts > 1 else "")
        if status == 429:
            wait = retry_after(response.headers.get("retry-after"))
            later = f" in {wait:g} seconds" if wait is not None else " in a minute"
            return f"{where}: rate limited ({tries}); try again{later}"
        if status >= 500:
            return (
                f"{where} ({tries}): a problem on Vercel's side; try again later "
                "(https://www.vercel-status.com)")
        return f"{where}; check the options you passed (see --help)"


def _blames_token(code: str, message: str) -> bool:
    """The integration API's 400 for a token that is not an integration's, or one that says
    nothing; a 400 that names a field (`url should match format uri`) is about the input."""
    said = f"{code} {message}".lower()
    return not message or any(word in said for word in ("token", "oauth", "client"))


def error_details(response: httpx.Response) -> tuple[str, str]:
    """The `error.code` and `error.message` of an error answer, on one line each."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", _one_line(response.text)[:200]
    if not isinstance(error, dict):
        return "", ""
    return _one_line(str(error.get("code") or "")), _one_line(str(error.get("message") or ""))[:300]


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _one_line(text: str) -> str:
    return " ".join(text.split())
