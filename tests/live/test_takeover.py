"""Take-overs under load (PostgreSQL, three real servers): tenants' commands and a provider's
bids run steadily against whichever server leads, following it as clients do (each command
sent again, to the next server, with its Idempotency-Key, after a 503 or a lost connection);
the leader is killed with SIGKILL at random moments five times, and each killed one comes back
as a standby. Meanwhile a visitor opens a deployment's URL every 0.05 s through whichever
orchestrator's ingress answers (as a balancer in front of them does): a visit may fail only
while a take-over is under way. Afterwards every acknowledged command is in the database and
applied once, every balance is the sum of its transfers, no lease block was paid twice and no
round ran twice; and the ledger, every lease and every escrow are what the core gives for the
same commands (the journal's, with the bodies the test sent under each key) in the same order
at the same heights (:func:`core_replay`).

Settings: 0.02 s blocks (a round every 1.2 s, so rounds fall due during take-overs), the test
servers' defaults otherwise (``conftest.Server``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import time
import uuid

import httpx
from sqlalchemy import func, select

from kova_core import (
    BidPlaced,
    DeploymentCreated,
    LeaseStarted,
    Limits,
    Market,
    Resources,
    parse_manifest,
)
from kova_live.db import async_engine
from kova_live.replay import KINDS, compare
from kova_live.schema import bids, commands, deployments, leases, orders, settlement_rounds

from .conftest import LOOPBACK, Server, free_port, fresh_database, operator_headers
from .test_crash import BIG, check_books, state
from .test_ingress import MANIFEST as SERVED
from .test_ingress import Upstream
from .test_lifecycle import MANIFEST

BLOCK = 0.02


class Follower:
    """A client of several orchestrators: a command goes to the one that answered last, and
    after a 503 or a lost connection, with the same Idempotency-Key, to the next."""

    def __init__(self, urls: list[str], sent: dict) -> None:
        self.urls, self.at = urls, 0
        self.client = httpx.AsyncClient(timeout=5)
        self.retries = 0
        self.sent = sent  # Idempotency-Key -> (method, path, body): what the journal's rows were

    async def send(self, method: str, path: str, headers: dict, body=None, deadline=30.0):
        key = {"Idempotency-Key": uuid.uuid4().hex}
        self.sent[key["Idempotency-Key"]] = (method, path, body)
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            url = self.urls[self.at % len(self.urls)]
            try:
                reply = await self.client.request(method, url + path, json=body,
                                                  headers={**headers, **key})  # fmt: skip
                if reply.status_code != 503:
                    return reply
            except httpx.TransportError:
                pass
            self.retries += 1
            self.at += 1
            await asyncio.sleep(0.05)
        return None  # never answered: it may or may not have happened (not acknowledged)


async def load(follower, tenant, provider, acknowledged, sent, stop):
    th, ph = tenant["headers"], provider["headers"]
    while not stop.is_set():
        sent["deployments"] += 1
        dep = await follower.send("POST", "/v1/deployments", th,
                                  {"manifest": MANIFEST, "deposit": 200_000})  # fmt: skip
        if dep is None or dep.status_code != 201:
            continue
        acknowledged["deployments"].add(dep.json()["id"])
        order_id = dep.json()["orders"][0]["id"]
        bid = await follower.send("POST", f"/v1/orders/{order_id}/bids", ph, {"price": 1_000})
        if bid is None or bid.status_code != 201:
            continue
        acknowledged["bids"].add(bid.json()["id"])
        lease = await follower.send("POST", f"/v1/bids/{bid.json()['id']}/accept", th)
        if lease is not None and lease.status_code == 201:
            acknowledged["leases"].add(lease.json()["id"])
        top = await follower.send("POST", f"/v1/deployments/{dep.json()['id']}/deposit", th,
                                  {"amount": 7_000})  # fmt: skip
        if top is not None and top.status_code == 200:
            acknowledged["deposits"].append(dep.json()["id"])
        # a steady load rather than all the CPU there is: the suite shares two cores
        await asyncio.sleep(0.05)


async def heartbeats(follower, provider, stop):
    while not stop.is_set():
        await follower.send("POST", "/v1/providers/heartbeat", provider["headers"],
                            {"capacity": BIG, "endpoints": LOOPBACK}, deadline=2)  # fmt: skip
        await asyncio.sleep(0.3)


async def visits(ingresses, host, stop, failed, answered):
    """A visitor of a deployment's URL every 0.05 s, through whichever orchestrator's ingress
    answers (as a balancer in front of them does): a visit fails if none answers 200."""
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            for port in list(ingresses):
                try:
                    reply = await client.get(f"http://127.0.0.1:{port}/", headers={"Host": host})
                    if reply.status_code == 200:
                        answered.append(time.monotonic())
                        break
                except httpx.TransportError:
                    pass
            else:
                failed.append(time.monotonic())
            await asyncio.sleep(0.05)


def leader_of(servers):
    for server in servers:
        if server.process.poll() is None:
            try:
                if httpx.get(f"{server.url}/v1/leader", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
    return None


def test_five_take_overs_under_load_lose_no_acknowledged_command(tmp_path):
    count = 3  # servers (two under the same load: benchmarks/takeover.py, and test_leader.py)
    rng = random.Random(24)
    acknowledged = {"deployments": set(), "bids": set(), "leases": set(), "deposits": []}
    sent = {"deployments": 0}
    journaled: dict = {}  # Idempotency-Key -> (method, path, body)
    with fresh_database("postgresql", tmp_path) as url:
        ingresses = [free_port() for _ in range(count)]
        servers = [Server(url, tmp_path / f"s{i}", BLOCK, "--ingress-port", str(ingresses[i]))
                   for i in range(count)]  # fmt: skip
        tenant = servers[0].client.post("/v1/accounts", json={"role": "tenant", "name": "t"}).json()
        provider = servers[0].client.post("/v1/accounts", json={"role": "provider", "name": "p"}).json()
        for account in (tenant, provider):
            account["headers"] = {"Authorization": f"Bearer {account['token']}"}
        client = servers[0].client

        def send(method, path, who, body=None):  # as the Follower does: with a key, noted
            key = uuid.uuid4().hex
            journaled[key] = (method, path, body)
            reply = client.request(method, path, json=body,
                                   headers={**who, "Idempotency-Key": key})  # fmt: skip
            assert reply.status_code in (200, 201), reply.text
            return reply.json()

        send("POST", f"/v1/accounts/{tenant['id']}/credit", operator_headers(url),
             {"amount": 10**12})  # fmt: skip
        # a deployment served all along, its one lease running at a stand-in container
        upstream = Upstream("web")
        client.post("/v1/providers/heartbeat", headers=provider["headers"],
                    json={"capacity": BIG, "endpoints": LOOPBACK})  # fmt: skip
        served = send("POST", "/v1/deployments", tenant["headers"],
                      {"manifest": SERVED.replace("ACCEPT", "app.example.com"), "deposit": 10**10})
        bid = send("POST", f"/v1/orders/{served['orders'][0]['id']}/bids", provider["headers"],
                   {"price": 1_000})  # fmt: skip
        lease = send("POST", f"/v1/bids/{bid['id']}/accept", tenant["headers"])
        send("POST", f"/v1/leases/{lease['id']}/status", provider["headers"],
             {"state": "running", "endpoint": f"127.0.0.1:{upstream.port}"})  # fmt: skip
        host = f"web-{served['id']}.deployments.localhost"
        failed: list[float] = []
        answered: list[float] = []
        windows: list[tuple[float, float]] = []
        takeovers: list[float] = []
        try:
            async def run():
                follower = Follower([s.url for s in servers], journaled)
                stop = asyncio.Event()
                workers = [asyncio.create_task(load(follower, tenant, provider, acknowledged, sent,
                                                    stop)) for _ in range(3)]  # fmt: skip
                workers.append(asyncio.create_task(heartbeats(follower, provider, stop)))
                workers.append(asyncio.create_task(visits(ingresses, host, stop, failed, answered)))
                for n in range(5):
                    await asyncio.sleep(rng.uniform(0.8, 1.8))
                    leader = await asyncio.to_thread(leader_of, servers)
                    assert leader is not None, "no leader"
                    leader.process.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    await asyncio.to_thread(leader.process.wait)
                    before = len(acknowledged["deployments"])
                    # the take-over: the first command acknowledged after the kill
                    while len(acknowledged["deployments"]) == before:
                        await asyncio.sleep(0.02)
                    takeovers.append(time.monotonic() - killed)
                    windows.append((killed, time.monotonic()))
                    index = servers.index(leader)
                    leader.stop()
                    ingresses[index] = free_port()
                    servers[index] = await asyncio.to_thread(
                        Server, url, tmp_path / f"s{index}-{n}", BLOCK, "--ingress-port",
                        str(ingresses[index]))  # a standby now  # fmt: skip
                    follower.urls[index] = servers[index].url
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*workers)
                await follower.client.aclose()
                return follower.retries

            retries = asyncio.run(run())
            final = leader_of(servers)
            assert final is not None
            final.client.get(f"/v1/deployments/{min(acknowledged['deployments'])}",
                             headers=tenant["headers"])  # the rounds due by now, carried out
            found, moves, held, rounds = asyncio.run(state(url))
            deposited = check_books(acknowledged, found, moves, held, rounds)
            # none applied twice (and the one served all along)
            assert len(found["deployments"]) <= sent["deployments"] + 1
            for dep_id in acknowledged["deposits"]:
                assert deposited.get(dep_id) == 1, f"deposit into {dep_id}: {deposited.get(dep_id)}"
            ordered = sorted(takeovers)
            print(f"\ntake-overs under load: median {ordered[2]:.2f} s, worst {ordered[-1]:.2f} s;"
                  f" {sent['deployments']} deployments sent, {len(acknowledged['deployments'])}"
                  f" acknowledged, {len(acknowledged['leases'])} leases, {retries} retries;"
                  f" visits of the served URL: {len(answered)} answered, {len(failed)} failed")
            # a visit fails only while a take-over is under way (and a moment after it)
            for when in failed:
                assert any(start - 0.1 <= when <= end + 1.0 for start, end in windows), when
            assert len(answered) > 100
            assert len(acknowledged["leases"]) > 20  # the load really ran
            for server in servers:  # the books as the last leader left them
                server.stop()
            # the same commands, in the journal's order at its heights, given to the core
            reference, ids = asyncio.run(core_replay(url, journaled, tenant["id"], provider["id"]))
            figures = compare(url, reference, ids)
            assert figures["transfers"] == len(reference.ledger) > 0
        finally:
            for server in servers:
                if server.process.poll() is None:
                    server.stop()


# the test servers' limits (conftest.Server): the network's, less the minimum deposit, the
# size check and the tenant share
LIMITS = dataclasses.replace(Limits.network(), min_deposit_blocks=0, largest_provider=False,
                             tenant_share_bps=None)  # fmt: skip


async def core_replay(url, journaled, tenant_id, provider_id):
    """A market of the core's given the journal's commands (what the test sent under each
    key), in the journal's order, each at the height it was applied at, then brought to the
    height of the last round or command; with every id it assigned checked against the live
    one. Returns it and the ids (each the live one) for ``kova_live.replay.compare``."""
    engine = async_engine(url)
    try:
        async with engine.connect() as c:
            rows = (await c.execute(select(commands).order_by(commands.c.id))).all()
            last_round = await c.scalar(select(func.max(settlement_rounds.c.height)))
            made = {kind: (await c.execute(select(table.c.id))).scalars().all()
                    for kind, table in (("deployment", deployments), ("order", orders),
                                        ("bid", bids), ("lease", leases))}  # fmt: skip
    finally:
        await engine.dispose()
    market = Market(fee_bps=0, settlement_interval=60, limits=LIMITS)
    market.add_tenant(tenant_id=tenant_id)
    market.add_provider(capacity=Resources(**BIG), provider_id=provider_id)  # its heartbeat
    for row in rows:
        method, path, body = journaled[row.idem_key]
        answer, height = json.loads(row.response), row.height
        part = path.split("/")  # "", "v1", kind, id, verb
        if path == "/v1/deployments":
            events = market.create_deployment(tenant_id, parse_manifest(body["manifest"]),
                                              body["deposit"], height)  # fmt: skip
            created = [e for e in events if isinstance(e, DeploymentCreated)]
            assert [e.deployment_id for e in created] == [answer["id"]], (row.id, path)
        elif part[2] == "orders" and part[4] == "bids":
            events = market.place_bid(int(part[3]), provider_id, body["price"], height)
            assert [e.bid_id for e in events if isinstance(e, BidPlaced)] == [answer["id"]]
        elif part[2] == "bids" and part[4] == "accept":
            events = market.accept_bid(int(part[3]), height)
            assert [e.lease_id for e in events if isinstance(e, LeaseStarted)] == [answer["id"]]
        elif part[2] == "deployments" and part[4] == "deposit":
            market.deposit(int(part[3]), body["amount"], height)
        elif part[2] == "accounts" and part[4] == "credit":
            market.credit(int(part[3]), body["amount"], height)
        elif part[2] == "leases" and body["state"] == "running":
            continue  # the agent's report, not a market command
        else:
            raise AssertionError(f"journal row {row.id}: {method} {path} is not replayed")
    market.tick(max(last_round or 0, max((r.height for r in rows), default=0)))
    ids = {kind: {i: i for i in made.get(kind, ())} for kind in KINDS}
    ids["tenant"], ids["provider"] = {tenant_id: tenant_id}, {provider_id: provider_id}
    return market, ids
