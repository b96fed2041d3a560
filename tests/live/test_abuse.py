"""The network's limits on a real server, as a hostile tenant meets them: no orders without
money, a flood of orders that cannot starve another tenant's order, orders nobody accepts that
close and give their providers' capacity back, a billion replicas refused with the server's
memory unmoved, manifests too large refused before they are parsed.

Settings: the servers here run with the network's limits at their defaults (a deposit for one
settlement interval, 100 replicas per deployment, orders no larger than the largest provider,
half a provider's capacity for one tenant's bids, 64 KiB manifests), except where a test says:
the flood raises ``--max-open-orders`` to 2,000 (its tenant opens 1,500) and the order lifetime
test shortens ``--order-expiry`` to 60 blocks. Blocks are 0.05 s, so the lifetime's default of
3,600 blocks is three minutes and never reached here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kova_core import MICRO

from .agents import HTTPD, AgentProcess
from .conftest import Server, credit, fresh_database, register, wait_for

LIMITS = ("--min-deposit-blocks", "60", "--max-replicas", "100", "--order-size",
          "largest-provider", "--tenant-share", "0.5", "--max-manifest-bytes", "65536")  # fmt: skip
PRICE = 5000  # HTTPD's max price per block


def manifest(count: int = 1, cpu: str = "0.5") -> str:
    return HTTPD.replace("count: 1", f"count: {count}").replace("units: 0.5", f"units: {cpu}")


def deploy(server: Server, tenant: dict, text: str, deposit: int):
    return server.client.post("/v1/deployments", headers=tenant["headers"],
                              json={"manifest": text, "deposit": deposit})  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def limited(request, tmp_path: Path):
    """A server with the network's limits; ``--order-expiry`` 60 blocks for the tests whose
    name says ``lifetime``, else its default."""
    lifetime = ("--order-expiry", "60") if "lifetime" in request.node.name else ()
    with fresh_database(request.param, tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, *LIMITS, "--max-open-orders", "2000",
                        *lifetime)  # fmt: skip
        try:
            yield server
        finally:
            server.stop()


def rss_kib(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_refusals_name_the_field_and_change_nothing(limited):
    server = limited
    tenant = register(server, "tenant", "poor")
    provider = register(server, "provider", "small")
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                       json={"capacity": {"cpu": 2000, "memory": 2**30, "storage": 2**32, "gpu": 0}})  # fmt: skip
    # no money: the minimum deposit is one settlement interval at the max price
    reply = deploy(server, tenant, manifest(), 0)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "deposit_too_small" and error["field"] == "deposit"
    assert "300000 micro" in error["message"]  # 60 blocks x 5000
    reply = deploy(server, tenant, manifest(), 60 * PRICE)
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "insufficient_balance"
    credit(server.database_url, tenant["account"], 10 * MICRO)
    # larger than the largest provider
    reply = deploy(server, tenant, manifest(cpu="4"), 60 * PRICE)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["field"] == "manifest.profiles.compute.web.resources.cpu.units"
    # more replicas than a deployment may have
    reply = deploy(server, tenant, manifest(count=101), 101 * 60 * PRICE)
    assert reply.status_code == 400
    assert reply.json()["error"]["field"] == "manifest.deployment.web.dc.count"
    # a manifest above the size, refused before it is parsed
    reply = deploy(server, tenant, manifest() + "#" * 65536, 60 * PRICE)
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "manifest"
    assert "at most 65536" in reply.json()["error"]["message"]
    me = server.client.get("/v1/accounts/me", headers=tenant["headers"]).json()
    assert me["balance"] == 10 * MICRO  # nothing moved
    assert server.client.get("/v1/deployments", headers=tenant["headers"]).json()["deployments"] == []
    assert deploy(server, tenant, manifest(), 60 * PRICE).status_code == 201


def test_a_billion_replicas_are_refused_and_the_servers_memory_does_not_move(limited):
    server = limited
    tenant = register(server, "tenant", "greedy")
    credit(server.database_url, tenant["account"], 10 * MICRO)
    assert deploy(server, tenant, manifest(), 60 * PRICE).status_code == 201  # warmed up
    before = rss_kib(server)
    for _ in range(3):
        reply = deploy(server, tenant, manifest(count=10**9), 60 * PRICE)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["field"] == "manifest.deployment.web.dc.count"
        assert "1000000000 replicas" in reply.json()["error"]["message"]
    grown = rss_kib(server) - before
    assert grown < 20 * 1024, f"the server grew by {grown} KiB"  # 10^9 orders would be GiBs
    assert server.client.get("/healthz").status_code == 200


def test_an_order_nobody_accepts_closes_after_its_lifetime_and_frees_the_capacity(limited):
    server = limited
    tenant = register(server, "tenant", "undecided")
    credit(server.database_url, tenant["account"], 10 * MICRO)
    provider = register(server, "provider", "p")
    capacity = {"cpu": 2000, "memory": 2**31, "storage": 2**33, "gpu": 0}
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                       json={"capacity": capacity})  # fmt: skip
    dep = deploy(server, tenant, manifest(), 60 * PRICE).json()
    order = dep["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order}/bids", headers=provider["headers"],
                             json={"price": 1000})  # fmt: skip
    assert bid.status_code == 201, bid.text

    def closed():
        view = server.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()
        return view["orders"][0]["state"] == "closed" and view["orders"][0]

    closed_order = wait_for(closed, timeout=30)
    assert closed_order["close_reason"] == "expired"
    assert closed_order["closed_at"] == dep["orders"][0]["created_at"] + 60
    # the bid is lost and its reservation freed: the provider may bid its whole machine again
    other = deploy(server, tenant, manifest(cpu="2"), 60 * PRICE).json()
    again = server.client.post(f"/v1/orders/{other['orders'][0]['id']}/bids",
                               headers=provider["headers"], json={"price": 1000})  # fmt: skip
    assert again.status_code == 201, again.text


def test_a_flood_of_orders_does_not_keep_another_tenants_order_from_bids(limited, tmp_path):
    """One funded tenant opens 1,500 orders (more than all the capacity there is and more than
    a page of the listing); another tenant's one order gets bids from both agents within two of
    their polls: the listing interleaves tenants, and one tenant's bids take at most half of a
    provider's capacity."""
    server = limited
    flood = register(server, "tenant", "flood")
    credit(server.database_url, flood["account"], 10_000 * MICRO)
    agents = []
    for i in range(2):
        provider = register(server, "provider", f"agent{i}")
        agents.append(AgentProcess(server, provider["token"], tmp_path / f"agent{i}",
                                   "--poll-seconds", "1", "--strategy", "fixed",
                                   "--strategy-param", "price_per_block=1000"))  # fmt: skip
    try:
        wait_for(lambda: server.client.get("/v1/status").json()["providers"] >= 2, timeout=30)
        time.sleep(1.5)  # their first heartbeats: the largest provider is known
        for _ in range(15):
            reply = deploy(server, flood, manifest(count=100, cpu="0.1"), 100 * 60 * PRICE)
            assert reply.status_code == 201, reply.text
        time.sleep(2.5)  # the agents' polls reserve what the share lets them for the flood
        victim = register(server, "tenant", "victim")
        credit(server.database_url, victim["account"], 10 * MICRO)
        dep = deploy(server, victim, manifest(), 60 * PRICE).json()

        def bid_on():
            bids = server.client.get(f"/v1/deployments/{dep['id']}/bids",
                                     headers=victim["headers"]).json()["bids"]  # fmt: skip
            return len({b["provider_id"] for b in bids}) == 2 and bids

        bids = wait_for(bid_on, timeout=30)
        # within two polls of 1 s (20 blocks of 0.05 s each), and a poll's own time
        assert all(b["response_time"] <= 2 * 20 + 10 for b in bids), bids
    finally:
        for agent in agents:
            agent.stop()
