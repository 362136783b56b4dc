"""The spool limit: deliveries refused (503, so Vercel retries) while too much waits for upload.

`SpoolGuard` is a sink placed before every other one: its `write` writes nothing and raises
`SinkError` while the finished files waiting for upload hold more than `max_bytes` (as the
uploader last counted them, at most a scan ago), so a refused batch changes nothing on disk;
its `unready_reason` makes `/readyz` say why. The check is one comparison per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.archive.uploader import Uploader
from receiver.decode import Batch
from receiver.sinks import SinkError


@dataclass
class SpoolGuard:
    uploader: Uploader
    max_bytes: int
    name: str = "archive"

    def start(self) -> None:
        """Nothing to prepare: the uploader counts the waiting files."""

    def write(self, batch: Batch) -> None:
        if self.uploader.waiting_bytes > self.max_bytes:
            raise SinkError(self._reason())

    def synced(self) -> None:
        """Nothing is written here, so nothing to wait for."""

    def unready_reason(self) -> str | None:
        return self._reason() if self.uploader.waiting_bytes > self.max_bytes else None

    def close(self) -> None:
        """Nothing to release."""

    def _reason(self) -> str:
        return (f"{self.uploader.waiting_bytes} bytes of finished files wait for upload under "
                f"{self.uploader.root}, past --spool-max-bytes {self.max_bytes} (is the store "
                "reachable? see the archive's errors in the log)")
