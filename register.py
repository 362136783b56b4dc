#!/usr/bin/env python3
"""Register this receiver as a Vercel log drain, with a fresh secret the receiver picks up.

    python register.py [options]              create the drain, or say that it already exists
    python register.py list [options]         show the drains (those at --url, when given)
    python register.py remove ID [options]    delete one of them
    python register.py test [options]         ask Vercel to deliver a test to --url, signed
                                              with the secret file's first secret

The token comes from `VERCEL_TOKEN` only. Every other option has a flag and an environment
variable (the flag wins). Exit codes: 0 success, 1 API or network failure, 2 usage error.
Which token works with which `--api`: README.md, "Register the drain". The API details live in
`receiver/vercel_api.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from receiver.secret_file import (
    VERIFY_FILE_ENV,
    VERIFY_FILE_NAME,
    new_secret,
    prepend_secret,
    read_secrets,
    secret_path_from_env,
    write_private_file,
    write_secrets,
)
from receiver.vercel_api import (
    DEFAULT_API_URL,
    DEFAULT_COMPRESSION,
    PATHS,
    VERIFY_PATH,
    Api,
    ApiError,
    Drain,
    DrainSpec,
    InvalidInput,
    Team,
    VercelClient,
    check_spec,
    check_url,
    create_body,
    delivery_url,
    masked,
    same_url,
    test_body,
    without_secrets,
)

PROG = "register.py"
DEFAULT_NAME = "vercel-drain-receiver"
COMMANDS = ("register", "list", "remove", "test")
LOG_SCHEMAS = ("log",)
TOKEN_ENV = "VERCEL_TOKEN"

# Where hosting platforms publish a service's public address: (variable, URL template).
PLATFORM_URLS = (
    ("RENDER_EXTERNAL_URL", "{}"),
    ("RAILWAY_PUBLIC_DOMAIN", "https://{}"),
    ("FLY_APP_NAME", "https://{}.fly.dev"),
)


class UsageError(Exception):
    """A bad option or a missing setting: exit code 2, nothing sent."""


# --- Options: one table, so every option has its flag, variable and default together ----------


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    default: str | None = None
    kind: Literal["value", "list", "flag"] = "value"
    commands: tuple[str, ...] = COMMANDS
    separator: str = ","
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


REGISTER = ("register", "test")

OPTIONS = (
    Option("--url", "DRAIN_URL", "the receiver's public URL, where Vercel delivers; when unset, "
           "taken from RENDER_EXTERNAL_URL, RAILWAY_PUBLIC_DOMAIN or FLY_APP_NAME",
           metavar="URL"),
    Option("--api", "DRAIN_API", "which Vercel API: 'drains' takes a personal or team access "
           "token, 'integration' (the older Integration Log Drains API) only an integration's "
           "OAuth2 token", "drains",
           metavar="{integration,drains}"),
    Option("--api-url", "VERCEL_API_URL", "base URL of the Vercel API", DEFAULT_API_URL,
           metavar="URL"),
    Option("--team-id", "VERCEL_TEAM_ID", "act on this team (by id)", metavar="ID"),
    Option("--slug", "VERCEL_TEAM_SLUG", "act on this team (by slug) instead of --team-id",
           metavar="SLUG"),
    Option("--timeout", "VERCEL_API_TIMEOUT", "seconds to wait for each API answer", "10",
           metavar="SECONDS"),
    Option("--name", "DRAIN_NAME", "the drain's name", DEFAULT_NAME, commands=REGISTER,
           metavar="NAME"),
    Option("--format", "DRAIN_DELIVERY_FORMAT", "delivery format", "ndjson", commands=REGISTER,
           metavar="{json,ndjson}"),
    Option("--source", "DRAIN_SOURCES", "deliver only logs from this source, repeatable: static, "
           "lambda, build, edge, external, firewall, redirect (drains only)", "all", "list",
           REGISTER, metavar="SOURCE"),
    Option("--environment", "DRAIN_ENVIRONMENTS", "deliver only logs from this environment, "
           "repeatable: production, preview", "all", "list", REGISTER, metavar="ENV"),
    Option("--project-id", "DRAIN_PROJECT_IDS", "deliver only logs of this project, repeatable",
           "all projects", "list", REGISTER, metavar="ID"),
    Option("--header", "DRAIN_HEADERS", "send this header with every delivery, repeatable",
           "none", "list", REGISTER, separator="\n",
           metavar="'NAME: VALUE'"),
    Option("--schema", "DRAIN_SCHEMAS", "drain type, repeatable: log, trace, speed_insights, "
           "analytics, audit_log; one drain per type, all with the same secret (types other "
           "than log need --api drains)", "log", "list", metavar="TYPE"),
    Option("--trace-encoding", "DRAIN_TRACE_ENCODING", "how trace drains deliver OTLP to the "
           "receiver's /v1/traces", "proto", commands=REGISTER, metavar="{proto,json}"),
    Option("--compression", "DRAIN_COMPRESSION", "delivery compression, --api drains only",
           "gzip with --api drains", commands=REGISTER, metavar="{gzip,none}"),
    Option("--secret-file", "DRAIN_SECRET_FILE", "where the receiver reads its secrets; the new "
           "secret goes first, older ones stay below it",
           "~/.config/vercel-drain-receiver/drain-secret", commands=REGISTER, metavar="PATH"),
    Option("--verify-file", VERIFY_FILE_ENV, "where the receiver reads its x-vercel-verify code",
           f"{VERIFY_FILE_NAME} beside the secret file", commands=("register",), metavar="PATH"),
    Option("--replace", "DRAIN_REPLACE", "if a drain already points at --url, create a new one "
           "with a new secret, then delete the old one", "false", "flag", ("register",)),
    Option("--dry-run", "DRAIN_DRY_RUN", "show the requests that would change something, with "
           "the secret masked, and change nothing; it still needs the token and the network, as "
           "it reads the drain list to know what exists", "false", "flag", ("register", "remove")),
    Option("--json", "DRAIN_JSON", "print the API's objects as JSON (secrets removed)", "false",
           "flag"),
)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(command: str) -> Parser:
    prog = PROG if command == "register" else f"{PROG} {command}"
    parser = Parser(
        prog=prog,
        usage=f"{PROG} [options] | {PROG} list [options] | {PROG} remove ID [options] | "
        f"{PROG} test [options]",
        description=__doc__.split("\n\n")[0] if command == "register" else {
            "list": "Show the drains that point at this receiver's URL.",
            "remove": "Delete a drain that points at this receiver's URL (see `list`).",
            "test": "Ask Vercel to deliver a test to the receiver's URL (POST /v1/drains/test) "
                    "with the secret file's first secret, and print Vercel's verdict.",
        }[command],
        epilog=f"The token is read from {TOKEN_ENV}. Commands: {PROG} [options] | "
        f"{PROG} list [options] | {PROG} remove ID [options]. "
        "Exit codes: 0 success, 1 API or network failure, 2 usage error.",
    )
    if command == "remove":
        parser.add_argument("id", help="the drain's id, as `list` shows it")
    for option in OPTIONS:
        if command not in option.commands:
            continue
        shown = f" (default: {option.default})" if option.default else ""
        split = {",": ", comma-separated", "\n": ", one a line"}[option.separator] \
            if option.kind == "list" else ""
        help_text = f"{option.help}{shown} [env {option.env}{split}]"
        if option.kind == "flag":
            parser.add_argument(option.flag, action="store_true", default=None, help=help_text)
        elif option.kind == "list":
            parser.add_argument(option.flag, action="append", metavar=option.metavar,
                                help=help_text)
        else:
            parser.add_argument(option.flag, metavar=option.metavar, help=help_text)
    return parser


def resolve(option: Option, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """The flag's value, else the environment variable's, else the built-in default."""
    given = getattr(args, option.dest)
    raw = env.get(option.env, "").strip()
    if option.kind == "flag":
        return True if given else parse_bool(option, raw)
    if option.kind == "list":
        if given is not None:
            return [value.strip() for value in given]
        return [value.strip() for value in raw.split(option.separator) if value.strip()]
    if given is not None:
        return given.strip()
    return raw or None


def parse_bool(option: Option, raw: str) -> bool:
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"{option.env}={raw!r} is not a boolean; use true or false")


# --- Settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, checked; built before any request is made."""

    command: str
    api: Api
    api_url: str
    token: str
    team: Team
    url: str
    timeout: float
    json_output: bool
    dry_run: bool = False
    drain_id: str | None = None
    spec: DrainSpec | None = None
    schemas: tuple[str, ...] = LOG_SCHEMAS
    secret_file: Path = field(default_factory=Path)
    verify_file: Path = field(default_factory=Path)
    replace: bool = False


# Which option to blame for a value the API schema refuses.
OPTION_OF_FIELD = {
    "name": "--name", "url": "--url", "format": "--format", "sources": "--source",
    "environments": "--environment", "projectIds": "--project-id", "headers": "--header",
    "compression": "--compression", "schema": "--schema", "trace_encoding": "--trace-encoding",
}


def parse_command_line(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    argv = list(argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "register"
    args = build_parser(command).parse_args(argv)
    value = {o.dest: resolve(o, args, env) for o in OPTIONS if command in o.commands}
    api = choice("--api", given_or(value["api"], Api.DRAINS.value), [a.value for a in Api])
    api_url = given_or(value["api_url"], DEFAULT_API_URL)
    try:
        check_url(api_url)
    except InvalidInput as error:
        raise UsageError(f"{named('--api-url')} {error}") from None
    if value["team_id"] and value["slug"]:
        raise UsageError("--team-id (VERCEL_TEAM_ID) and --slug (VERCEL_TEAM_SLUG): give only one")
    settings = Settings(
        command=command,
        api=Api(api),
        api_url=api_url,
        token="",
        team=Team(value["team_id"], value["slug"]),
        url=receiver_url(value["url"], env, required=command != "list"),
        timeout=positive_number("--timeout", given_or(value["timeout"], "10")),
        json_output=value["json"],
        dry_run=value.get("dry_run", False),
        drain_id=getattr(args, "id", None),
        schemas=drain_types(value["schema"], Api(api)),
    )
    if command in REGISTER:
        settings = register_settings(settings, value, env)
    if command == "test" and settings.api is not Api.DRAINS:
        raise UsageError("test asks the Drains API: run it with --api drains (any token that "
                         "can list drains with it)")
    return dataclasses.replace(settings, token=read_token(env, settings.api))


def drain_types(given: Sequence[str], api: Api) -> tuple[str, ...]:
    """The types asked for by --schema, each once, in the order given (default: log)."""
    types = tuple(dict.fromkeys(given)) or LOG_SCHEMAS
    for schema in types:
        try:
            check_spec(api, DrainSpec(name=DEFAULT_NAME, url="https://x", schema=schema))
        except InvalidInput as error:
            raise UsageError(f"{named('--schema')} {error}") from None
    return types


def read_token(env: Mapping[str, str], api: Api) -> str:
    token = env.get(TOKEN_ENV, "").strip()
    kind = "an integration's OAuth2 access token" if api is Api.INTEGRATION \
        else "a personal or team access token"
    if not token:
        raise UsageError(f"{TOKEN_ENV} is not set: export {TOKEN_ENV}=<token>; with --api {api} "
                         f"it must be {kind} (see README.md, section Register the drain)")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise UsageError(f"{TOKEN_ENV} holds characters no token has (pasted quotes or a line "
                         "break?); set it to the token alone")
    return token


def register_settings(base: Settings, value: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """The drain to create, checked against the chosen API's schema, and the two files."""
    spec = DrainSpec(
        name=given_or(value["name"], DEFAULT_NAME),
        url=base.url,
        format=given_or(value["format"], "ndjson"),
        sources=tuple(value["source"]),
        environments=tuple(value["environment"]),
        project_ids=tuple(value["project_id"]),
        headers=parse_headers(value["header"]),
        compression=value["compression"],
        trace_encoding=given_or(value["trace_encoding"], "proto"),
    )
    try:
        check_spec(base.api, spec)
    except InvalidInput as error:
        raise UsageError(f"{named(OPTION_OF_FIELD[error.field])} {error}") from None
    if spec.compression is None:
        spec = dataclasses.replace(spec, compression=DEFAULT_COMPRESSION[base.api])
    secret_file = Path(value["secret_file"]).expanduser() if value["secret_file"] \
        else secret_path_from_env(env)
    # Like verify_path_from_env(), but beside a --secret-file given as a flag too.
    verify_file = Path(value["verify_file"]).expanduser() if value.get("verify_file") \
        else secret_file.with_name(VERIFY_FILE_NAME)
    return dataclasses.replace(
        base, spec=spec, secret_file=secret_file, verify_file=verify_file,
        replace=value.get("replace", False))


def given_or(value: str | None, default: str) -> str:
    """An option's value, or its default when neither the flag nor the variable gave one."""
    return default if value is None else value


def named(flag: str) -> str:
    """`--flag (VARIABLE)`, for messages about a value that may have come from either."""
    env = next(option.env for option in OPTIONS if option.flag == flag)
    return f"{flag} ({env})"


def choice(option: str, given: str, allowed: Sequence[str]) -> str:
    if given not in allowed:
        raise UsageError(
            f"{named(option)} {given!r} is not allowed; allowed: {', '.join(allowed)}")
    return given


def positive_number(option: str, given: str) -> float:
    try:
        number = float(given)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise UsageError(f"{named(option)} {given!r} must be a number of seconds above 0")
    return number


def parse_headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, header_value = line.partition(":")
        if not colon or not name.strip():
            raise UsageError(f"{named('--header')} {line!r} must look like 'Name: value'")
        headers[name.strip()] = header_value.strip()
    return headers


def receiver_url(given: str | None, env: Mapping[str, str], *, required: bool = True) -> str:
    """`--url`/`DRAIN_URL`, else the address a hosting platform publishes ("" for `list`)."""
    if given is not None:
        return given
    for variable, template in PLATFORM_URLS:
        if env.get(variable, "").strip():
            return template.format(env[variable].strip())
    if not required:
        return ""
    raise UsageError(
        "the receiver's public URL is unknown: pass --url https://... or set DRAIN_URL "
        "(on Render, Railway and Fly.io it is found by itself)")


# --- Output ------------------------------------------------------------------------------------


@dataclass
class Output:
    """Results on stdout; notes on stdout for people, on stderr when stdout carries --json."""

    json_output: bool

    def result(self, text: str) -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr if self.json_output else sys.stdout, flush=True)

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)

    def json(self, value: Any) -> None:
        print(json.dumps(without_secrets(value), indent=2), flush=True)


def describe(drain: Drain) -> str:
    """A drain for a person to read."""
    lines = [
        f"  id:           {drain.id}",
        f"  name:         {drain.name}",
        f"  url:          {drain.url}",
        f"  status:       {drain.state}",
        f"  types:        {', '.join(drain.schemas) or 'none'}",
        f"  format:       {drain.format}",
        f"  sources:      {', '.join(drain.sources) or 'all'}",
        *(f"  {line}" for line in drain.covers),
    ]
    if drain.environments:
        lines.append(f"  environments: {', '.join(drain.environments)}")
    if drain.compression:
        lines.append(f"  compression:  {drain.compression}")
    return "\n".join(lines)


# --- Commands ----------------------------------------------------------------------------------


def open_client(settings: Settings, out: Output) -> VercelClient:
    return VercelClient(
        settings.api, settings.api_url, settings.token, settings.team,
        timeout=settings.timeout, notify=out.warn,
    )


def pointing_here(
    drains: Sequence[Drain], url: str, schemas: Sequence[str] = LOG_SCHEMAS
) -> list[Drain]:
    """The drains of the types asked for that deliver to `url`; a drain of another type at the
    same URL is never taken for ours (nor reused, nor deleted)."""
    return [drain for drain in drains if drain.url and same_url(drain.url, url)
            and any(schema in drain.schemas for schema in schemas)]


def run_register(settings: Settings, out: Output) -> int:
    """Create a drain for each type asked for that has none at its URL (all of them with
    --replace, then delete the old ones), every new drain with the same new secret."""
    assert settings.spec is not None
    with open_client(settings, out) as client:
        drains = client.list_drains()
        existing = {schema: pointing_here(drains, delivery_url(settings.url, schema), (schema,))
                    for schema in settings.schemas}
        old = [drain for schema in settings.schemas for drain in existing[schema]]
        if settings.replace:
            missing = list(settings.schemas)
        else:
            dead = [d for s in settings.schemas for d in existing[s]
                    if not any(other.healthy for other in existing[s])]
            if dead:
                return report_unhealthy(settings, dead, out)
            missing = [schema for schema in settings.schemas if not existing[schema]]
            if old:
                report_existing(settings, old, out, more_to_create=bool(missing))
            if not missing:
                return 0
        if settings.dry_run:
            return show_plan(settings, client, missing, old if settings.replace else [], out)
        secret = new_secret()
        existed = settings.secret_file.exists()
        older = write_new_secret(settings.secret_file, secret)
        created: list[Drain] = []
        try:
            store_verification_code(client, settings.verify_file, out)
            for schema in missing:
                created.append(create(client, settings, secret, schema))
                report_created(settings, created[-1], schema, older, out)
        except (UsageError, ApiError) as error:
            if not created and not (isinstance(error, ApiError) and error.maybe_done):
                take_back_secret(settings.secret_file, secret, older, existed)
            if created:
                raise ApiError(f"{error} Created before that: "
                               f"{', '.join(d.id for d in created)}; run again to create the "
                               "rest (existing types are kept)") from None
            raise
        return delete_replaced(client, old if settings.replace else [], created, out)


def report_existing(
    settings: Settings, existing: Sequence[Drain], out: Output, *, more_to_create: bool = False
) -> int:
    healthy = [drain for drain in existing if drain.healthy]
    if not healthy:
        return report_unhealthy(settings, existing, out)
    drain = healthy[0]
    if settings.json_output:
        out.json(drain.raw)
    else:
        nothing = "creating the other types asked for" if more_to_create \
            else "nothing was created"
        out.result(f"A drain already points at {drain.url}; {nothing}.\n{describe(drain)}")
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    out.note(f"Drain {drain.id}{more} is registered. Run again with --replace to rotate it: a new "
             "drain with a new secret is created first, then the old one is deleted.")
    if not read_secrets(settings.secret_file):
        out.warn(f"{settings.secret_file} holds no secret, so this receiver cannot verify that "
                 "drain's deliveries; run again with --replace (or set --secret-file)")
    return 0


def report_unhealthy(settings: Settings, existing: Sequence[Drain], out: Output) -> int:
    """Only disabled or errored drains point here: nothing is delivered, so this is no success."""
    if settings.json_output:
        out.json([drain.raw for drain in existing])
    else:
        out.result("\n\n".join(describe(drain) for drain in existing))
    states = ", ".join(f"{drain.id} is {drain.state}" for drain in existing)
    errored = "; errored usually means the receiver answered non-2xx: check its log" \
        if any(drain.status == "errored" for drain in existing) else ""
    raise ApiError(f"a drain points at {settings.url} but Vercel delivers nothing to it ({states})"
                   f"; run again with --replace to create a fresh one{errored}")


def show_plan(
    settings: Settings, client: VercelClient, schemas: Sequence[str],
    existing: Sequence[Drain], out: Output,
) -> int:
    """--dry-run: what would be sent, secret masked; the drain list was only read."""
    assert settings.spec is not None
    secret = new_secret()
    requests: list[dict[str, Any]] = [
        {"then": f"write a new secret first in {settings.secret_file} (mode 0600), keeping "
                 f"{len(read_secrets(settings.secret_file))} secret(s) already there"},
        {"method": "GET", "url": client.url(VERIFY_PATH),
         "then": f"write the code to {settings.verify_file}"},
        *({"method": "POST", "url": client.url(PATHS[settings.api].create),
           "body": masked(create_body(settings.api, spec_for(settings, schema), secret))}
          for schema in schemas),
        *({"method": "DELETE", "url": client.url(PATHS[settings.api].delete.format(id=d.id))}
          for d in existing),
    ]
    if settings.json_output:
        out.result(json.dumps({"dry_run": True, "steps": requests}, indent=2))
        return 0
    out.result("Dry run: the drain list was read; nothing is written, created or deleted. "
               "The steps would be:")
    for step in requests:
        if "method" in step:
            out.result(f"  {step['method']} {step['url']}")
        if "body" in step:
            out.result("    " + json.dumps(step["body"], indent=2).replace("\n", "\n    "))
        if "then" in step:
            out.result(f"  {'  then ' if 'method' in step else ''}{step['then']}")
    return 0


def store_verification_code(client: VercelClient, path: Path, out: Output) -> None:
    """Fetch the x-vercel-verify code for the receiver; not every account needs one."""
    try:
        code = client.verification_code()
    except ApiError as error:
        out.warn(f"could not fetch the endpoint verification code, going on without it: {error}")
        return
    try:
        write_private_file(path, code + "\n")
    except OSError as error:
        raise UsageError(f"--verify-file {path}: cannot write it ({error.strerror}); "
                         "choose a writable path") from None
    out.note(f"Stored the endpoint verification code in {path}.")


def write_new_secret(path: Path, secret: str) -> list[str]:
    """Put `secret` first in the secret file; returns the secrets that were there before."""
    try:
        older = read_secrets(path)
        prepend_secret(path, secret)
    except OSError as error:
        raise UsageError(f"--secret-file {path}: cannot write it ({error.strerror}); "
                         "choose a writable path") from None
    return older


def take_back_secret(path: Path, secret: str, older: list[str], existed: bool) -> None:
    """Undo `write_new_secret` when no drain can have been created with `secret`: a file this
    run made is removed, not left empty."""
    if read_secrets(path)[:1] != [secret]:
        return
    if existed or older:
        write_secrets(path, older)
    else:
        path.unlink(missing_ok=True)


def spec_for(settings: Settings, schema: str) -> DrainSpec:
    assert settings.spec is not None
    return dataclasses.replace(settings.spec, schema=schema)


def create(client: VercelClient, settings: Settings, secret: str, schema: str) -> Drain:
    try:
        return client.create_drain(create_body(settings.api, spec_for(settings, schema), secret))
    except ApiError as error:
        if not error.maybe_done:
            raise
        raise ApiError(f"{error} The drain may have been created anyway: check with "
                       f"`python {PROG} list`; its secret stays in {settings.secret_file}.",
                       maybe_done=True) from None


def report_created(
    settings: Settings, drain: Drain, schema: str, older: list[str], out: Output
) -> None:
    if settings.json_output:
        out.json(drain.raw)
    else:
        out.result(f"Registered {schema} drain {drain.id} (--api {settings.api}).\n"
                   f"{describe(drain)}")
    kept = f"; the {len(older)} older secret(s) stay below it" if older else ""
    out.note(f"Its secret is the first line of {settings.secret_file}{kept}.")


def delete_replaced(
    client: VercelClient, existing: Sequence[Drain], created: Sequence[Drain], out: Output
) -> int:
    """--replace: delete the old drains once the new one exists, so delivery never stops."""
    failures: list[tuple[Drain, ApiError]] = []
    for old in existing:
        try:
            client.delete_drain(old.id)
        except ApiError as error:
            failures.append((old, error))
            continue
        out.note(f"Deleted the old drain {old.id}; its secret stays in the file for deliveries "
                 "still in flight.")
    if failures:
        ids = ", ".join(drain.id for drain, _ in failures)
        how = f"python {PROG} remove {failures[0][0].id}" if len(failures) == 1 \
            else f"python {PROG} remove ID, for each"
        new = f"drain {created[0].id} is" if len(created) == 1 \
            else f"drains {', '.join(d.id for d in created)} are"
        raise ApiError(f"the new {new} in place, but the old drain(s) {ids} could "
                       f"not be deleted ({failures[0][1]}); delete with: {how}")
    return 0


def run_list(settings: Settings, out: Output) -> int:
    """Every drain the token sees, of every type; those of the types asked for that deliver to
    the receiver's URL (when one is known) are marked. `--json` with a URL gives only those."""
    with open_client(settings, out) as client:
        every = client.list_drains()
    here = {drain.id for schema in settings.schemas
            for drain in pointing_here(every, delivery_url(settings.url, schema), (schema,))} \
        if settings.url else set()
    if settings.json_output:
        out.json([drain.raw for drain in every if not settings.url or drain.id in here])
        return 0
    if not every:
        out.result(f"This token sees no drain (--api {settings.api}).")
        return 0
    if not settings.url:
        heading = f"{len(every)} drain(s) (--api {settings.api}); pass --url to mark this receiver's:"
    elif here:
        heading = (f"{len(every)} drain(s) (--api {settings.api}); {len(here)} point at "
                   f"{settings.url} (marked \"this receiver\"):")
    else:
        heading = (f"{len(every)} drain(s) (--api {settings.api}). No drain (--api {settings.api}) "
                   f"points at {settings.url}.")
    out.result(heading)
    out.result("\n\n".join(describe(drain) + ("\n  this receiver: yes" if drain.id in here else "")
                           for drain in every))
    return 0


def run_remove(settings: Settings, out: Output) -> int:
    assert settings.drain_id is not None
    with open_client(settings, out) as client:
        drains = client.list_drains()
        drain = next((d for d in drains if d.id == settings.drain_id), None)
        if drain is None:
            raise ApiError(f"no drain {settings.drain_id} (--api {settings.api}) was found; "
                           f"`python {PROG} list` shows the drains that point at {settings.url}")
        if drain not in pointing_here([drain], drain.url, settings.schemas):
            raise ApiError(f"drain {drain.id} carries {', '.join(drain.schemas) or 'no type'}, "
                           f"not {', '.join(settings.schemas)}; pass --schema with its type to "
                           "remove it")
        if not settings.url:
            raise UsageError("remove needs the receiver's public URL: pass --url https://... or "
                             "set DRAIN_URL")
        if not any(same_url(drain.url, delivery_url(settings.url, schema))
                   for schema in settings.schemas):
            anyway = f"; to remove it anyway, pass --url {drain.url}" if drain.url else ""
            raise ApiError(f"drain {drain.id} points at {drain.url or 'no http URL'}, not at "
                           f"{settings.url}{anyway}")
        target = client.url(PATHS[settings.api].delete.format(id=drain.id))
        if settings.dry_run:
            out.result(f"Dry run: would send DELETE {target}")
            return 0
        client.delete_drain(drain.id)
    if settings.json_output:
        out.json({"deleted": drain.id})
    else:
        out.result(f"Deleted drain {drain.id} ({drain.url}).")
    return 0


def run_test(settings: Settings, out: Output) -> int:
    """Vercel's own test delivery to the receiver, for each type asked for."""
    secrets = read_secrets(settings.secret_file)
    if not secrets:
        raise UsageError(f"{settings.secret_file} holds no secret to sign the test with: run "
                         f"`python {PROG}` first (or pass --secret-file)")
    failed = 0
    with open_client(settings, out) as client:
        for schema in settings.schemas:
            target = delivery_url(settings.url, schema)
            verdict = client.test_drain(test_body(spec_for(settings, schema), secrets[0]))
            if verdict:
                failed += 1
                out.result(f"Vercel's test {schema} delivery to {target} failed ({verdict}); "
                           "check the receiver's log, its secret file and the proxy in front")
            else:
                out.result(f"Vercel's test {schema} delivery to {target} went through.")
    if failed:
        raise ApiError(f"{failed} of {len(settings.schemas)} test deliveries failed (see above)")
    return 0


RUNNERS = {"register": run_register, "list": run_list, "remove": run_remove, "test": run_test}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = parse_command_line(argv, os.environ if env is None else env)
        return RUNNERS[settings.command](settings, Output(settings.json_output))
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except ApiError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    except Exception as error:  # a bug or an unforeseen OS error: still one line, no traceback
        print(f"{PROG}: error: unexpected {type(error).__name__}: {error}; please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
