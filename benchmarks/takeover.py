#!/usr/bin/env python3
"""Take-over times: a leader and a standby on one PostgreSQL database holding 100,000 active
leases; the leader is killed with SIGKILL, and the time until the standby acknowledges its first
market command is measured, ``--kills`` times. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/takeover.py [--leases 100000] [--kills 5] [--block-seconds 1]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database and writes the leases straight into its tables, as
``live_restore.py`` does (one tenant, 100 providers, two leases per deployment). It makes an
operator account, then starts two ``kova-live serve`` processes on it, each with its own port.
Settings: open registration, no rate limits, a heartbeat grace of 10^8 blocks; the network's
limits at their defaults.

The client acts as ``kova`` does (``kova_live.failover``). Every 0.02 s it sends one command,
an operator's credit of one micro-unit to the tenant, under one Idempotency-Key, to each
server in turn, until one acknowledges it. The take-over time runs from the kill to that
acknowledgement. It covers:
- PostgreSQL freeing the lock (at once for a killed process: its connection closes);
- the standby's next try (every 0.5 s);
- the epoch's increment;
- restoring the market from the database;
- the command itself.

Each killed server is started again and stands by. The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from live_restore import complete  # noqa: E402
from live_settlement import populate  # noqa: E402
from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from kova_live.app import hash_token  # noqa: E402
from kova_live.db import async_engine  # noqa: E402
from kova_live.schema import accounts  # noqa: E402

SERVE = ("--heartbeat-grace", "100000000", "--registration", "open", "--rate-limit-accounts",
         "0", "--rate-limit-writes", "0", "--rate-limit-reads", "0")  # fmt: skip


async def operator(url: str) -> str:
    token = "kova_" + secrets.token_urlsafe(32)
    engine = async_engine(url)
    async with engine.begin() as c:
        await c.execute(insert(accounts).values(id=1000, role="operator", name="bench",
                                                token_hash=hash_token(token), created_height=0))
    await engine.dispose()
    return token


class Serving:
    def __init__(self, url: str, block_seconds: float, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kova_live", "serve", "--database-url", url, "--port",
             str(self.port), "--block-seconds", str(block_seconds), "--data-dir",
             str(log.parent / f"data-{self.port}"), *SERVE],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {log}")

    def leads(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/leader", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.log.close()


def first_acknowledged(servers: list[Serving], headers: dict[str, str]) -> tuple[float, int]:
    """Send one credit, under one key, round the servers until one acknowledges it: when, and
    how many sends it took."""
    key = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    sends = 0
    while True:
        for server in servers:
            sends += 1
            try:
                reply = httpx.post(f"{server.url}/v1/accounts/1/credit", headers=key,
                                   json={"amount": 1}, timeout=10)  # fmt: skip
                if reply.status_code == 200:
                    return time.monotonic(), sends
            except httpx.TransportError:
                pass
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=1.0)
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kova-takeover"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    with scratch_database(args.database) as url:
        asyncio.run(populate(url, args.leases, 2))
        asyncio.run(complete(url))
        vacuum(url)
        token = asyncio.run(operator(url))
        headers = {"Authorization": f"Bearer {token}"}
        servers = [Serving(url, args.block_seconds, args.folder / f"server-{i}.log")
                   for i in range(2)]  # fmt: skip
        times, sends = [], 0
        try:
            first_acknowledged(servers, headers)  # the first leader has restored the market
            for n in range(args.kills):
                time.sleep(rng.uniform(2, 6))
                leader = next(s for s in servers if s.leads())
                leader.kill()
                killed = time.monotonic()
                done, tries = first_acknowledged([s for s in servers if s is not leader], headers)
                times.append(done - killed)
                sends += tries
                print(f"kill {n + 1}: {done - killed:.2f} s to the first command acknowledged",
                      flush=True)  # fmt: skip
                servers[servers.index(leader)] = Serving(
                    url, args.block_seconds, args.folder / f"server-{n}-again.log")
        finally:
            for server in servers:
                server.stop()
    print(f"active leases           {args.leases:>10,}")
    print(f"take-overs              {len(times):>10}")
    print(f"median                  {statistics.median(times):>10.2f} s  (goal: at most 10 s)")
    print(f"worst                   {max(times):>10.2f} s")
    print(f"sends while no leader   {sends:>10}  (a command sent round the servers until taken)")


if __name__ == "__main__":
    main()
