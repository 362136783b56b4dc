"""How fast `drain-receiver search`, `stats` and `--follow` are over one busy day.

Writes `--records` realistic records (gen.py) spread over the last 24 h through a real
receiver (`--sink file`, gzip rotation at its default 128 MiB) into `--work`/data, waits for
compression, then times the issue's questions, each the median of `--reps` runs:

- field filters: one project, level=error, last hour       (target < 1 s at 10 M records)
- text search over the whole day                           (target < 5 s)
- the 24 h histogram (stats)                               (target < 2 s)
- --follow: a new record printed after its 200             (target < 1 s)

plus the disk used per million records. The full run (`--records 10000000`) takes about an
hour and ~9 GB; do it on an otherwise idle machine.

    python bench/search_bench.py --records 200000 --work /tmp/drain-search-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import BENCH_SECRET, RecordFactory, dump_record, sign

REPO = Path(__file__).resolve().parent.parent
BATCH = 1000


def receiver(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRAIN_")},
           "DRAIN_SECRET": BENCH_SECRET, "DRAIN_SECRET_FILE": str(data.parent / "secret")}
    process = subprocess.Popen([sys.executable, "-m", "receiver", "--sink", "file", "--dir", str(data),
                                "--host", "127.0.0.1", "--port", str(port)], cwd=REPO, env=env,
                               stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the receiver did not start")


def post(client: httpx.Client, port: int, lines: list[bytes]) -> None:
    body = b"\n".join(lines) + b"\n"
    response = client.post(f"http://127.0.0.1:{port}/", content=body, headers={
        "content-type": "application/x-ndjson", "x-vercel-signature": sign(body)})
    response.raise_for_status()


def write_day(data: Path, records: int, port: int) -> str:
    """`records` records over the last 24 h, through a receiver; returns one projectId."""
    factory = RecordFactory(20261202)
    now = int(time.time() * 1000)
    step = 86_400_000 / records
    process = receiver(data, port)
    started = time.monotonic()
    try:
        with httpx.Client(timeout=60) as client:
            for start in range(0, records, BATCH):
                batch = []
                for index in range(start, min(records, start + BATCH)):
                    record = factory.record()
                    record["timestamp"] = int(now - 86_400_000 + index * step)
                    batch.append(dump_record(record))
                post(client, port, batch)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    print(f"wrote {records} records in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return f"prj_{factory.projects[0]}"


def timed(args: list[str], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "receiver", *args], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def follow_latency(data: Path, port: int, reps: int) -> float:
    process = receiver(data, port)
    branch = f"bench-follow-{time.time_ns()}"  # not one of an earlier run's (--keep)
    follower = subprocess.Popen([sys.executable, "-m", "receiver", "search", "--dir", str(data),
                                 "--follow", "--format", "ndjson", "--branch", branch,
                                 "--limit", "1"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    latencies = []
    try:
        follower.stderr.readline()  # type: ignore[union-attr]
        with httpx.Client(timeout=60) as client:
            for n in range(reps):
                record = RecordFactory(n).record()
                record.update(branch=branch, timestamp=int(time.time() * 1000))
                post(client, port, [dump_record(record)])
                acknowledged = time.monotonic()
                json.loads(follower.stdout.readline())  # type: ignore[union-attr]
                latencies.append(time.monotonic() - acknowledged)
    finally:
        follower.terminate()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-search-bench"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=18099)
    parser.add_argument("--keep", action="store_true", help="reuse the data written by an earlier run")
    args = parser.parse_args()
    data = args.work / "data"
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    if not args.keep:
        (args.work / "project").write_text(write_day(data, args.records, args.port))
    project = (args.work / "project").read_text()
    disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    d = str(data)
    results = {
        "field filters (project, level=error, last 1 h)":
            timed(["search", "--dir", d, "--project", project, "--level", "error", "--since", "1h"],
                  args.reps),
        "text search, whole day": timed(["search", "--dir", d, "ECONNREFUSED", "--limit", "100"], args.reps),
        "24 h histogram (stats)": timed(["stats", "--dir", d, "--since", "24h"], args.reps),
        "--follow: record printed after its 200": follow_latency(data, args.port, 5),
    }
    print(f"{args.records} records, {disk / 1e6:.0f} MB on disk "
          f"({disk / 1e6 / (args.records / 1e6):.0f} MB per million records)")
    for name, seconds in results.items():
        print(f"{name:<45} {seconds:6.2f} s (median, including process start)")


if __name__ == "__main__":
    main()
