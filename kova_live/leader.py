"""A leader and standbys on one PostgreSQL database.

Several ``kova-live serve`` may run on one PostgreSQL database. Exactly one is the **leader**:
it holds a session-level advisory lock (:data:`kova_live.db.WRITER_LOCK`) on a connection of
its own, keeps the core's ``Market`` (the single writer, :mod:`kova_live.writer`) and runs every
market command, settlement round and job deadline. The others are **standbys**: they answer
reads from the database and refuse market commands with 503 (:class:`~kova_live.writer.NotLeader`),
and each tries for the lock every ``check_every`` seconds.

Theory of operation
-------------------
- **Taking over.** A standby that gets the lock increments ``network.leader_epoch`` (and sets
  ``leader_url``, ``leader_since_ms``) in a transaction of its own, then restores the market
  from the database and starts the writer, the work queue and the clock: the rounds that fell
  due meanwhile are caught up in the core's order by the market's first command, every provider
  gets a fresh heartbeat grace (:class:`kova_live.work.Sweep` starts again with the term).
- **Noticing a lost session.** PostgreSQL frees an advisory lock only once it notices the
  session is gone. The lock's session sets ``idle_session_timeout`` (the leader pings it every
  second, so only a leader that cannot reach the database stays idle that long) and TCP
  keepalives on both ends, so a vanished machine, or a network that stops forwarding, frees
  the lock within seconds. On its side the leader steps down as soon as a ping fails or takes
  longer than ``ping_timeout``.
- **Fencing.** Timing alone guarantees nothing: a leader that has not yet noticed it lost the
  lock may still be writing. So every transaction of the leader's writer reads
  ``network.leader_epoch`` ``FOR SHARE`` and fails if it is not the epoch the leader took over
  in (:class:`~kova_live.writer.Fenced`). The new leader's increment waits for the old leader's
  transactions that read it (a share lock) to end: a stale write either commits before the
  take-over or fails after it.
- **Stepping down** (a lost session, a fenced batch): the writer stops taking commands (those
  waiting are answered 503, nothing of them happened), the work and clock loops stop, the
  market is dropped, and the process goes back to being a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import WRITER_LOCK
from .schema import network

__all__ = ["Leadership"]

log = logging.getLogger("kova_live.leader")
T = TypeVar("T")


class _Lost(Exception):
    """The leader's lock session, or its epoch, is gone."""


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable``'s result, or :class:`TimeoutError` after ``seconds``, without waiting for
    it to be cancelled: cancelling a query makes psycopg send a cancel request over a new
    connection, which a network that has stopped forwarding holds for ever. What is left
    behind fails when its connection is closed."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError(f"no answer from the database in {seconds:g} s")
    return task.result()


class Leadership:
    """Who leads, for one process on a PostgreSQL database (see the module).

    ``on_lead(epoch)`` starts leading (it returns once the market is restored and commands are
    taken); ``on_lose()`` stops. ``role`` is ``leader`` or ``standby``; ``leader_url`` the
    leader's ``--advertise-url`` as last read (this process's own while it leads). (The terms
    this process has begun are counted in ``/metrics``, ``kova_takeovers_total``.)"""

    def __init__(
        self,
        url: str,
        engine: AsyncEngine,
        advertise_url: str,
        on_lead: Callable[[int], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
        *,
        check_every: float = 0.5,
        ping_every: float = 1.0,
        ping_timeout: float = 3.0,
        idle_timeout_ms: int = 5000,
    ) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.engine, self.advertise_url = engine, advertise_url
        self.on_lead, self.on_lose = on_lead, on_lose
        self.check_every, self.ping_every, self.ping_timeout = check_every, ping_every, ping_timeout
        self.idle_timeout_ms = idle_timeout_ms
        self.role = "standby"
        self.epoch: int | None = None
        self.leader_url: str | None = None
        self._fenced = asyncio.Event()
        # set once the first try is over (this process leads, or another does): a lone server
        # leads before it serves its first request
        self.tried = asyncio.Event()
        self.heard: Callable[[str | None], None] | None = None  # told the leader's URL
        self._stepping_down = 0.0  # seconds to stand by after an asked-for step-down
        self._term = False  # a term has begun (the epoch is ours), until on_lose has run

    def fenced(self) -> None:
        """The writer found the epoch moved on: step down now."""
        self._fenced.set()

    def step_down(self, hold: float = 3.0) -> None:
        """A planned switch-over: stop leading, release the lock, and stand by for ``hold``
        seconds, time for a standby (which tries every ``check_every``) to take over; with none,
        this process takes the lock again after that."""
        self._stepping_down = hold
        self._fenced.set()

    async def run(self) -> None:
        """Lead when the lock is free, stand by while it is not, for as long as the task runs."""
        while True:
            connection = None
            try:
                connection = await _within(self._connect(), self.ping_timeout)
                await self._stand_by(connection)
                await self._lead(connection)
            except (psycopg.Error, OSError, TimeoutError, _Lost) as exc:
                self.tried.set()
                if self._term:
                    log.error("this process stops leading: %s", exc or type(exc).__name__)
                else:
                    log.warning("cannot try for the leader's lock: %s", exc or type(exc).__name__)
            finally:
                if self._term:  # a term begun, whether on_lead finished or not
                    self._term = False
                    self.role, self.epoch = "standby", None
                    await self.on_lose()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await _within(connection.close(), 1)
            hold, self._stepping_down = self._stepping_down, 0.0
            await asyncio.sleep(max(self.check_every, hold))

    async def _connect(self) -> psycopg.AsyncConnection:
        connection = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=3,
            keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=3,
        )  # fmt: skip
        # the database's side: a session idle longer than this (a leader that cannot ping) or
        # whose peer stops answering keepalives ends, and its lock with it
        await connection.execute(f"SET idle_session_timeout = {int(self.idle_timeout_ms)}")
        await connection.execute("SET tcp_keepalives_idle = 2")
        await connection.execute("SET tcp_keepalives_interval = 1")
        await connection.execute("SET tcp_keepalives_count = 3")
        return connection

    async def _stand_by(self, connection: psycopg.AsyncConnection) -> None:
        while True:
            cursor = await _within(
                connection.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)),
                self.ping_timeout,
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            with contextlib.suppress(Exception):
                async with self.engine.connect() as reader:
                    self.leader_url = await reader.scalar(
                        select(network.c.leader_url).where(network.c.id == 1)
                    )
                if self.heard is not None:
                    self.heard(self.leader_url)
            self.tried.set()
            await asyncio.sleep(self.check_every)

    async def _lead(self, connection: psycopg.AsyncConnection) -> None:
        async with self.engine.begin() as writer:
            epoch = await writer.scalar(
                update(network)
                .where(network.c.id == 1)
                .values(leader_epoch=network.c.leader_epoch + 1, leader_url=self.advertise_url,
                        leader_since_ms=int(time.time() * 1000))
                .returning(network.c.leader_epoch)
            )  # fmt: skip
        assert epoch is not None
        self._fenced.clear()
        self._term, self.epoch = True, epoch
        log.info("this process leads (epoch %d); restoring the market", epoch)
        await self.on_lead(epoch)
        # the leader from now on, to /v1/leader and /v1/status: its commands are taken
        self.role, self.leader_url = "leader", self.advertise_url
        self.tried.set()
        log.info("leading: market commands are taken")
        while True:
            if self._fenced.is_set():
                raise _Lost("asked to step down" if self._stepping_down else
                            "a batch found the leader epoch moved on (fenced)")  # fmt: skip
            await _within(connection.execute("SELECT 1"), self.ping_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fenced.wait(), self.ping_every)
