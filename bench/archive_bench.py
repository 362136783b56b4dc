"""The archive under full load: one receiver worker with --archive to moto's S3 server on loopback.

    flock /tmp/bench.lock python bench/archive_bench.py --seconds 120

wrk (bench/drain.lua, 100-record NDJSON batches) drives the receiver as fast as it takes them,
on the last core; the receiver runs on core 0, and moto.server beside wrk. While it runs, a
sampler lists the bucket every 0.5 s (when each object first became listable), counts the
finished files waiting on disk, and posts one marker record a second, noting its 200.

Reported: upload throughput (MB/s and objects/s of what the bucket received), the receiver's
CPU split by thread (the uploader thread "archive", the file sink's compressor "file-sink", the
event loop, and threads that exited meanwhile: the SDK's multipart workers), moto's CPU, the lag
from a marker's 200 to its object being listable (a marker is in the first file of its stream
that the sink cut after its 200: the rotation stamp in the key says when), and whether the
waiting files grow over the run (first third against last third).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import gen  # noqa: E402
import harness  # noqa: E402
import procstat  # noqa: E402

from receiver.archive.keys import is_finished  # noqa: E402

BUCKET = "bench-archive"
ROTATED = re.compile(r"-\d{8}T\d{6}\.\d{6}Z(?:-\d+)?\.ndjson$")
STAMP = re.compile(r"-w\d+-(\d{8}T\d{6}\.\d{6})Z(?:-\d+)?\.ndjson\.gz$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stamp_time(key: str) -> float | None:
    match = STAMP.search(key)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC).timestamp()


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of `pid`, by its Linux thread id."""
    found: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        found[int(tid)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by Linux thread id, from `py-spy dump` (empty if it cannot attach)."""
    try:
        out = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for match in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \((?:\w+)\): "([^"]*)"', out, re.M):
        names[int(match.group(1), 0)] = match.group(2)
    return names


@dataclass
class Samples:
    first_listed: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    # time, finished files waiting, their bytes, rotated files waiting for compression
    waiting: list[tuple[float, int, int, int]] = field(default_factory=list)
    markers: list[tuple[float, str]] = field(default_factory=list)  # 200 time, id
    marker_errors: int = 0
    list_errors: int = 0


def sample(s3: object, data: Path, port: int, samples: Samples, stop: threading.Event) -> None:
    client = httpx.Client(timeout=30)
    next_marker = time.time()
    while not stop.is_set():
        now = time.time()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):  # type: ignore[attr-defined]
                for item in page.get("Contents", []):
                    samples.first_listed.setdefault(item["Key"], now)
                    samples.sizes[item["Key"]] = item["Size"]
        except Exception:  # a listing moto could not answer: the next one catches up
            samples.list_errors += 1
        files = total = rotated = 0
        for directory, _, names in os.walk(data):
            for name in names:
                rotated += ROTATED.search(name) is not None
                if is_finished(name):
                    try:
                        total += os.stat(os.path.join(directory, name)).st_size
                        files += 1
                    except FileNotFoundError:
                        pass
        samples.waiting.append((now, files, total, rotated))
        if now >= next_marker:
            marker = f"marker-{uuid.uuid4().hex}"
            body = json.dumps({"id": marker, "timestamp": int(now * 1000), "message": marker,
                               "source": "lambda", "level": "info"}).encode() + b"\n"
            try:
                status = client.post(f"http://127.0.0.1:{port}/", content=body, headers={
                    "x-vercel-signature": gen.sign(body), "content-type": "application/x-ndjson"}).status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                samples.markers.append((time.time(), marker))
            else:
                samples.marker_errors += 1
            next_marker = now + 1.0
        stop.wait(max(0.0, 0.5 - (time.time() - now)))


def marker_lags(samples: Samples) -> list[float]:
    """Seconds from each marker's 200 to the first listing of the object holding it."""
    cuts = sorted((t, key) for key in samples.first_listed if (t := stamp_time(key)) is not None)
    lags = []
    for acked, _ in samples.markers:
        later = [key for cut, key in cuts if cut >= acked]
        if later:
            lags.append(samples.first_listed[later[0]] - acked)
    return lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(seconds: float, work: Path, receiver_args: list[str], connections: int,
        server_cpus: str) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "data", ignore_errors=True)
    set_dir = gen.build_set(gen.BodySpec("ndjson", 100, 256, False), work / "sets")
    moto_port, port = harness.free_port(), harness.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRAIN_", "AWS_"))}
    env |= {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(work / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), "PYTHONUNBUFFERED": "1"}
    moto = subprocess.Popen(["taskset", "-c", harness.LOAD_CPUS, sys.executable, "-m", "moto.server",
                             "-H", "127.0.0.1", "-p", str(moto_port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{moto_port}"
    data = work / "data"
    receiver = None
    try:
        for _ in range(200):
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
        s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket=BUCKET)
        stderr = (work / "receiver.log").open("wb")
        receiver = subprocess.Popen(
            ["taskset", "-c", server_cpus, sys.executable, "-m", "receiver", "--host", "127.0.0.1",
             "--port", str(port), "--sink", "file", "--dir", str(data), "--archive", f"s3://{BUCKET}/bench",
             "--archive-endpoint", endpoint, "--archive-host", "bench", *receiver_args],
            env={**env, "DRAIN_SECRET": gen.BENCH_SECRET, "DRAIN_SECRET_FILE": str(work / "secret")},
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=BENCH_DIR.parent)
        if not harness.wait_ready(port, receiver):
            raise RuntimeError((work / "receiver.log").read_text())
        samples = Samples()
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(s3, data, port, samples, stop), daemon=True)
        cpu0, moto0 = procstat.cpu_seconds(receiver.pid), procstat.cpu_seconds(moto.pid)
        threads0 = thread_cpu(receiver.pid)
        started = time.time()
        sampler.start()
        wrk, _, _ = harness.run_wrk(f"http://127.0.0.1:{port}/", set_dir, seconds, connections,
                                           latency=True)
        load_end = time.time()
        cpu1, moto1 = procstat.cpu_seconds(receiver.pid), procstat.cpu_seconds(moto.pid)
        threads1 = thread_cpu(receiver.pid)
        names = thread_names(receiver.pid)
        # after the load: until every rotated file is compressed and uploaded (the active file
        # waits for --rotate-every), at most 240 s
        time.sleep(1.0)
        deadline = time.time() + 240
        while time.time() < deadline and (samples.waiting[-1][1] or samples.waiting[-1][3]):
            time.sleep(0.5)
        drained = time.time() - load_end
        stop.set()
        sampler.join(10)
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(60)
        moto.terminate()
        moto.wait(30)
    duration = load_end - started
    in_load = {k: t for k, t in samples.first_listed.items() if t <= load_end}
    uploaded = sum(samples.sizes[k] for k in in_load)
    load_waiting = [w for w in samples.waiting if w[0] <= load_end]
    first, last = load_waiting[: len(load_waiting) // 3], load_waiting[2 * len(load_waiting) // 3:]
    by_thread: dict[str, float] = {}
    for tid, cpu in threads1.items():
        name = names.get(tid, "?")
        by_thread[name] = by_thread.get(name, 0.0) + cpu - threads0.get(tid, 0.0)
    by_thread["(threads that exited)"] = (cpu1 - cpu0) - sum(by_thread.values())
    lags = marker_lags(samples)
    records = sum(n for status, n in wrk.statuses.items() if status == 200) * 100
    return {
        "seconds": round(duration, 1),
        "receiver_args": receiver_args,
        "server_cpus": server_cpus,
        "records_per_s": round(records / duration),
        "statuses": wrk.statuses,
        "objects_listed_during_load": len(in_load),
        "upload_mb_per_s": round(uploaded / duration / 1e6, 2),
        "objects_per_s": round(len(in_load) / duration, 2),
        "mean_object_mb": round(uploaded / max(1, len(in_load)) / 1e6, 1),
        "receiver_cpu_pct": round(100 * (cpu1 - cpu0) / duration, 1),
        "receiver_cpu_pct_by_thread": {k: round(100 * v / duration, 1) for k, v in sorted(by_thread.items())},
        "moto_cpu_pct": round(100 * (moto1 - moto0) / duration, 1),
        "marker_lag_s": {"n": len(lags), "of": len(samples.markers), "p50": round(percentile(lags, 0.5), 2),
                         "p99": round(percentile(lags, 0.99), 2), "max": round(max(lags, default=0), 2)},
        "marker_errors": samples.marker_errors,
        "list_errors": samples.list_errors,
        "waiting_files_first_third_mean": round(statistics.fmean(w[1] for w in first), 2) if first else None,
        "waiting_files_last_third_mean": round(statistics.fmean(w[1] for w in last), 2) if last else None,
        "waiting_files_max": max((w[1] for w in load_waiting), default=0),
        "waiting_mb_max": round(max((w[2] for w in load_waiting), default=0) / 1e6, 1),
        "to_compress_first_third_mean": round(statistics.fmean(w[3] for w in first), 2) if first else None,
        "to_compress_last_third_mean": round(statistics.fmean(w[3] for w in last), 2) if last else None,
        "objects_total": len(samples.first_listed),
        "uploaded_mb_total": round(sum(samples.sizes.values()) / 1e6, 1),
        "drained_after_load_s": round(drained, 1),
        "loadavg_end": Path("/proc/loadavg").read_text().split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("/tmp/archive-bench"))
    parser.add_argument("--server-cpus", default=harness.SERVER_CPUS,
                        help=f"the receiver's cores (default {harness.SERVER_CPUS}; wrk and moto on "
                        f"{harness.LOAD_CPUS})")
    parser.add_argument("receiver_args", nargs="*", help="extra receiver flags (after --)")
    args = parser.parse_args()
    result = run(args.seconds, args.work, args.receiver_args, args.connections, args.server_cpus)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
