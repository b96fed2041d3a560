"""No 500 on any input (SQLite and PostgreSQL, a real server): every integer a request carries,
in a body, a query or a path, is checked against its range before it is used, and past it the
answer is the JSON error naming the field (404 for a path's id); as are NaN and Infinity, NUL in
text, an empty manifest, numbers of a manifest beyond 64 bits and a body nested too deep."""

import json

import pytest

from .conftest import LOOPBACK, operator_headers, register
from .test_deployments import MANIFEST

HUGE = 2**63  # one past the largest 64-bit integer
DIGITS = "9" * 5000  # more digits than Python converts to an int


@pytest.fixture(scope="module")
def network(server):
    """A tenant with money and a deployment, a provider that bid on one of its orders and holds
    the lease, an operator."""
    tenant = register(server, "tenant", "lt")
    provider = register(server, "provider", "lp")
    ops = operator_headers(server.database_url)
    server.client.post(f"/v1/accounts/{tenant['id']}/credit", headers=ops, json={"amount": 10**10})
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": 8000, "memory": 2**36, "storage": 2**40, "gpu": 0},
        "endpoints": LOOPBACK})  # fmt: skip
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 10**8}).json()  # fmt: skip
    order = dep["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order}/bids", headers=provider["headers"],
                             json={"price": 1000}).json()  # fmt: skip
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).json()
    return {"tenant": tenant["headers"], "provider": provider["headers"], "operator": ops,
            "dep": dep["id"], "order": dep["orders"][1]["id"], "lease": lease["id"],
            "tenant_id": tenant["id"], "provider_id": provider["id"]}  # fmt: skip


def refused(response, status, field, code="invalid_field"):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    return error


CAPACITY = {"cpu": 1000, "memory": 2**30, "storage": 2**30, "gpu": 0}
# every integer field of every request body: (role, path, body with the field past its range)
BODIES = [
    ("tenant", "/v1/deployments", {"manifest": MANIFEST, "deposit": HUGE}, "deposit"),
    ("tenant", "/v1/deployments", {"manifest": MANIFEST, "deposit": 0,
                                   "auto_accept": {"policy": "cheapest", "wait": HUGE}},
     "auto_accept.wait"),
    ("tenant", "/v1/deployments/{dep}/deposit", {"amount": HUGE}, "amount"),
    ("provider", "/v1/orders/{order}/bids", {"price": HUGE}, "price"),
    ("provider", "/v1/providers/heartbeat", {"capacity": {**CAPACITY, "cpu": HUGE}}, "capacity.cpu"),
    ("provider", "/v1/providers/heartbeat", {"capacity": {**CAPACITY, "memory": HUGE}},
     "capacity.memory"),
    ("provider", "/v1/providers/heartbeat", {"capacity": {**CAPACITY, "storage": HUGE}},
     "capacity.storage"),
    ("provider", "/v1/providers/heartbeat", {"capacity": {**CAPACITY, "gpu": HUGE}}, "capacity.gpu"),
    ("provider", "/v1/providers/heartbeat",
     {"capacity": CAPACITY, "endpoints": {"addresses": ["127.0.0.1"], "ports": [1, HUGE]}},
     "endpoints.ports"),
    ("provider", "/v1/leases/{lease}/status", {"state": "finished", "exit_code": HUGE},
     "exit_code"),
    ("provider", "/v1/leases/{lease}/status",
     {"state": "finished", "exit_code": 0, "runtime_blocks": HUGE}, "runtime_blocks"),
    ("operator", "/v1/accounts/{tenant_id}/credit", {"amount": HUGE}, "amount"),
    ("operator", "/v1/clock", {"height": HUGE}, "height"),
]  # fmt: skip


@pytest.mark.parametrize(("role", "path", "body", "field"), BODIES,
                         ids=[f"{b[1]} {b[3]}" for b in BODIES])  # fmt: skip
def test_every_integer_body_field_past_64_bits_is_a_400_naming_it(server, network, role, path,
                                                                  body, field):  # fmt: skip
    response = server.client.post(path.format(**network), headers=network[role], json=body)
    refused(response, 400, field)


QUERIES = [
    ("tenant", "/v1/accounts/me/transactions", "before"),
    ("tenant", "/v1/accounts/me/transactions", "limit"),
    ("provider", "/v1/leases", "before"),
    ("provider", "/v1/leases", "limit"),
    ("provider", "/v1/leases", "ids"),
    ("tenant", "/v1/deployments/{dep}/logs", "after"),
    ("tenant", "/v1/deployments/{dep}/logs", "limit"),
]


@pytest.mark.parametrize(("role", "path", "name"), QUERIES, ids=[f"{q[1]} {q[2]}" for q in QUERIES])
@pytest.mark.parametrize("value", [str(HUGE), DIGITS, "0" * 5000 + "1" * 20, "-1", "1e3"])
def test_every_integer_query_parameter_out_of_range_is_a_400_naming_it(server, network, role, path,
                                                                       name, value):  # fmt: skip
    response = server.client.get(
        path.format(**network), headers=network[role], params={name: value}
    )
    refused(response, 400, name)


PATHS = [
    ("tenant", "GET", "/v1/deployments/{}"),
    ("tenant", "POST", "/v1/deployments/{}/close"),
    ("tenant", "POST", "/v1/bids/{}/accept"),
    ("provider", "DELETE", "/v1/bids/{}"),
    ("provider", "POST", "/v1/leases/{}/logs"),
    ("tenant", "GET", "/v1/orders/{}/candidates"),
    ("operator", "POST", "/v1/providers/{}/fail"),
    ("tenant", "GET", "/v1/providers/{}/audits"),
]


@pytest.mark.parametrize(("role", "method", "path"), PATHS, ids=[p[2] for p in PATHS])
@pytest.mark.parametrize("value", [str(HUGE), DIGITS])
def test_a_path_id_past_64_bits_is_a_json_404(server, network, role, method, path, value):
    # 5000 digits were a 500: Python refuses to convert more than 4300
    response = server.client.request(method, path.format(value), headers=network[role],
                                     json={"lines": [{"text": "x"}]})  # fmt: skip
    refused(response, 404, None, "not_found")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(server, network, constant):
    body = f'{{"manifest": {json.dumps(MANIFEST)}, "deposit": {constant}}}'
    response = server.client.post("/v1/deployments", headers={**network["tenant"],
                                  "Content-Type": "application/json"}, content=body)  # fmt: skip
    error = refused(response, 400, None, "malformed_json")
    assert constant.lstrip("-") in error["message"]


def test_nul_in_a_name_is_a_400_naming_it(server):
    refused(
        server.client.post("/v1/accounts", json={"role": "tenant", "name": "a\x00b"}), 400, "name"
    )


@pytest.mark.parametrize("manifest", ["", {}, "   \n"], ids=["empty text", "empty object", "blank"])
def test_an_empty_manifest_is_a_400_naming_it(server, network, manifest):
    response = server.client.post("/v1/deployments", headers=network["tenant"],
                                  json={"manifest": manifest, "deposit": 0})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"].startswith("manifest")


JOB = MANIFEST.replace('version: "2.0"', 'version: "2.0"\nkind: job\nmax_runtime: 3600')


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("max_runtime: 3600", f"max_runtime: {2**64}"), "manifest.max_runtime"),
        (("max_runtime: 3600", "max_runtime: 1e30h"), "manifest.max_runtime"),
        (("size: 512Mi", "size: 1e30Ei"), "manifest.profiles.compute.web.resources.memory.size"),
        (("amount: 1000000", f"amount: {2**70}"),
         "manifest.profiles.placement.anywhere.pricing.web.amount"),
    ],
)  # fmt: skip
def test_a_jobs_numbers_beyond_64_bits_are_a_400_naming_the_field(server, network, change, field):
    assert change[0] in JOB
    response = server.client.post("/v1/deployments", headers=network["tenant"],
                                  json={"manifest": JOB.replace(*change), "deposit": 0})  # fmt: skip
    refused(response, 400, field, "invalid_manifest")
    fine = server.client.post("/v1/deployments", headers=network["tenant"],
                              json={"manifest": JOB, "deposit": 0})  # fmt: skip
    assert fine.status_code == 201, fine.text


def test_a_manifest_nested_past_64_is_malformed_json(server, network):
    nested = {"manifest": json.loads("[" * 70 + "]" * 70), "deposit": 0}
    refused(server.client.post("/v1/deployments", headers=network["tenant"], json=nested),
            400, None, "malformed_json")  # fmt: skip
    deep = (
        b'{"manifest": '
        + b"{" * 1
        + b'"a": '
        + b"[" * 200_000
        + b"]" * 200_000
        + b'}, "deposit": 0}'
    )
    response = server.client.post(
        "/v1/deployments",
        content=deep,
        headers={**network["tenant"], "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
