#!/usr/bin/env python3
"""Take-over times: a leader and a standby on one PostgreSQL database holding 100,000 active
leases; the leader is killed with SIGKILL, and the time until the standby acknowledges its first
market command is measured, ``--kills`` times, under a steady load of commands and of visits to
a deployment's URL. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/takeover.py [--leases 100000] [--kills 5] [--block-seconds 1]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database and writes the leases straight into its tables, as
``live_restore.py`` does (one tenant, 100 providers, two leases per deployment). It makes an
operator account, then starts two ``kova-live serve`` processes on it, each with its own port
and ingress port. Settings: open registration, no rate limits, a heartbeat grace of 10^8
blocks, lease endpoints on loopback allowed (``--endpoint-networks 127.0.0.0/8``); the
network's limits at their defaults.

Over the API it then adds a deployment served all along: a tenant and a provider registered, a
lease whose endpoint is a small HTTP server of this script's on loopback.

The load, from the start of the first kill's wait to the end:
- **Commands**: ``--clients`` threads, each sending one operator's credit of one micro-unit
  after another, as ``kova`` does (``kova_live.failover``): each under one Idempotency-Key, to
  each server in turn every 0.02 s, until one acknowledges it. A command counts as sent once
  and as acknowledged when a server answers 200.
- **Visits**: every 0.05 s, a GET of the deployment's URL through each live server's ingress
  in turn, as a balancer in front of them does; a visit fails if none answers 200.

The take-over time runs from the kill to the first command acknowledged after it. It covers:
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
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingress import MANIFEST as SERVED  # noqa: E402
from ingress import free_port  # noqa: E402
from live_restore import complete  # noqa: E402
from live_settlement import populate  # noqa: E402
from scratch import scratch_database, vacuum  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from kova_live.app import hash_token  # noqa: E402
from kova_live.db import async_engine  # noqa: E402
from kova_live.schema import accounts  # noqa: E402

SERVE = ("--heartbeat-grace", "100000000", "--registration", "open", "--rate-limit-accounts",
         "0", "--rate-limit-writes", "0", "--rate-limit-reads", "0",
         "--endpoint-networks", "127.0.0.0/8")  # fmt: skip


class Page(BaseHTTPRequestHandler):
    """The served deployment's container, standing in: ``kova`` for every GET."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"kova\n")

    def log_message(self, *args: object) -> None:
        pass


async def operator(url: str) -> str:
    token = "kova_" + secrets.token_urlsafe(32)
    engine = async_engine(url)
    async with engine.begin() as c:
        await c.execute(insert(accounts).values(id=1000, role="operator", name="bench",
                                                token_hash=hash_token(token), created_height=0))
        # the accounts were written with their ids: registrations over the API go on after them
        await c.execute(text("SELECT setval(pg_get_serial_sequence('accounts', 'id'), "
                             "(SELECT max(id) FROM accounts))"))  # fmt: skip
    await engine.dispose()
    return token


class Serving:
    def __init__(self, url: str, block_seconds: float, log: Path) -> None:
        self.port, self.ingress = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kova_live", "serve", "--database-url", url, "--port",
             str(self.port), "--ingress-port", str(self.ingress),
             "--block-seconds", str(block_seconds), "--data-dir",
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
        for server in list(servers):
            sends += 1
            try:
                reply = httpx.post(f"{server.url}/v1/accounts/1/credit", headers=key,
                                   json={"amount": 1}, timeout=10)  # fmt: skip
                if reply.status_code == 200:
                    return time.monotonic(), sends
            except httpx.TransportError:
                pass
        time.sleep(0.02)


class Load:
    """The steady load (see the module): commands and visits, in threads, until stopped."""

    def __init__(self, servers: list[Serving], headers: dict[str, str], host: str,
                 clients: int) -> None:  # fmt: skip
        self.servers, self.headers, self.host = servers, headers, host
        self.stopping = threading.Event()
        self.counting = threading.Lock()
        self.sent = self.acknowledged = 0
        self.acknowledged_at: list[float] = []
        self.spans: list[tuple[float, float]] = []  # each command: first sent, acknowledged
        self.visits: list[tuple[float, bool]] = []  # (when, answered 200)
        self.threads = [threading.Thread(target=self._commands) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._visits))
        for thread in self.threads:
            thread.start()

    def _commands(self) -> None:
        while not self.stopping.is_set():
            with self.counting:
                self.sent += 1
            began = time.monotonic()
            done, _ = first_acknowledged(self.servers, self.headers)
            with self.counting:
                self.acknowledged += 1
                self.acknowledged_at.append(done)
                self.spans.append((began, done))

    def _visits(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stopping.is_set():
                answered = False
                for server in list(self.servers):
                    try:
                        reply = client.get(f"http://127.0.0.1:{server.ingress}/",
                                           headers={"Host": self.host})  # fmt: skip
                        if reply.status_code == 200:
                            answered = True
                            break
                    except httpx.TransportError:
                        pass
                self.visits.append((time.monotonic(), answered))
                time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def outages(self) -> list[tuple[float, float]]:
        """The spans of consecutive failed visits: (first failure, next success)."""
        spans, start = [], None
        for when, answered in self.visits:
            if not answered and start is None:
                start = when
            elif answered and start is not None:
                spans.append((start, when))
                start = None
        if start is not None:
            spans.append((start, self.visits[-1][0]))
        return spans


def serve_a_deployment(base: str, ops: dict[str, str], upstream: int) -> str:
    """A deployment served all along (see the module): its hostname."""
    tenant = httpx.post(f"{base}/v1/accounts", json={"role": "tenant", "name": "t"}).json()
    provider = httpx.post(f"{base}/v1/accounts", json={"role": "provider", "name": "p"}).json()
    t = {"Authorization": f"Bearer {tenant['token']}"}
    p = {"Authorization": f"Bearer {provider['token']}"}
    httpx.post(f"{base}/v1/accounts/{tenant['id']}/credit", headers=ops,
               json={"amount": 10**12}).raise_for_status()  # fmt: skip
    httpx.post(f"{base}/v1/providers/heartbeat", headers=p, json={
        "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**34, "gpu": 0},
        "endpoints": {"addresses": ["127.0.0.1"], "ports": [1, 65535]},
    }).raise_for_status()  # fmt: skip
    dep = httpx.post(f"{base}/v1/deployments", headers=t, timeout=30,
                     json={"manifest": SERVED, "deposit": 10**10})  # fmt: skip
    dep.raise_for_status()
    bid = httpx.post(f"{base}/v1/orders/{dep.json()['orders'][0]['id']}/bids", headers=p,
                     json={"price": 1000}).json()  # fmt: skip
    lease = httpx.post(f"{base}/v1/bids/{bid['id']}/accept", headers=t).json()
    httpx.post(f"{base}/v1/leases/{lease['id']}/status", headers=p,
               json={"state": "running", "endpoint": f"127.0.0.1:{upstream}"}).raise_for_status()
    return str(dep.json()["urls"][0]["hostname"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--block-seconds", type=float, default=1.0)
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kova-takeover"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    page = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    with scratch_database(args.database) as url:
        asyncio.run(populate(url, args.leases, 2))
        asyncio.run(complete(url))
        vacuum(url)
        token = asyncio.run(operator(url))
        headers = {"Authorization": f"Bearer {token}"}
        servers = [Serving(url, args.block_seconds, args.folder / f"server-{i}.log")
                   for i in range(2)]  # fmt: skip
        times: list[float] = []
        windows: list[tuple[float, float]] = []
        load = None
        try:
            first_acknowledged(servers, headers)  # the first leader has restored the market
            leader = next(s for s in servers if s.leads())
            host = serve_a_deployment(leader.url, headers, page.server_address[1])
            load = Load(servers, headers, host, args.clients)
            for n in range(args.kills):
                time.sleep(rng.uniform(2, 6))
                leader = next(s for s in servers if s.leads())
                before = len(load.acknowledged_at)
                leader.kill()
                killed = time.monotonic()
                while not [t for t in load.acknowledged_at[before:] if t > killed]:
                    time.sleep(0.01)
                done = min(t for t in load.acknowledged_at[before:] if t > killed)
                times.append(done - killed)
                windows.append((killed, done))
                print(f"kill {n + 1}: {done - killed:.2f} s to the first command acknowledged",
                      flush=True)  # fmt: skip
                servers[servers.index(leader)] = Serving(
                    url, args.block_seconds, args.folder / f"server-{n}-again.log")
            time.sleep(2)
        finally:
            if load is not None:
                load.stop()
            for server in servers:
                server.stop()
            page.shutdown()
    across = sum(1 for began, done in load.spans if any(began <= a < done for a, _ in windows))
    outages = load.outages()
    failed = sum(1 for _, answered in load.visits if not answered)
    print(f"active leases           {args.leases:>10,}")
    print(f"take-overs              {len(times):>10}")
    print(f"median                  {statistics.median(times):>10.2f} s  (goal: at most 10 s)")
    print(f"worst                   {max(times):>10.2f} s")
    print(f"commands sent           {load.sent:>10}  ({args.clients} clients, one after another)")
    print(f"  acknowledged          {load.acknowledged:>10}  (each sent until acknowledged)")
    print(f"  in flight at a kill   {across:>10}  (sent again until the new leader took it)")
    print(f"visits of the URL       {len(load.visits):>10}")
    print(f"  failed                {failed:>10}  in {len(outages)} spans, the longest "
          f"{max((b - a for a, b in outages), default=0):.2f} s")


if __name__ == "__main__":
    main()
