"""Background work from a durable queue (the ``work_queue`` table).

Work is enqueued in the same transaction as the change that asks for it, so neither can exist
without the other: creating a deployment enqueues the expiry of each of its orders. A worker
loop in the server takes due items (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and runs each in
its own transaction, which also marks it done; an item whose transaction fails is retried later
with its error recorded. A server that was down finds its due work still in the queue.

Kinds:

- ``expire_order``: an order nobody bid on is given up (``expired``) once its time is over. An
  order with bids is left for its tenant to choose from.
- ``sweep_providers``: providers whose agent has not sent a heartbeat within the grace period
  are lost: their leases fail and their orders reopen (the core's ``fail_provider``). Each sweep
  enqueues the next one.
- ``auto_accept``: for a deployment with an auto-accept policy, the policy chooses among the
  order's open bids and the bid is accepted for the tenant; with no bid yet (or a paused
  deployment), it looks again after the policy's wait, and at least one poll interval (15
  blocks) later.
- ``prune_logs``: log lines older than the retention period (24 hours by default, wall clock)
  are deleted. Each prune enqueues the next one.
- ``settle``: catch-up settlement. Every item first carries out the settlement rounds and job
  deadlines due at its height (``market.settle_to_now``), as every command does; a ``settle``
  item is due at each settlement round's height and enqueues the next one, so rounds run on
  time when no command comes, and at start a server catches up the rounds it missed while it
  was down.
- ``job_deadline``: likewise, due at a job's deadline (enqueued with the deadline, by
  ``market.schedule_job``), so that a job runs out of funds or time on its block. A deadline
  that moved since is just a catch-up with nothing to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kova_core import BidView, KovaError, reputation_score, selection_policy

from . import market
from .clock import BlockClock
from .db import transact
from .queue import enqueue
from .schema import bids, logs, orders, provider_nodes, work_queue

__all__ = ["WorkSettings", "enqueue", "run_due", "worker_loop"]

log = logging.getLogger("kova_live.work")


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """How long an order waits for a first bid, how long a provider may stay silent, and how
    long log lines are kept."""

    order_expiry: int = 3600  # blocks
    heartbeat_grace: int = 75  # blocks: five missed 15 s polls
    sweep_every: int = 15  # blocks between sweeps for lost providers
    log_retention_ms: int = 24 * 3600 * 1000  # wall clock
    prune_every: int = 60  # blocks between deletions of old log lines


async def _expire_order(
    connection: AsyncConnection, order_id: int, height: int, settings: market.Settings
) -> None:
    state = await connection.scalar(select(orders.c.state).where(orders.c.id == order_id))
    has_bids = await connection.scalar(
        select(bids.c.id).where(bids.c.order_id == order_id, bids.c.state == "open").limit(1)
    )
    if state == "open" and has_bids is None:
        await market.expire_order(connection, order_id, height, settings)


async def _auto_accept(
    connection: AsyncConnection, order_id: int, height: int, settings: market.Settings
) -> None:
    order = (await connection.execute(select(orders).where(orders.c.id == order_id))).one()
    dep = await market.locked_deployment(connection, order.deployment_id)
    if order.state != "open" or dep.state == "closed" or dep.auto_accept is None:
        return
    auto = json.loads(dep.auto_accept)
    policy = selection_policy(auto["policy"], **auto["params"])
    rows = (
        await connection.execute(
            select(bids, provider_nodes.c.completed, provider_nodes.c.failed)
            .join(provider_nodes, provider_nodes.c.provider_id == bids.c.provider_id)
            .where(bids.c.order_id == order_id, bids.c.state == "open")
            .order_by(bids.c.id)
        )
    ).all()
    views = [
        BidView(r.id, r.provider_id, r.price, r.response_time,
                reputation_score(r.completed, r.failed), r.completed, r.failed)
        for r in rows
    ]  # fmt: skip
    choice = policy.choose(views) if dep.state == "active" else None
    if choice is None:  # nothing to choose yet, or paused: look again later
        later = height + max(auto["wait"], RELOOK)
        await enqueue(connection, "auto_accept", order_id, later, height)
        return
    await market.accept_bid(connection, dep.tenant_id, choice.bid_id, height, settings)
    log.info("order %s: accepted bid %s for the tenant (%s)", order_id, choice.bid_id, policy)


async def _sweep(
    connection: AsyncConnection, height: int, settings: market.Settings, work: WorkSettings
) -> None:
    silent = (
        await connection.execute(
            select(provider_nodes.c.provider_id)
            .where(provider_nodes.c.state == "online")
            .where(provider_nodes.c.last_seen < height - work.heartbeat_grace)
            .order_by(provider_nodes.c.provider_id)
        )
    ).scalars().all()
    for provider_id in silent:
        await market.fail_provider(connection, provider_id, height, settings)
        log.info("provider %s lost: no heartbeat since before block %s", provider_id, height)
    await enqueue(connection, "sweep_providers", None, height + work.sweep_every, height)


async def _prune_logs(
    connection: AsyncConnection, height: int, now_ms: int, work: WorkSettings
) -> None:
    gone = await connection.execute(
        delete(logs).where(logs.c.created_ms < now_ms - work.log_retention_ms)
    )
    if gone.rowcount:
        log.info("deleted %s log lines older than the retention period", gone.rowcount)
    await enqueue(connection, "prune_logs", None, height + work.prune_every, height)


async def _settle(connection: AsyncConnection, height: int, settings: market.Settings) -> None:
    interval = settings.settlement_interval
    await enqueue(connection, "settle", None, (height // interval + 1) * interval, height)


RELOOK = 15  # blocks: at least a provider's poll interval between two looks at no bids

PERIODIC = ("settle", "sweep_providers", "prune_logs")  # kinds that enqueue their next turn


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
    settings: market.Settings,
    work: WorkSettings,
    now_ms: int | None = None,
) -> int:
    """Run every item due now (``clock`` gives the height; each item runs at the height its
    transaction reads, see ``market.settle_to_now``; ``now_ms``: the wall clock, for log
    retention); return how many were done."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    height = clock()
    async with engine.connect() as connection:
        due = (
            await connection.execute(
                select(work_queue.c.id)
                .where(work_queue.c.state == "pending", work_queue.c.run_at <= height)
                .order_by(work_queue.c.run_at, work_queue.c.id)
                .limit(100)
            )
        ).scalars().all()
    done = 0
    for item_id in due:

        async def one(connection: AsyncConnection, item_id: int = item_id) -> bool:
            claim = select(work_queue).where(work_queue.c.id == item_id)
            if connection.dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            item = (await connection.execute(claim)).first()
            if item is None or item.state != "pending":
                return False  # another worker has it, or did it
            height = await market.settle_to_now(connection, clock, settings)
            try:
                if item.kind == "expire_order":
                    await _expire_order(connection, item.subject_id, height, settings)
                elif item.kind == "sweep_providers":
                    await _sweep(connection, height, settings, work)
                elif item.kind == "auto_accept":
                    await _auto_accept(connection, item.subject_id, height, settings)
                elif item.kind == "prune_logs":
                    await _prune_logs(connection, height, now_ms, work)
                elif item.kind == "settle":
                    await _settle(connection, height, settings)
                elif item.kind == "job_deadline":
                    pass  # settle_to_now above carried it out
                else:
                    raise ValueError(f"unknown kind of work {item.kind!r}")
            except KovaError as exc:  # the world moved on (order closed, provider gone): done
                log.info("work %s (%s) had nothing to do: %s", item.id, item.kind, exc)
            await connection.execute(
                update(work_queue).where(work_queue.c.id == item.id).values(state="done")
            )
            return True

        try:
            done += await transact(engine, one)
        except Exception as exc:
            log.exception("work item %s failed; will retry", item_id)
            error = f"{type(exc).__name__}: {exc}"[:2000]

            async def failed(
                connection: AsyncConnection, item_id: int = item_id, error: str = error
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


async def worker_loop(
    engine: AsyncEngine, clock: BlockClock, settings: market.Settings, work: WorkSettings
) -> None:
    """Run due work every block, for as long as the server runs."""
    await ensure_periodic(engine, clock.height())
    while True:
        height = clock.height()
        try:
            await run_due(engine, clock.height, settings, work, clock.now_ms())
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: log it, the work waits in the queue
            log.exception("cannot reach the work queue; retrying")
            await asyncio.sleep(1)
        await asyncio.sleep(max(0.05, clock.seconds_until(height + 1)))
