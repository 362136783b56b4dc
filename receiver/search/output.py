"""Text for the terminal: the results table, SQL results, and the stats chart."""

from __future__ import annotations

import time
from collections.abc import Sequence

from receiver.search.engine import TABLE_COLUMNS, Histogram

LEVEL_MARKS = {"info": "#", "warning": "w", "error": "E", "fatal": "F"}


def one_line(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def utc_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def results_table(rows: Sequence[tuple], width: int) -> list[str]:
    """One line per record: time, level, source, status, path, message cut to `width`."""
    index = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    lines = [fit(f"{'TIME (UTC)':<23} {'LEVEL':<7} {'SOURCE':<8} {'STATUS':>6} {'PATH':<30} MESSAGE", width)]
    for row in rows:
        status = row[index["statusCode"]]
        status = status if status is not None else row[index["proxy_statusCode"]]
        path = row[index["path"]] or row[index["proxy_path"]]
        line = (f"{utc_time(row[index['timestamp']]):<23} {one_line(row[index['level']]):<7} "
                f"{one_line(row[index['source']]):<8} {one_line(status):>6} "
                f"{fit(one_line(path), 30):<30} {one_line(row[index['message']])}")
        lines.append(fit(line, width))
    return lines


def sql_table(names: Sequence[str], rows: Sequence[tuple], width: int) -> list[str]:
    """Any query's result as aligned columns; long cells are cut so a row fits `width`."""
    cells = [[one_line(v) for v in row] for row in rows]
    cap = max(8, width // max(1, len(names)))
    widths = [min(cap, max([len(n)] + [len(r[i]) for r in cells])) for i, n in enumerate(names)]

    def render(values: Sequence[str]) -> str:
        return fit("  ".join(fit(v, w).ljust(w) for v, w in zip(values, widths, strict=True)), width)

    return [render(list(names)), *(render(r) for r in cells)]


def stats_chart(histogram: Histogram, width: int) -> list[str]:
    """One line per interval: its start, its count, and a bar made of one mark per key."""
    keys = sorted({key for _, key, _ in histogram.counts})
    per_bucket: dict[int, dict[str, int]] = {}
    for bucket, key, count in histogram.counts:
        per_bucket.setdefault(bucket, {})[key] = count
    buckets = -(-(histogram.end_ms - histogram.start_ms) // histogram.width_ms) if histogram.counts else 0
    peak = max((sum(c.values()) for c in per_bucket.values()), default=0)
    bar_width = max(10, width - 34)
    marks = {key: LEVEL_MARKS.get(key, chr(ord("a") + i % 26)) for i, key in enumerate(keys)}
    lines = [f"{'FROM (UTC)':<23} {'RECORDS':>9}  " + "  ".join(f"{marks[k]}={k}" for k in keys)]
    for bucket in range(buckets):
        counts = per_bucket.get(bucket, {})
        total = sum(counts.values())
        bar = ""
        for key in keys:
            bar += marks[key] * round(counts.get(key, 0) * bar_width / peak) if peak else ""
        start = histogram.start_ms + bucket * histogram.width_ms
        lines.append(f"{utc_time(start):<23} {total:>9}  {bar}")
    total = sum(count for _, _, count in histogram.counts)
    lines.append(f"{total} records in {buckets} intervals of {histogram.width_ms / 1000:g} s")
    return lines
