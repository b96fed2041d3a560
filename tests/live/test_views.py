"""Views that answer tenants' and providers' questions (SQLite and PostgreSQL): why no bids
(candidates), a provider's leases, the public list of providers."""

import yaml

from .conftest import credit, register
from .test_lifecycle import MANIFEST


def beat(server, provider, cpu, attributes=None):
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": cpu, "memory": 2**34, "storage": 2**36, "gpu": 0},
        "attributes": attributes or {},
    })  # fmt: skip


def test_candidates_say_who_could_serve_and_why_the_others_cannot(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    fits = register(server, "provider", "fits")
    small = register(server, "provider", "small")
    elsewhere = register(server, "provider", "elsewhere")
    beat(server, fits, 4000, {"region": "eu"})
    beat(server, small, 500, {"region": "eu"})
    beat(server, elsewhere, 4000, {"region": "us"})
    manifest = yaml.safe_load(MANIFEST)
    manifest["profiles"]["placement"]["dc"]["attributes"] = {"region": "eu"}
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": manifest, "deposit": 0}).json()  # fmt: skip
    order_id = dep["orders"][0]["id"]
    answer = server.client.get(f"/v1/orders/{order_id}/candidates", headers=tenant["headers"]).json()
    assert fits["id"] in answer["candidates"]
    reasons = {c["provider_id"]: " ".join(c["reasons"]) for c in answer["cannot_serve"]}
    assert "capacity" in reasons[small["id"]]
    assert "placement" in reasons[elsewhere["id"]] and "region=eu" in reasons[elsewhere["id"]]
    other = register(server, "tenant", "o")
    assert server.client.get(f"/v1/orders/{order_id}/candidates",
                             headers=other["headers"]).status_code == 404  # fmt: skip


def test_a_provider_sees_its_own_leases_and_everyone_sees_providers(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    p, q = register(server, "provider", "p"), register(server, "provider", "q")
    beat(server, p, 4000, {"tier": "gold"})
    beat(server, q, 4000)
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
    bid = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids", headers=p["headers"],
                             json={"price": 1_000}).json()  # fmt: skip
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).json()
    mine = server.client.get("/v1/leases", headers=p["headers"]).json()["leases"]
    assert [x["id"] for x in mine][:1] == [lease["id"]]
    # what the agent needs to run it: the manifest's service (see MANIFEST)
    assert mine[0]["kind"] == "deployment" and mine[0]["max_runtime"] is None
    assert mine[0]["container"] == {
        "service": "web", "image": "busybox:1.36", "command": [], "args": [], "env": {},
        "expose": [], "files": [],
        "storage": [{"name": "default", "size": 2**30, "mount": None, "read_only": False,
                     "class": None}],
        "read_only_root": False,
    }  # fmt: skip
    assert server.client.get("/v1/leases", headers=q["headers"]).json()["leases"] == []
    assert server.client.get("/v1/leases", params={"state": "nope"},
                             headers=p["headers"]).status_code == 400  # fmt: skip
    assert server.client.get("/v1/leases", headers=tenant["headers"]).status_code == 403
    public = {x["provider_id"]: x for x in server.client.get("/v1/providers").json()["providers"]}
    assert public[p["id"]]["attributes"] == {"tier": "gold"} and public[p["id"]]["reputation"] == 0.5


def test_metrics_in_prometheus_format(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 2_000_000}).json()  # fmt: skip
    provider = register(server, "provider", "p")
    capacity = {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": capacity})
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        response = server.client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    before = scrape()  # the server is the module's: other tests have bid on it
    placed = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids",
                                headers=provider["headers"], json={"price": 1_000})  # fmt: skip
    assert placed.status_code == 201
    server.client.get("/v1/nothing")
    samples = scrape()
    assert samples[("kova_accounts", (("role", "tenant"),))] >= 1
    assert samples[("kova_orders", (("state", "open"),))] >= 1
    assert samples[("kova_escrow_micro", ())] >= 2_000_000
    assert samples[("kova_work_pending", ())] >= 1  # the order's expiry, at least
    for name in ("kova_bid_batch_size_count", "kova_bid_batch_size_sum"):  # one more, of one bid
        assert samples[(name, ())] == before[(name, ())] + 1
    key = ("kova_http_requests_total", (("method", "POST"), ("route", "/v1/deployments"), ("status", "201")))
    assert samples[key] >= 1
    assert ("kova_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404"))) in samples


def test_candidates_name_providers_that_ask_more_than_the_ceiling(server):
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 0}).json()  # fmt: skip
    order_id = dep["orders"][0]["id"]  # max price 50,000 micro-units per block
    capacity = {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}
    asks = {
        "dear": {"strategy": "fixed", "params": {"price_per_block": 60_000}},
        "cheap": {"strategy": "fixed", "params": {"price_per_block": 40_000}},
        "band": {"strategy": "random-band", "params": {"low": 55_000, "high": 90_000}},
        "wide": {"strategy": "random-band", "params": {"low": 10_000, "high": 90_000}},
        "undercut": {"strategy": "undercut", "params": {"floor": 20_000, "start": 70_000}},
    }
    who = {}
    for name, pricing in asks.items():
        who[name] = register(server, "provider", name)
        made = server.client.post("/v1/providers/heartbeat", headers=who[name]["headers"],
                                  json={"capacity": capacity, "pricing": pricing})  # fmt: skip
        assert made.status_code == 200, made.text
    answer = server.client.get(f"/v1/orders/{order_id}/candidates", headers=tenant["headers"]).json()
    reasons = {c["provider_id"]: " ".join(c["reasons"]) for c in answer["cannot_serve"]}
    assert "fixed strategy asks at least 0.06" in reasons[who["dear"]["id"]]
    assert "above the order's maximum 0.05" in reasons[who["dear"]["id"]]
    assert "random-band strategy asks at least 0.055" in reasons[who["band"]["id"]]
    for fine in ("cheap", "wide", "undercut"):  # may bid within the ceiling
        assert who[fine]["id"] in answer["candidates"], fine
    listed = {p["provider_id"]: p for p in server.client.get("/v1/providers").json()["providers"]}
    assert listed[who["dear"]["id"]]["pricing"] == asks["dear"]
    provider = who["dear"]
    for pricing, field in (
        ({"strategy": "psychic"}, "pricing.strategy"),
        ({"strategy": "fixed", "params": {"colour": 1}}, "pricing.params.colour"),
        ({"strategy": "random-band", "params": {"low": 5, "high": 1}}, "pricing.params.high"),
    ):
        refused = server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                                     json={"capacity": capacity, "pricing": pricing})  # fmt: skip
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, pricing
