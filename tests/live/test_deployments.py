"""Deployments over real HTTP (SQLite and PostgreSQL): create with a manifest and a deposit,
see them, deposit, close with a refund; bad manifests and bad money; who may do what."""

import pytest

from .conftest import credit as add_credit

MANIFEST = """
version: "2.0"
services:
  web:
    image: busybox:1.36
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu: {units: 0.5}
        memory: {size: 512Mi}
        storage: {size: 1Gi}
  placement:
    anywhere:
      pricing:
        web: {denom: uusd, amount: 1000000}
deployment:
  web:
    anywhere:
      profile: web
      count: 2
"""


def register(server, role="tenant", name="alice", credit=None):
    account = server.client.post("/v1/accounts", json={"role": role, "name": name}).json()
    account["headers"] = {"Authorization": f"Bearer {account['token']}"}
    if credit:
        add_credit(server.database_url, account["account"], int(credit) * 1_000_000)
    return account


def balance(server, account):
    return server.client.get("/v1/accounts/me", headers=account["headers"]).json()["balance"]


def test_deploy_see_deposit_and_close_with_a_refund(server):
    alice = register(server, credit="500")
    created = server.client.post(
        "/v1/deployments", json={"manifest": MANIFEST, "deposit": 150_000_000},
        headers=alice["headers"],
    )  # fmt: skip
    assert created.status_code == 201, created.text
    dep = created.json()
    assert (dep["kind"], dep["state"], dep["escrow"]) == ("deployment", "active", 150_000_000)
    assert [(o["service"], o["replica"], o["state"], o["max_price"]) for o in dep["orders"]] == [
        ("web", 0, "open", 1_000_000), ("web", 1, "open", 1_000_000),
    ]  # fmt: skip
    assert dep["orders"][0]["resources"] == {
        "cpu": 500, "memory": 512 * 2**20, "storage": 2**30, "gpu": 0,
    }  # fmt: skip
    assert balance(server, alice) == 350_000_000

    listed = server.client.get("/v1/deployments", headers=alice["headers"]).json()["deployments"]
    assert [d["id"] for d in listed] == [dep["id"]]

    topped = server.client.post(f"/v1/deployments/{dep['id']}/deposit",
                                json={"amount": 50_000_000}, headers=alice["headers"])  # fmt: skip
    assert topped.status_code == 200 and topped.json()["escrow"] == 200_000_000

    closed = server.client.post(f"/v1/deployments/{dep['id']}/close", headers=alice["headers"])
    assert closed.status_code == 200, closed.text
    after = closed.json()
    assert (after["state"], after["close_reason"], after["escrow"]) == ("closed", "tenant_closed", 0)
    assert {o["state"] for o in after["orders"]} == {"closed"}
    assert balance(server, alice) == 500_000_000
    moves = server.client.get("/v1/accounts/me/transactions", headers=alice["headers"]).json()
    assert [t["reason"] for t in moves["transactions"]] == ["refund", "deposit", "deposit", "credit"]

    again = server.client.post(f"/v1/deployments/{dep['id']}/close", headers=alice["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    late = server.client.post(f"/v1/deployments/{dep['id']}/deposit", json={"amount": 1},
                              headers=alice["headers"])  # fmt: skip
    assert late.status_code == 409 and balance(server, alice) == 500_000_000


def test_a_manifest_as_json_and_a_job(server):
    alice = register(server, credit="10")
    import yaml

    job = yaml.safe_load(MANIFEST) | {"kind": "job", "max_runtime": "2h"}
    created = server.client.post("/v1/deployments", json={"manifest": job, "deposit": 0},
                                 headers=alice["headers"])  # fmt: skip
    assert created.status_code == 201, created.text
    assert (created.json()["kind"], created.json()["max_runtime"]) == ("job", 7200)


def test_providers_see_open_orders_and_tenants_do_not(server):
    alice = register(server, credit="10")
    bob = register(server, "provider", "bob")
    dep = server.client.post("/v1/deployments", json={"manifest": MANIFEST, "deposit": 0},
                             headers=alice["headers"]).json()  # fmt: skip
    seen = server.client.get("/v1/orders", params={"state": "open"}, headers=bob["headers"])
    assert {o["id"] for o in dep["orders"]} <= {o["id"] for o in seen.json()["orders"]}
    assert server.client.get("/v1/orders", headers=alice["headers"]).status_code == 403
    assert server.client.get("/v1/orders", params={"state": "closed"},
                             headers=bob["headers"]).status_code == 400  # fmt: skip
    server.client.post(f"/v1/deployments/{dep['id']}/close", headers=alice["headers"])
    seen = server.client.get("/v1/orders", headers=bob["headers"]).json()["orders"]
    assert not {o["id"] for o in dep["orders"]} & {o["id"] for o in seen}


def test_another_tenants_deployment_is_not_found_and_unchanged(server):
    alice = register(server, credit="10")
    mallory = register(server, name="mallory", credit="10")
    bob = register(server, "provider", "bob")
    dep = server.client.post("/v1/deployments", json={"manifest": MANIFEST, "deposit": 1_000_000},
                             headers=alice["headers"]).json()  # fmt: skip
    for method, path, body in [
        ("GET", f"/v1/deployments/{dep['id']}", None),
        ("POST", f"/v1/deployments/{dep['id']}/deposit", {"amount": 1}),
        ("POST", f"/v1/deployments/{dep['id']}/close", None),
    ]:
        response = server.client.request(method, path, json=body, headers=mallory["headers"])
        assert response.status_code == 404, (path, response.text)
        response = server.client.request(method, path, json=body, headers=bob["headers"])
        assert response.status_code == 403, (path, response.text)
    mine = server.client.get(f"/v1/deployments/{dep['id']}", headers=alice["headers"]).json()
    assert (mine["state"], mine["escrow"]) == ("active", 1_000_000)
    assert balance(server, mallory) == 10_000_000
    assert server.client.post("/v1/deployments", json={"manifest": MANIFEST, "deposit": 0},
                              headers=bob["headers"]).status_code == 403  # fmt: skip


BAD = [
    ("deposit negative", {"manifest": MANIFEST, "deposit": -1}, "invalid_field", "deposit"),
    ("deposit a float", {"manifest": MANIFEST, "deposit": 1.5}, "invalid_field", "deposit"),
    ("deposit a string", {"manifest": MANIFEST, "deposit": "100"}, "invalid_field", "deposit"),
    ("deposit a bool", {"manifest": MANIFEST, "deposit": True}, "invalid_field", "deposit"),
    ("deposit too large", {"manifest": MANIFEST, "deposit": 2**63}, "invalid_field", "deposit"),
    ("no manifest", {"deposit": 0}, "invalid_field", "manifest"),
    ("unknown field", {"manifest": MANIFEST, "deposit": 0, "x": 1}, "invalid_field", "x"),
    ("manifest YAML broken", {"manifest": "services: [", "deposit": 0}, "invalid_manifest", None),
    (
        "manifest without services",
        {"manifest": 'version: "2.0"\n', "deposit": 0},
        "invalid_manifest",
        "manifest.services",
    ),
    ("more than the balance", {"manifest": MANIFEST, "deposit": 10**12}, "insufficient_balance", "deposit"),
]


@pytest.mark.parametrize(("case", "body", "code", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_deployments_name_the_problem_and_change_nothing(server, case, body, code, field):
    alice = register(server, credit="10")
    response = server.client.post("/v1/deployments", json=body, headers=alice["headers"])
    assert response.status_code in (400, 409), response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert server.client.get("/v1/deployments", headers=alice["headers"]).json() == {"deployments": []}
    assert balance(server, alice) == 10_000_000


@pytest.mark.parametrize("amount", [0, -1, 0.5, "1", None])
def test_bad_deposits_change_nothing(server, amount):
    alice = register(server, credit="10")
    dep = server.client.post("/v1/deployments", json={"manifest": MANIFEST, "deposit": 0},
                             headers=alice["headers"]).json()  # fmt: skip
    response = server.client.post(f"/v1/deployments/{dep['id']}/deposit",
                                  json={"amount": amount}, headers=alice["headers"])  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["field"] == "amount"
    assert balance(server, alice) == 10_000_000


@pytest.mark.parametrize("path", ["/v1/deployments/abc", "/v1/deployments/99999999"])
def test_unknown_deployments_are_404(server, path):
    alice = register(server)
    assert server.client.get(path, headers=alice["headers"]).status_code == 404


@pytest.fixture(scope="module")
def uusd_only(tmp_path_factory):
    from .conftest import Server

    folder = tmp_path_factory.mktemp("denoms")
    server = Server(f"sqlite:///{folder / 'kova.db'}", folder, 0.05, "--accepted-denoms", "uusd")
    yield server
    server.stop()


def test_a_denomination_the_network_does_not_accept_is_refused_naming_the_field(uusd_only):
    """``serve --accepted-denoms uusd``: the core's rule refuses a manifest priced in uakt
    with 400 naming the price's denom field, and nothing changes."""
    alice = register(uusd_only, credit="100")
    priced = MANIFEST.replace("denom: uusd", "denom: uakt")
    assert priced != MANIFEST
    refused = uusd_only.client.post("/v1/deployments", headers=alice["headers"],
                                     json={"manifest": priced, "deposit": 10_000_000})  # fmt: skip
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["field"].startswith("manifest.profiles.placement.") and error["field"].endswith(".denom")
    assert "not accepted" in error["message"]
    assert uusd_only.client.get("/v1/deployments", headers=alice["headers"]).json()["deployments"] == []
    assert balance(uusd_only, alice) == 100_000_000
    made = uusd_only.client.post("/v1/deployments", headers=alice["headers"],
                                  json={"manifest": MANIFEST, "deposit": 10_000_000})  # fmt: skip
    assert made.status_code == 201, made.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("size: 512Mi", "size: 1e30Ei"), "manifest.profiles.compute.web.resources.memory.size"),
        (("amount: 1000000", f"amount: {2**70}"),
         "manifest.profiles.placement.anywhere.pricing.web.amount"),
    ],
)  # fmt: skip
def test_numbers_beyond_64_bits_are_refused_with_400_naming_the_field(server, change, field):
    # stored in 64-bit columns, they would fail the writer's whole batch (503 for every command
    # in it) if the core let them through
    alice = register(server, credit="5")
    made = server.client.post("/v1/deployments", headers=alice["headers"],
                              json={"manifest": MANIFEST.replace(*change), "deposit": 0})  # fmt: skip
    assert made.status_code == 400, made.text
    assert made.json()["error"]["field"] == field
    fine = server.client.post("/v1/deployments", headers=alice["headers"],
                              json={"manifest": MANIFEST, "deposit": 0})  # fmt: skip
    assert fine.status_code == 201, fine.text


# ---- warnings, strict, and the dry run (POST /v1/deployments/check) --------------------------

TYPO = MANIFEST.replace("    image: busybox:1.36\n", "    image: busybox:1.36\n    depends-on: []\n")


def test_an_unknown_field_is_created_with_a_warning_and_refused_when_strict(server):
    alice = register(server, credit="10")
    plain = server.client.post("/v1/deployments", headers=alice["headers"],
                               json={"manifest": MANIFEST, "deposit": 0})  # fmt: skip
    assert plain.status_code == 201 and plain.json()["warnings"] == []
    made = server.client.post("/v1/deployments", headers=alice["headers"],
                              json={"manifest": TYPO, "deposit": 0})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["warnings"] == [{
        "field": "manifest.services.web.depends-on",
        "message": "unknown field, ignored (did you mean 'depends_on'?)",
    }]  # fmt: skip
    assert "warnings" not in server.client.get(f"/v1/deployments/{made.json()['id']}",
                                               headers=alice["headers"]).json()  # fmt: skip
    before = server.client.get("/v1/deployments", headers=alice["headers"]).json()
    strict = server.client.post("/v1/deployments", headers=alice["headers"],
                                json={"manifest": TYPO, "deposit": 0, "strict": True})  # fmt: skip
    assert strict.status_code == 400, strict.text
    error = strict.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_manifest", "manifest.services.web.depends-on")
    assert server.client.get("/v1/deployments", headers=alice["headers"]).json() == before


@pytest.fixture(scope="module")
def funded(tmp_path_factory):
    """A server with the network's minimum deposit (60 blocks of 50 ms)."""
    from .conftest import Server

    folder = tmp_path_factory.mktemp("check")
    server = Server(f"sqlite:///{folder / 'kova.db'}", folder, 0.05, "--min-deposit-blocks", "60")
    yield server
    server.stop()


def check(server, account, **body):
    response = server.client.post("/v1/deployments/check", json=body, headers=account["headers"])
    assert response.status_code == 200, response.text
    return response.json()


def test_a_dry_run_tells_orders_prices_and_deposits_and_changes_nothing(funded):
    alice = register(funded, credit="500")
    checked = check(funded, alice, manifest=TYPO, hours=2)
    web = {"cpu": 500, "memory": 512 * 2**20, "storage": 2**30, "gpu": 0}
    assert checked == {
        "valid": True, "errors": [], "kind": "deployment",
        "warnings": [{"field": "manifest.services.web.depends-on",
                      "message": "unknown field, ignored (did you mean 'depends_on'?)"}],
        "orders": [{"service": "web", "replica": r, "resources": web, "max_price": 1_000_000,
                    "denom": "uusd"} for r in (0, 1)],
        "max_price_per_block": 2_000_000, "min_deposit": 120_000_000,
        # 2 hours of 50 ms blocks: 144,000 blocks at 2 units
        "deposit_for_hours": {"hours": 2, "amount": 2_000_000 * 144_000},
    }  # fmt: skip
    assert check(funded, alice, manifest=MANIFEST)["deposit_for_hours"]["hours"] == 24
    small = check(funded, alice, manifest=MANIFEST, deposit=119_999_999)
    assert not small["valid"] and [e["field"] for e in small["errors"]] == ["deposit"]
    assert "at least 120000000 micro" in small["errors"][0]["message"]
    assert small["min_deposit"] == 120_000_000 and len(small["orders"]) == 2  # still told
    rich = check(funded, alice, manifest=MANIFEST, deposit=600_000_000)
    assert [e["field"] for e in rich["errors"]] == ["deposit"] and "balance" in rich["errors"][0]["message"]
    assert check(funded, alice, manifest=MANIFEST, deposit=120_000_000)["valid"]
    strict = check(funded, alice, manifest=TYPO, strict=True)
    assert not strict["valid"] and strict["errors"][0]["field"] == "manifest.services.web.depends-on"
    assert funded.client.get("/v1/deployments", headers=alice["headers"]).json() == {"deployments": []}
    assert balance(funded, alice) == 500_000_000


def test_a_dry_run_of_a_bad_manifest_lists_every_problem(funded):
    alice = register(funded, credit="1")
    bad = ("kind: job\nmax_runtime: soon\n"
           + MANIFEST.replace("units: 0.5", "units: 0").replace("count: 2", "count: 1000"))  # fmt: skip
    checked = check(funded, alice, manifest=bad, deposit=5)
    assert checked["valid"] is False and checked["kind"] == "job"
    assert [e["field"] for e in checked["errors"]] == [
        "manifest.max_runtime", "manifest.profiles.compute.web.resources.cpu.units",
    ]  # fmt: skip
    assert (checked["orders"], checked["max_price_per_block"], checked["min_deposit"]) == ([], None, None)
    assert checked["deposit_for_hours"] == {"hours": 24, "amount": None}
    # the network's own rules for a manifest that parses: at most 100 replicas
    replicas = check(funded, alice, manifest=MANIFEST.replace("count: 2", "count: 1000"))
    assert [e["field"] for e in replicas["errors"]] == ["manifest.deployment.web.anywhere.count"]
    broken = check(funded, alice, manifest="services: [")
    assert broken["errors"][0]["field"] == "manifest" and broken["kind"] == "deployment"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"manifest": MANIFEST, "hours": 0}, "hours"), ({"manifest": MANIFEST, "hours": 8761}, "hours"),
     ({"manifest": MANIFEST, "deposit": -1}, "deposit"), ({"manifest": MANIFEST, "x": 1}, "x"),
     ({"hours": 1}, "manifest"), ({"manifest": MANIFEST + "#" * 70_000}, "manifest"),
     ({"manifest": MANIFEST, "strict": "yes"}, "strict"), ({"manifest": {}}, "manifest"),
     ({"manifest": ""}, "manifest")],
)  # fmt: skip
def test_a_bad_dry_run_body_is_a_400_naming_the_field(funded, body, field):
    alice = register(funded)
    response = funded.client.post("/v1/deployments/check", json=body, headers=alice["headers"])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    provider = register(funded, "provider", "bob")
    assert funded.client.post("/v1/deployments/check", json={"manifest": MANIFEST},
                              headers=provider["headers"]).status_code == 403  # fmt: skip
