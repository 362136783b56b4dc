"""Every setting of the receiver: a flag, an environment variable and a default, in one table."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from receiver.secret_file import (
    SECRET_FILE_ENV,
    VERIFY_FILE_ENV,
    secret_path_from_env,
    verify_path_from_env,
)
from receiver.sinks.files import check_template

SINK_NAMES = ("stdout", "file")
MIB = 1024 * 1024
SIZE_UNITS = {"": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MIB, "mb": 1000**2, "mib": MIB,
              "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    sinks: tuple[str, ...] = ("stdout",)
    dir: Path = Path("drain-data")
    path_template: str = "{date}"
    max_body_bytes: int = 32 * MIB
    max_decompressed_bytes: int = 256 * MIB
    fsync: bool = False
    max_file_bytes: int = 128 * MIB
    keep_days: int = 0
    log_level: str = "info"
    access_log: bool = False
    shutdown_timeout: float = 25.0
    secrets: tuple[str, ...] = ()
    secret_file: Path = Path("drain-secret")
    verify_token: str | None = None
    verify_file: Path = Path("drain-verify")


def parse_size(text: str) -> int:
    """`1048576`, `512k`, `32MiB`, `1GB` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1048576, 512KiB, 32MiB)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


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


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line; each option's default comes from its environment variable."""
    parser = argparse.ArgumentParser(
        prog="drain-receiver",
        description="Receive Vercel log drain deliveries, verify their signature and write "
        "every record to stdout or to rotating NDJSON files.",
        epilog=f"Secrets: DRAIN_SECRET (comma-separated) and/or {SECRET_FILE_ENV} (one a line, "
        "re-read on change; created with a generated secret when no secret exists). "
        f"x-vercel-verify: DRAIN_VERIFY_TOKEN, or {VERIFY_FILE_ENV} (re-read on change).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = Settings()

    def option(flag: str, variable: str, default: object, help: str, **kwargs: object) -> None:
        raw = env.get(variable)
        parser.add_argument(
            flag,
            default=raw if raw is not None else default,
            help=f"{help} [env {variable}]",
            **kwargs,  # type: ignore[arg-type]
        )

    option("--host", "HOST", defaults.host, "address to listen on")
    option("--port", "PORT", defaults.port, "port to listen on", type=int)
    parser.add_argument("--sink", action="append", default=argparse.SUPPRESS,
                        help="where records go: stdout, file, or both (repeat or comma-separate) "
                        f"[env DRAIN_SINK] (default: {env.get('DRAIN_SINK') or 'stdout'})")
    option("--dir", "DRAIN_DIR", str(defaults.dir), "root directory of the file sink")
    option("--path-template", "DRAIN_PATH_TEMPLATE", defaults.path_template,
           "file sink partition under --dir, from {date} (UTC), {projectId}, {source}",
           type=_template)
    option("--max-body-bytes", "DRAIN_MAX_BODY_BYTES", "32MiB",
           "largest request body accepted, as sent (413 above)", type=parse_size)
    option("--max-decompressed-bytes", "DRAIN_MAX_DECOMPRESSED_BYTES",
           "256MiB", "largest body after gzip decompression (413 "
           "above)", type=parse_size)
    option("--fsync", "DRAIN_FSYNC", "false", "fsync written files before acknowledging",
           type=parse_bool, nargs="?", const="true")
    option("--max-file-bytes", "DRAIN_MAX_FILE_BYTES", "128MiB",
           "rotate an active file before it grows past this size", type=parse_size)
    option("--keep-days", "DRAIN_KEEP_DAYS", defaults.keep_days,
           "delete rotated files older than this many days (0 keeps everything)", type=int)
    option("--log-level", "DRAIN_LOG_LEVEL", defaults.log_level,
           "level of the service's own logs on stderr",
           choices=("debug", "info", "warning", "error"))
    option("--access-log", "DRAIN_ACCESS_LOG", "false", "log every request on stderr",
           type=parse_bool, nargs="?", const="true")
    option("--shutdown-timeout", "DRAIN_SHUTDOWN_TIMEOUT", defaults.shutdown_timeout,
           "seconds to let in-flight deliveries finish after SIGTERM", type=float)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the command line, then the environment, then the defaults."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    try:
        sinks = parse_sinks(getattr(args, "sink", None) or [env.get("DRAIN_SINK") or "stdout"])
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    for name in ("fsync", "access_log"):
        if isinstance(getattr(args, name), str):
            setattr(args, name, parse_bool(getattr(args, name)))
    return Settings(
        host=args.host,
        port=args.port,
        sinks=sinks,
        dir=Path(args.dir),
        path_template=args.path_template,
        max_body_bytes=args.max_body_bytes,
        max_decompressed_bytes=args.max_decompressed_bytes,
        fsync=args.fsync,
        max_file_bytes=args.max_file_bytes,
        keep_days=args.keep_days,
        log_level=args.log_level,
        access_log=args.access_log,
        shutdown_timeout=args.shutdown_timeout,
        secrets=tuple(s.strip() for s in env.get("DRAIN_SECRET", "").split(",") if s.strip()),
        secret_file=secret_path_from_env(env),
        verify_token=env.get("DRAIN_VERIFY_TOKEN", "").strip() or None,
        verify_file=verify_path_from_env(env),
    )
