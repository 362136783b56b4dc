"""The group commit on its own: rounds answer their waiters, deliveries close together share a
round, retired files are closed after their fsync, and a failed fsync fails every round after
it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from receiver.sinks import SinkError
from receiver.sinks.group_commit import LINGER, GroupCommit


def test_waiters_are_answered_and_retired_files_closed_after_their_round(tmp_path: Path) -> None:
    commit = GroupCommit()
    commit.start()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x\n")

    async def deliveries() -> None:
        commit.retire(fd)
        await asyncio.wait_for(asyncio.gather(*(commit.wait() for _ in range(16))), 10)

    try:
        asyncio.run(deliveries())
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the round that synced it
    finally:
        commit.close()
    assert commit.failure is None


def test_a_failed_fsync_fails_that_round_and_every_later_one() -> None:
    commit = GroupCommit()
    commit.start()
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)

    async def two_rounds() -> list[BaseException | None]:
        commit.dirty(write_end)  # closed: fsync fails with EBADF
        first = await asyncio.gather(commit.wait(), return_exceptions=True)
        second = await asyncio.gather(commit.wait(), return_exceptions=True)
        return [*first, *second]

    try:
        outcomes = asyncio.run(two_rounds())
    finally:
        commit.close()
    assert all(isinstance(outcome, SinkError) for outcome in outcomes), outcomes
    assert "fsync failed" in str(outcomes[1])


def test_deliveries_that_begin_waiting_within_the_linger_share_one_round(tmp_path: Path) -> None:
    """Sixteen deliveries a tenth of the linger apart: without the linger a round would start
    with the first and the rest would trickle into rounds of one or two."""
    commit = GroupCommit()
    commit.start()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)

    async def deliveries() -> None:
        waiting = []
        started = time.monotonic()
        for _ in range(16):
            os.write(fd, b"x\n")
            commit.dirty(fd)
            waiting.append(commit.wait())
            time.sleep(LINGER / 10)  # the loop waits; the commit thread goes on
        assert time.monotonic() - started < LINGER * 4, "the loop was too slow to test this"
        await asyncio.wait_for(asyncio.gather(*waiting), 10)

    try:
        asyncio.run(deliveries())
    finally:
        commit.close()
        os.close(fd)
    assert commit.failure is None
    assert commit.rounds <= 4, commit.rounds
