"""kill -9 under load, five times (SQLite and PostgreSQL): after each restart every
acknowledged command is there, every balance is the sum of its transfers, and no lease block
was paid twice."""

import asyncio
import itertools
import random
import signal

import httpx
import pytest
from sqlalchemy import select

from kova_live.db import async_engine, snapshot_reader
from kova_live.schema import balances, bids, deployments, leases, settlement_rounds, transfers

from .conftest import Server, credit, fresh_database
from .test_lifecycle import MANIFEST

BIG = {"cpu": 10**9, "memory": 2**50, "storage": 2**50, "gpu": 0}


async def load(url, tenant, provider, acknowledged, stop):
    """Deploy, bid, accept and deposit as fast as the server answers, noting what it acknowledged."""
    th, ph = tenant["headers"], provider["headers"]
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            try:
                dep = await client.post("/v1/deployments", headers=th,
                                        json={"manifest": MANIFEST, "deposit": 200_000})  # fmt: skip
                if dep.status_code != 201:
                    continue
                acknowledged["deployments"].add(dep.json()["id"])
                order_id = dep.json()["orders"][0]["id"]
                bid = await client.post(f"/v1/orders/{order_id}/bids", headers=ph, json={"price": 1_000})
                if bid.status_code != 201:
                    continue
                acknowledged["bids"].add(bid.json()["id"])
                lease = await client.post(f"/v1/bids/{bid.json()['id']}/accept", headers=th)
                if lease.status_code == 201:
                    acknowledged["leases"].add(lease.json()["id"])
                top = await client.post(f"/v1/deployments/{dep.json()['id']}/deposit", headers=th,
                                        json={"amount": 7_000})  # fmt: skip
                if top.status_code == 200:
                    acknowledged["deposits"].append((dep.json()["id"], 7_000))
            except httpx.TransportError:
                return  # the server is gone


async def state(database_url):
    """What the database holds, read in one transaction that sees one snapshot: the restarted
    server keeps settling while this reads, and the ledger and the balances must come from the
    same moment (on PostgreSQL, statements under READ COMMITTED each see their own)."""
    engine = async_engine(database_url)
    try:
        async with snapshot_reader(engine).connect() as c:
            found = {
                "deployments": set((await c.execute(select(deployments.c.id))).scalars()),
                "bids": set((await c.execute(select(bids.c.id))).scalars()),
                "leases": set((await c.execute(select(leases.c.id))).scalars()),
            }
            moves = (await c.execute(select(transfers))).all()
            held = dict((await c.execute(select(balances.c.account, balances.c.amount))).all())
            rounds = (await c.execute(select(settlement_rounds.c.height))).scalars().all()
    finally:
        await engine.dispose()
    return found, moves, held, rounds


def check_books(acknowledged, found, moves, held, rounds) -> dict[int, int]:
    """What the database holds after the kills (:func:`state`): every acknowledged deployment,
    bid and lease is there; every balance is the sum of its transfers; no lease block was paid
    twice; no round ran twice. Returns how many 7,000-unit deposits each deployment got."""
    for kind in ("deployments", "bids", "leases"):
        assert acknowledged[kind] <= found[kind], f"acknowledged {kind} lost"
    summed = {}
    for t in moves:
        summed[t.source] = summed.get(t.source, 0) - t.amount
        summed[t.destination] = summed.get(t.destination, 0) + t.amount
    summed.pop("external")
    assert {k: v for k, v in summed.items() if v} == {k: v for k, v in held.items() if v}
    deposited: dict[int, int] = {}
    for t in moves:
        if t.reason == "deposit" and t.amount == 7_000:
            key = int(t.destination.split(":")[1])
            deposited[key] = deposited.get(key, 0) + 1
    paid = sorted((t.lease_id, t.start_block, t.end_block) for t in moves
                  if t.lease_id is not None and t.destination.startswith("provider:"))  # fmt: skip
    for (a_lease, _, a_end), (b_lease, b_start, _) in itertools.pairwise(paid):
        assert a_lease != b_lease or b_start >= a_end, f"lease {a_lease} paid twice"
    assert len(rounds) == len(set(rounds))
    return deposited


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_under_load_loses_no_acknowledged_command(backend, tmp_path):
    rng = random.Random(7)
    acknowledged = {"deployments": set(), "bids": set(), "leases": set(), "deposits": []}
    with fresh_database(backend, tmp_path) as url:
        server = Server(url, tmp_path / "data", block_seconds=0.01)
        tenant = server.client.post("/v1/accounts", json={"role": "tenant", "name": "t"}).json()
        provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "p"}).json()
        for account in (tenant, provider):
            account["headers"] = {"Authorization": f"Bearer {account['token']}"}
        credit(url, tenant["account"], 10**12)
        server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BIG})
        try:
            for _ in range(5):
                async def round_of_load(server=server):
                    stop = asyncio.Event()
                    workers = [asyncio.create_task(load(server.url, tenant, provider, acknowledged, stop))
                               for _ in range(4)]  # fmt: skip
                    await asyncio.sleep(rng.uniform(0.8, 2.0))
                    server.process.send_signal(signal.SIGKILL)  # mid-flight, no warning
                    server.process.wait()
                    stop.set()
                    await asyncio.gather(*workers)

                asyncio.run(round_of_load())
                server.stop()
                server = Server(url, tmp_path / "data", block_seconds=0.01)  # restart on the same data
                found, moves, held, rounds = asyncio.run(state(url))
                deposited = check_books(acknowledged, found, moves, held, rounds)
                for dep_id, _ in acknowledged["deposits"]:
                    assert deposited.get(dep_id, 0) >= 1, f"acknowledged deposit into {dep_id} lost"
        finally:
            server.stop()  # the last one, even when a check failed: no process left behind
    assert len(acknowledged["leases"]) > 20  # the load really ran
