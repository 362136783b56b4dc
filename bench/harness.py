"""Run one benchmark: start a server pinned to its cores, warm it up, load it with wrk, verify.

The load generator (wrk, one thread) is pinned to the last core and the server to the first,
so they do not fight for one core (except in the `--workers 2` scenario, which needs both).
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gen
import procstat
from verify import Verdict, WrkRun, verify

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA = BENCH_DIR / "drain.lua"
NCPU = os.cpu_count() or 1
SERVER_CPUS = "0"
LOAD_CPUS = str(NCPU - 1)
ALL_CPUS = ",".join(str(i) for i in range(NCPU))
# Where `python -m receiver` runs from (its cwd comes first on sys.path): a clean export of a
# commit by default, so edits in progress in the shared working tree do not leak into numbers.
SOURCE = {"dir": REPO_ROOT, "label": "working tree"}


def use_receiver_ref(ref: str | None, work: Path) -> str:
    """Export `ref`'s receiver/ to `work/src/<sha>` and run it from there; None = working tree."""
    if ref is None:
        SOURCE.update(dir=REPO_ROOT, label="working tree (uncommitted changes included)")
        return str(SOURCE["label"])
    git = ["git", "-C", str(REPO_ROOT)]
    sha = subprocess.run([*git, "rev-parse", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    target = work / "src" / sha[:12]
    if not (target / "receiver").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run([*git, "archive", sha, "receiver"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    subject = subprocess.run([*git, "log", "-1", "--format=%h %s", sha, "--", "receiver"],
                             capture_output=True, text=True).stdout.strip()
    SOURCE.update(dir=target, label=f"{ref} = {sha[:7]}; receiver/ last changed in {subject}")
    return str(SOURCE["label"])


@dataclass
class Scenario:
    name: str
    target: str  # "receiver" | "null" | "naive"
    spec: gen.BodySpec
    connections: int = 16
    receiver_args: tuple[str, ...] = ()
    sink: str = "file"  # "file" | "stdout" (piped through `cat` into a file)
    server_cpus: str = SERVER_CPUS
    duration: float | None = None  # seconds; None = the run's default
    group: str = "main"
    uvicorn_args: tuple[str, ...] = ()  # for the null and naive apps, e.g. ("--http", "h11")


@dataclass
class Result:
    scenario: Scenario
    round: int
    status: str  # "ok" | "FAIL" | "skipped"
    duration_s: float = 0.0
    ok_requests: int = 0
    not_ok: int = 0
    socket_errors: int = 0
    records_per_s: float = 0.0
    wire_mb_per_s: float = 0.0
    raw_mb_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    records_per_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    rss_growth_mb: float = 0.0
    loadavg: str = ""
    verdict: Verdict | None = None
    detail: str = ""
    rss_samples: list[tuple[float, float]] = field(default_factory=list)


def server_command(sc: Scenario, port: int, out_dir: Path, uvicorn_args: list[str]
                   ) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["DRAIN_SECRET"] = gen.BENCH_SECRET
    # Only DRAIN_SECRET: a secret file holding the same secret would make the receiver try it
    # twice. The path is in the run's directory so nothing touches the user's home.
    env["DRAIN_SECRET_FILE"] = str(out_dir / "drain-secret")
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if sc.target == "receiver":
        sink = ["--sink", "file", "--dir", str(out_dir / "data")] if sc.sink == "file" else [
            "--sink", "stdout"]
        return [sys.executable, "-m", "receiver", *host, *sink, *sc.receiver_args], env
    app = {"null": "null_app:app", "naive": "naive_app:app"}[sc.target]
    env["NAIVE_OUT"] = str(out_dir / "data" / "naive.ndjson")
    cmd = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(BENCH_DIR), *host,
           "--log-level", "warning", *uvicorn_args, *sc.uvicorn_args]
    return cmd, env


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run_wrk(url: str, set_dir: Path, seconds: float, connections: int, latency: bool
            ) -> tuple[WrkRun, dict[str, object], str]:
    cmd = ["taskset", "-c", LOAD_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--timeout", "30s", "-s", str(LUA)]
    if latency:
        cmd.append("--latency")
    cmd += [url, "--", str(set_dir), "/"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    data["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    run = WrkRun({int(k): v for k, v in data["statuses"].items()}, data["sent"], data["errors"])
    return run, data, proc.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(sc: Scenario, set_dir: Path, work: Path, seconds: float, warmup: float, rnd: int,
            uvicorn_args: list[str], keep_output: bool = False) -> Result:
    out_dir = work / f"{sc.name}-r{rnd}"
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "data").mkdir(parents=True)
    port = free_port()
    cmd, env = server_command(sc, port, out_dir, uvicorn_args)
    stderr = (out_dir / "stderr.log").open("wb")
    stdout_file = (out_dir / "data" / "stdout.ndjson").open("wb")
    cat = None
    if sc.sink == "stdout" and sc.target == "receiver":
        # A real pipe, as in `drain-receiver --sink stdout | some-collector > file`.
        cat = subprocess.Popen(["taskset", "-c", LOAD_CPUS, "cat"], stdin=subprocess.PIPE,
                               stdout=stdout_file)
        server_stdout = cat.stdin
    else:
        server_stdout = (out_dir / "server-stdout.log").open("wb")
    process = subprocess.Popen(["taskset", "-c", sc.server_cpus, *cmd], cwd=SOURCE["dir"], env=env,
                               stdout=server_stdout, stderr=stderr)
    if cat is not None and cat.stdin is not None:
        cat.stdin.close()  # the server holds the write end now
    result = Result(sc, rnd, "ok")
    sampler: procstat.RssSampler | None = None
    try:
        if not wait_ready(port, process):
            process.kill()
            process.wait()
            err = (out_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
            result.status = "skipped"
            result.detail = f"server did not start (exit {process.returncode}): " + (
                err[-1] if err else "")
            return result
        url = f"http://127.0.0.1:{port}/"
        runs: list[WrkRun] = []
        if warmup > 0:
            runs.append(run_wrk(url, set_dir, warmup, sc.connections, latency=False)[0])
        result.loadavg = Path("/proc/loadavg").read_text().split(" ")[0]
        sampler = procstat.RssSampler(process.pid).start()
        cpu0 = procstat.cpu_seconds(process.pid)
        run, data, _ = run_wrk(url, set_dir, seconds, sc.connections, latency=True)
        cpu1 = procstat.cpu_seconds(process.pid)
        sampler.stop()
        runs.append(run)
    finally:
        if sampler:
            sampler.stop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if cat is not None:
            cat.wait(timeout=60)
        stderr.close()
        stdout_file.close()

    manifest = json.loads((set_dir / "manifest.json").read_text())
    bodies = manifest["bodies"]
    mean_records = sum(len(b["ids"]) for b in bodies) / len(bodies)
    mean_wire = sum(b["wire_bytes"] for b in bodies) / len(bodies)
    mean_raw = sum(b["raw_bytes"] for b in bodies) / len(bodies)
    dur = data["duration_us"] / 1e6
    result.duration_s = dur
    result.ok_requests = run.ok
    result.not_ok = sum(r.not_ok for r in runs)
    result.socket_errors = sum(sum(r.errors.values()) - r.errors.get("status", 0) for r in runs)
    result.records_per_s = run.ok * mean_records / dur
    result.wire_mb_per_s = run.ok * mean_wire / dur / 1e6
    result.raw_mb_per_s = run.ok * mean_raw / dur / 1e6
    result.p50_ms = data["latency_us"]["p50"] / 1000
    result.p99_ms = data["latency_us"]["p99"] / 1000
    result.cpu_pct = (cpu1 - cpu0) / dur * 100
    result.load_cpu_pct = data["cpu_s"] / dur * 100
    result.records_per_cpu_s = run.ok * mean_records / max(cpu1 - cpu0, 1e-3)
    result.peak_rss_mb = sampler.peak
    result.rss_growth_mb = sampler.growth()
    result.rss_samples = sampler.samples

    problems = []
    if result.not_ok:
        statuses = {k: v for r in runs for k, v in r.statuses.items() if k != 200}
        problems.append(f"non-200 responses: {statuses}")
    if result.socket_errors:
        problems.append(f"socket errors: {[r.errors for r in runs]}")
    if sc.target != "null":
        outputs = [out_dir / "data"]
        result.verdict = verify(set_dir, outputs, runs)
        problems.extend(result.verdict.problems)
        result.detail = result.verdict.summary()
    if problems:
        result.status = "FAIL"
        result.detail = "; ".join(problems) + (f" [{result.detail}]" if result.detail else "")
    if problems:
        result.detail += f" (output kept in {out_dir})"
    elif not keep_output:
        shutil.rmtree(out_dir / "data", ignore_errors=True)
    return result
