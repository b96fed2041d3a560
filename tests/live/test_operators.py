"""Operators over the API (credit, a provider down and back, a manual clock), and every market
command applied once under its Idempotency-Key: real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from .conftest import BACKENDS, Server, fresh_database, kova_live, register
from .test_deployments import MANIFEST

BOX = {"cpu": 4000, "memory": 8 * 2**30, "storage": 50 * 2**30, "gpu": 0}


def operator_token(database_url: str) -> dict:
    made = kova_live("admin", "operator", "ops", "--database-url", database_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", params=BACKENDS)
def manual(request, tmp_path_factory):
    """A server on a manual clock (``serve --clock manual``), with an operator's headers."""
    folder = tmp_path_factory.mktemp(f"manual-{request.param}")
    with fresh_database(request.param, folder) as url:
        ops = operator_token(url)  # before the first start, as an operator would
        started = Server(url, folder / "data", 1.0, "--clock", "manual")
        started.ops = ops
        try:
            yield started
        finally:
            started.stop()


def height(server) -> int:
    return server.client.get("/healthz").json()["height"]


def move_to(server, to: int) -> dict:
    moved = server.client.post("/v1/clock", headers=server.ops, json={"height": to})
    assert moved.status_code == 200, moved.text
    return moved.json()


def test_the_manual_clock_moves_only_when_an_operator_moves_it(manual):
    start = height(manual)
    time.sleep(0.3)  # six wall-clock blocks
    assert height(manual) == start
    assert move_to(manual, start + 7) == {"height": start + 7}
    assert height(manual) == start + 7
    back = manual.client.post("/v1/clock", headers=manual.ops, json={"height": start})
    assert back.status_code == 400 and back.json()["error"]["field"] == "height"
    tenant = register(manual, "tenant", "t")
    refused = manual.client.post("/v1/clock", headers=tenant["headers"], json={"height": 10**6})
    assert refused.status_code == 403
    assert height(manual) == start + 7


def test_a_credit_applies_once_under_its_key(manual):
    tenant = register(manual, "tenant", "t")
    path = f"/v1/accounts/{tenant['id']}/credit"
    keyed = {**manual.ops, "Idempotency-Key": "credit-1"}
    first = manual.client.post(path, headers=keyed, json={"amount": 5_000_000})
    assert first.status_code == 200, first.text
    assert first.json()["balance"] == 5_000_000
    again = manual.client.post(path, headers=keyed, json={"amount": 5_000_000})
    assert (again.status_code, again.text) == (200, first.text)  # the original answer
    other = manual.client.post(path, headers=keyed, json={"amount": 6_000_000})
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    me = manual.client.get("/v1/accounts/me", headers=tenant["headers"]).json()
    assert me["balance"] == 5_000_000  # one credit, not three
    unkeyed = manual.client.post(path, headers=manual.ops, json={"amount": 1})
    assert unkeyed.status_code == 200 and unkeyed.json()["balance"] == 5_000_001
    provider = register(manual, "provider", "p")
    assert manual.client.post(f"/v1/accounts/{provider['id']}/credit", headers=manual.ops,
                              json={"amount": 1}).status_code == 409  # fmt: skip
    assert manual.client.post("/v1/accounts/999999/credit", headers=manual.ops,
                              json={"amount": 1}).status_code == 404  # fmt: skip
    assert manual.client.post(path, headers=tenant["headers"],
                              json={"amount": 1}).status_code == 403  # fmt: skip
    bad = manual.client.post(path, headers={**manual.ops, "Idempotency-Key": "x" * 129},
                             json={"amount": 1})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "Idempotency-Key"


def _leased(server) -> tuple[dict, dict, dict, dict]:
    """A tenant's deployment with one replica leased to a provider at 1,000 per block."""
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    server.client.post(f"/v1/accounts/{tenant['id']}/credit", headers=server.ops,
                       json={"amount": 100_000_000})  # fmt: skip
    beat = server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                              json={"capacity": BOX})  # fmt: skip
    assert beat.status_code == 200, beat.text
    dep = server.client.post("/v1/deployments", headers=tenant["headers"], json={
        "manifest": MANIFEST.replace("count: 2", "count: 1"), "deposit": 10_000_000}).json()  # fmt: skip
    order = dep["orders"][0]["id"]
    keyed = {**provider["headers"], "Idempotency-Key": f"bid-{order}"}
    bid = server.client.post(f"/v1/orders/{order}/bids", headers=keyed, json={"price": 1000})
    assert bid.status_code == 201, bid.text
    again = server.client.post(f"/v1/orders/{order}/bids", headers=keyed, json={"price": 1000})
    assert (again.status_code, again.json()) == (201, bid.json())  # the same bid, not a second
    lease = server.client.post(f"/v1/bids/{bid.json()['id']}/accept", headers=tenant["headers"])
    assert lease.status_code == 201, lease.text
    return tenant, provider, dep, lease.json()


def test_a_round_runs_when_the_clock_passes_it(manual):
    _, provider, _, lease = _leased(manual)
    start = lease["created_at"]
    next_round = (start // 60 + 1) * 60
    move_to(manual, next_round - 1)
    me = manual.client.get("/v1/accounts/me", headers=provider["headers"]).json()
    assert me["balance"] == 0
    move_to(manual, next_round)  # answered once the round at next_round has run
    me = manual.client.get("/v1/accounts/me", headers=provider["headers"]).json()
    assert me["balance"] == (next_round - start) * 1000


def test_an_operator_takes_a_provider_down_and_brings_it_back(manual):
    tenant, provider, dep, lease = _leased(manual)
    down = manual.client.post(f"/v1/providers/{provider['id']}/fail", headers=manual.ops)
    assert down.status_code == 200, down.text
    assert down.json()["reopened_orders"] == [lease["order_id"]]
    view = manual.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()
    assert view["leases"][0]["close_reason"] == "provider_lost"
    twice = manual.client.post(f"/v1/providers/{provider['id']}/fail", headers=manual.ops)
    assert twice.status_code == 409  # already lost
    up = manual.client.post(f"/v1/providers/{provider['id']}/recover", headers=manual.ops)
    assert up.status_code == 200 and up.json()["state"] == "online"
    rebid = manual.client.post(f"/v1/orders/{lease['order_id']}/bids",
                               headers=provider["headers"], json={"price": 1000})  # fmt: skip
    assert rebid.status_code == 201, rebid.text
    assert manual.client.post(f"/v1/providers/{provider['id']}/fail",
                              headers=tenant["headers"]).status_code == 403  # fmt: skip


def test_a_wall_clock_server_refuses_to_move_its_clock(server):
    ops = operator_token(server.database_url)
    refused = server.client.post("/v1/clock", headers=ops, json={"height": 10**9})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "clock_not_manual"


def test_a_manual_clock_is_refused_on_a_network_that_ran_on_the_wall_clock(database_url,
                                                                           tmp_path):  # fmt: skip
    ops = operator_token(database_url)
    server = Server(database_url, tmp_path / "wall")  # the wall clock's server, then stopped
    try:
        tenant = register(server, "tenant", "someone")
        moved = server.client.post(f"/v1/accounts/{tenant['id']}/credit", headers=ops,
                                   json={"amount": 1})  # fmt: skip
        assert moved.status_code == 200, moved.text
    finally:
        server.stop()
    started = kova_live("serve", "--clock", "manual", "--database-url", database_url,
                        "--data-dir", str(tmp_path), "--port", "0",
                        "--block-seconds", "0.05")  # fmt: skip
    assert started.returncode != 0
    assert "--clock manual" in started.stderr and "Traceback" not in started.stderr
