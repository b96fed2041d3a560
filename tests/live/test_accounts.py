"""Accounts over real HTTP against a real server (SQLite and PostgreSQL): registration, tokens,
operator credits, balances and transactions, and bad requests that change nothing."""

import time

import pytest

from .conftest import kova_live, operator_headers


def register(server, role="tenant", name="alice"):
    response = server.client.post("/v1/accounts", json={"role": role, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


def auth(account):
    return {"Authorization": f"Bearer {account['token']}"}



def admin_credit(server, *args):
    """``kova-live admin credit`` against the server, with an operator's token."""
    if server.ops is None:
        server.ops = operator_headers(server.database_url)
    token = server.ops["Authorization"].removeprefix("Bearer ")
    return kova_live("admin", "credit", *args, "--orchestrator", server.url, "--token", token)

def test_register_credit_and_see_the_balance_and_every_movement(server):
    before = server.client.get("/v1/status").json()
    alice = register(server)
    bob = register(server, "provider", "bob")
    assert alice["account"] == f"tenant:{alice['id']}" and bob["account"] == f"provider:{bob['id']}"
    assert alice["token"] != bob["token"]
    for amount in ("12.5", "0.000001"):
        credit = admin_credit(server, alice["account"], amount)
        assert credit.returncode == 0, credit.stderr
    me = server.client.get("/v1/accounts/me", headers=auth(alice)).json()
    assert me == {
        "id": alice["id"], "role": "tenant", "name": "alice", "account": alice["account"],
        "balance": 12_500_001, "balance_units": "12.500001",
    }  # fmt: skip
    page = server.client.get("/v1/accounts/me/transactions", headers=auth(alice)).json()
    assert [(t["source"], t["destination"], t["amount"], t["reason"]) for t in page["transactions"]] == [
        ("external", alice["account"], 1, "credit"),
        ("external", alice["account"], 12_500_000, "credit"),
    ]
    assert server.client.get("/v1/accounts/me/transactions", headers=auth(bob)).json() == {
        "transactions": [], "next_before": None,
    }  # fmt: skip
    after = server.client.get("/v1/status").json()
    assert (after["tenants"], after["providers"]) == (before["tenants"] + 1, before["providers"] + 1)


def test_transactions_come_a_page_at_a_time(server):
    alice = register(server)
    for i in range(1, 6):
        assert admin_credit(server, str(alice["id"]), str(i)).returncode == 0
    seen, before = [], None
    while True:
        query = {"limit": 2} | ({"before": before} if before else {})
        page = server.client.get("/v1/accounts/me/transactions", params=query, headers=auth(alice)).json()
        seen += [t["amount"] for t in page["transactions"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [5_000_000, 4_000_000, 3_000_000, 2_000_000, 1_000_000]


def test_the_block_clock_moves(server):
    first = server.client.get("/v1/status").json()
    time.sleep(0.3)
    second = server.client.get("/v1/status").json()
    assert first["block_seconds"] == 0.05
    assert second["height"] >= first["height"] + 4  # 0.3 s of 0.05 s blocks, give or take


BAD_BODIES = [
    ("not JSON", b"{role: tenant", "malformed_json", None),
    ("not an object", b"[1, 2]", "bad_request", None),
    ("unknown role", b'{"role": "boss", "name": "x"}', "invalid_field", "role"),
    ("unknown field", b'{"role": "tenant", "name": "x", "admin": true}', "invalid_field", "admin"),
    ("missing name", b'{"role": "tenant"}', "invalid_field", "name"),
    ("empty name", b'{"role": "tenant", "name": ""}', "invalid_field", "name"),
    ("name not a string", b'{"role": "tenant", "name": 7}', "invalid_field", "name"),
    ("name too long", b'{"role": "tenant", "name": "' + b"x" * 101 + b'"}', "invalid_field", "name"),
    # nested beyond the JSON parser's recursion (it was a 500), and beyond the 64 levels allowed
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "malformed_json", None),
    ("nested 65 deep", b'{"role": "tenant", "name": ' + b"[" * 64 + b"]" * 64 + b"}",
     "malformed_json", None),
]


@pytest.mark.parametrize(("case", "body", "code", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_registrations_name_the_problem_and_change_nothing(server, case, body, code, field):
    tenants = server.client.get("/v1/status").json()["tenants"]
    response = server.client.post("/v1/accounts", content=body,
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert server.client.get("/v1/status").json()["tenants"] == tenants


def test_an_oversized_body_is_refused_with_json(server):
    response = server.client.post("/v1/accounts", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/v1/nothing-here", 404, "not_found"), ("DELETE", "/v1/accounts", 405, "method_not_allowed")],
)
def test_unknown_routes_and_methods_answer_in_json(server, method, path, status, code):
    response = server.client.request(method, path)
    assert response.status_code == status and response.json()["error"]["code"] == code
    if status == 405:  # and what the route does take
        assert set(response.headers["Allow"].split(", ")) == {"POST"}


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Token abc", "Basic dXNlcjpwYXNz", "Bearer kova_not-a-token"]
)
def test_a_missing_or_unknown_token_is_401(server, header):
    register(server)
    headers = {} if header is None else {"Authorization": header}
    response = server.client.get("/v1/accounts/me", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenant:TENANT", "-3"], "AMOUNT"),
        (["tenant:TENANT", "0"], "AMOUNT: must be greater than 0"),
        (["tenant:TENANT", "0.0000001"], "finer than one micro-unit"),
        (["someone", "1"], "ACCOUNT: expected a tenant id"),
        (["999999", "1"], "no account 999999"),
        (["PROVIDER", "1"], "is a provider"),
    ],
)
def test_bad_credits_change_nothing(server, args, message):
    alice = register(server)
    bob = register(server, "provider", "bob")
    args = [a.replace("TENANT", str(alice["id"])).replace("PROVIDER", str(bob["id"])) for a in args]
    result = admin_credit(server, *args)
    # refused before it is sent (2), or by the server (1)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert server.client.get("/v1/accounts/me", headers=auth(alice)).json()["balance"] == 0


def test_digits_that_are_not_ascii_are_not_ids(server):
    alice = register(server)
    # U+00B9 (superscript one) passes str.isdigit() but not int(): it must be a 4xx, never a 500
    assert server.client.get("/v1/deployments/%C2%B9", headers=auth(alice)).status_code == 404
    response = server.client.get("/v1/accounts/me/transactions", params={"limit": "\u00b9"},
                                 headers=auth(alice))  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["field"] == "limit"
