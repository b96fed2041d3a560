"""Auto-accept over real HTTP (SQLite and PostgreSQL): a deployment that carries a registered
selection policy gets its leases without its tenant: the server's background work accepts the
bid the policy chooses once the wait is over, and again when a lease fails and its order
reopens."""

import yaml

from .conftest import credit, register, wait_for
from .test_jobs import BOX
from .test_lifecycle import MANIFEST


def deploy(server, tenant, auto, manifest=MANIFEST):
    return server.client.post("/v1/deployments", headers=tenant["headers"], json={
        "manifest": manifest, "deposit": 2_000_000, "auto_accept": auto})


def providers(server, count):
    agents = [register(server, "provider", f"p{i}") for i in range(count)]
    for agent in agents:
        server.client.post("/v1/providers/heartbeat", headers=agent["headers"], json={"capacity": BOX})
    return agents


def bid(server, agent, order_id, price):
    made = server.client.post(f"/v1/orders/{order_id}/bids", headers=agent["headers"], json={"price": price})
    assert made.status_code == 201, made.text
    return made.json()


def test_the_server_accepts_the_bid_the_policy_chooses(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    dear, cheap, spare = providers(server, 3)
    made = deploy(server, tenant, {"policy": "cheapest", "wait": 40})
    assert made.status_code == 201, made.text
    dep = made.json()
    assert dep["auto_accept"] == {"policy": "cheapest", "params": {}, "wait": 40}
    order_id = dep["orders"][0]["id"]
    bid(server, dear, order_id, 2_000)
    chosen = bid(server, cheap, order_id, 1_000)

    def leased():
        shown = server.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()
        return shown["leases"] and shown

    shown = wait_for(leased)
    (lease,) = shown["leases"]
    assert lease["bid_id"] == chosen["id"] and lease["price"] == 1_000
    assert lease["created_at"] >= dep["created_at"] + 40  # it waited for bids
    # the lease fails: the order reopens and the policy chooses again among new bids
    failed = server.client.post(f"/v1/leases/{lease['id']}/status", headers=cheap["headers"],
                                json={"state": "failed", "message": "out of disk"})
    assert failed.status_code == 200, failed.text
    again = bid(server, spare, order_id, 1_500)

    def releases():
        shown = server.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()
        return len(shown["leases"]) == 2 and shown

    second = wait_for(releases)["leases"][1]
    assert second["bid_id"] == again["id"] and second["state"] == "active"


def test_weighted_policies_take_their_parameters_and_bad_ones_are_named(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    ok = deploy(server, tenant, {"policy": "weighted", "params": {"price": 2, "reputation": 0}, "wait": 5})
    assert ok.status_code == 201, ok.text
    for auto, field in (
        ({"policy": "luckiest"}, "auto_accept.policy"),
        ({"policy": "weighted", "params": {"colour": 1}}, "auto_accept.params.colour"),
        ({"policy": "cheapest", "wait": -1}, "auto_accept.wait"),
        ({"policy": "cheapest", "wait": "soon"}, "auto_accept.wait"),
    ):
        refused = deploy(server, tenant, auto)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, auto
    listed = server.client.get("/v1/deployments", headers=tenant["headers"]).json()["deployments"]
    assert len(listed) == 1  # the refused ones made nothing


def test_a_job_can_be_accepted_automatically_too(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    (agent,) = providers(server, 1)
    job = yaml.safe_load(MANIFEST) | {"kind": "job", "max_runtime": "1h"}
    dep = deploy(server, tenant, {"policy": "fastest", "wait": 0}, manifest=job).json()
    bid(server, agent, dep["orders"][0]["id"], 1_000)
    lease = wait_for(lambda: server.client.get("/v1/leases", headers=agent["headers"]).json()["leases"])[0]
    assert lease["deployment_id"] == dep["id"] and lease["state"] == "active"
