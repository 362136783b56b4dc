"""Compare receivers of different commits (and the null and naive apps) in interleaved runs.

    python bench/ab.py HEAD~1 HEAD                     # two commits, 2 rounds of 6 s each
    python bench/ab.py --reps 3 --format array null naive working-tree
    python bench/ab.py --batch 1 --gzip HEAD
    python bench/ab.py working-tree working-tree:--fsync   # a receiver with and without a flag

Each target is a git ref of the receiver, `working-tree`, `null` or `naive`; a receiver target
may carry flags for it after a colon (`HEAD:--fsync`, `working-tree:--max-file-bytes 64GiB`;
git forbids `:` in ref names, so this cannot clash with one). The targets run
one after the other, round after round, so a change in the machine's load hits them alike;
the medians over rounds are printed at the end. Every run is verified like a `run.py` one.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
import harness
from run import body_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+",
                        help="git refs, working-tree, null or naive; REF:FLAGS adds receiver flags")
    parser.add_argument("--format", default="ndjson", choices=("ndjson", "array"))
    parser.add_argument("--batch", type=int, default=100, choices=(1, 100, 1000))
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-bench"))
    args = parser.parse_args()

    spec = body_spec(args.format, args.batch, False, args.gzip)
    set_dir = gen.build_set(spec, args.work / "bodies")
    results: dict[str, list[harness.Result]] = {}
    for _ in range(args.reps):
        for target in args.targets:
            ref, _, flags = target.partition(":")
            kind = ref if ref in ("null", "naive") else "receiver"
            if kind == "receiver":
                harness.use_receiver_ref(None if ref == "working-tree" else ref, args.work)
            elif flags:
                parser.error(f"{target}: flags are for receiver targets only")
            name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", target)
            scenario = harness.Scenario(name, kind, spec, receiver_args=tuple(shlex.split(flags)))
            result = harness.run_one(scenario, set_dir, args.work / "ab", args.seconds, 2, 0,
                                     ["--no-access-log"])
            results.setdefault(target, []).append(result)
            print(f"{target:24s} {result.status:4s} {result.records_per_s:11,.0f} records/s  "
                  f"{result.records_per_cpu_s:11,.0f} per server CPU-s  "
                  f"p99 {result.p99_ms:5.1f} ms  {result.detail[:70]}", flush=True)
    print("medians (records per server CPU-s: the better measure when other work takes the core):")
    for target, runs in results.items():
        print(f"{target:24s} {statistics.median(r.records_per_s for r in runs):11,.0f} records/s  "
              f"{statistics.median(r.records_per_cpu_s for r in runs):11,.0f} per server CPU-s  "
              f"p99 {statistics.median(r.p99_ms for r in runs):5.1f} ms")


if __name__ == "__main__":
    main()
