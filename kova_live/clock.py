"""The block clock: height = whole blocks since the network's genesis (1 block = 1 s by default).

``--block-seconds`` shortens a block for tests and demos; the height is computed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BlockClock", "ManualClock"]


class BlockClock:
    """Heights from the wall clock. ``now`` (seconds since the epoch) can be replaced in tests."""

    def __init__(
        self, genesis_ms: int, block_ms: int, now: Callable[[], float] = time.time
    ) -> None:
        if block_ms <= 0:
            raise ValueError("a block must last longer than 0 ms")
        self.genesis_ms = genesis_ms
        self.block_ms = block_ms
        self._now = now

    def height(self) -> int:
        """The current height (0 before genesis)."""
        return max(0, (int(self._now() * 1000) - self.genesis_ms) // self.block_ms)

    def now_ms(self) -> int:
        """The wall clock, Unix milliseconds (what retention periods are measured in)."""
        return int(self._now() * 1000)

    def seconds_until(self, height: int) -> float:
        """Wall seconds until ``height`` begins (0 if it has)."""
        start_ms = self.genesis_ms + height * self.block_ms
        return max(0.0, start_ms / 1000 - self._now())


class ManualClock(BlockClock):
    """A clock whose height moves only when an operator advances it (``serve --clock manual``,
    ``POST /v1/clock``): replays and tests drive the network block by block. The wall clock
    still dates log lines (``now_ms``)."""

    def __init__(self, genesis_ms: int, block_ms: int, height: int) -> None:
        super().__init__(genesis_ms, block_ms)
        self._height = height

    def height(self) -> int:
        return self._height

    def seconds_until(self, height: int) -> float:
        """Nobody knows when the operator moves it: background work looks again soon."""
        return 0.0 if height <= self._height else 0.05

    def advance(self, height: int) -> None:
        """Move to ``height`` (never back)."""
        if height < self._height:
            raise ValueError(f"the clock is at {self._height}; it cannot go back to {height}")
        self._height = height

    def resume(self, height: int) -> None:
        """Move to where the database left the network, as a new leader takes over (a standby's
        clock stood still while the leader it followed moved the network's)."""
        self._height = height
