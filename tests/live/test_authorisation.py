"""Every tenant and provider operation tried with another account's token (SQLite and
PostgreSQL): 403 (wrong role) or 404 (someone else's), and nothing changes."""

import asyncio

from sqlalchemy import func, select

from kova_live.db import async_engine
from kova_live.schema import (
    bids,
    deployments,
    files,
    leases,
    logs,
    orders,
    provider_nodes,
    transfers,
)

from .conftest import credit, register
from .test_lifecycle import MANIFEST

BOX = {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}


def snapshot(url):
    async def run():
        engine = async_engine(url)
        try:
            async with engine.connect() as c:
                counts = {}
                for table in (deployments, orders, bids, leases, transfers, provider_nodes, logs, files):
                    counts[table.name] = await c.scalar(select(func.count()).select_from(table))
                states = (await c.execute(select(deployments.c.id, deployments.c.state))).all()
                bid_states = (await c.execute(select(bids.c.id, bids.c.state))).all()
                nodes = (await c.execute(select(provider_nodes))).all()
                lease_rows = (await c.execute(select(leases))).all()
                return (counts, sorted(states), sorted(bid_states), sorted(map(tuple, nodes)),
                        sorted(map(tuple, lease_rows)))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_nobody_acts_on_what_is_not_theirs(server):
    alice, mallory = register(server, "tenant", "alice"), register(server, "tenant", "mallory")
    acme, evil = register(server, "provider", "acme"), register(server, "provider", "evil")
    for tenant in (alice, mallory):
        credit(server.database_url, tenant["account"], 10_000_000)
    for provider in (acme, evil):
        server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
    dep = server.client.post("/v1/deployments", headers=alice["headers"],
                             json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
    order_id = dep["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order_id}/bids", headers=acme["headers"],
                             json={"price": 1_000}).json()  # fmt: skip
    other = server.client.post("/v1/deployments", headers=alice["headers"],
                               json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
    open_bid = server.client.post(f"/v1/orders/{other['orders'][0]['id']}/bids",
                                  headers=acme["headers"], json={"price": 1_000}).json()  # fmt: skip
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=alice["headers"]).json()
    before = snapshot(server.database_url)

    d, o, b = dep["id"], order_id, open_bid["id"]
    tenant_ops = [
        ("GET", f"/v1/deployments/{d}", None),
        ("POST", f"/v1/deployments/{d}/deposit", {"amount": 1}),
        ("POST", f"/v1/deployments/{d}/close", None),
        ("GET", f"/v1/deployments/{d}/bids", None),
        ("POST", f"/v1/bids/{b}/accept", None),
        ("GET", f"/v1/orders/{o}/candidates", None),
        ("GET", f"/v1/deployments/{d}/logs", None),
        ("GET", f"/v1/deployments/{d}/result", None),
    ]
    provider_ops = [
        ("DELETE", f"/v1/bids/{b}", None),
        ("POST", f"/v1/leases/{lease['id']}/status", {"state": "failed", "message": "x"}),
        ("POST", f"/v1/leases/{lease['id']}/logs", {"lines": [{"text": "spoofed"}]}),
    ]
    role_only = [
        ("POST", "/v1/deployments", {"manifest": MANIFEST, "deposit": 0}),
        ("GET", "/v1/deployments", None),
        ("POST", "/v1/providers/heartbeat", {"capacity": BOX}),
        ("GET", "/v1/orders", None),
        ("POST", f"/v1/orders/{other['orders'][0]['id']}/bids", {"price": 500}),
        ("GET", "/v1/leases", None),
        ("POST", "/v1/files", None),
    ]
    for method, path, body in tenant_ops:
        wrong_owner = server.client.request(method, path, json=body, headers=mallory["headers"])
        assert wrong_owner.status_code == 404, (path, wrong_owner.text)
        wrong_role = server.client.request(method, path, json=body, headers=acme["headers"])
        assert wrong_role.status_code == 403, (path, wrong_role.text)
    for method, path, body in provider_ops:
        assert server.client.request(method, path, json=body, headers=evil["headers"]).status_code == 404
        assert server.client.request(method, path, json=body, headers=alice["headers"]).status_code == 403
    for method, path, body in role_only:
        provider_route = path.startswith(("/v1/providers", "/v1/orders", "/v1/leases"))
        wrong = alice if provider_route else acme
        response = server.client.request(method, path, json=body, headers=wrong["headers"])
        assert response.status_code == 403, (path, response.text)
    for method, path, body in tenant_ops + provider_ops + role_only:
        anonymous = server.client.request(method, path, json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)
    assert snapshot(server.database_url) == before
