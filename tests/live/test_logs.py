"""Logs over real HTTP (SQLite and PostgreSQL): a provider's agent ships lines of its lease's
output, the tenant reads them oldest first with a cursor, nobody else does either, and lines
older than the retention period are deleted by the server's background work."""

import time

import pytest

from .conftest import Server, credit, fresh_database, register, wait_for
from .test_jobs import BOX, PRICE
from .test_lifecycle import MANIFEST


def leased(server):
    """A tenant's deployment leased by a provider: (tenant, provider, deployment, lease)."""
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 10_000_000)
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": MANIFEST, "deposit": 1_000_000}).json()
    bid = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids", headers=provider["headers"],
                             json={"price": PRICE}).json()
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).json()
    return tenant, provider, dep, lease


def ship(server, provider, lease, lines):
    return server.client.post(f"/v1/leases/{lease['id']}/logs", headers=provider["headers"],
                              json={"lines": lines})


def read(server, tenant, dep, **query):
    return server.client.get(f"/v1/deployments/{dep['id']}/logs", headers=tenant["headers"],
                             params=query)


def test_lines_are_shipped_and_read_in_order_with_a_cursor(server):
    tenant, provider, dep, lease = leased(server)
    shipped = ship(server, provider, lease, [{"text": "listening on :8080"},
                                             {"stream": "stderr", "text": "warning: no TLS"}])
    assert shipped.status_code == 201 and shipped.json()["accepted"] == 2
    assert ship(server, provider, lease, [{"text": f"request {i}"} for i in range(5)]).status_code == 201
    page = read(server, tenant, dep, limit=3).json()
    assert [(x["stream"], x["text"]) for x in page["lines"]] == [
        ("stdout", "listening on :8080"), ("stderr", "warning: no TLS"), ("stdout", "request 0")]
    assert {(x["service"], x["replica"], x["lease_id"]) for x in page["lines"]} == {("web", 0, lease["id"])}
    rest = read(server, tenant, dep, after=page["next_after"]).json()
    assert [x["text"] for x in rest["lines"]] == [f"request {i}" for i in range(1, 5)]
    empty = read(server, tenant, dep, after=rest["next_after"]).json()
    assert empty == {"lines": [], "next_after": rest["next_after"]}


def test_only_the_lessee_ships_and_only_the_tenant_reads(server):
    tenant, provider, dep, lease = leased(server)
    stranger_p, stranger_t = register(server, "provider", "x"), register(server, "tenant", "y")
    assert ship(server, stranger_p, lease, [{"text": "spoof"}]).status_code == 404
    assert ship(server, tenant, lease, [{"text": "spoof"}]).status_code == 403
    assert read(server, stranger_t, dep).status_code == 404
    assert read(server, provider, dep).status_code == 403
    for lines, field in (
        ([], "lines"),
        ([{"text": "x" * 20_000}], "lines.0.text"),
        ([{"text": "a\x00b"}], "lines.0.text"),
        ([{"stream": "stdin", "text": "x"}], "lines.0.stream"),
        ([{"text": "ok"}, {"text": 5}], "lines.1.text"),
    ):
        refused = ship(server, provider, lease, lines)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, lines
    bad_cursor = read(server, tenant, dep, after=-1)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["field"] == "after"
    assert read(server, tenant, dep).json()["lines"] == []  # nothing was stored


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_old_lines_are_deleted_after_the_retention_period(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.02, "--heartbeat-grace", "100000000",
                        "--log-retention", "2")
        try:
            tenant, provider, dep, lease = leased(server)
            assert ship(server, provider, lease, [{"text": "old"}]).status_code == 201
            time.sleep(2.5)
            ship(server, provider, lease, [{"text": "new"}])
            # a prune runs every 60 blocks (1.2 s here): "old" goes, "new" stays its 2 s
            texts = wait_for(lambda: (t := [x["text"] for x in read(server, tenant, dep).json()["lines"]])
                             == ["new"] and t, timeout=10)
            assert texts == ["new"]
        finally:
            server.stop()
