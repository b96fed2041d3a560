"""Bids over real HTTP (SQLite and PostgreSQL): the core's checks, in the core's order, as 4xx
replies that change nothing; who may bid, accept and withdraw."""

import pytest
import yaml

from .conftest import credit, register
from .test_lifecycle import MANIFEST

BOX = {"cpu": 2000, "memory": 4 * 2**30, "storage": 50 * 2**30, "gpu": 0}


@pytest.fixture
def market(server):
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 50_000_000)
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
    return tenant, provider, dep, dep["orders"][0]["id"]


def bid(server, provider, order_id, price):
    return server.client.post(f"/v1/orders/{order_id}/bids", headers=provider["headers"],
                              json={"price": price})  # fmt: skip


def test_refused_bids_say_why(server, market):
    tenant, provider, dep, order_id = market
    assert bid(server, provider, order_id, 60_000).json()["error"]["code"] == "price_above_max"
    assert bid(server, provider, order_id, 0).status_code == 400
    assert bid(server, provider, order_id, 1.5).status_code == 400
    assert bid(server, provider, 10**12, 1_000).status_code == 404
    assert bid(server, tenant, order_id, 1_000).status_code == 403
    first = bid(server, provider, order_id, 1_000)
    assert first.status_code == 201
    assert bid(server, provider, order_id, 900).json()["error"]["code"] == "duplicate_bid"
    silent = register(server, "provider", "silent")
    assert bid(server, silent, order_id, 900).json()["error"]["code"] == "no_heartbeat"
    small = register(server, "provider", "small")
    server.client.post("/v1/providers/heartbeat", headers=small["headers"],
                       json={"capacity": {"cpu": 500, "memory": 2**30, "storage": 2**30, "gpu": 0}})
    assert bid(server, small, order_id, 900).json()["error"]["code"] == "insufficient_capacity"
    offers = server.client.get(f"/v1/deployments/{dep['id']}/bids", headers=tenant["headers"])
    assert [b["id"] for b in offers.json()["bids"]] == [first.json()["id"]]


def test_placement_attributes_are_checked(server):
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 10_000_000)
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                       json={"capacity": BOX, "attributes": {"region": "us"}})  # fmt: skip
    manifest = yaml.safe_load(MANIFEST)
    manifest["profiles"]["placement"]["dc"]["attributes"] = {"region": "eu"}
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": manifest, "deposit": 0}).json()  # fmt: skip
    refused = bid(server, provider, dep["orders"][0]["id"], 1_000).json()["error"]
    assert refused["code"] == "placement_mismatch" and "region=eu" in refused["message"]


def test_only_the_bidder_withdraws_and_only_the_tenant_accepts(server, market):
    tenant, provider, _dep, order_id = market
    other_tenant, other_provider = register(server, "tenant", "o"), register(server, "provider", "q")
    placed = bid(server, provider, order_id, 1_000).json()
    assert server.client.delete(f"/v1/bids/{placed['id']}", headers=other_provider["headers"]).status_code == 404
    assert server.client.post(f"/v1/bids/{placed['id']}/accept", headers=other_tenant["headers"]).status_code == 404
    assert server.client.post(f"/v1/bids/{placed['id']}/accept", headers=provider["headers"]).status_code == 403
    withdrawn = server.client.delete(f"/v1/bids/{placed['id']}", headers=provider["headers"])
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    late = server.client.post(f"/v1/bids/{placed['id']}/accept", headers=tenant["headers"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "illegal_transition"
    again = bid(server, provider, order_id, 1_000)
    assert again.status_code == 201  # a withdrawn bid does not block a new one
    lease = server.client.post(f"/v1/bids/{again.json()['id']}/accept", headers=tenant["headers"])
    assert lease.status_code == 201 and lease.json()["price"] == 1_000
    server.client.post("/v1/providers/heartbeat", headers=other_provider["headers"],
                       json={"capacity": BOX})  # fmt: skip
    assert bid(server, other_provider, order_id, 500).json()["error"]["code"] == "order_not_open"

