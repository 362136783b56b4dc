"""`drain-receiver send-test`: one signed sample record to a running receiver, and where it went."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import orjson

from receiver.protocol import SIGNATURE_HEADER, signature
from receiver.secret_file import read_secrets
from receiver.settings import Settings, load_settings
from receiver.sinks.files import safe_component

EXIT_FAILED = 1
EXIT_USAGE = 2
SAMPLE_PROJECT = "prj_drainreceiversendtest"
SAMPLE_SOURCE = "lambda"
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def sample_record(now: float) -> dict[str, object]:
    """A log record shaped like a Vercel lambda log line, with an id of its own."""
    millis = int(now * 1000)
    return {
        "id": str(time.time_ns()),
        "message": "drain-receiver send-test: this record was sent by hand, not by Vercel",
        "timestamp": millis,
        "type": "stdout",
        "source": SAMPLE_SOURCE,
        "projectId": SAMPLE_PROJECT,
        "projectName": "send-test",
        "deploymentId": "dpl_drainreceiversendtest",
        "host": "send-test.vercel.app",
        "path": "/api/send-test",
        "entrypoint": "api/send-test.js",
        "requestId": f"sendtest-{millis}",
        "executionRegion": "iad1",
        "environment": "production",
        "level": "info",
        "statusCode": 200,
        "proxy": {
            "timestamp": millis,
            "method": "GET",
            "host": "send-test.vercel.app",
            "path": "/api/send-test",
            "userAgent": ["drain-receiver-send-test"],
            "region": "iad1",
            "statusCode": 200,
        },
    }


def default_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/"


def choose_secret(settings: Settings, secret_file: Path | None) -> tuple[str | None, str]:
    """The secret to sign with, and where it came from (for messages)."""
    if secret_file is None and settings.secrets:
        return settings.secrets[0], "DRAIN_SECRET"
    path = secret_file or settings.secret_file
    secrets = read_secrets(path)
    return (secrets[0] if secrets else None), str(path.absolute())


def where_it_lands(settings: Settings, record: Mapping[str, object], now: float) -> list[str]:
    """Where a receiver with these settings writes the record."""
    places = []
    for sink in settings.sinks:
        if sink == "file":
            partition = settings.path_template.format(
                date=time.strftime("%Y-%m-%d", time.gmtime(now)),
                projectId=safe_component(record["projectId"]),
                source=safe_component(record["source"]),
            )
            places.append(f"file sink: {settings.dir.absolute() / partition}/logs*.ndjson")
        else:
            places.append("stdout of the receiver process")
    return places


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drain-receiver send-test",
        description="Send one signed sample log record to a running receiver, print its answer "
        "and where the record should have landed. Reads the same DRAIN_* variables as the "
        "receiver (secret, port, sinks, --dir).",
    )
    parser.add_argument("--url", help="the receiver's drain URL (default: http://127.0.0.1:PORT/ "
                        "from PORT)")
    parser.add_argument("--secret-file", type=Path,
                        help="sign with the first secret in this file (default: DRAIN_SECRET, "
                        "else DRAIN_SECRET_FILE)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Send one signed sample record to a running receiver and print where it landed."""
    args = build_parser().parse_args(argv)
    settings = load_settings([], os.environ)
    secret, secret_source = choose_secret(settings, args.secret_file)
    if secret is None:
        return _fail(f"no secret in {secret_source}: give --secret-file with the receiver's "
                     "secret file, or set DRAIN_SECRET", EXIT_USAGE)
    url = args.url or default_url(settings)
    now = time.time()
    record = sample_record(now)
    body = orjson.dumps(record) + b"\n"
    try:
        response = httpx.post(url, content=body, timeout=10, headers={
            "content-type": "application/x-ndjson", SIGNATURE_HEADER: signature(body, secret.encode())})
    except httpx.ConnectError as error:
        return _fail(f"cannot connect to {url}: {error}; is the receiver running there? "
                     "(start it with `drain-receiver`, or give --url)")
    except httpx.HTTPError as error:
        return _fail(f"no answer from {url}: {error}")
    print(f"{url} answered {response.status_code}: {response.text.strip()}")
    if response.status_code == 403:
        return _fail(f"the receiver refused the signature made with the secret from "
                     f"{secret_source}: give --secret-file or DRAIN_SECRET as the receiver has them")
    if response.status_code != 200:
        return _fail(f"the record was not accepted ({response.status_code}); see the answer above "
                     "and the receiver's log")
    print(f"record id {record['id']} should now be in:")
    for place in where_it_lands(settings, record, now):
        print(f"  {place}")
    return 0


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"drain-receiver send-test: {message}", file=sys.stderr)
    return code
