#!/usr/bin/env python3
"""One settlement round over many active leases, on PostgreSQL. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/live_settlement.py [--leases 100000] [--per-deployment 2]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

It creates a scratch database, migrates it, writes the leases and their escrows straight into
the tables (accounts, deployments, orders, bids, leases, balances; ``live_restore.py`` adds a
real manifest and the providers' rows), vacuums and analyses it as autovacuum would a running
server's, restores the server's single writer from it (``kova_live.writer.Writer.start``), then
times one round as ``kova-live serve`` runs it: the clock's tick submitted to the writer, the
round computed in the ``Market`` (in a worker thread) and persisted in one transaction. It then
checks that the ledger balances. The scratch database is dropped at the end
(``writer_round.py`` times the two parts of the round apart).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from kova_live.db import async_engine  # noqa: E402
from kova_live.market import Settings  # noqa: E402
from kova_live.schema import (  # noqa: E402
    accounts,
    balances,
    bids,
    deployments,
    leases,
    orders,
    transfers,
)
from kova_live.writer import Writer  # noqa: E402

MANIFEST = "version: '2.0'"  # rows are written directly; the round never parses it


async def populate(url: str, count: int, per_deployment: int) -> None:
    engine = async_engine(url)
    deps = count // per_deployment
    async with engine.begin() as c:
        await c.execute(insert(accounts), [
            {"id": 1, "role": "tenant", "name": "t", "token_hash": "t" * 64, "created_height": 0},
            *({"id": 2 + p, "role": "provider", "name": f"p{p}",
               "token_hash": f"{p}".rjust(64, "p"), "created_height": 0} for p in range(100)),
        ])  # fmt: skip
        await c.execute(insert(deployments), [
            {"id": d, "tenant_id": 1, "kind": "deployment", "manifest": MANIFEST,
             "created_at": 0, "state": "active", "written_off": 0}
            for d in range(1, deps + 1)
        ])  # fmt: skip
        rows = [(i, 1 + (i - 1) // per_deployment) for i in range(1, deps * per_deployment + 1)]
        await c.execute(insert(orders), [
            {"id": i, "deployment_id": d, "spec_index": 0, "service": "web", "replica": 0,
             "cpu": 1000, "memory": 2**30, "storage": 2**30, "gpu": 0, "max_price": 2_000_000,
             "denom": "ukova", "created_at": 0, "state": "matched"}
            for i, d in rows
        ])  # fmt: skip
        await c.execute(insert(bids), [
            {"id": i, "order_id": i, "provider_id": 2 + i % 100, "price": 1_000 + i % 7,
             "height": 1, "response_time": 1, "state": "accepted"}
            for i, _ in rows
        ])  # fmt: skip
        await c.execute(insert(leases), [
            {"id": i, "deployment_id": d, "order_id": i, "provider_id": 2 + i % 100, "bid_id": i,
             "price": 1_000 + i % 7, "cpu": 1000, "memory": 2**30, "storage": 2**30, "gpu": 0,
             "created_at": 1, "last_settled": 1, "state": "active", "debt": 0, "debt_start": 0,
             "debt_end": 0, "blocks_paid": 0, "total_paid": 0, "written_off": 0}
            for i, d in rows
        ])  # fmt: skip
        # every tenth deployment is short of money, so the round both pays and pauses
        await c.execute(insert(balances), [
            {"account": f"escrow:{d}", "amount": 10 if d % 10 == 0 else 10_000_000}
            for d in range(1, deps + 1)
        ])  # fmt: skip
        await c.execute(insert(transfers), [
            {"height": 0, "source": "external", "destination": f"escrow:{d}",
             "amount": 10 if d % 10 == 0 else 10_000_000, "reason": "deposit"}
            for d in range(1, deps + 1)
        ])  # fmt: skip
    await engine.dispose()


async def round_once(url: str) -> tuple[float, int, int]:
    engine = async_engine(url)
    writer = Writer(engine, lambda: 60, Settings(settlement_interval=60, fee_bps=100))
    await writer.start()
    gc.collect()  # as `kova-live serve` does once the market is restored
    gc.freeze()
    started = time.perf_counter()
    await writer.tick()
    elapsed = time.perf_counter() - started
    async with engine.connect() as c:
        moved = await c.scalar(select(func.count()).select_from(transfers))
        paused = await c.scalar(
            select(func.count()).select_from(leases).where(leases.c.state == "insufficient_funds")
        )
        total_in = await c.scalar(
            select(func.sum(transfers.c.amount)).where(transfers.c.source == "external")
        )
        held = await c.scalar(select(func.sum(balances.c.amount)))
    await engine.dispose()
    assert held == total_in, "money was not conserved"
    return elapsed, int(moved), int(paused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--per-deployment", type=int, default=2)
    parser.add_argument(
        "--database", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an existing database to connect to for creating the scratch one",
    )  # fmt: skip
    args = parser.parse_args()
    with scratch_database(args.database) as url:
        started = time.perf_counter()
        asyncio.run(populate(url, args.leases, args.per_deployment))
        from live_restore import complete  # (it builds on this module's populate)

        asyncio.run(complete(url))
        vacuum(url)
        populated = time.perf_counter() - started
        elapsed, moved, paused = asyncio.run(round_once(url))
    print(f"leases                 {args.leases:>12,}  ({args.per_deployment} per deployment)")
    print(f"setup (direct inserts) {populated:>12.2f} s")
    print(f"one round, persisted   {elapsed:>12.2f} s  (target: at most 2 s)")
    print(f"transfers after round  {moved:>12,}  (deposits, payments, fees)")
    print(f"leases paused          {paused:>12,}  (every tenth deployment is short)")
    print(f"leases per second      {args.leases / elapsed:>12,.0f}")


if __name__ == "__main__":
    main()
