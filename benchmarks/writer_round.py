#!/usr/bin/env python3
"""A settlement round over many active leases as the single writer runs it: computed in the
core's ``Market`` (restored from PostgreSQL) and persisted from its events. Prints figures;
asserts nothing.

    .venv/bin/python benchmarks/writer_round.py [--leases 100000] [--per-deployment 2]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

The scratch database is the one ``live_restore.py`` builds (``live_settlement.py``'s leases, a
real manifest, the providers' rows; every tenth deployment short of money). The ``Market`` is
restored from it (``kova_live.state.load_market``) and frozen out of the garbage collector's
way, as ``kova-live serve`` does; the round at block 60 is computed (``Market.tick``), the rows
of what it changed are made (``kova_live.state.rows_of``: the writer does both in its worker
thread) and written in one transaction (``write_rows``); each part is timed
(``live_settlement.py`` times the same round through the writer, in all). The database is
dropped at the end.
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

from live_restore import complete  # noqa: E402
from live_settlement import populate  # noqa: E402
from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from kova_core import LeaseState, Transfer  # noqa: E402
from kova_live.db import async_engine  # noqa: E402
from kova_live.market import Settings  # noqa: E402
from kova_live.schema import leases, transfers  # noqa: E402
from kova_live.state import load_market, rows_of, write_rows  # noqa: E402


async def one_round(url: str) -> dict[str, float]:
    engine = async_engine(url)
    try:
        async with engine.connect() as c:
            market = await load_market(c, Settings(settlement_interval=60, fee_bps=100))
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        events = market.tick(60)
        computed = time.perf_counter() - started
        started = time.perf_counter()
        rows = rows_of(market, events, postgresql=True)
        made = time.perf_counter() - started
        started = time.perf_counter()
        async with engine.begin() as c:
            await write_rows(c, rows)
        written = time.perf_counter() - started
        async with engine.connect() as c:
            moved = await c.scalar(select(func.count()).select_from(transfers))
            paused = await c.scalar(select(func.count()).select_from(leases).where(
                leases.c.state == LeaseState.INSUFFICIENT_FUNDS.value))  # fmt: skip
    finally:
        await engine.dispose()
    payments = sum(isinstance(e, Transfer) for e in events)
    return {"computed": computed, "made": made, "written": written, "events": len(events),
            "payments": payments, "transfers": moved, "paused": paused}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--per-deployment", type=int, default=2)
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with scratch_database(args.database) as url:
        asyncio.run(populate(url, args.leases, args.per_deployment))
        asyncio.run(complete(url))
        vacuum(url)
        figures = asyncio.run(one_round(url))
    total = figures["computed"] + figures["made"] + figures["written"]
    print(f"leases                 {args.leases:>12,}  ({args.per_deployment} per deployment)")
    print(f"round in the Market    {figures['computed']:>12.2f} s  ({figures['events']:,} events)")
    print(f"its rows made          {figures['made']:>12.2f} s")
    print(f"written, committed     {figures['written']:>12.2f} s")
    print(f"round, persisted       {total:>12.2f} s  (target: at most 2 s)")
    print(f"transfers after round  {figures['transfers']:>12,}")
    print(f"leases paused          {figures['paused']:>12,}  (every tenth deployment is short)")


if __name__ == "__main__":
    main()
