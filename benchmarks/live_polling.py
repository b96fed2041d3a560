#!/usr/bin/env python3
"""Providers polling the orchestrator, and bids arriving, on PostgreSQL. Prints figures.

    .venv/bin/python benchmarks/live_polling.py [--providers 10000] [--seconds 20]
        [--orders 200] [--bid-rate 1000]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database, registers the providers straight in it (accounts with known
tokens, and their heartbeats), opens ``--orders`` orders through the API, and starts
``kova-live serve`` on a loopback port. Then:

1. **Polling**: first every provider polls once, untimed, as a running server has seen every
   provider before (it remembers each token's account). Then every provider asks
   ``GET /v1/orders?state=open`` once per 15 s, spread evenly (open loop: requests start on
   schedule whether or not earlier ones have finished; 10,000 providers make about 670
   requests/s). Latency is measured from the scheduled start, so a server that falls behind
   shows it.
2. **Bid intake**: as many bids as the server takes, from 64 concurrent clients, each bid from
   a different provider on an open order, for ``--seconds``.
3. **Both at once**, as on a live network: the polling of 1. while bids arrive at
   ``--bid-rate`` per second (default 1,000, the bid intake target; open loop, like the polls;
   each from a new pair of provider and order). Latencies are again from the scheduled start.

The load generator (aiohttp's client, lighter than httpx) runs on the same machine as the
server and PostgreSQL, so the figures are a lower bound of what the server does alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from scratch import scratch_database  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from kova_live.db import async_engine  # noqa: E402
from kova_live.schema import accounts, provider_nodes  # noqa: E402

MANIFEST = """
version: "2.0"
services:
  web: {image: busybox:1.36}
profiles:
  compute:
    web: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
  placement:
    dc: {pricing: {web: {denom: ukova, amount: 1000000}}}
deployment:
  web: {dc: {profile: web, count: 1}}
"""


def token(i: int) -> str:
    return f"kova_bench_provider_{i}"


SERVE = ("--heartbeat-grace", "100000000", "--registration", "open", "--rate-limit-accounts",
         "0", "--rate-limit-writes", "0", "--rate-limit-reads", "0", "--tenant-share", "1",
         "--order-size", "any")  # fmt: skip
"""The server's settings here and in ``live_round_polls.py``: open registration, no rate limits,
no tenant share nor size check (one tenant's orders, bid on by every provider), providers never
lost: they measure the server, not its limits."""


async def register_providers(url: str, count: int) -> None:
    engine = async_engine(url)
    async with engine.begin() as c:
        for start in range(0, count, 5000):
            ids = range(start + 1, min(count, start + 5000) + 1)
            await c.execute(insert(accounts), [
                {"id": i, "role": "provider", "name": f"p{i}", "created_height": 0,
                 "token_hash": hashlib.sha256(token(i).encode()).hexdigest()} for i in ids
            ])  # fmt: skip
            await c.execute(insert(provider_nodes), [
                {"provider_id": i, "cpu": 64_000, "memory": 2**40, "storage": 2**42, "gpu": 0,
                 "attributes": "{}", "gpu_models": "[]", "state": "online", "last_seen": 0,
                 "completed": 0, "failed": 0} for i in ids
            ])  # fmt: skip
        if c.dialect.name == "postgresql":
            await c.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('accounts', 'id'),"
                " (SELECT max(id) FROM accounts))"
            )
    await engine.dispose()


async def operator(url: str) -> dict[str, str]:
    """An operator's headers: the account ``kova-live admin operator`` makes, without a
    process start (credits then go over the API, as ``kova-live admin credit`` sends them)."""
    engine = async_engine(url)
    async with engine.begin() as c:
        await c.execute(insert(accounts).values(
            role="operator", name="bench", created_height=0,
            token_hash=hashlib.sha256(b"kova_bench_operator").hexdigest()))  # fmt: skip
    await engine.dispose()
    return {"Authorization": "Bearer kova_bench_operator"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def warm_up(base: str, providers: int) -> None:
    """One poll per provider, 32 at a time, untimed."""
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        queue = iter(range(1, providers + 1))

        async def worker() -> None:
            for p in queue:
                headers = {"Authorization": f"Bearer {token(p)}"}
                async with session.get("/v1/orders?state=open", headers=headers) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(32)))


async def polling(base: str, providers: int, seconds: float) -> tuple[list[float], int, int]:
    rate = providers / 15.0
    interval = 1.0 / rate
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as client:
        started = time.perf_counter()
        tasks = []

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            headers = {"Authorization": f"Bearer {token(1 + i % providers)}"}
            try:
                async with client.get("/v1/orders?state=open", headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        i = 0
        while (now := time.perf_counter()) - started < seconds:
            scheduled = started + i * interval
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            i += 1
        await asyncio.gather(*tasks)
    return latencies, i, errors


async def post_bid(
    client: aiohttp.ClientSession, k: int, providers: int, order_ids: list[int]
) -> bool:
    """Bid number k: from provider ``k % providers``, on an order it has not bid on yet (for
    k below providers x orders); whether the server took it."""
    p = 1 + k % providers
    order_id = order_ids[(k % providers + k // providers) % len(order_ids)]
    async with client.post(
        f"/v1/orders/{order_id}/bids", json={"price": 1_000 + p % 100},
        headers={"Authorization": f"Bearer {token(p)}"},
    ) as response:  # fmt: skip
        await response.read()
        return response.status == 201


async def bid_intake(
    base: str, providers: int, order_ids: list[int], seconds: float, first: int = 0
) -> tuple[int, list[float], int]:
    """As many bids as the server takes from 64 clients, numbered from ``first``
    (:func:`post_bid`)."""
    done: list[float] = []
    errors = 0
    pairs = iter(range(first, providers * len(order_ids)))
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(base, connector=connector) as client:

        async def worker(w: int) -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                try:
                    k = next(pairs)
                except StopIteration:
                    return
                t = time.perf_counter()
                if await post_bid(client, k, providers, order_ids):
                    done.append(time.perf_counter() - t)
                else:
                    errors += 1

        await asyncio.gather(*(worker(w) for w in range(64)))
    return len(done), done, errors


async def bids_at_rate(
    base: str, providers: int, order_ids: list[int], seconds: float, rate: float, first: int
) -> tuple[int, list[float], int, int]:
    """Bids offered at ``rate`` per second (open loop, as the polls), numbered from ``first``
    (:func:`post_bid`): (bids taken, their latencies, errors, bids offered)."""
    done: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as client:

        async def one(k: int, scheduled: float) -> None:
            nonlocal errors
            try:
                if await post_bid(client, k, providers, order_ids):
                    done.append(time.perf_counter() - scheduled)
                else:
                    errors += 1
            except (TimeoutError, aiohttp.ClientError):
                errors += 1

        started = time.perf_counter()
        tasks = []
        i = 0
        while (now := time.perf_counter()) - started < seconds:
            scheduled = started + i / rate
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            tasks.append(asyncio.create_task(one(first + i, scheduled)))
            i += 1
        await asyncio.gather(*tasks)
    return len(done), done, errors, i


def batch_sizes(metrics: str) -> tuple[float, float]:
    """From the server's ``/metrics``: how many bid transactions, and bids per transaction."""
    values = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name in ("kova_bid_batch_size_count", "kova_bid_batch_size_sum"):
            values[name] = float(value)
    count = values.get("kova_bid_batch_size_count", 0.0)
    return count, values.get("kova_bid_batch_size_sum", 0.0) / count if count else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--bid-rate", type=float, default=1000.0,
        help="bids per second offered while the providers poll (part 3)",
    )  # fmt: skip
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with scratch_database(args.database) as url:
        server = None
        try:
            asyncio.run(register_providers(url, args.providers))
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen(
                [sys.executable, "-m", "kova_live", "serve", "--database-url", url, "--port",
                 str(port), *SERVE],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            tenant = httpx.post(f"{base}/v1/accounts", json={"role": "tenant", "name": "t"}).json()
            ops = asyncio.run(operator(url))
            httpx.post(f"{base}/v1/accounts/{tenant['id']}/credit", headers=ops,
                       json={"amount": 10**15}).raise_for_status()  # fmt: skip
            headers = {"Authorization": f"Bearer {tenant['token']}"}
            order_ids = []
            for _ in range(args.orders):
                dep = httpx.post(f"{base}/v1/deployments", headers=headers, timeout=30,
                                 json={"manifest": MANIFEST, "deposit": 10**9}).json()  # fmt: skip
                order_ids.append(dep["orders"][0]["id"])
            asyncio.run(warm_up(base, args.providers))
            # the load generator's own garbage collection would stall every request it has in
            # flight, and count against the server: off while it measures
            gc.collect()
            gc.freeze()
            gc.disable()
            latencies, sent, errors = asyncio.run(polling(base, args.providers, args.seconds))
            bids, bid_latencies, bid_errors = asyncio.run(
                bid_intake(base, args.providers, order_ids, args.seconds)
            )

            async def both() -> Any:  # the polls go on while bids arrive
                return await asyncio.gather(
                    polling(base, args.providers, args.seconds),
                    bids_at_rate(base, args.providers, order_ids, args.seconds, args.bid_rate,
                                 first=bids + bid_errors),
                )  # fmt: skip

            (mixed, mixed_sent, mixed_errors), mixed_bids = asyncio.run(both())
            batches = batch_sizes(httpx.get(f"{base}/metrics").text)
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    ms, secs = 1000, args.seconds
    p50, p99 = percentile(latencies, 0.50) * ms, percentile(latencies, 0.99) * ms
    b50, b99 = percentile(bid_latencies, 0.5) * ms, percentile(bid_latencies, 0.99) * ms
    mean = statistics.mean(latencies) * ms if latencies else float("nan")
    print(f"providers              {args.providers:>10,}  ({args.orders} open orders)")
    print(f"polls offered          {sent / secs:>10,.0f} /s  for {secs:g} s, errors {errors}")
    print(f"poll latency p50       {p50:>10.1f} ms  (from the scheduled start; mean {mean:.1f})")
    print(f"poll latency p99       {p99:>10.1f} ms  (target: at most 100 ms)")
    print(f"bids taken             {bids / secs:>10,.0f} /s  (target: 1,000), errors {bid_errors}")
    print(f"bid latency p50 / p99  {b50:>10.1f} / {b99:.1f} ms")
    m50, m99 = percentile(mixed, 0.50) * ms, percentile(mixed, 0.99) * ms
    print("-- both at once: the same polls while bids arrive")
    print(f"polls offered          {mixed_sent / secs:>10,.0f} /s  errors {mixed_errors}")
    print(f"poll latency p50 / p99 {m50:>10.1f} / {m99:.1f} ms  (target p99: at most 100 ms)")
    taken, bid_waits, bid_errors, offered = mixed_bids
    w50, w99 = percentile(bid_waits, 0.50) * ms, percentile(bid_waits, 0.99) * ms
    print(f"bids offered / taken   {offered / secs:>10,.0f} / {taken / secs:,.0f} /s"
          f"  errors {bid_errors}")  # fmt: skip
    print(f"bid latency p50 / p99  {w50:>10.1f} / {w99:.1f} ms  (from the scheduled start)")
    print(f"bid transactions       {batches[0]:>10,.0f}  ({batches[1]:.1f} bids each on average)")


if __name__ == "__main__":
    main()
