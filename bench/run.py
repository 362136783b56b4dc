"""The drain receiver benchmark: one command, every scenario, a Markdown table.

    python bench/run.py            # full run (~15 min): 3 rounds of the main matrix, 60 s RSS run
    python bench/run.py --quick    # a few seconds a scenario, for development

Writes bench/RESULTS.md (unless --no-write) and prints the same tables. See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
import harness
import profiling
import report
from harness import ALL_CPUS, Scenario


def body_spec(fmt: str, batch: int, quick: bool, gz: bool = False) -> gen.BodySpec:
    """Enough distinct bodies that wrk cycles through a realistic mix (~15-30 MB a set)."""
    bodies = {1: 2000, 100: 256, 1000: 32}[batch]
    if quick:
        bodies = max(8, bodies // 4)
    return gen.BodySpec(fmt, batch, bodies, gz)


def scenarios(quick: bool) -> tuple[list[Scenario], list[Scenario]]:
    """(the main matrix, run once per round; the other scenarios, run once)."""
    main: list[Scenario] = []
    for fmt in ("ndjson", "array"):
        spec = body_spec(fmt, 100, quick)
        main += [Scenario(f"null-{fmt}", "null", spec),
                 Scenario(f"naive-{fmt}", "naive", spec),
                 Scenario(f"receiver-{fmt}", "receiver", spec),
                 Scenario(f"receiver-{fmt}-gzip", "receiver", body_spec(fmt, 100, quick, True))]
    extra: list[Scenario] = []
    for batch in (1, 1000):
        spec = body_spec("ndjson", batch, quick)
        extra += [Scenario(f"{t}-ndjson-b{batch}", t, spec, group="batch")
                  for t in ("null", "naive", "receiver")]
    spec = body_spec("ndjson", 100, quick)
    extra += [
        Scenario("receiver-ndjson-fsync", "receiver", spec, receiver_args=("--fsync",),
                 group="sink"),
        Scenario("receiver-ndjson-stdout", "receiver", spec, sink="stdout", group="sink"),
        # Rotation gzips every closed 128 MiB file in a background thread; this isolates it.
        Scenario("receiver-ndjson-norotate", "receiver", spec,
                 receiver_args=("--max-file-bytes", "64GiB"), group="sink"),
        Scenario("receiver-array-norotate", "receiver", body_spec("array", 100, quick),
                 receiver_args=("--max-file-bytes", "64GiB"), group="sink"),
        Scenario("receiver-ndjson-1w", "receiver", spec, group="workers"),
        Scenario("receiver-ndjson-2w", "receiver", spec, receiver_args=("--workers", "2"),
                 server_cpus=ALL_CPUS, group="workers"),
    ]
    # The same apps on uvicorn's pure-Python stack (h11 + asyncio), for reference: the
    # receiver itself always runs on httptools + uvloop.
    extra += [Scenario(f"{t}-ndjson-h11", t, spec, group="h11",
                       uvicorn_args=("--http", "h11", "--loop", "asyncio"))
              for t in ("null", "naive")]
    rss = gen.BodySpec("ndjson", 0, 6 if quick else 24, target_bytes=1_000_000)
    extra.append(Scenario("receiver-ndjson-1MB-rss", "receiver", rss, group="rss"))
    return main, extra


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the drain receiver (see README.md).")
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--seconds", type=float, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per scenario")
    parser.add_argument("--rounds", type=int, help="rounds of the main matrix (median kept)")
    parser.add_argument("--rss-seconds", type=float, help="length of the 1 MB-batch RSS run")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--profile-seconds", type=float,
                        help="py-spy the receiver under NDJSON load (0 skips)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-bench"),
                        help="bodies and outputs go here (not in the repo)")
    parser.add_argument("--receiver-ref", default="HEAD",
                        help="benchmark the receiver of this commit (default HEAD)")
    parser.add_argument("--working-tree", action="store_true",
                        help="benchmark receiver/ as it is in the working tree instead")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()

    seconds = args.seconds or (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 3)
    rss_seconds = args.rss_seconds or (8 if args.quick else 60)
    profile_seconds = (args.profile_seconds if args.profile_seconds is not None
                       else (5 if args.quick else 20))
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")

    receiver = harness.use_receiver_ref(None if args.working_tree else args.receiver_ref,
                                        args.work)
    print(f"receiver: {receiver}", flush=True)
    main_set, extra = scenarios(args.quick)
    if args.only:
        main_set = [s for s in main_set if args.only in s.name]
        extra = [s for s in extra if args.only in s.name]
    bodies_dir = args.work / "bodies"
    runs_dir = args.work / "runs"
    started = time.time()
    results: list[harness.Result] = []
    plan = [(sc, r) for r in range(rounds) for sc in main_set] + [(sc, 0) for sc in extra]
    for i, (sc, rnd) in enumerate(plan, 1):
        set_dir = gen.build_set(sc.spec, bodies_dir)
        length = rss_seconds if sc.group == "rss" else (sc.duration or seconds)
        print(f"[{i}/{len(plan)}] {sc.name} round {rnd + 1}: {length:.0f}s ...", end=" ",
              flush=True)
        result = harness.run_one(sc, set_dir, runs_dir, length, warmup, rnd,
                                 ["--no-access-log"])
        print(f"{result.status} {result.records_per_s:,.0f} rec/s p99 {result.p99_ms:.1f} ms "
              f"{result.detail}", flush=True)
        results.append(result)

    profile = None
    if profile_seconds > 0 and not args.only:
        print(f"profiling the receiver for {profile_seconds:.0f}s with py-spy ...", flush=True)
        spec = body_spec("ndjson", 100, args.quick)
        profile = profiling.profile_receiver(gen.build_set(spec, bodies_dir), runs_dir,
                                             profile_seconds)
    text = report.render(results, rounds, seconds, warmup, rss_seconds, args, time.time() - started,
                         profile)
    print(text)
    if not args.no_write and not args.only:
        report.write_results(text)
        print("wrote bench/RESULTS.md")
    return 0 if all(r.status != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
