"""Body deadlines for every request being read, kept by one timer rather than one per request.

`asyncio.timeout` arms and cancels a loop timer for each request (~13 us under uvloop on the
bench machine, a tenth of a one-record delivery). Here a request costs a dict entry, and one
sweep every `tick` seconds cancels the tasks past their deadline, so a body that is too slow
is cut between its deadline and one tick later.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

MAX_TICK_SECONDS = 0.25


@dataclass
class Deadlines:
    seconds: float
    _watched: dict[asyncio.Task[object], float] = field(default_factory=dict, init=False)
    _expired: set[asyncio.Task[object]] = field(default_factory=set, init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)

    @property
    def tick(self) -> float:
        return min(MAX_TICK_SECONDS, self.seconds / 4)

    def watch(self, task: asyncio.Task[object]) -> None:
        """Cancel `task` once `seconds` have passed, unless `forget` is called first."""
        self._watched[task] = time.monotonic() + self.seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def forget(self, task: asyncio.Task[object]) -> bool:
        """Stop watching `task`; True when it was cancelled for passing its deadline."""
        if self._watched.pop(task, None) is not None:
            return False
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        late = [task for task, deadline in self._watched.items() if deadline <= now]
        for task in late:
            del self._watched[task]
            self._expired.add(task)
            task.cancel()
        if self._watched:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._sweep)
