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
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import KovaError

from . import journal, market
from .db import transact
from .journal import Answer, KeyReused
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
        self._waiting: list[tuple[BidRequest, asyncio.Future[dict[str, Any] | Answer]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def place(self, request: BidRequest) -> dict[str, Any] | Answer:
        """The new bid's row, once committed (or, for a retry of a bid placed before, its
        journaled answer); raises the :class:`KovaError` that refused it, or
        :class:`~kova_live.journal.KeyReused`."""
        future: asyncio.Future[dict[str, Any] | Answer] = asyncio.get_running_loop().create_future()
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
                if isinstance(outcome, (KovaError, KeyReused)):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _place(
        self, connection: AsyncConnection, *, batch: list[tuple[BidRequest, Any]]
    ) -> list[dict[str, Any] | KovaError | Answer | KeyReused]:
        height = await market.settle_to_now(connection, self.clock, self.settings)
        requests = [request for request, _ in batch]
        # retries of bids already placed get their answers back; a key sent twice in one
        # batch is placed once, the second copy gets the first's outcome
        prior = await journal.answered(
            connection, [r.command for r in requests if r.command is not None]
        )
        outcomes: list[dict[str, Any] | KovaError | Answer | KeyReused | None] = []
        first: dict[tuple[int, str], int] = {}
        fresh: list[int] = []
        for i, request in enumerate(requests):
            command = request.command
            key = None if command is None else (command.account_id, command.key)
            if key is not None and key in prior:
                try:
                    outcomes.append(journal.replayed(command, prior[key]))
                except KeyReused as reused:
                    outcomes.append(reused)
            elif key is not None and key in first:
                outcomes.append(None)  # filled in from the first copy below
            else:
                if key is not None:
                    first[key] = i
                outcomes.append(None)
                fresh.append(i)
        placed = await market.place_bids(
            connection, [requests[i] for i in fresh], height, self.settings
        )
        answers = []
        for i, outcome in zip(fresh, placed, strict=True):
            outcomes[i] = outcome
            command = requests[i].command
            if command is not None and not isinstance(outcome, KovaError):
                answers.append((command, Answer(201, json.dumps(outcome))))
        if answers:
            await journal.record_many(connection, answers, height, int(time.time() * 1000))
        for i, request in enumerate(requests):
            if outcomes[i] is None:
                command = request.command
                outcomes[i] = outcomes[first[(command.account_id, command.key)]]
        return outcomes  # type: ignore[return-value]

    async def close(self) -> None:
        """Let the running batches finish (at shutdown)."""
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
