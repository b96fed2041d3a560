"""DESIGN section 1 end to end over real HTTP (SQLite and PostgreSQL): a provider's heartbeat,
a deployment, a bid, the lease, settlement rounds from the server's own loop, a pause when the
escrow runs short, a deposit that resumes it, a close with a refund; money conserved."""

import time

import pytest

from .conftest import Server, credit, fresh_database, register, wait_for

MANIFEST = """
version: "2.0"
services:
  web:
    image: busybox:1.36
profiles:
  compute:
    web:
      resources:
        cpu: {units: 1}
        memory: {size: 1Gi}
        storage: {size: 1Gi}
  placement:
    dc:
      pricing:
        web: {denom: ukova, amount: 50000}
deployment:
  web:
    dc:
      profile: web
      count: 1
"""
PRICE = 10_000  # micro-units per block
ROUND = 60 * PRICE


@pytest.fixture(params=["sqlite", "postgresql"])
def fast_server(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        server = Server(url, tmp_path / "data", block_seconds=0.02)  # a round every 1.2 s
        try:
            yield server
        finally:
            server.stop()


def test_the_whole_lifecycle(fast_server):
    s = fast_server
    tenant, provider = register(s, "tenant", "alice"), register(s, "provider", "acme")
    credit(s.database_url, tenant["account"], 100_000_000)
    beat = s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": 4000, "memory": 8 * 2**30, "storage": 100 * 2**30, "gpu": 0},
        "attributes": {"region": "eu"},
    })  # fmt: skip
    assert beat.status_code == 200, beat.text

    deposit = ROUND + ROUND // 2  # one and a half rounds of billing
    dep = s.client.post("/v1/deployments", headers=tenant["headers"],
                        json={"manifest": MANIFEST, "deposit": deposit}).json()  # fmt: skip
    order_id = dep["orders"][0]["id"]
    seen = s.client.get("/v1/orders", headers=provider["headers"]).json()["orders"]
    assert order_id in [o["id"] for o in seen]
    bid = s.client.post(f"/v1/orders/{order_id}/bids", headers=provider["headers"],
                        json={"price": PRICE})  # fmt: skip
    assert bid.status_code == 201, bid.text
    offers = s.client.get(f"/v1/deployments/{dep['id']}/bids", headers=tenant["headers"]).json()
    assert [(b["id"], b["price"], b["reputation"]) for b in offers["bids"]] == [(bid.json()["id"], PRICE, 0.5)]
    lease = s.client.post(f"/v1/bids/{bid.json()['id']}/accept", headers=tenant["headers"])
    assert lease.status_code == 201, lease.text
    started = lease.json()["created_at"]

    view = s.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()
    assert view["burn_rate"] == PRICE
    expected_pause = ((started + deposit // PRICE) // 60 + 1) * 60
    assert view["pauses_at"] == expected_pause

    paused = wait_for(lambda: (d := s.client.get(f"/v1/deployments/{dep['id']}",
                                                 headers=tenant["headers"]).json())["state"]
                      == "insufficient_funds" and d)  # fmt: skip
    (lease_view,) = paused["leases"]
    assert lease_view["state"] == "insufficient_funds"
    assert lease_view["last_settled"] == expected_pause
    settled_before = max(started, expected_pause - 60)  # the round before, or the lease's start
    assert lease_view["debt"] == (expected_pause - settled_before) * PRICE
    assert paused["escrow"] < paused["debt"]

    top_up = s.client.post(f"/v1/deployments/{dep['id']}/deposit", headers=tenant["headers"],
                           json={"amount": 10 * ROUND})  # fmt: skip
    assert top_up.status_code == 200, top_up.text
    resumed = top_up.json()
    assert resumed["state"] == "active" and resumed["leases"][0]["state"] == "active"
    assert resumed["debt"] == 0

    time.sleep(0.2)  # some blocks of billing since the resume, for the close to pay
    closed = s.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"]).json()
    assert closed["state"] == "closed" and closed["escrow"] == 0
    assert closed["leases"][0]["close_reason"] == "tenant_closed"

    mine = s.client.get("/v1/accounts/me", headers=tenant["headers"]).json()["balance"]
    theirs = s.client.get("/v1/accounts/me", headers=provider["headers"]).json()["balance"]
    assert theirs == closed["total_paid"] > 0
    assert mine + theirs == 100_000_000  # no fee: what the tenant spent, the provider earned
    reasons = [t["reason"] for t in s.client.get("/v1/accounts/me/transactions",
                                                 headers=provider["headers"]).json()["transactions"]]  # fmt: skip
    assert "settlement" in reasons and "debt" in reasons and "close" in reasons

    again = s.client.post(f"/v1/bids/{bid.json()['id']}/accept", headers=tenant["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
