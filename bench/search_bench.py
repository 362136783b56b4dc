"""How fast `drain-receiver search`, `stats`, `--follow` and the page are over one busy day.

Writes `--records` realistic records (gen.py) spread over 24 h through a real receiver
(`--sink file`, gzip rotation at its default 128 MiB) into `--work`/data, waits for
compression, then times the issue's questions twice, over the gzip NDJSON alone and after
`drain-receiver compact` has given every .gz its Parquet twin:

- field filters: one project, level=error, the data's last hour   (target < 1 s at 10 M records)
- text search over the whole day                                  (target < 5 s)
- the 24 h histogram (stats)                                      (target < 2 s)
- the page's first results after a search, in chromium            (target < 1.5 s)
- --follow: a new record printed after its 200                    (target < 1 s)

plus the compaction's time, the disk used per million records, and the receiver's ingest rate
(into a scratch --dir) alone and while text searches run. Times are medians of `--reps` runs
(`--reps-gzip` over gzip alone), each a whole `drain-receiver` process. The full run
(`--records 10000000`) writes ~2 GB of .gz in ~16 min, then measures for ~20 min.

`--phases` picks the steps (write, gzip, gzip-page, compact, twins, ingest; all by default,
write only without `--keep`), so a long run can be split and re-timed over the same data;
`--resume` skips the numbers results.json already holds. With `--lock`, each timed phase (and
only those: not the writing, not the compaction) holds that file's flock, as `flock FILE` would,
so measurements on a shared machine do not overlap.

    python bench/search_bench.py --records 200000 --work /tmp/drain-search-bench
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import BENCH_SECRET, RecordFactory, dump_record, sign

REPO = Path(__file__).resolve().parent.parent
BATCH = 1000
PHASES = ("write", "gzip", "gzip-page", "compact", "twins", "ingest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def locked(path: Path | None, what: str) -> Iterator[None]:
    """Hold `path`'s flock (shared with `flock(1)`) for one timed step; nothing without a path."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        waited = time.monotonic()
        fcntl.flock(handle, fcntl.LOCK_EX)
        print(f"{what}: lock taken after {time.monotonic() - waited:.0f} s, load average "
              f"{os.getloadavg()}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def questions(d: str, project: str, end_ms: int) -> dict[str, list[str]]:
    hour, day = str(end_ms - 3_600_000), str(end_ms - 86_400_000)
    return {
        "field filters (project, level=error, last 1 h)":
            ["search", "--dir", d, "--project", project, "--level", "error", "--since", hour],
        "text search, whole day": ["search", "--dir", d, "ECONNREFUSED", "--limit", "100"],
        "24 h histogram (stats)": ["stats", "--dir", d, "--since", day, "--until", str(end_ms)],
    }


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


def ingest_rate(scratch: Path, port: int, seconds: float, search: list[str] | None) -> float:
    """Records/s a fresh receiver (into `scratch`) acknowledges from one client posting
    pre-made 1000-record bodies for `seconds`, with `search` run in a loop meanwhile."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    factory = RecordFactory(4242)
    bodies = [[dump_record(factory.record()) for _ in range(BATCH)] for _ in range(20)]
    process = receiver(scratch, port)
    searcher = None
    if search:
        searcher = subprocess.Popen(["sh", "-c", 'while :; do "$@" >/dev/null; done', "loop",
                                     sys.executable, "-m", "receiver", *search], cwd=REPO,
                                    start_new_session=True)
    sent = 0
    try:
        with httpx.Client(timeout=60) as client:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                post(client, port, bodies[sent // BATCH % len(bodies)])
                sent += BATCH
            elapsed = time.monotonic() - started
    finally:
        if searcher:
            os.killpg(searcher.pid, signal.SIGTERM)
            searcher.wait()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    return sent / elapsed


def page_first_results(data: Path, port: int, queries: dict[str, str], reps: int) -> dict[str, float]:
    """Seconds from the search's click to the first result row, in chromium, per URL query."""
    from playwright import sync_api

    token = "bench-ui-token-0123456789abcdefghijklmnop"
    env = {**os.environ, "DRAIN_UI_TOKEN": token}
    ui = subprocess.Popen([sys.executable, "-m", "receiver", "ui", "--dir", str(data), "--port",
                           str(port), "--no-compact"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    found: dict[str, float] = {}
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox", "--headless=new"])
            page = browser.new_page(bypass_csp=True)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="commit", timeout=600_000)
            page.fill("#token", token)
            page.click("#login button")
            page.wait_for_selector("#search", state="visible", timeout=600_000)
            for name, query in queries.items():
                times = []
                for _ in range(reps):
                    page.goto(f"http://127.0.0.1:{port}/?{query}", wait_until="commit", timeout=600_000)
                    page.wait_for_function("document.querySelectorAll('#results tbody tr').length > 0",
                                           timeout=600_000)
                    started = time.monotonic()
                    page.click("#search button")
                    page.wait_for_function("document.querySelectorAll('#results tbody tr').length > 0",
                                           timeout=600_000)
                    times.append(time.monotonic() - started)
                found[name] = statistics.median(times)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    return found


def disk(data: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in data.rglob(pattern) if p.is_file())


def load_results(work: Path) -> dict[str, dict[str, float]]:
    path = work / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_result(work: Path, section: str, values: dict[str, float]) -> None:
    """Keep each step's numbers in `work`/results.json as they come, so a split run adds up."""
    results = load_results(work)
    results.setdefault(section, {}).update(values)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{section}: {values}", file=sys.stderr, flush=True)


def report(work: Path, records: int, data: Path) -> None:
    results = load_results(work)
    gzip_only, compacted = results.get("gzip", {}), results.get("twins", {})
    other = results.get("other", {})
    millions = records / 1e6
    gz, twins = disk(data, "*.ndjson.gz"), disk(data, "*.parquet")
    compaction = other.get("compaction_s", float("nan"))
    print(f"{records} records; .gz {gz / 1e6 / millions:.0f} MB per million records, Parquet "
          f"twins {twins / 1e6 / millions:.0f} MB per million; compaction {compaction:.0f} s "
          f"({records / compaction:,.0f} records/s, one thread at nice 19)")
    print(f"{'question':<48} {'gzip only':>10} {'compacted':>10}")
    for name in dict.fromkeys([*gzip_only, *compacted]):
        before = f"{gzip_only[name]:.2f} s" if name in gzip_only else "-"
        after = f"{compacted[name]:.2f} s" if name in compacted else "-"
        print(f"{name:<48} {before:>10} {after:>10}")
    if "ingest_alone" in other:
        print(f"ingest, one client, 1000-record bodies: {other['ingest_alone']:,.0f} records/s alone, "
              f"{other.get('ingest_searching', float('nan')):,.0f} records/s while text searches "
              "run back to back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-search-bench"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--reps-gzip", type=int, default=1, help="runs of each question over gzip alone")
    parser.add_argument("--ingest-seconds", type=float, default=20)
    parser.add_argument("--keep", action="store_true", help="reuse the data written by an earlier run")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated steps among {', '.join(PHASES)} (write is left out "
                        "with --keep; gzip removes the twins first)")
    parser.add_argument("--resume", action="store_true", help="skip the questions results.json holds")
    parser.add_argument("--lock", type=Path, help="hold this file's flock during each timed step "
                        "(e.g. /tmp/bench.lock on a shared machine)")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; use {', '.join(PHASES)}")
    data = args.work / "data"
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    elif not (args.work / "end_ms").exists():
        parser.error(f"--keep: no earlier run's data in {args.work}")
    data.mkdir(parents=True, exist_ok=True)
    if not args.keep and "write" in phases:
        end_ms = int(time.time() * 1000)
        (args.work / "project").write_text(write_day(data, args.records, free_port()))
        (args.work / "end_ms").write_text(str(end_ms))
        (args.work / "records").write_text(str(args.records))
    records = int((args.work / "records").read_text()) if (args.work / "records").exists() else args.records
    project = (args.work / "project").read_text()
    end_ms = int((args.work / "end_ms").read_text())
    d = str(data)
    asked = questions(d, project, end_ms)
    page_queries = {
        "page: field filters": f"since={end_ms - 3_600_000}&project={project}&level=error",
        "page: text search, whole day": f"since={end_ms - 86_400_000}&q=ECONNREFUSED",
    }
    done = load_results(args.work) if args.resume else {}
    if "gzip" in phases or "gzip-page" in phases:
        for twin in data.rglob("*.parquet*"):
            twin.unlink()
    if "gzip" in phases:
        with locked(args.lock, "gzip: command line"):
            for name, argv in asked.items():
                if name not in done.get("gzip", {}):
                    save_result(args.work, "gzip", {name: timed(argv, args.reps_gzip)})
    if "gzip-page" in phases:
        with locked(args.lock, "gzip: page"):
            save_result(args.work, "gzip", page_first_results(data, free_port(), page_queries,
                                                              args.reps_gzip))
    if "compact" in phases:
        started = time.monotonic()
        subprocess.run(["nice", "-n", "19", sys.executable, "-m", "receiver", "compact", "--dir", d],
                       cwd=REPO, check=True, stderr=subprocess.DEVNULL)
        save_result(args.work, "other", {"compaction_s": time.monotonic() - started})
    if "twins" in phases:
        with locked(args.lock, "twins"):
            for name, argv in asked.items():
                save_result(args.work, "twins", {name: timed(argv, args.reps)})
            save_result(args.work, "twins", page_first_results(data, free_port(), page_queries, args.reps))
            save_result(args.work, "twins", {"--follow: record printed after its 200":
                                             follow_latency(data, free_port(), 5)})
    if "ingest" in phases:
        with locked(args.lock, "ingest"):
            save_result(args.work, "other", {
                "ingest_alone": ingest_rate(args.work / "scratch", free_port(), args.ingest_seconds, None),
                "ingest_searching": ingest_rate(args.work / "scratch", free_port(), args.ingest_seconds,
                                                asked["text search, whole day"]),
            })
    report(args.work, records, data)


if __name__ == "__main__":
    main()
