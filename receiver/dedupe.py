"""`--dedupe-window`: drop records whose `id` this process wrote in the last N seconds.

Vercel redelivers a batch whose answer was slow or lost. The window is per worker process and
bounded in memory (`max_ids`, oldest forgotten first): a redelivery that reaches another worker
is written again. Ids are remembered only once a batch is written, so the retry of a batch that
got a 503 is never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec


class _RecordId(msgspec.Struct):
    id: object = None


_decode_id = msgspec.json.Decoder(_RecordId).decode


@dataclass
class RecentIds:
    window_seconds: float
    max_ids: int = 1_000_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False)

    def split(self, records: list[bytes], now: float) -> tuple[list[bytes], list[str], int]:
        """The records not seen recently, their ids (to `remember` once written), and how many
        were dropped. A repeated id inside the batch counts as seen too."""
        self._forget_older_than(now - self.window_seconds)
        fresh: list[bytes] = []
        fresh_ids: list[str] = []
        batch_ids: set[str] = set()
        dropped = 0
        for record in records:
            try:
                record_id = _decode_id(record).id
            except (msgspec.DecodeError, RecursionError):
                record_id = None
            if isinstance(record_id, str):
                if record_id in self._seen or record_id in batch_ids:
                    dropped += 1
                    continue
                batch_ids.add(record_id)
                fresh_ids.append(record_id)
            fresh.append(record)
        return fresh, fresh_ids, dropped

    def remember(self, ids: list[str], now: float) -> None:
        for record_id in ids:
            self._seen[record_id] = now
            self._seen.move_to_end(record_id)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)

    def _forget_older_than(self, cutoff: float) -> None:
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if seen_at >= cutoff:
                return
            del self._seen[oldest_id]
