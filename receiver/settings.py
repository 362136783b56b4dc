"""Every setting of the receiver: a flag, an environment variable and a default, in one table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.archive.keys import parse_archive_url
from receiver.secret_file import (
    SECRET_FILE_ENV,
    VERIFY_FILE_ENV,
    secret_path_from_env,
    verify_path_from_env,
)
from receiver.sinks.files import DEFAULT_TEMPLATE, check_template

SINK_NAMES = ("stdout", "file")
LOG_FORMATS = ("plain", "json")
ARCHIVE_ROTATE_EVERY = 300.0  # --rotate-every's default with --archive
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
LOG_LEVELS = ("debug", "info", "warning", "error")
WORKER_SETTINGS_ENV = "DRAIN_WORKER_SETTINGS"
MIB = 1024 * 1024
SIZE_UNITS = {"": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MIB, "mb": 1000**2, "mib": MIB,
              "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_host: str | None = None
    metrics_port: int = 0
    umask: int = 0o027
    sinks: tuple[str, ...] = ("stdout",)
    dir: Path = Path("drain-data")
    path_template: str = DEFAULT_TEMPLATE
    max_body_bytes: int = 32 * MIB
    max_decompressed_bytes: int = 256 * MIB
    fsync: bool = False
    max_file_bytes: int = 128 * MIB
    keep_days: int = 0
    workers: int = 1
    dedupe_window: float = 0.0
    max_inflight_bytes: int = 512 * MIB
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    log_level: str = "info"
    log_format: str = "plain"
    access_log: bool = False
    shutdown_timeout: float = 25.0
    stdout_lock: Path | None = None
    secrets: tuple[str, ...] = ()
    secret_file: Path = Path("drain-secret")
    verify_token: str | None = None
    verify_file: Path = Path("drain-verify")
    ui: bool = False
    archive: str = ""
    archive_endpoint: str = ""
    archive_host: str = ""
    archive_timeout: float = 60.0
    rotate_every: float = 0.0
    spool_max_bytes: int = 0


def parse_size(text: str) -> int:
    """`1048576`, `512k`, `32MiB`, `1GB` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1048576, 512KiB, 32MiB)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def parse_duration(text: str) -> float:
    """`300`, `90s`, `5m`, `1h`, `0.5s` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in DURATION_UNITS:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 300, 90s, 5m, 1h)")
    return float(match.group(1)) * DURATION_UNITS[match.group(2).lower()]


def _archive_url(text: str) -> str:
    if not text.strip():
        return ""  # no archive
    try:
        parse_archive_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def parse_umask(text: str) -> int:
    """`027` or `0o027` -> 0o027."""
    match = re.fullmatch(r"\s*(?:0o)?([0-7]{1,4})\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not an octal umask: {text!r} (use e.g. 027 or 077)")
    return int(match.group(1), 8)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
    return value


def at_least(minimum: float, meaning: str = "") -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if value >= minimum else f"must be at least {minimum:g}{meaning}, not {value:g}"
    return check


def above_zero(value: float) -> str | None:
    return None if value > 0 else f"must be more than 0, not {value:g}"


def port_number(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be a port from 1 to 65535, not {value}"


def port_or_off(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"must be a port from 1 to 65535, or 0 for off, not {value}"


def umask_bits(value: int) -> str | None:
    return None if value <= 0o777 else f"must be at most 0777, not {value:04o}"


def one_of(choices: Sequence[str]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"
    return check


def parse_sinks(values: Sequence[str]) -> tuple[str, ...]:
    sinks: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if name not in SINK_NAMES:
                choices = " or ".join(SINK_NAMES)
                raise argparse.ArgumentTypeError(
                    f"unknown sink {name!r}: use {choices} (comma-separated for both)"
                )
            if name not in sinks:
                sinks.append(name)
    return tuple(sinks)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


def _template(text: str) -> str:
    try:
        return check_template(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; the epilog's lines kept as written."""


@dataclass(frozen=True)
class InvalidEnvironmentValue:
    """The default of an option whose environment variable does not parse: an error only when
    no flag on the command line replaces it."""

    message: str

    def __str__(self) -> str:  # how --help shows it as the default
        return f"invalid: {self.message}"


def build_parser(env: Mapping[str, str], epilog: str = "") -> argparse.ArgumentParser:
    """The command line; each option's default comes from its environment variable."""
    parser = argparse.ArgumentParser(
        prog="drain-receiver",
        description="Receive Vercel log drain deliveries, verify their signature and write "
        "every record to stdout or to rotating NDJSON files.",
        epilog=textwrap.fill(
            f"Secrets: DRAIN_SECRET (comma-separated) and/or {SECRET_FILE_ENV} (one a line, "
            "re-read on change; created with a generated secret when no secret exists). "
            f"x-vercel-verify: DRAIN_VERIFY_TOKEN, or {VERIFY_FILE_ENV} (re-read on change).",
            width=90) + (f"\n\n{epilog}" if epilog else ""),
        formatter_class=_HelpFormatter,
    )
    defaults = Settings()
    checks: list[tuple[str, str, str, Callable[[Any], str | None]]] = []

    def option(flag: str, variable: str, default: object, help: str,
               check: Callable[[Any], str | None] | None = None, **kwargs: object) -> None:
        value: object = env.get(variable)
        convert = kwargs.get("type")
        if value is not None and callable(convert):
            try:
                convert(value)
            except argparse.ArgumentTypeError as error:
                value = InvalidEnvironmentValue(f"{variable}={value!r} (for {flag}): {error}")
        action = parser.add_argument(
            flag,
            default=value if value is not None else default,
            help=f"{help} [env {variable}]",
            **kwargs,  # type: ignore[arg-type]
        )
        if check is not None:
            checks.append((flag, variable, action.dest, check))

    option("--host", "HOST", defaults.host, "address to listen on")
    option("--port", "PORT", defaults.port, "port to listen on", port_number, type=_int)
    option("--metrics-port", "DRAIN_METRICS_PORT", defaults.metrics_port,
           "serve /metrics on this port only, off the public port (0: on the public port)",
           port_or_off, type=_int)
    option("--metrics-host", "DRAIN_METRICS_HOST", None,
           "address of the --metrics-port listener (default: the --host address)")
    parser.add_argument("--sink", action="append", default=argparse.SUPPRESS,
                        help="where records go: stdout, file, or both (repeat or comma-separate) "
                        f"[env DRAIN_SINK] (default: {env.get('DRAIN_SINK') or 'stdout'})")
    option("--dir", "DRAIN_DIR", str(defaults.dir), "root directory of the file sink")
    option("--path-template", "DRAIN_PATH_TEMPLATE", defaults.path_template,
           "file sink partition under --dir, from {stream} (logs, traces, speed_insights, analytics, "
           "audit_log, ...), {date} (UTC), {projectId}, {source}",
           type=_template)
    option("--max-body-bytes", "DRAIN_MAX_BODY_BYTES", "32MiB",
           "largest request body accepted, as sent (413 above)", above_zero, type=parse_size)
    option("--max-decompressed-bytes", "DRAIN_MAX_DECOMPRESSED_BYTES",
           "256MiB", "largest body after gzip decompression (413 "
           "above)", above_zero, type=parse_size)
    option("--fsync", "DRAIN_FSYNC", "false", "fsync written files before acknowledging",
           type=parse_bool, nargs="?", const=True)
    option("--max-file-bytes", "DRAIN_MAX_FILE_BYTES", "128MiB",
           "rotate an active file before it grows past this size", above_zero, type=parse_size)
    option("--keep-days", "DRAIN_KEEP_DAYS", defaults.keep_days,
           "delete rotated files older than this many days (0 keeps everything)",
           at_least(0, " (0 keeps everything)"), type=_int)
    option("--workers", "DRAIN_WORKERS", defaults.workers,
           "worker processes serving the one port", at_least(1), type=_int)
    option("--dedupe-window", "DRAIN_DEDUPE_WINDOW", defaults.dedupe_window,
           "drop records whose id this worker wrote in the last N seconds (0: off)",
           at_least(0, " (0 is off)"), type=_seconds)
    option("--max-inflight-bytes", "DRAIN_MAX_INFLIGHT_BYTES", "512MiB",
           "bodies being received at once, per worker, before answering 503", above_zero,
           type=parse_size)
    option("--max-connections", "DRAIN_MAX_CONNECTIONS", defaults.max_connections,
           "open connections per worker before answering 503", at_least(1), type=_int)
    option("--header-timeout", "DRAIN_HEADER_TIMEOUT", defaults.header_timeout,
           "seconds a connection gets to send a request's headers before it is closed",
           above_zero, type=_seconds)
    option("--body-timeout", "DRAIN_BODY_TIMEOUT", defaults.body_timeout,
           "seconds a request gets to send its body before a 408", above_zero, type=_seconds)
    option("--log-level", "DRAIN_LOG_LEVEL", defaults.log_level,
           f"level of the service's own logs on stderr ({', '.join(LOG_LEVELS)})",
           one_of(LOG_LEVELS), type=str.lower)
    option("--log-format", "DRAIN_LOG_FORMAT", defaults.log_format,
           f"the service's own logs as {' or '.join(LOG_FORMATS)} (JSON objects)",
           one_of(LOG_FORMATS), type=str.lower)
    option("--access-log", "DRAIN_ACCESS_LOG", "false", "log every request on stderr",
           type=parse_bool, nargs="?", const=True)
    option("--shutdown-timeout", "DRAIN_SHUTDOWN_TIMEOUT", defaults.shutdown_timeout,
           "seconds to let in-flight deliveries finish after SIGTERM", above_zero, type=_seconds)
    option("--umask", "DRAIN_UMASK", f"{defaults.umask:03o}",
           "umask for the files and directories the receiver creates (027: files 0640); "
           "the secret file is always 0600", umask_bits, type=parse_umask)
    option("--ui", "DRAIN_UI", "false", "also serve the search page over --dir on its own listener "
           "(drain-receiver ui; DRAIN_UI_HOST, DRAIN_UI_PORT, default 127.0.0.1:8081)",
           type=parse_bool, nargs="?", const=True)
    option("--archive", "DRAIN_ARCHIVE", "",
           "upload the file sink's finished files to s3://BUCKET/PREFIX, then delete them here "
           "(credentials and region from the standard AWS chain)", type=_archive_url)
    option("--archive-endpoint", "DRAIN_ARCHIVE_ENDPOINT", "",
           "URL of an S3-compatible store for --archive (R2, MinIO, GCS...; default: AWS S3)")
    option("--archive-host", "DRAIN_ARCHIVE_HOST", "",
           "this replica's name in archive object keys (default: the host or pod name)")
    option("--archive-timeout", "DRAIN_ARCHIVE_TIMEOUT", "60s",
           "give up on a request to the store that has not answered in this long (e.g. 30s), "
           "and retry it", above_zero, type=parse_duration)
    option("--rotate-every", "DRAIN_ROTATE_EVERY", None,
           "rotate an active file holding data once it is this old (e.g. 5m; 0: off) "
           "(unset: 5m with --archive, else off)", type=parse_duration)
    option("--spool-max-bytes", "DRAIN_SPOOL_MAX_BYTES", "0",
           "with --archive, answer 503 (and /readyz unready) while finished files waiting for "
           "upload hold more than this (0: no limit)", type=parse_size)
    parser.set_defaults(_checks=checks)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, epilog: str = ""
) -> Settings:
    """Settings from the command line, then the environment, then the defaults."""
    env = os.environ if env is None else env
    parser = build_parser(env, epilog)
    args = parser.parse_args(argv)
    try:
        sinks = parse_sinks(getattr(args, "sink", None) or [env.get("DRAIN_SINK") or "stdout"])
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    invalid = [value for value in vars(args).values() if isinstance(value, InvalidEnvironmentValue)]
    if invalid:
        parser.error(invalid[0].message)
    for flag, variable, dest, check in args._checks:
        problem = check(getattr(args, dest))
        if problem:
            parser.error(f"{flag} (env {variable}) {problem}")
    if args.archive and "file" not in sinks:
        parser.error("--archive (env DRAIN_ARCHIVE) uploads the file sink's files: add --sink file")
    rotate_every = args.rotate_every
    if rotate_every is None:
        rotate_every = ARCHIVE_ROTATE_EVERY if args.archive else 0.0
    return Settings(
        host=args.host,
        port=args.port,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        umask=args.umask,
        sinks=sinks,
        dir=Path(args.dir),
        path_template=args.path_template,
        max_body_bytes=args.max_body_bytes,
        max_decompressed_bytes=args.max_decompressed_bytes,
        fsync=args.fsync,
        max_file_bytes=args.max_file_bytes,
        keep_days=args.keep_days,
        workers=args.workers,
        dedupe_window=args.dedupe_window,
        max_inflight_bytes=args.max_inflight_bytes,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
        shutdown_timeout=args.shutdown_timeout,
        secrets=tuple(s.strip() for s in env.get("DRAIN_SECRET", "").split(",") if s.strip()),
        secret_file=secret_path_from_env(env),
        verify_token=env.get("DRAIN_VERIFY_TOKEN", "").strip() or None,
        verify_file=verify_path_from_env(env),
        ui=args.ui,
        archive=args.archive,
        archive_endpoint=args.archive_endpoint,
        archive_host=args.archive_host,
        archive_timeout=args.archive_timeout,
        rotate_every=rotate_every,
        spool_max_bytes=args.spool_max_bytes,
    )


def settings_to_environment(settings: Settings) -> str:
    """The settings as one string, for worker processes started by `--workers`."""
    return json.dumps({k: v if not isinstance(v, Path) else str(v)
                       for k, v in dataclasses.asdict(settings).items()})


def settings_from_environment(env: Mapping[str, str] | None = None) -> Settings:
    raw = json.loads((os.environ if env is None else env)[WORKER_SETTINGS_ENV])
    for field in dataclasses.fields(Settings):
        value = raw.get(field.name)
        if value is not None and field.name in ("dir", "secret_file", "verify_file", "stdout_lock"):
            raw[field.name] = Path(value)
        elif isinstance(value, list):
            raw[field.name] = tuple(value)
    return Settings(**raw)
