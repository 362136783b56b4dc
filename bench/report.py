"""Markdown tables for a benchmark run, and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import profiling
from harness import SOURCE, Result

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
KEEP_MARKER = "<!-- Everything below this line is written by hand and kept by run.py. -->"
PACKAGES = ("uvicorn", "starlette", "h11", "httptools", "uvloop", "orjson", "msgspec", "isal",
            "pysimdjson", "py-spy")


def machine() -> list[str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?"
    return [
        f"- nproc: {os.cpu_count()}; CPU: {cpu}; kernel {platform.release()}",
        f"- Python {sys.version.split()[0]}; {', '.join(versions)}",
        f"- load generator: {wrk_version.split(' [')[0]}",
        f"- receiver: {SOURCE['label']}",
    ]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _cell(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def results_table(results: list[Result]) -> list[str]:
    by_name: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_name[r.scenario.name].append(r)
    lines = [
        "| scenario | runs | records/s | records per server CPU-s | MB/s wire | MB/s JSON | "
        "p50 ms | p99 ms | server CPU | wrk CPU | peak RSS MB | written = acked |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, rs in by_name.items():
        ok = [r for r in rs if r.status == "ok"] or [r for r in rs if r.status == "FAIL"]
        if not ok:
            lines.append(f"| {name} | {len(rs)} | {rs[0].status}: {rs[0].detail[:120]} "
                         "| | | | | | | | | |")
            continue
        def med(attr: str, ok: list[Result] = ok) -> float:
            return _median([getattr(r, attr) for r in ok])

        if ok[0].scenario.target == "null":
            check = f"{sum(r.not_ok for r in rs)} non-200 (nothing written)"
        else:
            failed = [r for r in rs if r.status == "FAIL"]
            check = f"**FAIL** in {len(failed)} of {len(rs)} runs" if failed else "OK"
            written = sum(r.verdict.written_records for r in ok if r.verdict)
            check += f", {written:,} records checked"
            notes = {n for r in rs if r.verdict for n in r.verdict.notes}
            if notes:
                check += "; " + "; ".join(sorted(notes))
        lines.append(
            f"| {name} | {len(ok)} | {_cell(med('records_per_s'))} | "
            f"{_cell(med('records_per_cpu_s'))} | "
            f"{_cell(med('wire_mb_per_s'), 1)} | {_cell(med('raw_mb_per_s'), 1)} | "
            f"{med('p50_ms'):.1f} | {med('p99_ms'):.1f} | {med('cpu_pct'):.0f}% | "
            f"{med('load_cpu_pct'):.0f}% | {med('peak_rss_mb'):.0f} | {check} |")
    return lines


def _paired_ratio(results: list[Result], num: str, den: str, attr: str = "records_per_s"
                  ) -> float:
    """Median over rounds of num/den (records/s by default), each taken within one round."""
    per_round: dict[int, dict[str, float]] = defaultdict(dict)
    for r in results:
        if r.status == "ok":
            per_round[r.round][r.scenario.name] = getattr(r, attr)
    ratios = [v[num] / v[den] for v in per_round.values() if v.get(num) and v.get(den)]
    return _median(ratios)


def targets_table(results: list[Result]) -> list[str]:
    def get(name: str) -> list[Result]:
        return [r for r in results if r.scenario.name == name and r.status == "ok"]

    rows: list[tuple[str, str, str, bool | None]] = []
    for fmt, share in (("ndjson", 0.35), ("array", 0.30)):
        vs_null = _paired_ratio(results, f"receiver-{fmt}", f"null-{fmt}")
        vs_naive = _paired_ratio(results, f"receiver-{fmt}", f"naive-{fmt}")
        eff_null = _paired_ratio(results, f"receiver-{fmt}", f"null-{fmt}", "records_per_cpu_s")
        eff_naive = _paired_ratio(results, f"receiver-{fmt}", f"naive-{fmt}",
                                  "records_per_cpu_s")
        rows.append((f"{fmt}: receiver / null app (records/s)", f"{vs_null:.0%}",
                     f">= {share:.0%}", vs_null >= share if vs_null else None))
        rows.append((f"{fmt}: receiver / null app (records per server CPU-s)",
                     f"{eff_null:.0%}", "(cross-check)", None))
        rows.append((f"{fmt}: receiver / naive receiver (records/s)", f"{vs_naive:.1f}x",
                     ">= 5x", vs_naive >= 5 if vs_naive else None))
        rows.append((f"{fmt}: receiver / naive receiver (records per server CPU-s)",
                     f"{eff_naive:.1f}x", "(cross-check)", None))
        gz = _paired_ratio(results, f"receiver-{fmt}-gzip", f"receiver-{fmt}")
        rows.append((f"{fmt}: gzip / plain (records/s)", f"{gz:.0%}", ">= 60%",
                     gz >= 0.6 if gz else None))
    for fmt in ("ndjson", "array"):
        p99 = [r.p99_ms for r in get(f"receiver-{fmt}")]
        if p99:
            worst = max(p99)
            rows.append((f"{fmt}: p99 latency at 16 connections (worst round)",
                         f"{worst:.1f} ms", "< 25 ms", worst < 25))
    rss = [r for r in results if r.scenario.name == "receiver-ndjson-1MB-rss"
           and r.status != "skipped"]
    if rss:
        r = rss[0]
        rows.append((f"peak RSS, 1 MB batches, {r.duration_s:.0f} s at full load",
                     f"{r.peak_rss_mb:.0f} MB", "< 150 MB", r.peak_rss_mb < 150))
        rows.append(("RSS growth over that run (last fifth - second fifth)",
                     f"{r.rss_growth_mb:+.1f} MB", "no growth", abs(r.rss_growth_mb) < 10))
    receiver, null_h11, naive_h11 = (get(name) for name in (
        "receiver-ndjson", "null-ndjson-h11", "naive-ndjson-h11"))
    if receiver and null_h11 and naive_h11:
        ours = _median([r.records_per_s for r in receiver])
        rows.append(("ndjson: receiver / null app on h11 + asyncio (reference)",
                     f"{ours / null_h11[0].records_per_s:.0%}", "(reference)", None))
        rows.append(("ndjson: receiver / naive receiver on h11 + asyncio (reference)",
                     f"{ours / naive_h11[0].records_per_s:.1f}x", "(reference)", None))
    one, two = get("receiver-ndjson-1w"), get("receiver-ndjson-2w")
    skipped = [r for r in results if r.scenario.name == "receiver-ndjson-2w" and
               r.status == "skipped"]
    if one and two:
        ratio = two[0].records_per_s / one[0].records_per_s
        rows.append(("--workers 2 / 1 worker", f"{ratio:.2f}x", "report", None))
    elif skipped:
        rows.append(("--workers 2 / 1 worker", "not supported yet", "report", None))
    lines = ["| target | measured | goal | met |", "| --- | ---: | --- | --- |"]
    for what, measured, goal, met in rows:
        mark = "n/a" if met is None else ("yes" if met else "**NO**")
        lines.append(f"| {what} | {measured} | {goal} | {mark} |")
    return lines


def render(results: list[Result], rounds: int, seconds: float, warmup: float,
           rss_seconds: float, args: argparse.Namespace, elapsed: float,
           profile: profiling.Profile | None) -> str:
    command = " ".join(["python bench/run.py", *sys.argv[1:]]).replace(" --no-write", "")
    failed = [r for r in results if r.status == "FAIL"]
    skipped = [r for r in results if r.status == "skipped"]
    loads = sorted({r.loadavg for r in results if r.loadavg})
    out = [
        "# Benchmark results",
        "",
        f"Command: `{command}` ({rounds} round(s) of the main matrix, {seconds:.0f} s measured "
        f"after {warmup:.0f} s warm-up per scenario, {rss_seconds:.0f} s RSS run; took "
        f"{elapsed / 60:.1f} min). How to read this: `bench/README.md`.",
        "",
        "Machine:",
        *machine(),
        f"- 1-minute load average seen before the runs: {', '.join(loads[:1] + loads[-1:])} "
        "(min, max): the 2 cores are shared with other work, so absolute numbers are noisy; "
        "the ratios, measured side by side in the same round, are the numbers to trust.",
        "",
        "## Targets (issue 5)",
        "",
        *targets_table(results),
        "",
        "## All scenarios (median over rounds)",
        "",
        "One wrk thread on the last core, 16 connections; server on core 0 (both cores for "
        "`-2w`). 100 records a batch unless `-b1`/`-b1000`; `-1MB-rss` is ~1 MB NDJSON batches. "
        "MB/s wire counts the bytes sent (gzip-compressed for `-gzip`), MB/s JSON the bytes "
        "after decompression. Server CPU is user+system time of the server's process tree "
        "over the measured window, in % of one core.",
        "",
        *results_table(results),
    ]
    if failed or skipped:
        out += ["", "Failed or skipped runs:", ""]
        out += [f"- {r.scenario.name} (round {r.round + 1}): {r.status}: {r.detail}"
                for r in failed + skipped]
    if profile is not None:
        out += ["", "## Where the receiver's time goes (py-spy, NDJSON, 100-record batches, "
                "file sink)", "", profiling.render(profile)]
    return "\n".join(out) + "\n"


def write_results(text: str) -> None:
    kept = ""
    if RESULTS.exists():
        old = RESULTS.read_text()
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER):]
    RESULTS.write_text(text + "\n" + (kept or KEEP_MARKER + "\n"))
