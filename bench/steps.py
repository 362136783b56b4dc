"""Where a delivery's microseconds go: each step of the receiver next to the primitive it rests on.

    python bench/steps.py                        # 100-record NDJSON batches, ~1 min
    python bench/steps.py --format array --http-seconds 0

In-process, on the bench's own bodies, every step is timed alone in CPU time (`process_time`,
so time taken by other processes on a shared machine is not counted), median of `--rounds`:
the primitives (HMAC-SHA1 of the body, simdjson's check of each line, one `os.write` of the
body to a file) and the receiver's own functions (`verified_payload`, `split_records`,
`streams_of`, the file sink's `write`, the whole delivery through the ASGI app with a fake
server). Then, unless `--http-seconds 0`, the null app and the receiver run under wrk like
`ab.py` does, and their time per request (1 / requests per second, one core) is printed:
null = uvicorn's HTTP for a body that size, receiver - null = the receiver's share.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import io
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gen
import harness
import simdjson
from run import body_spec

from receiver import decode, delivery, streams
from receiver.app import create_app
from receiver.settings import load_settings
from receiver.sinks.files import FileSink


def timed(step: Callable[[bytes], object], bodies: list[bytes], rounds: int) -> float:
    """Median over rounds of the CPU microseconds `step` takes per body."""
    per_body = []
    for _ in range(rounds):
        started = time.process_time()
        for body in bodies:
            step(body)
        per_body.append((time.process_time() - started) / len(bodies) * 1e6)
    return statistics.median(per_body)


def primitives(bodies: list[bytes], rounds: int, scratch: Path) -> dict[str, float]:
    secret = gen.BENCH_SECRET.encode()
    parser = simdjson.Parser()
    fd = os.open(scratch / "primitive.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return {
            "HMAC-SHA1 of the body (hmac.new + hexdigest)":
                timed(lambda b: hmac.new(secret, b, hashlib.sha1).hexdigest(), bodies, rounds),
            "simdjson parse of each line (readlines + parse)":
                timed(lambda b: deque(map(parser.parse, io.BytesIO(b).readlines()), maxlen=0),
                      bodies, rounds),
            "one os.write of the body (O_APPEND file)": timed(lambda b: os.write(fd, b), bodies, rounds),
        }
    finally:
        os.close(fd)


def receiver_steps(bodies: list[bytes], rounds: int, scratch: Path) -> dict[str, float]:
    secret = gen.BENCH_SECRET.encode()
    signed = {body: hmac.new(secret, body, hashlib.sha1).hexdigest() for body in bodies}
    batches = {body: decode.split_records(body) for body in bodies}
    sink = FileSink(scratch / "sink")
    sink.start()
    try:
        return {
            "verified_payload (HMAC, constant-time compare)":
                timed(lambda b: delivery.verified_payload(b, signed[b], False, [secret], 1 << 30),
                      bodies, rounds),
            "split_records (JSON + UTF-8 check, records list)": timed(decode.split_records, bodies, rounds),
            "streams_of (schema search)": timed(lambda b: streams.streams_of(b, batches[b].records),
                                                bodies, rounds),
            "FileSink.write (partition, write, size gauge)": timed(lambda b: sink.write(batches[b]),
                                                                   bodies, rounds),
        }
    finally:
        sink.close()


def whole_delivery(bodies: list[bytes], rounds: int, scratch: Path, content_type: bytes) -> float:
    """The receiver's ASGI app per delivery, with a fake server: everything but HTTP."""
    os.environ["DRAIN_SECRET"] = gen.BENCH_SECRET
    os.environ["DRAIN_SECRET_FILE"] = str(scratch / "no-secret-file")
    app = create_app(load_settings(["--sink", "file", "--dir", str(scratch / "app"),
                                   "--max-file-bytes", "64GiB"]))  # no rotation: no compressor thread
    secret = gen.BENCH_SECRET.encode()
    requests = []
    for body in bodies:
        headers = [(b"host", b"bench"), (b"content-type", content_type),
                   (b"content-length", b"%d" % len(body)),
                   (b"x-vercel-signature", hmac.new(secret, body, hashlib.sha1).hexdigest().encode())]
        requests.append(({"type": "http", "method": "POST", "path": "/", "headers": headers,
                          "client": ("127.0.0.1", 1)}, body))

    async def run() -> float:
        lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        lifespan.put_nowait({"type": "lifespan.startup"})

        async def ignore(message: object) -> None:
            return None

        life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       lifespan.get, ignore))
        await asyncio.sleep(0.1)
        statuses: list[int] = []

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))  # type: ignore[call-overload]

        per_body = []
        for _ in range(rounds):
            started = time.process_time()
            for scope, body in requests:
                message = {"type": "http.request", "body": body, "more_body": False}

                async def receive(message: dict[str, object] = message) -> dict[str, object]:
                    return message

                await app(scope, receive, send)
            per_body.append((time.process_time() - started) / len(requests) * 1e6)
        lifespan.put_nowait({"type": "lifespan.shutdown"})
        await life
        assert set(statuses) == {200}, statuses
        return statistics.median(per_body)

    import uvloop

    return uvloop.run(run())


def http_steps(spec: gen.BodySpec, set_dir: Path, work: Path, seconds: float) -> dict[str, float]:
    """Microseconds per request of the null app and the receiver under wrk (16 connections)."""
    found: dict[str, float] = {}
    harness.use_receiver_ref(None, work)
    for target in ("null", "receiver"):
        result = harness.run_one(harness.Scenario(f"steps-{target}", target, spec), set_dir,
                                 work / "steps", seconds, 2, 0, ["--no-access-log"])
        if result.status != "ok":
            raise SystemExit(f"{target} run failed: {result.detail}")
        requests_per_s = result.records_per_s / spec.batch
        found[f"{target} under wrk: per request, one core"] = 1e6 / requests_per_s
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="ndjson", choices=("ndjson", "array"))
    parser.add_argument("--batch", type=int, default=100, choices=(1, 100, 1000))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--http-seconds", type=float, default=6, help="0: skip the wrk runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-bench"))
    args = parser.parse_args()

    spec = body_spec(args.format, args.batch, False)
    set_dir = gen.build_set(spec, args.work / "bodies")
    bodies = [path.read_bytes() for path in sorted(set_dir.glob("body-*.bin"))]
    content_type = b"application/json" if args.format == "array" else b"application/x-ndjson"
    print(f"{len(bodies)} bodies of {args.batch} records, {args.format}, "
          f"mean {statistics.mean(map(len, bodies)):,.0f} bytes; CPU us per body, median of {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="drain-steps-") as scratch_name:
        scratch = Path(scratch_name)
        rows = {**primitives(bodies, args.rounds, scratch), **receiver_steps(bodies, args.rounds, scratch)}
        rows["the whole delivery in-process (ASGI app, fake server)"] = whole_delivery(
            bodies, args.rounds, scratch, content_type)
    if args.http_seconds:
        rows.update(http_steps(spec, set_dir, args.work, args.http_seconds))
    width = max(map(len, rows))
    for name, micros in rows.items():
        print(f"{name:{width}s} {micros:8.1f} us")


if __name__ == "__main__":
    main()
