#!/usr/bin/env python3
"""How fast the core's Market runs the literal seed semantics. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/core_market.py [--providers 200] [--deployments 2000] [--hours 2]

Every provider polls every 15 blocks with the seed's fixed $1/block strategy; each tenant takes
the cheapest bid on each of its orders at the next poll; settlement runs every 60 blocks. Prints
wall time, commands per second, and lease-settlements per second, the figures the simulator's
engines are planned against.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kova_core import (
    MICRO,
    Market,
    Resources,
    SettlementRound,
    parse_manifest,
    pricing_strategy,
    selection_policy,
)

MANIFEST = parse_manifest(
    """
version: "2.0"
services:
  web: {image: busybox:1.36}
profiles:
  compute:
    web:
      resources: {cpu: {units: 0.5}, memory: {size: 512Mi}, storage: {size: 1Gi}}
  placement:
    anywhere:
      pricing: {web: {denom: uusd, amount: 2000000}}
deployment:
  web: {anywhere: {profile: web, count: 1}}
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=200)
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args()

    market = Market()
    tenant = market.add_tenant()
    market.credit(tenant, 10**15, 0)
    box = Resources(cpu=16_000, memory=64 * 2**30, storage=1024 * 2**30)
    providers = [market.add_provider(capacity=box) for _ in range(args.providers)]
    fixed = pricing_strategy("fixed")
    cheapest = selection_policy("cheapest")
    rng = np.random.default_rng(1)
    end = int(args.hours * 3600)
    arrivals = np.sort(rng.integers(0, end // 2, size=args.deployments))
    commands = settled = 0
    next_arrival = 0
    started = time.perf_counter()
    events = []  # rounds are caught up by whichever command comes first at their height
    for height in range(0, end + 1, 15):
        while next_arrival < len(arrivals) and arrivals[next_arrival] <= height:
            events += market.create_deployment(tenant, MANIFEST, 20_000 * MICRO, height)
            next_arrival += 1
            commands += 1
        for provider in providers:
            events += market.poll(provider, fixed, rng, height)
            commands += 1
        for order in market.open_orders():
            choice = cheapest.choose(market.bid_views(order.id))
            if choice is not None:
                events += market.accept_bid(choice.bid_id, height)
                commands += 1
        events += market.tick(height)
        settled += sum(e.deployments_paid for e in events if isinstance(e, SettlementRound))
        events.clear()
    wall = time.perf_counter() - started
    leases = sum(1 for lease in market.leases.values() if lease.state == "active")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"providers           {args.providers}")
    print(f"deployments         {args.deployments}")
    print(f"simulated           {end} blocks ({args.hours:g} h)")
    print(f"active leases (end) {leases}")
    print(f"ledger entries      {len(market.ledger)}")
    print(f"wall                {wall:.2f} s")
    print(f"commands            {commands} ({commands / wall:,.0f}/s)")
    print(f"deployment-rounds   {settled} settled ({settled / wall:,.0f}/s)")
    print(f"peak RSS            {peak:.0f} MiB")
    print(f"money drift         {market.money_drift()}")


if __name__ == "__main__":
    main()
