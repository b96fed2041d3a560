"""Races over real HTTP (SQLite and PostgreSQL): many providers bidding at once on one order,
two accepts at once on one order, deposits racing settlement rounds. Each ends with exactly the
state one serial order of the requests would give, and the ledger balances."""

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from kova_live.db import async_engine
from kova_live.schema import balances, leases, transfers

from .conftest import Server, credit, fresh_database, register
from .test_lifecycle import MANIFEST

BOX = {"cpu": 2000, "memory": 4 * 2**30, "storage": 50 * 2**30, "gpu": 0}


async def _gather(url, requests):
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.request(m, p, json=j, headers=h) for m, p, j, h in requests))


def concurrently(server, requests):
    return asyncio.run(_gather(server.url, requests))


def ledger_balances(database_url):
    async def run():
        engine = async_engine(database_url)
        try:
            async with engine.connect() as c:
                moved = {}
                for source, destination, amount in (
                    await c.execute(select(transfers.c.source, transfers.c.destination, transfers.c.amount))
                ).all():
                    moved[source] = moved.get(source, 0) - amount
                    moved[destination] = moved.get(destination, 0) + amount
                held = dict((await c.execute(select(balances.c.account, balances.c.amount))).all())
                lease_count = await c.scalar(select(func.count()).select_from(leases))
        finally:
            await engine.dispose()
        moved.pop("external", None)
        return {k: v for k, v in moved.items() if v}, {k: v for k, v in held.items() if v}, lease_count

    return asyncio.run(run())


def test_a_hundred_providers_bid_at_once_on_one_order(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    providers = [register(server, "provider", f"p{i}") for i in range(100)]
    for p in providers:
        server.client.post("/v1/providers/heartbeat", headers=p["headers"], json={"capacity": BOX})
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
    order_id = dep["orders"][0]["id"]
    replies = concurrently(server, [
        ("POST", f"/v1/orders/{order_id}/bids", {"price": 1_000 + i}, p["headers"])
        for i, p in enumerate(providers)
    ])  # fmt: skip
    assert sorted(r.status_code for r in replies) == [201] * 100, {r.text for r in replies if r.status_code != 201}
    offers = server.client.get(f"/v1/deployments/{dep['id']}/bids", headers=tenant["headers"]).json()["bids"]
    assert sorted(b["price"] for b in offers) == [1_000 + i for i in range(100)]
    # and the same provider twice at once: one bid, one duplicate
    twice = concurrently(server, [
        ("POST", f"/v1/orders/{order_id}/bids", {"price": 900}, providers[0]["headers"]),
    ] * 2)  # fmt: skip
    assert sorted(r.status_code for r in twice) == [409, 409]  # it already had an open bid


def test_bids_that_arrive_together_are_checked_one_after_the_other(server):
    """The server takes the bids that arrive together in one transaction; each is still checked
    as if alone, after the ones before it. A provider with room for two replicas bids on five
    orders at once, and twice on the first: exactly two bids stand, the rest are refused for
    capacity or as a duplicate of a bid that stands."""
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 10_000_000)
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
    five = MANIFEST.replace("count: 1", "count: 5")
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": five, "deposit": 1_000_000}).json()  # fmt: skip
    order_ids = [o["id"] for o in dep["orders"]]
    targets = [*order_ids, order_ids[0]]
    replies = concurrently(server, [
        ("POST", f"/v1/orders/{order_id}/bids", {"price": 1_000}, provider["headers"])
        for order_id in targets
    ])  # fmt: skip
    made = {r.json()["id"]: r.json()["order_id"] for r in replies if r.status_code == 201}
    assert len(made) == 2 and len(set(made.values())) == 2  # BOX holds two replicas
    for order_id, reply in zip(targets, replies, strict=True):
        if reply.status_code == 201:
            continue
        error = reply.json()["error"]
        assert reply.status_code == 409 and error["code"] in {"insufficient_capacity", "duplicate_bid"}
        if error["code"] == "duplicate_bid":
            (standing,) = [b for b, o in made.items() if o == order_id]
            assert f"open bid {standing} on order {order_id}" in error["message"]
    offers = server.client.get(f"/v1/deployments/{dep['id']}/bids", headers=tenant["headers"]).json()["bids"]
    assert sorted(b["id"] for b in offers) == sorted(made)


def test_two_accepts_at_once_make_exactly_one_lease(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    a, b = register(server, "provider", "a"), register(server, "provider", "b")
    big = {"cpu": 64000, "memory": 2**40, "storage": 2**40, "gpu": 0}
    for p in (a, b):
        server.client.post("/v1/providers/heartbeat", headers=p["headers"], json={"capacity": big})
    before = ledger_balances(server.database_url)[2]
    for _ in range(5):
        dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                                 json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
        order_id = dep["orders"][0]["id"]
        bids = [server.client.post(f"/v1/orders/{order_id}/bids", headers=p["headers"],
                                   json={"price": 1_000}).json()["id"] for p in (a, b)]  # fmt: skip
        replies = concurrently(server, [
            ("POST", f"/v1/bids/{bid}/accept", None, tenant["headers"]) for bid in bids
        ])  # fmt: skip
        assert sorted(r.status_code for r in replies) == [201, 409], [r.text for r in replies]
    assert ledger_balances(server.database_url)[2] == before + 5


@pytest.fixture(params=["sqlite", "postgresql"])
def fast_server(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        server = Server(url, tmp_path / "data", block_seconds=0.01)  # a round every 0.6 s
        try:
            yield server
        finally:
            server.stop()


def test_deposits_racing_settlement_rounds_lose_nothing_and_pay_nothing_twice(fast_server):
    s = fast_server
    tenant, provider = register(s, "tenant", "t"), register(s, "provider", "p")
    credit(s.database_url, tenant["account"], 1_000_000_000)
    s.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                  json={"capacity": {"cpu": 64000, "memory": 2**40, "storage": 2**40, "gpu": 0}})
    deps = []
    for _ in range(6):
        dep = s.client.post("/v1/deployments", headers=tenant["headers"],
                            json={"manifest": MANIFEST, "deposit": 100_000}).json()  # fmt: skip
        bid = s.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids", headers=provider["headers"],
                            json={"price": 2_000}).json()  # fmt: skip
        assert s.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).status_code == 201
        deps.append(dep["id"])
    # 3 s of small deposits into every deployment while rounds run every 0.6 s
    replies = []
    for _ in range(12):
        replies += concurrently(s, [
            ("POST", f"/v1/deployments/{d}/deposit", {"amount": 20_000}, tenant["headers"]) for d in deps
        ])  # fmt: skip
        asyncio.run(asyncio.sleep(0.25))
    assert {r.status_code for r in replies} == {200}
    moved, held, _ = ledger_balances(s.database_url)
    assert moved == held  # every balance is exactly the sum of its transfers
    async def paid_ranges():
        engine = async_engine(s.database_url)
        try:
            async with engine.connect() as c:
                return (await c.execute(
                    select(transfers.c.lease_id, transfers.c.start_block, transfers.c.end_block)
                    .where(transfers.c.lease_id.is_not(None), transfers.c.destination.like("provider:%"))
                    .order_by(transfers.c.lease_id, transfers.c.start_block)
                )).all()
        finally:
            await engine.dispose()
    last_end = {}
    for lease_id, start, end in asyncio.run(paid_ranges()):
        assert start >= last_end.get(lease_id, start), f"lease {lease_id}: block {start} paid twice"
        last_end[lease_id] = end
    total_deposited = 6 * 100_000 + len(replies) * 20_000
    escrows = sum(v for k, v in held.items() if k.startswith("escrow:"))
    assert held.get(provider["account"], 0) + escrows == total_deposited


CUSTOM = MANIFEST.replace("    image: busybox:1.36\n", """    image: busybox:1.36
    expose:
      - port: 8080
        as: 80
        accept: [shop.example.com]
        to:
          - global: true
""")


def test_deployments_racing_for_one_hostname_one_gets_it_the_others_are_told_and_nothing_else_fails(server):
    assert CUSTOM != MANIFEST  # the manifest accepts a hostname of its own
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 100_000_000)
    created = [("POST", "/v1/deployments", {"manifest": CUSTOM, "deposit": 1_000_000},
                tenant["headers"]) for _ in range(8)]  # fmt: skip
    plain = [("POST", "/v1/deployments", {"manifest": MANIFEST, "deposit": 1_000_000},
              tenant["headers"]) for _ in range(8)]  # fmt: skip
    replies = concurrently(server, [x for pair in zip(created, plain, strict=True) for x in pair])
    racing, others = replies[0::2], replies[1::2]
    assert sorted(r.status_code for r in racing) == [201] + [409] * 7, [r.text for r in racing]
    assert {r.json()["error"]["code"] for r in racing if r.status_code == 409} == {"hostname_taken"}
    assert [r.status_code for r in others] == [201] * 8  # none caught up in a failed batch
    listed = server.client.get("/v1/deployments", headers=tenant["headers"]).json()["deployments"]
    assert len(listed) == 9
