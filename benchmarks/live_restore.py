#!/usr/bin/env python3
"""Restoring the orchestrator's ``Market`` from PostgreSQL at start-up. Prints figures; asserts
nothing.

    .venv/bin/python benchmarks/live_restore.py [--leases 100000] [--per-deployment 2]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database, migrates it, writes the active leases straight into the tables
as ``live_settlement.py`` does (one tenant, 100 providers, two leases per deployment; here with
a real manifest, since restoring parses it, and a ``provider_nodes`` row per provider), vacuums
and analyses it, then times ``kova_live.state.load_market`` (every tenant, provider, deployment
not closed with its orders, open bids and leases, the balances and the ledger's totals, read in
one transaction and rebuilt with ``Market.restore``). The scratch database is dropped at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from live_settlement import populate  # noqa: E402
from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import insert, update  # noqa: E402

from kova_live.db import async_engine  # noqa: E402
from kova_live.market import Settings  # noqa: E402
from kova_live.schema import deployments, provider_nodes  # noqa: E402
from kova_live.state import load_market  # noqa: E402

MANIFEST = """
version: "2.0"
services:
  web: {image: "kova/httpd:1"}
profiles:
  compute:
    web: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
  placement:
    dc: {pricing: {web: {denom: ukova, amount: 2000000}}}
deployment:
  web: {dc: {profile: web, count: 2}}
"""


async def complete(url: str) -> None:
    """What restoring reads beyond what a round reads: manifests and the providers' rows."""
    engine = async_engine(url)
    async with engine.begin() as c:
        await c.execute(update(deployments).values(manifest=MANIFEST))
        await c.execute(insert(provider_nodes), [
            {"provider_id": 2 + p, "cpu": 10**9, "memory": 2**50, "storage": 2**50, "gpu": 0,
             "attributes": "{}", "gpu_models": "[]", "state": "online", "last_seen": 0,
             "completed": 0, "failed": 0}
            for p in range(100)
        ])  # fmt: skip
    await engine.dispose()


async def restore(url: str) -> tuple[float, dict[str, int]]:
    engine = async_engine(url)
    try:
        started = time.perf_counter()
        async with engine.connect() as c:
            market = await load_market(c, Settings(settlement_interval=60, fee_bps=100))
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    # the populated escrows were deposited from outside without a credit (as in
    # live_settlement.py), so the drift is what they hold, not 0
    counts = {"leases": len(market.leases), "deployments": len(market.deployments),
              "orders": len(market.orders), "providers": len(market.providers)}  # fmt: skip
    return elapsed, counts


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
        asyncio.run(populate(url, args.leases, args.per_deployment))
        asyncio.run(complete(url))
        vacuum(url)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        elapsed, counts = asyncio.run(restore(url))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(counts))
    print(f"active leases restored {counts['leases']:>12,}  ({args.per_deployment} per deployment)")
    print(f"restore (load_market)  {elapsed:>12.2f} s  (target: at most 5 s)")
    print(f"peak RSS               {after / 1024:>12.0f} MiB  (before: {before / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
