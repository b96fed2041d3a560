"""The single writer: the orchestrator's ``kova_core.Market`` in memory, its commands applied one
after the other and made durable in batches before any of them is answered (group commit).

Theory of operation
-------------------
Every market command of the API (and of the server's own work: expiries, auto-accepts, lost
providers, the clock's rounds and job deadlines) is a :class:`Command`: a function of the
``Market`` and a block height that returns the events it caused and a value, or raises a
refusal (a ``KovaError``, or one of ``refusals``): refused, nothing changed. Nothing else
changes the ``Market``. :meth:`Writer.submit` queues a command. One task takes everything
queued (up to ``max_batch``) and:

1. looks the batch's idempotency keys up in the command journal: a command applied before
   gets its journaled answer and is not applied again; a key sent twice in one batch is
   applied once, and its copy gets the first's answer;
2. applies the other commands in the order submitted, at the clock's height (never before the
   market's), in a worker thread, so that a settlement round over many leases does not hold
   the event loop;
3. writes the whole batch in one database transaction: the rows the events changed
   (``kova_live.state.rows_of``, made in the worker thread too, then ``write_rows``), then
   each command's own rows and answer body (its ``answer``), then the journal's row of each
   journaled command;
4. only after the commit answers the commands; those that arrived meanwhile wait for the next
   batch.

If the transaction fails, the ``Market`` is ahead of the database and is no longer trusted: it
is rebuilt from the database (``load_market``), and every command of the batch is answered
:class:`Unavailable` (``Retry-After``): none of them happened. A command sent again with its
idempotency key then applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import Event, KovaError, Market

from . import journal
from .db import transact
from .market import Settings
from .schema import network
from .state import Rows, load_market, rows_of, write_rows

__all__ = ["Batch", "Command", "Fenced", "NotLeader", "Unavailable", "Writer"]

log = logging.getLogger("kova_live.writer")


class Unavailable(Exception):
    """The batch holding the command could not be written: nothing of it happened. Send it
    again (with the same idempotency key) after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotLeader(Unavailable):
    """This process is a standby (or has just stopped leading): market commands go to the
    leader. ``leader``: its ``--advertise-url``, if one is known."""

    def __init__(self, leader: str | None) -> None:
        where = f" (the leader: {leader})" if leader else ""
        super().__init__(f"this orchestrator is a standby{where}: send market commands to the "
                         "leader; nothing happened")  # fmt: skip
        self.leader = leader


class Fenced(Exception):
    """The database's leader epoch has moved on: another process leads now, and this one's
    writes must not land (the transaction that found it is rolled back)."""


@dataclass
class Batch:
    """What the commands of one batch tell the writer beyond their events: each deployment
    created, its manifest text and auto-accept policy; providers changed without an event;
    providers heard from. ``height``: the height the batch is applied at."""

    new_deployments: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    touched_providers: set[int] = field(default_factory=set)
    height: int = 0
    heard: set[int] = field(default_factory=set)  # providers whose heartbeat the batch applied


@dataclass
class Command:
    """``apply(market, height, batch) -> (events, value)``; ``answer(connection, value)``,
    if given, runs in the batch's transaction after its rows are written and returns what the
    submitter gets (default: the value). Every check that may refuse a command belongs in
    ``apply`` (a refusal raised there refuses that command alone): whatever ``answer`` raises
    fails the whole batch.

    ``journal``: the request as the command journal knows it, with its idempotency key; the
    answer (a JSON body, answered with ``status``) is then journaled in the batch's
    transaction and the submitter gets a :class:`kova_live.journal.Answer`."""

    apply: Callable[[Market, int, Batch], tuple[list[Event], Any]]
    answer: Callable[[AsyncConnection, Any], Awaitable[Any]] | None = None
    journal: journal.Command | None = None
    status: int = 200


VIEW_SECONDS = 5.0  # how old a standby's copy of the market may be (Writer.view)
_COPY = object()  # an outcome: the same as the first command of the batch with this key


class Writer:
    """See the module. ``clock()`` is the current height; ``refusals``: the exceptions that
    refuse a command (besides ``KovaError``), answered to its submitter alone."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], int],
        settings: Settings,
        max_batch: int = 256,
        refusals: tuple[type[Exception], ...] = (),
        observe: Callable[[int], None] | None = None,
        react: Callable[[AsyncConnection, list[Event], int], Awaitable[None]] | None = None,
    ) -> None:
        """``observe`` is told how many commands each transaction took (for ``/metrics``);
        ``react(connection, events, height)`` runs in each batch's transaction after its rows
        are written (the work the events call for: ``kova_live.work.react``)."""
        self.react = react
        self.engine, self.clock, self.settings, self.max_batch = engine, clock, settings, max_batch
        self.refusals = (KovaError, journal.KeyReused, *refusals)
        self.observe = observe
        self.market: Market | None = None
        self.started = False
        # with standbys (PostgreSQL): the epoch this process leads in, which every batch's
        # transaction checks against the database's (fencing); None: it alone serves
        self.epoch: int | None = None
        self.leader_url: str | None = None  # the leader's, as a standby last read it
        self.on_fenced: Callable[[], None] | None = None  # told when a batch found it stale
        # told of each batch once it is written, with the market as the batch left it (before
        # closed records are forgotten): the console wakes the pages that show what changed
        self.committed: Callable[[Market, list[Event]], None] | None = None
        self.batches = 0  # committed
        self.rebuilt = 0
        # provider id -> the number of the committed batch that applied its last heartbeat:
        # a sweep that read who was silent before that batch leaves it alone
        self.heard: dict[int, int] = {}
        self._next_due = 0  # the height at which a round or a job deadline is next due
        self._waiting: list[tuple[Command, asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[None] | None = None
        # a standby's copy of the market, for reads that need the core's rules (see view())
        self._view: tuple[float, Market] | None = None
        self._viewing = asyncio.Lock()

    async def start(self) -> None:
        """Restore the ``Market`` from the database."""
        self._view = None  # a standby's copy: the leader has its own
        self.market = await self._load()
        self._note_next_due(self.market)
        self.started = True

    async def view(self, max_age: float = VIEW_SECONDS) -> Market:
        """A standby's copy of the market, for the one read that needs the core's rules rather
        than the tables (why a provider cannot serve an order): restored from the database as a
        take-over restores it, at most ``max_age`` seconds old, by one request at a time, and
        dropped :data:`VIEW_SECONDS` after it was made so an idle standby holds no copy. Only
        read it (the leader's own market is read and changed in batches: :meth:`submit`)."""
        async with self._viewing:
            now = time.monotonic()
            if self._view is None or now - self._view[0] > max_age:
                self._view = (now, await self._load())
                made = self._view
                asyncio.get_running_loop().call_later(VIEW_SECONDS, self._drop_view, made)
            return self._view[1]

    def _drop_view(self, made: tuple[float, Market]) -> None:
        if self._view is made:
            self._view = None

    async def _load(self) -> Market:
        async with self.engine.connect() as connection:
            return await load_market(connection, self.settings)

    async def submit(self, command: Command) -> Any:
        """Apply ``command``; its answer once the batch holding it is committed. Raises the
        refusal, or :class:`Unavailable`."""
        if not self.started:
            raise NotLeader(self.leader_url)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # if the submitter goes away (its client did), the command is applied all the same
        return await future

    async def tick(self) -> None:
        """Carry out every settlement round and job deadline due by the clock's height."""
        await self.submit(Command(lambda market, height, batch: (market.tick(height), None)))

    def due(self) -> bool:
        """Whether a settlement round or a job deadline is due by the clock's height (as the
        market stood after the last batch: the event loop never reads the market while a batch
        is applied in the worker thread)."""
        return self.clock() >= self._next_due

    def _note_next_due(self, market: Market) -> None:
        deadline = market.next_deadline()
        next_round = market.last_round + market.settlement_interval
        self._next_due = next_round if deadline is None else min(next_round, deadline)

    async def stop(self) -> None:
        """Stop leading: no command is taken from now on, the waiting ones are answered
        :class:`NotLeader` (nothing of them happened), the batch under way finishes (its
        transaction checks the epoch) and the market is dropped."""
        self.started = False
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(NotLeader(self.leader_url))
        await self.close()
        self.market = None
        self.epoch = None

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

    async def _answered(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> dict:
        keyed = [c.journal for c, _ in batch if c.journal is not None and not c.journal.made]
        if not keyed:
            return {}
        async with self.engine.connect() as connection:
            return await journal.answered(connection, keyed)

    def _apply(
        self, market: Market, height: int, made: Batch,
        batch: list[tuple[Command, asyncio.Future[Any]]], outcomes: list[Any],
    ) -> tuple[list[Event], Rows]:  # fmt: skip
        """Apply the commands whose outcome is not known yet, and make the rows of what they
        changed (in a worker thread)."""
        events: list[Event] = []
        for i, (command, _) in enumerate(batch):
            if outcomes[i] is not None:
                continue
            try:
                caused, value = command.apply(market, height, made)
            except self.refusals as refused:  # nothing changed
                outcomes[i] = refused
                continue
            events += caused
            outcomes[i] = ("applied", value)
        events += market.tick(market.height)  # what catching up left for the next command
        self._note_next_due(market)
        return events, rows_of(market, events, made.new_deployments, made.touched_providers,
                               postgresql=self.engine.dialect.name == "postgresql")  # fmt: skip

    async def _one(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        if self.market is None:  # a rebuild failed: the database was away
            try:
                self.market = await self._load()
                self._note_next_due(self.market)
            except Exception:
                log.exception("cannot rebuild the market from the database")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable("the database is away"))
                return
        try:
            prior = await self._answered(batch)
        except Exception:
            log.exception("cannot read the command journal")
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable("the database is away: nothing happened"))
            return
        outcomes: list[Any] = []
        first: dict[tuple[int, str], int] = {}
        for i, (command, _) in enumerate(batch):
            c = command.journal
            key = None if c is None else (c.account_id, c.key)
            if key is not None and key in prior:
                try:
                    outcomes.append(journal.replayed(c, prior[key]))
                except journal.KeyReused as reused:
                    outcomes.append(reused)
            elif key is not None and key in first:
                outcomes.append((_COPY, first[key]))
            else:
                if key is not None:
                    first[key] = i
                outcomes.append(None)
        market = self.market
        height = max(self.clock(), market.height)
        made = Batch(height=height)
        try:
            events, rows = await asyncio.to_thread(
                self._apply, market, height, made, batch, outcomes
            )
        except Exception:  # a command failed half-way: the market is not trusted
            log.exception("a command failed while it was applied; rebuilding the market")
            await self._fail(batch, "the market is being rebuilt")
            return

        async def write(connection: AsyncConnection) -> list[Any]:
            if self.epoch is not None:  # fencing: only the leader of the current epoch writes
                epoch = select(network.c.leader_epoch).where(network.c.id == 1)
                current = await connection.scalar(epoch.with_for_update(read=True))
                if current != self.epoch:
                    raise Fenced(f"the leader epoch is {current}, this process led in {self.epoch}")
            await write_rows(connection, rows)
            if self.react is not None:
                await self.react(connection, events, height)
            answers: list[Any] = []
            journaled: list[tuple[journal.Command, journal.Answer]] = []
            for (command, _), outcome in zip(batch, outcomes, strict=True):
                if not (isinstance(outcome, tuple) and outcome[0] == "applied"):
                    answers.append(outcome)
                    continue
                value = outcome[1]
                if command.answer is not None:
                    value = await command.answer(connection, value)
                if command.journal is not None:
                    value = journal.Answer(command.status, json.dumps(value))
                    journaled.append((command.journal, value))
                answers.append(value)
            if journaled:
                await journal.record_many(connection, journaled, height, int(time.time() * 1000))
            return answers

        try:
            answers = await transact(self.engine, write)
        except Fenced as exc:
            log.error("fenced: %s; this process steps down, nothing of the batch was written", exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(NotLeader(None))
            self.started = False
            if self.on_fenced is not None:
                self.on_fenced()
            return
        except Exception:
            log.exception("a batch of %d commands could not be written; rebuilding", len(batch))
            await self._fail(batch, "the database did not take the batch")
            return
        self.batches += 1
        for provider_id in made.heard:
            self.heard[provider_id] = self.batches
        if self.observe is not None:
            self.observe(len(batch))
        if self.committed is not None:
            try:
                self.committed(market, events)
            except Exception:  # a listener's bug never fails a batch that is written
                log.exception("a listener of committed batches failed")
        market.forget_closed()
        for i, answer in enumerate(answers):
            if isinstance(answer, tuple) and answer[0] is _COPY:
                answers[i] = answers[answer[1]]
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its submitter went away; the command happened all the same
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _fail(self, batch: list[tuple[Command, asyncio.Future[Any]]], why: str) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(Unavailable(f"{why}: nothing of this command happened"))
        try:
            self.market = await self._load()
            self._note_next_due(self.market)
            self.rebuilt += 1
        except Exception:  # the database is away: the next batch tries again
            log.exception("cannot rebuild the market from the database")
            self.market = None
