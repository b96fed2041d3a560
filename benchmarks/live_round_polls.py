#!/usr/bin/env python3
"""Providers' polls answered while settlement rounds over 100,000 active leases run, on
PostgreSQL. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/live_round_polls.py [--leases 100000] [--providers 10000]
        [--seconds 30] [--database postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database with the leases written straight into the tables (as
``live_settlement.py`` and ``live_restore.py`` do), registers ``--providers`` polling accounts,
and starts ``kova-live serve --block-seconds 0.1`` on it (``--block-seconds``), so that a round
over every lease comes every 6 seconds. Then every provider asks ``GET /v1/orders?state=open``
once per 15 s (open loop, as in ``live_polling.py``: 10,000 providers make about 670
requests/s; latency from the scheduled start) for ``--seconds``, and the figures say how long
the polls waited and how many rounds ran meanwhile (``live_settlement.py`` times one round
alone).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from live_polling import SERVE, percentile, polling, token, warm_up  # noqa: E402
from live_restore import complete  # noqa: E402
from live_settlement import populate  # noqa: E402
from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from kova_live.db import async_engine  # noqa: E402
from kova_live.schema import accounts, settlement_rounds  # noqa: E402

FIRST_POLLER = 1_000_000  # account ids of the polling providers (the leases' use 1 to 101)


async def pollers(url: str, count: int) -> None:
    engine = async_engine(url)
    async with engine.begin() as c:
        for start in range(0, count, 5000):
            await c.execute(insert(accounts), [
                {"id": FIRST_POLLER + i, "role": "provider", "name": f"poller{i}",
                 "created_height": 0,
                 "token_hash": hashlib.sha256(token(i).encode()).hexdigest()}
                for i in range(start + 1, min(count, start + 5000) + 1)
            ])  # fmt: skip
    await engine.dispose()


async def rounds_run(url: str) -> int:
    engine = async_engine(url)
    async with engine.connect() as c:
        ran = await c.scalar(select(func.count()).select_from(settlement_rounds))
    await engine.dispose()
    return int(ran)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--block-seconds", type=float, default=0.1,
                        help="a round every 60 blocks (0.1: every 6 s; 1: every minute, as live)")
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with scratch_database(args.database) as url:
        server = None
        try:
            asyncio.run(populate(url, args.leases, 2))
            asyncio.run(complete(url))
            asyncio.run(pollers(url, args.providers))
            vacuum(url)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen(
                # live_polling.SERVE: it measures the server, not its limits
                [sys.executable, "-m", "kova_live", "serve", "--database-url", url, "--port",
                 str(port), "--block-seconds", str(args.block_seconds), *SERVE],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            asyncio.run(warm_up(base, args.providers))
            before = asyncio.run(rounds_run(url))
            gc.collect()
            gc.freeze()
            gc.disable()
            latencies, sent, errors = asyncio.run(polling(base, args.providers, args.seconds))
            gc.enable()
            ran = asyncio.run(rounds_run(url)) - before
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    ms = 1000
    every = 60 * args.block_seconds
    print(f"active leases          {args.leases:>12,}  (a round every {every:g} s)")
    print(f"polls sent             {sent:>12,}  ({sent / args.seconds:,.0f}/s, {errors} errors)")
    print(f"rounds run meanwhile   {ran:>12,}")
    print(f"poll latency p50       {percentile(latencies, 0.50) * ms:>12.1f} ms")
    print(f"poll latency p99       {percentile(latencies, 0.99) * ms:>12.1f} ms  (target: 100 ms)")
    print(f"poll latency max       {max(latencies) * ms:>12.1f} ms")


if __name__ == "__main__":
    main()
