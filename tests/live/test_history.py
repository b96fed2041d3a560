"""``GET /v1/deployments/{id}/escrow`` (a deployment's escrow history) and ``GET /v1/bids`` (a
provider's own bids), on each backend, against a real server (0.05 s blocks: a round every
3 s)."""

from __future__ import annotations

from .agents import HTTPD
from .conftest import credit, register, wait_for

PRICE = 1_000


def _provider(server):
    provider = register(server, "provider", "p")
    beat = server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": 8000, "memory": 8 << 30, "storage": 16 << 30, "gpu": 0}})  # fmt: skip
    assert beat.status_code == 200, beat.text
    return provider


def test_the_escrow_history_has_a_point_at_each_change_and_none_at_routine_rounds(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    provider = _provider(server)
    h = tenant["headers"]
    dep = server.client.post("/v1/deployments", headers=h,
                             json={"manifest": HTTPD, "deposit": 200_000}).json()  # fmt: skip
    path = f"/v1/deployments/{dep['id']}/escrow"
    (made,) = server.client.get(path, headers=h).json()["points"]
    assert (made["escrow"], made["burn_rate"]) == (200_000, 0)

    bid = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids",
                             headers=provider["headers"], json={"price": PRICE}).json()  # fmt: skip
    assert server.client.post(f"/v1/bids/{bid['id']}/accept", headers=h).status_code == 201
    started = server.client.get(path, headers=h).json()["points"][-1]
    assert (started["escrow"], started["burn_rate"]) == (200_000, PRICE)

    # rounds pay from the escrow (no point each), until it runs short: a point at the pause
    paused = wait_for(lambda: (p := server.client.get(path, headers=h).json()["points"])[-1]
                      ["burn_rate"] == 0 and len(p) == 3 and p, 30)  # fmt: skip
    view = server.client.get(f"/v1/deployments/{dep['id']}", headers=h).json()
    assert view["state"] == "insufficient_funds"
    assert paused[-1]["escrow"] < 60 * PRICE and paused[-1]["height"] > started["height"]
    # a deposit resumes it: a point with the burn rate back
    reply = server.client.post(f"/v1/deployments/{dep['id']}/deposit", headers=h,
                               json={"amount": 1_000_000})  # fmt: skip
    assert reply.status_code == 200, reply.text
    points = server.client.get(path, headers=h).json()["points"]
    assert points[-1]["burn_rate"] == PRICE and points[-1]["height"] >= paused[-1]["height"]
    assert [p["id"] for p in points] == sorted(p["id"] for p in points)
    # paging: the newest first in pages, each page oldest first
    page = server.client.get(path, headers=h, params={"limit": 2}).json()
    assert page["points"] == points[-2:] and page["next_before"] == points[-2]["id"]
    older = server.client.get(path, headers=h,
                              params={"limit": 2, "before": page["next_before"]}).json()  # fmt: skip
    assert older["points"] == points[-4:-2]

    # another tenant, a provider, no token: not theirs to read
    other = register(server, "tenant", "o")
    assert server.client.get(path, headers=other["headers"]).status_code == 404
    assert server.client.get(path, headers=provider["headers"]).status_code == 403
    assert server.client.get(path).status_code == 401
    assert server.client.get(path, headers=h, params={"limit": 0}).status_code == 400


def test_a_provider_lists_its_own_bids_by_state(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    mine, theirs = _provider(server), _provider(server)
    deps = [server.client.post("/v1/deployments", headers=tenant["headers"],
                               json={"manifest": HTTPD, "deposit": 1_000_000}).json()
            for _ in range(2)]  # fmt: skip
    placed = [server.client.post(f"/v1/orders/{d['orders'][0]['id']}/bids",
                                 headers=mine["headers"], json={"price": PRICE + i}).json()
              for i, d in enumerate(deps)]  # fmt: skip
    server.client.post(f"/v1/orders/{deps[0]['orders'][0]['id']}/bids",
                       headers=theirs["headers"], json={"price": PRICE})  # fmt: skip
    accepted = server.client.post(f"/v1/bids/{placed[0]['id']}/accept", headers=tenant["headers"])
    assert accepted.status_code == 201

    every = server.client.get("/v1/bids", headers=mine["headers"]).json()["bids"]
    assert [b["id"] for b in every] == [placed[1]["id"], placed[0]["id"]]  # newest first
    assert [b["state"] for b in every] == ["open", "accepted"]
    assert every[0]["service"] == "web" and every[0]["price"] == PRICE + 1
    assert every[0]["max_price"] == 5_000 and every[0]["resources"]["cpu"] == 500
    open_ = server.client.get("/v1/bids", headers=mine["headers"], params={"state": "open"})
    assert [b["id"] for b in open_.json()["bids"]] == [placed[1]["id"]]
    assert server.client.get("/v1/bids", headers=tenant["headers"]).status_code == 403
    bad = server.client.get("/v1/bids", headers=mine["headers"], params={"state": "won"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "state"
