"""Bid intake: the bids that arrive together are checked and committed in one transaction.

Bids are the busiest command (every provider's agent bids on every order it can serve), and
a transaction of its own for each would cost a dozen statements and a commit per bid. Instead,
each bid request waits its turn here: while one transaction runs, the bids that arrive queue,
and the next transaction takes all of them (up to ``max_batch``), checked one after the other
in arrival order (:func:`kova_live.market.place_bids`). Nothing is added to a bid's wait when
the server is idle: a lone bid is a transaction of one at once. Every bid is still committed
before it is acknowledged; a bid that a check refuses gets its own error and does not affect
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import KovaError

from . import market
from .db import transact
from .market import BidRequest, Settings

__all__ = ["BidIntake"]


class BidIntake:
    """Takes bid requests and commits them in batches; see the module's documentation."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], int],
        settings: Settings,
        max_batch: int = 256,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        """``observe`` is told how many requests each transaction took (for ``/metrics``)."""
        self.engine, self.clock, self.settings, self.max_batch = engine, clock, settings, max_batch
        self.observe = observe
        self._waiting: list[tuple[BidRequest, asyncio.Future[dict[str, Any]]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def place(self, request: BidRequest) -> dict[str, Any]:
        """The new bid's row, once committed; raises the :class:`KovaError` that refused it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # if this request is cancelled (its client went away), its bid is still committed
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                outcomes = await transact(self.engine, functools.partial(self._place, batch=batch))
            except Exception as exc:  # the whole transaction failed: each request says so
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self.observe is not None:
                self.observe(len(batch))
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # cancelled
                    continue
                if isinstance(outcome, KovaError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _place(
        self, connection: AsyncConnection, *, batch: list[tuple[BidRequest, Any]]
    ) -> list[dict[str, Any] | KovaError]:
        height = await market.settle_to_now(connection, self.clock, self.settings)
        return await market.place_bids(
            connection, [request for request, _ in batch], height, self.settings
        )

    async def close(self) -> None:
        """Let the running batches finish (at shutdown)."""
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
