"""`--dedupe-window`: drop records whose `id` this process wrote in the last N seconds.

Vercel redelivers a batch whose answer was slow or lost. Only logs and audit logs are
deduplicated (their `id` names the event); other streams have no such id. The window is per worker process and
bounded in memory (`max_ids`, oldest forgotten first): a redelivery that reaches another worker
is written again. Ids are remembered only once a batch is written, so the retry of a batch that
got a 503 is never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from receiver.decode import Batch
from receiver.streams import DEDUPED_STREAMS, LOGS


class _RecordId(msgspec.Struct):
    id: object = None


_decode_id = msgspec.json.Decoder(_RecordId).decode


def _id_key(stream: str) -> str:
    """Log ids are remembered as they are; another stream's ids apart from them."""
    return "" if stream == LOGS else f"{stream}:"


@dataclass
class RecentIds:
    window_seconds: float
    max_ids: int = 1_000_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False)

    def split(self, records: list[bytes], now: float, prefix: str = "") -> tuple[list[bytes], list[str], int]:
        """The records not seen recently, their ids (to `remember` once written), and how many
        were dropped. A repeated id inside the batch counts as seen too."""
        self._forget_older_than(now - self.window_seconds)
        fresh: list[bytes] = []
        fresh_ids: list[str] = []
        batch_ids: set[str] = set()
        dropped = 0
        for record in records:
            record_id = self._key(record, prefix)
            if record_id is not None:
                if record_id in self._seen or record_id in batch_ids:
                    dropped += 1
                    continue
                batch_ids.add(record_id)
                fresh_ids.append(record_id)
            fresh.append(record)
        return fresh, fresh_ids, dropped

    def split_streams(self, batch: Batch, now: float) -> tuple[list[bytes], list[str] | None, list[str], int]:
        """`split` for a batch of several streams: only records of `DEDUPED_STREAMS` are
        checked (an audit log id is remembered apart from a log id); returns the records and
        streams kept, the ids to `remember`, and how many were dropped."""
        if batch.streams is None:
            if batch.stream not in DEDUPED_STREAMS:
                return batch.records, None, [], 0
            fresh, fresh_ids, dropped = self.split(batch.records, now, _id_key(batch.stream))
            return fresh, None, fresh_ids, dropped
        self._forget_older_than(now - self.window_seconds)
        records: list[bytes] = []
        streams: list[str] = []
        fresh_ids: list[str] = []
        batch_ids: set[str] = set()
        for record, stream in zip(batch.records, batch.streams, strict=True):
            key = self._key(record, _id_key(stream)) if stream in DEDUPED_STREAMS else None
            if key is not None:
                if key in self._seen or key in batch_ids:
                    continue
                batch_ids.add(key)
                fresh_ids.append(key)
            records.append(record)
            streams.append(stream)
        return records, streams, fresh_ids, len(batch.records) - len(records)

    @staticmethod
    def _key(record: bytes, prefix: str) -> str | None:
        try:
            record_id = _decode_id(record).id
        except (msgspec.DecodeError, RecursionError):
            return None
        return prefix + record_id if isinstance(record_id, str) else None

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
