"""The single writer: a ``kova_core.Market`` in memory, its commands applied one after the other
and made durable in batches before any of them is answered (group commit).

This is the engine of the orchestrator as DESIGN section 2 has it. ``kova-live serve`` does not
run on it yet (its commands still run in SQL, ``kova_live/market.py``); ``tests/live/
test_writer.py`` drives it with the simulator's recorded commands.

Theory of operation
-------------------
A command is a function of the ``Market`` and a block height that returns the events it caused
and a value (or raises a ``KovaError``: refused, nothing changed). :meth:`Writer.submit` queues
it. One task takes everything queued (up to ``max_batch``), applies each command in the order
submitted at the clock's height (never before the market's), then writes the whole batch in one
database transaction: the rows the events changed (``kova_live.state.persist``), then each
command's own rows and answer (its ``answer`` function, in the same transaction). Only after
the commit is any command of the batch answered; commands that arrive meanwhile wait for the
next batch.

If the transaction fails, the ``Market`` is ahead of the database and is no longer trusted: it
is rebuilt from the database (``load_market``), and every command of the batch is answered
:class:`Unavailable` (``Retry-After``): none of them happened. A command sent again with its
idempotency key then applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import Event, KovaError, Market

from .db import transact
from .market import Settings
from .state import load_market, persist

__all__ = ["Batch", "Command", "Unavailable", "Writer"]

log = logging.getLogger("kova_live.writer")


class Unavailable(Exception):
    """The batch holding the command could not be written: nothing of it happened. Send it
    again (with the same idempotency key) after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Batch:
    """What the commands of one batch tell the writer beyond their events: each deployment
    created, its manifest text and auto-accept policy; providers changed without an event."""

    new_deployments: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    touched_providers: set[int] = field(default_factory=set)


@dataclass
class Command:
    """``apply(market, height, batch) -> (events, value)``; ``answer(connection, value)``,
    if given, runs in the batch's transaction after its rows are written and returns what the
    submitter gets (default: the value). Every check that may refuse a command belongs in
    ``apply`` (a ``KovaError`` there refuses that command alone): whatever ``answer`` raises
    fails the whole batch."""

    apply: Callable[[Market, int, Batch], tuple[list[Event], Any]]
    answer: Callable[[AsyncConnection, Any], Awaitable[Any]] | None = None


class Writer:
    """See the module. ``clock()`` is the current height."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], int],
        settings: Settings,
        max_batch: int = 256,
    ) -> None:
        self.engine, self.clock, self.settings, self.max_batch = engine, clock, settings, max_batch
        self.market: Market | None = None
        self.started = False
        self.batches = 0
        self.rebuilt = 0
        self._waiting: list[tuple[Command, asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Restore the ``Market`` from the database."""
        self.market = await self._load()
        self.started = True

    async def _load(self) -> Market:
        async with self.engine.connect() as connection:
            return await load_market(connection, self.settings)

    async def submit(self, command: Command) -> Any:
        """Apply ``command``; its answer once the batch holding it is committed. Raises the
        ``KovaError`` that refused it, or :class:`Unavailable`."""
        if not self.started:
            raise RuntimeError("start() the writer first")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def close(self) -> None:
        """Let the batch under way finish."""
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner

    async def _run(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            await self._one(batch)

    async def _one(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        if self.market is None:  # a rebuild failed: the database was away
            try:
                self.market = await self._load()
            except Exception:
                log.exception("cannot rebuild the market from the database")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable("the database is away"))
                return
        market = self.market
        height = max(self.clock(), market.height)
        made = Batch()
        events: list[Event] = []
        values: list[Any] = []
        try:
            for command, _ in batch:
                try:
                    caused, value = command.apply(market, height, made)
                except KovaError as refused:  # nothing changed
                    values.append(refused)
                    continue
                events += caused
                values.append(value)
            events += market.tick(market.height)  # what catching up left for the next command
        except Exception:  # a command failed half-way: the market is not trusted
            log.exception("a command failed while it was applied; rebuilding the market")
            await self._fail(batch, "the market is being rebuilt")
            return

        async def write(connection: AsyncConnection) -> list[Any]:
            await persist(connection, market, events, made.new_deployments,
                          made.touched_providers)  # fmt: skip
            answers = []
            for (command, _), value in zip(batch, values, strict=True):
                if isinstance(value, KovaError) or command.answer is None:
                    answers.append(value)
                else:
                    answers.append(await command.answer(connection, value))
            return answers

        try:
            answers = await transact(self.engine, write)
        except Exception:
            log.exception("a batch of %d commands could not be written; rebuilding", len(batch))
            await self._fail(batch, "the database did not take the batch")
            return
        self.batches += 1
        market.forget_closed()
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its submitter went away; the command happened all the same
                continue
            if isinstance(answer, KovaError):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _fail(self, batch: list[tuple[Command, asyncio.Future[Any]]], why: str) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(Unavailable(f"{why}: nothing of this command happened"))
        try:
            self.market = await self._load()
            self.rebuilt += 1
        except Exception:  # the database is away: the next batch tries again
            log.exception("cannot rebuild the market from the database")
            self.market = None
