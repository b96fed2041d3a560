"""Background work from a durable queue (the ``work_queue`` table), and the clock's rounds.

Work is enqueued in the same transaction as the change that asks for it, so neither can exist
without the other: creating an auto-accepting deployment enqueues a choice for each of its
orders. A worker
loop in the server takes due items and runs each: what it does to the market is a command on
the single writer (:mod:`kova_live.writer`), checked against the market as it is then (an
order no longer open is not expired); the item is then marked done in a transaction of its
own. An item whose server died in between runs again and finds nothing left to do; an item
that fails is retried later with its error recorded. A server that was down finds its due work
still in the queue.

Kinds:

- ``sweep_providers``: providers whose agent has not sent a heartbeat within the grace period
  are lost: their leases fail and their orders reopen (the core's ``fail_provider``). Each sweep
  enqueues the next one. Only silence the server was up to hear counts (:class:`Sweep`): after
  a start every provider has a fresh grace, so an outage of the orchestrator loses nobody. A
  sweep that finds more than ``hold_share`` of the online providers silent at once holds them
  back (the likelier fault is on the orchestrator's side of the network: its link, its DNS),
  logs it and shows it in ``/metrics`` (``kova_providers_held``), and declares them lost only if
  they stay silent for another grace.
- ``auto_accept``: for a deployment with an auto-accept policy, the policy chooses among the
  order's open bids (the market's ``bid_views``) and the bid is accepted for the tenant; with
  no bid yet (or a paused deployment), it looks again after the policy's wait, and at least one
  poll interval (15 blocks) later.
- ``prune_logs``: log lines older than the retention period (24 hours by default, wall clock)
  are deleted. Each prune enqueues the next one.
- ``settle``, ``job_deadline`` and ``expire_order``: kinds of earlier servers, done at once:
  settlement rounds, job deadlines and the end of an order's lifetime (the core's
  ``Limits.order_lifetime``, ``serve --order-expiry``) are the clock's (:func:`clock_loop`),
  which submits a tick to the writer in the block one falls due, so they run on time when no
  command comes, and at start a server catches up what fell due while it was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import (
    DeploymentState,
    Event,
    Market,
    OrderReopened,
    OrderState,
    ProviderState,
    selection_policy,
)

from .clock import BlockClock
from .db import transact
from .queue import enqueue
from .schema import deployments, logs, orders, provider_nodes, work_queue
from .writer import Batch, Command, Writer

__all__ = ["Sweep", "WorkSettings", "clock_loop", "enqueue", "run_due", "worker_loop"]

log = logging.getLogger("kova_live.work")


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """How long a provider may stay silent, and how long log lines are kept."""

    heartbeat_grace: int = 75  # blocks: five missed 15 s polls
    sweep_every: int = 15  # blocks between sweeps for lost providers
    log_retention_ms: int = 24 * 3600 * 1000  # wall clock
    prune_every: int = 60  # blocks between deletions of old log lines
    hold_share: float = 0.2  # more of the online providers silent at once than this: held


class Sweep:
    """What the sweeps of one server process remember: the height it started serving at (no
    provider is lost for silence before it: the server was not there to hear), and the
    providers whose loss is held back, each with the height of the sweep that held it.
    ``observe(n)`` is told how many are held after each sweep (for ``/metrics``)."""

    def __init__(self, up_since: int, observe: Callable[[int], None] | None = None) -> None:
        self.up_since = up_since
        self.held: dict[int, int] = {}
        self.observe = observe

    def decide(self, silent: list[int], online: int, height: int, work: WorkSettings) -> list[int]:
        """Of the providers silent for a grace (``silent``, among ``online`` online ones), those
        to declare lost now."""
        grace = work.heartbeat_grace
        if height - grace < self.up_since:  # not a whole grace heard since the start
            silent = []
        heard = set(silent)
        for provider_id in [p for p in self.held if p not in heard]:
            del self.held[provider_id]  # it spoke (or is gone): the hold is over
        confirmed = [p for p in silent if p in self.held and self.held[p] + grace <= height]
        fresh = [p for p in silent if p not in self.held]
        if fresh and len(fresh) > work.hold_share * online:
            for provider_id in fresh:
                self.held[provider_id] = height
            log.warning(
                "%d of %d online providers fell silent at once: holding their loss back for"
                " another %d blocks (the fault may be the orchestrator's network)",
                len(fresh), online, grace,
            )  # fmt: skip
            fresh = []
        for provider_id in confirmed:
            del self.held[provider_id]
        if self.observe is not None:
            self.observe(len(self.held))
        return sorted(confirmed + fresh)


def _auto_accept(order_id: int, auto: dict[str, Any]) -> Command:
    """Accept what the tenant's policy chooses; the value: whether to look again later."""
    policy = selection_policy(auto["policy"], **auto["params"])

    def apply(market: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        order = market.orders.get(order_id)
        if order is None or order.state is not OrderState.OPEN:
            return [], False
        dep = market.deployments[order.deployment_id]
        if dep.state is not DeploymentState.ACTIVE:
            return [], True  # paused: look again later
        choice = policy.choose(market.bid_views(order_id))
        if choice is None:
            return [], True
        log.info("order %s: accepting bid %s for the tenant (%s)", order_id, choice.bid_id, policy)
        return market.accept_bid(choice.bid_id, height), False

    return Command(apply)


def _lose(writer: Writer, provider_ids: list[int], silent_since: int, read_after: int) -> Command:
    """Lose these providers, found silent by a read made after the writer's batch number
    ``read_after``, unless a heartbeat of theirs was applied since (the writer may have been
    busy with a round meanwhile)."""

    def apply(market: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events: list[Event] = []
        for provider_id in provider_ids:
            if writer.heard.get(provider_id, 0) > read_after or provider_id in batch.heard:
                continue  # it spoke after all
            provider = market.providers.get(provider_id)
            if provider is not None and provider.state is ProviderState.ONLINE:
                events += market.fail_provider(provider_id, height)
                log.info("provider %s lost: no heartbeat since before block %s", provider_id,
                         silent_since)  # fmt: skip
        return events, None

    return Command(apply)


RELOOK = 15  # blocks: at least a provider's poll interval between two looks at no bids

PERIODIC = ("sweep_providers", "prune_logs")  # kinds that enqueue their next turn


async def ensure_periodic(engine: AsyncEngine, height: int) -> None:
    """Make sure one item of each periodic kind is pending (the first start of a network, or
    of a server newer than the kind, enqueues it)."""

    async def work(connection: AsyncConnection) -> None:
        for kind in PERIODIC:
            pending = await connection.scalar(
                select(work_queue.c.id)
                .where(work_queue.c.kind == kind, work_queue.c.state == "pending")
                .limit(1)
            )
            if pending is None:
                await enqueue(connection, kind, None, height, height)

    await transact(engine, work)


async def run_due(
    engine: AsyncEngine,
    clock: Callable[[], int],
    writer: Writer,
    work: WorkSettings,
    now_ms: int | None = None,
    sweep: Sweep | None = None,
) -> int:
    """Run every item due now (``clock`` gives the height; ``now_ms``: the wall clock, for log
    retention); return how many were done."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    height = clock()
    async with engine.connect() as connection:
        due = (
            await connection.execute(
                select(work_queue)
                .where(work_queue.c.state == "pending", work_queue.c.run_at <= height)
                .order_by(work_queue.c.run_at, work_queue.c.id)
                .limit(100)
            )
        ).all()
    done = 0
    for item in due:
        try:
            later = await _run(engine, clock, writer, work, item, now_ms, sweep)

            async def finish(
                connection: AsyncConnection, item: Any = item, later: Any = later
            ) -> None:
                await connection.execute(
                    update(work_queue).where(work_queue.c.id == item.id).values(state="done")
                )
                if later is not None:  # its next turn
                    kind, subject, at = later
                    await enqueue(connection, kind, subject, at, clock())

            await transact(engine, finish)
            done += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("work item %s failed; will retry", item.id)
            error = f"{type(exc).__name__}: {exc}"[:2000]

            async def failed(
                connection: AsyncConnection, item_id: int = item.id, error: str = error
            ) -> None:
                await connection.execute(
                    update(work_queue)
                    .where(work_queue.c.id == item_id)
                    .values(
                        attempts=work_queue.c.attempts + 1, last_error=error, run_at=clock() + 10
                    )
                )

            await transact(engine, failed)
    return done


async def _run(
    engine: AsyncEngine, clock: Callable[[], int], writer: Writer, work: WorkSettings,
    item: Any, now_ms: int, sweep: Sweep | None,
) -> tuple[str, int | None, int] | None:  # fmt: skip
    """Do one item; return the item to enqueue after it, if any: (kind, subject, run at)."""
    height = clock()
    if item.kind == "sweep_providers":
        sweep = sweep or Sweep(0)
        read_after = writer.batches  # a heartbeat applied after this is not silence
        async with engine.connect() as connection:
            online = (
                await connection.execute(
                    select(provider_nodes.c.provider_id, provider_nodes.c.last_seen)
                    .where(provider_nodes.c.state == "online")
                    .order_by(provider_nodes.c.provider_id)
                )
            ).all()
        cutoff = height - work.heartbeat_grace
        silent = [p for p, seen in online if seen < cutoff]
        lost = sweep.decide(silent, len(online), height, work)
        if lost:
            await writer.submit(_lose(writer, lost, cutoff, read_after))
        return "sweep_providers", None, height + work.sweep_every
    elif item.kind == "auto_accept":
        async with engine.connect() as connection:
            raw = await connection.scalar(
                select(deployments.c.auto_accept)
                .join(orders, orders.c.deployment_id == deployments.c.id)
                .where(orders.c.id == item.subject_id)
            )
        if raw is None:
            return None
        auto = json.loads(raw)
        if await writer.submit(_auto_accept(item.subject_id, auto)):
            return "auto_accept", item.subject_id, height + max(auto["wait"], RELOOK)
    elif item.kind == "prune_logs":

        async def prune(connection: AsyncConnection) -> None:
            gone = await connection.execute(
                delete(logs).where(logs.c.created_ms < now_ms - work.log_retention_ms)
            )
            if gone.rowcount:
                log.info("deleted %s log lines older than the retention period", gone.rowcount)

        await transact(engine, prune)
        return "prune_logs", None, height + work.prune_every
    elif item.kind in ("settle", "job_deadline", "expire_order"):
        pass  # an earlier server's: the clock loop carries rounds, deadlines and expiries out
    else:
        raise ValueError(f"unknown kind of work {item.kind!r}")
    return None


async def react(connection: AsyncConnection, events: list[Event], height: int) -> None:
    """The work a batch's events call for, in its transaction: an order of an auto-accepting
    deployment that opens again (its lease failed) is chosen for again after the policy's wait."""
    reopened = [e for e in events if isinstance(e, OrderReopened)]
    if not reopened:
        return
    policies = dict(
        (
            await connection.execute(
                select(deployments.c.id, deployments.c.auto_accept).where(
                    deployments.c.id.in_(sorted({e.deployment_id for e in reopened})),
                    deployments.c.auto_accept.is_not(None),
                )
            )
        ).all()
    )
    for e in reopened:
        if e.deployment_id in policies:
            wait = json.loads(policies[e.deployment_id])["wait"]
            await enqueue(connection, "auto_accept", e.order_id, height + wait, height)


async def worker_loop(
    engine: AsyncEngine, clock: BlockClock, writer: Writer, work: WorkSettings,
    held: Callable[[int], None] | None = None,
) -> None:
    """Run due work every block, for as long as the server runs (``held``: told how many
    providers' loss is held back after each sweep)."""
    await ensure_periodic(engine, clock.height())
    sweep = Sweep(clock.height(), held)  # silence from before now was not heard
    while True:
        height = clock.height()
        try:
            await run_due(engine, clock.height, writer, work, clock.now_ms(), sweep)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: log it, the work waits in the queue
            log.exception("cannot reach the work queue; retrying")
            await asyncio.sleep(1)
        await asyncio.sleep(max(0.05, clock.seconds_until(height + 1)))


async def clock_loop(writer: Writer, clock: BlockClock) -> None:
    """Every block, if a settlement round or a job deadline is due, tick the market: the
    rounds run on time when no command comes."""
    while True:
        height = clock.height()
        if writer.due():
            try:
                await writer.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the next block tries again
                log.exception("cannot carry out the settlement round due; retrying")
        await asyncio.sleep(max(0.02, clock.seconds_until(height + 1)))
