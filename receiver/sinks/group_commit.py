"""Group commit: one round of fsyncs makes durable every batch written since the last began.

With `--fsync` a delivery is answered only once its bytes are on disk. An fsync per batch
lines the deliveries up behind the disk (bench: 54% of the speed without `--fsync`). Here a
write only marks its file (and, for a new file, its directory) dirty; the delivery then waits
for the next round. A round takes every file dirtied so far and every delivery waiting so far,
fsyncs the files in a thread of its own while the event loop goes on writing, then answers the
deliveries it took. Whoever writes while a round runs joins the next one. A round starts
`LINGER` seconds after its first delivery began waiting: an fsync on the bench machine takes
less time than a delivery (0.3 ms), so without the pause a round covered 1.3 deliveries and
`--fsync` ran at 74-81% of the speed without it; with the pause a round covers about 9.5, at
90.5% (bench/RESULTS.md, "fsync"). A delivery waits at most `LINGER` more, which Vercel never
notices; a file only retired waits as long to be closed.

A file the sink is done with (rotated, deleted under it) is `retire`d rather than closed: its
descriptor stays open until a round has synced it, so a round never fsyncs a number that was
closed and reused for another file.

An fsync that fails leaves the kernel's copy of the data in doubt (the pages may be marked clean
though they never reached the disk, so a second fsync would "succeed"): the failure is kept,
every later round fails with it, and the sink refuses new batches until the receiver restarts.

`drain_fsync_duration_seconds` shows each round's fsync time; its count is the rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

from receiver import metrics
from receiver.sinks import SinkError

LINGER = 0.002


@dataclass
class GroupCommit:
    """Batches of fsyncs for the file sink; `dirty` and `retire` from any thread, `wait` from
    the event loop."""

    name: str = "fsync"
    failure: str | None = field(default=None, init=False)
    rounds: int = field(default=0, init=False)
    _dirty: dict[int, None] = field(default_factory=dict, init=False)  # an ordered set of fds
    _retired: list[int] = field(default_factory=list, init=False)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _wake: threading.Condition = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._wake = threading.Condition(self._lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def dirty(self, fd: int) -> None:
        """`fd` was written to; the next round fsyncs it."""
        with self._lock:
            self._dirty[fd] = None

    def retire(self, fd: int) -> None:
        """The owner is done with `fd`: the next round fsyncs it, then closes it."""
        with self._wake:
            self._dirty[fd] = None
            self._retired.append(fd)
            self._wake.notify()

    def wait(self) -> asyncio.Future[None]:
        """A future that is done once every fd dirtied before this call is on disk (or fails
        with `SinkError` if an fsync failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._wake:
            self._waiters.append(future)
            self._wake.notify()
        return future

    def close(self) -> None:
        """Run a last round for whatever is dirty or retired, and stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._round()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._waiters or self._retired or self._stopping):
                    self._wake.wait()
                stopping = self._stopping
            if not stopping:
                time.sleep(LINGER)
            self._round()
            if stopping:
                return

    def _round(self) -> None:
        with self._lock:
            fds, self._dirty = list(self._dirty), {}
            retired, self._retired = self._retired, []
            waiters, self._waiters = self._waiters, []
            self.rounds += 1
        started = time.perf_counter()
        for fd in fds:
            if self.failure is not None:
                break
            try:
                os.fsync(fd)
            except OSError as error:
                self.failure = f"fsync failed ({error.strerror or error}); written data may be lost"
        metrics.FSYNC_SECONDS.observe(time.perf_counter() - started)
        for fd in retired:
            with contextlib.suppress(OSError):
                os.close(fd)
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for future in waiters:
            by_loop.setdefault(future.get_loop(), []).append(future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, futures, self.failure)


def _settle(futures: list[asyncio.Future[None]], failure: str | None) -> None:
    for future in futures:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(SinkError(failure))
