"""Check that the records a server wrote are exactly the records it acknowledged.

wrk cycles through a set of bodies, so one body may be delivered many times. For each body the
verifier counts how many complete copies of its records were written (every id of the body
must appear the same number of times: a partial batch fails) and checks:

* no line that is not a JSON object, no unknown id, no partial batch;
* every written record has every field of the original with the same value;
* deliveries written >= batches acknowledged with 200 (fewer means acknowledged data was lost);
* deliveries written <= acknowledged + in flight when wrk stopped (requests wrk sent but whose
  answer it never read: the server may have written those, which is fine for at-least-once);
* no body was written more often than wrk sent it.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gen
import orjson


@dataclass
class WrkRun:
    """What one wrk invocation reported through drain.lua's done()."""

    statuses: dict[int, int]
    sent: list[int]
    errors: dict[str, int]

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_ok(self) -> int:
        return self.answered - self.ok


@dataclass
class Verdict:
    passed: bool
    acked_batches: int
    written_batches: int
    written_records: int
    in_flight: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        state = "OK" if self.passed else "FAIL"
        text = (
            f"{state}: written {self.written_records} records = {self.written_batches} batches; "
            f"acked {self.acked_batches} (+{self.in_flight} in flight at the cut)"
        )
        return "; ".join([text, *self.problems, *self.notes])


TEMPORARY_SUFFIXES = (".partial", ".tmp")


def output_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(files holding records, temporary files a reader must ignore), for files and dirs."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    temporary = [f for f in files if f.name.endswith(TEMPORARY_SUFFIXES)]
    return [f for f in files if f not in temporary and not f.name.startswith(".")], temporary


def output_lines(files: Iterable[Path]) -> Iterator[tuple[Path, bytes]]:
    """(file, line) for every non-blank line of every file (.gz files inflated)."""
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            for line in f:
                if line.strip():
                    yield file, line.rstrip(b"\r\n")


def verify(set_dir: Path, outputs: list[Path], runs: list[WrkRun], check_content: bool = True
           ) -> Verdict:
    manifest = json.loads((set_dir / "manifest.json").read_text())
    bodies: list[list[str]] = [b["ids"] for b in manifest["bodies"]]
    body_of = {rid: i for i, ids in enumerate(bodies) for rid in ids}
    originals = gen.load_records(set_dir) if check_content else {}

    problems: list[str] = []
    notes: list[str] = []
    counts: Counter[str] = Counter()
    bad_lines = unknown = mismatched = extra_fields = 0
    first_mismatch = ""
    written_records = 0
    bad_files: Counter[str] = Counter()
    files, temporary = output_files(outputs)
    if temporary:
        notes.append(f"temporary files left behind (ignored): {[f.name for f in temporary][:3]}")
    uncompressed_rotated = [f for f in files if f.suffix == ".ndjson" and f.stem != "logs"]
    if uncompressed_rotated and any(f.suffix == ".gz" for f in files):
        notes.append(f"{len(uncompressed_rotated)} rotated files still uncompressed at exit")
    for file, line in output_lines(files):
        written_records += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad_lines += 1
            bad_files[file.name] += 1
            continue
        rid = record.get("id") if isinstance(record, dict) else None
        if rid not in body_of:
            unknown += 1
            bad_files[file.name] += 1
            continue
        counts[rid] += 1
        if check_content:
            original = originals[rid]
            if record != original:
                if all(record.get(k, object()) == v for k, v in original.items()):
                    extra_fields += 1
                else:
                    mismatched += 1
                    first_mismatch = first_mismatch or line[:200].decode(errors="replace")

    sent = [sum(col) for col in zip(*(r.sent for r in runs), strict=True)] if runs else []
    written_batches = 0
    partial = over_sent = 0
    for i, ids in enumerate(bodies):
        copies = {counts[rid] for rid in ids}
        if len(copies) > 1:
            partial += 1
            continue
        w = copies.pop()
        written_batches += w
        if sent and w > sent[i]:
            over_sent += 1

    acked = sum(r.ok for r in runs)
    in_flight = sum(sum(r.sent) - r.answered for r in runs)
    if bad_lines:
        problems.append(f"{bad_lines} lines are not JSON")
    if bad_files:
        problems.append(f"bad lines in files {dict(bad_files.most_common(5))}")
    if unknown:
        problems.append(f"{unknown} records with an unknown or missing id")
    if partial:
        problems.append(f"{partial} bodies only partly written")
    if over_sent:
        problems.append(f"{over_sent} bodies written more often than sent")
    if mismatched:
        problems.append(f"{mismatched} records differ from the original, e.g. {first_mismatch!r}")
    if written_batches < acked:
        problems.append(f"LOST DATA: {acked - written_batches} acknowledged batches not written")
    if written_batches > acked + in_flight:
        problems.append(f"{written_batches - acked - in_flight} batches written but never sent")
    if extra_fields:
        notes.append(f"{extra_fields} records carry extra fields")
    return Verdict(not problems, acked, written_batches, written_records, in_flight, problems,
                   notes)
