"""A provider's leases, all of them (cursor paging, ``ids=``), and where its leases may be
reached (registered endpoints, ``--endpoint-networks``, never the server's own sockets), over
real HTTP on SQLite and PostgreSQL; and the ingress checking endpoints again before it
connects."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from kova_live.db import sync_engine
from kova_live.schema import leases

from .conftest import LOOPBACK, Server, credit, free_port, fresh_database, register, wait_for
from .test_lifecycle import MANIFEST

BOX = {"cpu": 64_000, "memory": 2**40, "storage": 2**42, "gpu": 0}
PRICE = 1_000


def beat(server, provider, endpoints=None, **more):
    body = {"capacity": BOX, **more}
    if endpoints is not None:
        body["endpoints"] = endpoints
    return server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json=body)


def leased(server, tenant, provider, manifest=MANIFEST):
    """A new deployment of ``tenant`` with one lease on ``provider``: (deployment, lease)."""
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": manifest, "deposit": 1_000_000}).json()  # fmt: skip
    bid = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids",
                             headers=provider["headers"], json={"price": PRICE}).json()  # fmt: skip
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"])
    assert lease.status_code == 201, lease.text
    return dep, lease.json()


def report(server, provider, lease, endpoint):
    return server.client.post(f"/v1/leases/{lease['id']}/status", headers=provider["headers"],
                              json={"state": "running", "endpoint": endpoint})  # fmt: skip


def refused(reply, field):
    """The refusal's message, once it is a 400 naming ``field``."""
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_field" and error["field"] == field, error
    return error["message"]


# --------------------------------------------------------------------------- GET /v1/leases


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def small_pages(request, tmp_path_factory) -> Iterator[Server]:
    """A server that answers at most two leases at once."""
    folder = tmp_path_factory.mktemp(f"pages-{request.param}")
    with fresh_database(request.param, folder) as url:
        server = Server(url, folder / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--page-size", "2")  # fmt: skip
        try:
            yield server
        finally:
            server.stop()


def pages(server, provider, **params) -> list[dict]:
    """Every page of ``GET /v1/leases`` with ``params``, following ``next_before``."""
    answers, before = [], None
    while True:
        query = {**params, **({"before": before} if before is not None else {})}
        reply = server.client.get("/v1/leases", headers=provider["headers"], params=query)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json())
        before = answers[-1]["next_before"]
        if before is None:
            return answers
        assert len(answers) < 20


def test_a_provider_pages_through_every_lease_exactly_once(small_pages):
    server = small_pages
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 100_000_000)
    provider, other = register(server, "provider", "p"), register(server, "provider", "q")
    for who in (provider, other):
        assert beat(server, who).status_code == 200
    made = [leased(server, tenant, provider) for _ in range(6)]
    _, theirs = leased(server, tenant, other)
    for dep, _ in made[1:3]:  # two of them closed
        server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
    ids = [lease["id"] for _, lease in made]
    closed = {made[1][1]["id"], made[2][1]["id"]}

    every = pages(server, provider)
    assert [len(p["leases"]) for p in every] == [2, 2, 2]  # the last page says it is the last
    seen = [lease["id"] for p in every for lease in p["leases"]]
    assert seen == sorted(ids, reverse=True)  # newest first, each once, none of another's
    assert all(p["next_before"] == p["leases"][-1]["id"] for p in every[:-1])
    assert "container" in every[0]["leases"][0]

    live = pages(server, provider, state="live")
    assert [lease["id"] for p in live for lease in p["leases"]] == sorted(set(ids) - closed, reverse=True)
    assert len(live) == 2 and live[-1]["next_before"] is None
    gone = pages(server, provider, state="closed")
    assert {lease["id"] for p in gone for lease in p["leases"]} == closed
    one = pages(server, provider, state="active", limit=1)
    assert [len(p["leases"]) for p in one] == [1, 1, 1, 1]
    assert all(lease["state"] == "active" for p in one for lease in p["leases"])

    # ids: those leases of the caller's, whatever their state, and nothing of another's
    asked = f"{made[1][1]['id']},{theirs['id']}"
    got = server.client.get("/v1/leases", headers=provider["headers"], params={"ids": asked}).json()
    assert [lease["id"] for lease in got["leases"]] == [made[1][1]["id"]]
    assert got["leases"][0]["state"] == "closed" and got["next_before"] is None
    both = server.client.get("/v1/leases", headers=provider["headers"],
                             params={"ids": f"{ids[0]},{ids[5]}", "state": "closed"}).json()  # fmt: skip
    assert [lease["id"] for lease in both["leases"]] == [ids[5], ids[0]]
    unknown = server.client.get("/v1/leases", headers=provider["headers"], params={"ids": "999999"})
    assert unknown.json() == {"leases": [], "next_before": None}
    many = ",".join(str(i) for i in range(1, 101))  # a page is two; a question may name 100
    assert server.client.get("/v1/leases", headers=other["headers"], params={"ids": many}).status_code == 200
    too_many = server.client.get("/v1/leases", headers=other["headers"], params={"ids": many + ",101"})
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "ids"
    assert server.client.get("/v1/leases", headers=other["headers"],
                             params={"ids": str(ids[0])}).json()["leases"] == []  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ids": ""}, "ids"), ({"ids": "a"}, "ids"), ({"ids": "1,,2"}, "ids"),
        ({"ids": "0"}, "ids"), ({"ids": "-1"}, "ids"),
        ({"ids": "1 ,2"}, "ids"), ({"ids": "99999999999999999999"}, "ids"),
        ({"ids": "١"}, "ids"), ({"before": "0"}, "before"), ({"before": "x"}, "before"),
        ({"before": "-5"}, "before"), ({"before": "9223372036854775808"}, "before"),
        ({"limit": "0"}, "limit"), ({"limit": "3"}, "limit"), ({"limit": "1.5"}, "limit"),
        ({"state": "running"}, "state"),
    ],
)  # fmt: skip
def test_bad_paging_is_a_400_naming_the_field(small_pages, params, field):
    provider = register(small_pages, "provider", "p")
    reply = small_pages.client.get("/v1/leases", headers=provider["headers"], params=params)
    refused(reply, field)


# --------------------------------------------------------------------------- endpoints


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def with_ingress(request, tmp_path_factory) -> Iterator[dict]:
    """A server (endpoints allowed on 127.0.0.0/8) with its ingress."""
    folder = tmp_path_factory.mktemp(f"endpoints-{request.param}")
    ingress = free_port()
    with fresh_database(request.param, folder) as url:
        server = Server(url, folder / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--ingress-port", str(ingress))  # fmt: skip
        try:
            yield {"server": server, "ingress": ingress}
        finally:
            server.stop()


def parties(server):
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 100_000_000)
    return tenant, provider


def test_an_endpoint_must_be_the_providers_own_and_never_the_servers(with_ingress):
    server, ingress = with_ingress["server"], with_ingress["ingress"]
    tenant, provider = parties(server)
    assert beat(server, provider).status_code == 200  # no endpoints: nothing registered
    _, lease = leased(server, tenant, provider)
    message = refused(report(server, provider, lease, "127.0.0.1:31000"), "endpoint")
    assert "kova-live provider --public-address" in message
    assert beat(server, provider, LOOPBACK).status_code == 200  # every port of 127.0.0.1
    # the orchestrator's own API and ingress: never (the ingress would serve its /metrics)
    for port in (server.port, ingress):
        message = refused(report(server, provider, lease, f"127.0.0.1:{port}"), "endpoint")
        assert "orchestrator's own listening socket" in message
    assert beat(server, provider, {"addresses": ["127.0.0.1"], "ports": [30000, 32767]}).status_code == 200
    message = refused(report(server, provider, lease, "127.0.0.2:31000"), "endpoint")
    assert "not one of the addresses the provider registered (127.0.0.1)" in message
    message = refused(report(server, provider, lease, "127.0.0.1:29999"), "endpoint")
    assert "outside the port range the provider registered (30000-32767)" in message
    message = refused(report(server, provider, lease, "localhost:31000"), "endpoint")
    assert "not an IP address" in message
    message = refused(report(server, provider, lease, "[::1]:31000"), "endpoint")
    assert "not one of the addresses" in message
    ok = report(server, provider, lease, "127.0.0.1:31000")
    assert ok.status_code == 200 and ok.json()["endpoint"] == "127.0.0.1:31000"
    mapped = report(server, provider, lease, "[::ffff:127.0.0.1]:31001")  # one address, one form
    assert mapped.status_code == 200 and mapped.json()["endpoint"] == "127.0.0.1:31001"
    # a registered address outside --endpoint-networks (127.0.0.0/8 here) is refused
    message = refused(beat(server, provider, {"addresses": ["127.0.0.1", "10.0.0.5"],
                                              "ports": [1, 2]}), "endpoints.addresses")  # fmt: skip
    assert "10.0.0.5" in message and "127.0.0.0/8" in message
    assert "kova-live serve --endpoint-networks" in message


@pytest.mark.parametrize(
    ("endpoints", "field"),
    [
        ("x", "endpoints"), ([], "endpoints"), ({}, "endpoints.addresses"),
        ({"addresses": [], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": "127.0.0.1", "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": [1], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": [None], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["localhost"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["127.0.0.1/8"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["0.0.0.0"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["::"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["fe80::1%eth0"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["127.0.0.1\n"], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["127.0.0.1"] * 17, "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["1" * 5000], "ports": [1, 2]}, "endpoints.addresses"),
        ({"addresses": ["127.0.0.1"]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [1]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [2, 1]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [0, 5]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [1, 65536]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": ["1", "2"]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [True, 5]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [1.0, 5]}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": {"low": 1}}, "endpoints.ports"),
        ({"addresses": ["127.0.0.1"], "ports": [1, 2], "extra": 1}, "endpoints.extra"),
    ],
)  # fmt: skip
def test_garbage_endpoints_in_a_heartbeat_are_a_400_naming_the_field(server, endpoints, field):
    provider = register(server, "provider", "p")
    reply = server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                               json={"capacity": BOX, "endpoints": endpoints})  # fmt: skip
    refused(reply, field)


def test_garbage_endpoints_in_a_report_are_a_400_naming_endpoint(server):
    tenant, provider = parties(server)
    assert beat(server, provider, LOOPBACK).status_code == 200
    _, lease = leased(server, tenant, provider)
    for endpoint in ("[::1", "[zz]:80", "127.0.0.1:0", "[::1]:65536", "999.1.1.1:80",
                     "١٢٣.0.0.1:80", "[::1%lo]:80", "[127.0.0.1]:80", "127.1:80",
                     "0x7f.0.0.1:80", "0.0.0.0:80", "[::]:80", "a" * 290 + ":80", ":80",
                     "127.0.0.1:", "127.0.0.1:80:80", "[::1]80", "127.0.0.1 :80"):  # fmt: skip
        refused(report(server, provider, lease, endpoint), "endpoint")
    for endpoint in (None, 7, ["127.0.0.1:80"], {"host": "x"}):
        reply = report(server, provider, lease, endpoint)
        assert reply.status_code in (200, 400), reply.text  # null: a job-like report, no endpoint
        if reply.status_code == 400:
            assert reply.json()["error"]["field"] == "endpoint"


def test_public_networks_refuse_loopback(tmp_path):
    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--endpoint-networks", "public")  # fmt: skip
        try:
            provider = register(server, "provider", "p")
            message = refused(beat(server, provider, LOOPBACK), "endpoints.addresses")
            assert "public (globally routable) addresses" in message
            assert "--endpoint-networks" in message
            for address in ("10.0.0.5", "192.168.1.2", "169.254.1.1", "fd00::1", "::1"):
                refused(beat(server, provider, {"addresses": [address], "ports": [1, 2]}),
                        "endpoints.addresses")  # fmt: skip
            public = beat(server, provider, {"addresses": ["203.0.114.5", "2a00:1450::1"],
                                             "ports": [30000, 32767]})  # fmt: skip
            assert public.status_code == 200, public.text
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "empty item"), ("public,", "empty item"), ("nonsense", "neither a CIDR"),
        ("10.0.0.1/8", "host bits set"), ("10.0.0.0/33", "neither a CIDR"),
    ],
)
def test_a_bad_endpoint_networks_flag_is_one_clear_line(tmp_path, value, says):
    from .conftest import kova_live

    result = kova_live("serve", "--data-dir", str(tmp_path), "--port", "0",
                       "--endpoint-networks", value)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: --endpoint-networks: " in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_page_size_is_refused(tmp_path):
    from .conftest import kova_live

    for value in ("0", "10001", "x"):
        result = kova_live("serve", "--data-dir", str(tmp_path), "--page-size", value)
        assert result.returncode == 2 and "--page-size" in result.stderr


# --------------------------------------------------------------------------- the ingress


def test_the_ingress_stops_at_an_endpoint_that_no_longer_matches_its_registration(with_ingress):
    from .test_ingress import MANIFEST as SERVED
    from .test_ingress import Upstream

    server, ingress = with_ingress["server"], with_ingress["ingress"]
    upstream = Upstream("a")
    try:
        tenant, provider = parties(server)
        exact = {"addresses": ["127.0.0.1"], "ports": [upstream.port, upstream.port]}
        assert beat(server, provider, exact).status_code == 200
        dep, lease = leased(server, tenant, provider, SERVED.replace("ACCEPT", f"e{free_port()}.example.com"))
        assert report(server, provider, lease, upstream.endpoint).status_code == 200
        host = f"web-{dep['id']}.deployments.localhost"
        get = lambda: httpx.get(f"http://127.0.0.1:{ingress}/", headers={"Host": host}, timeout=10)  # noqa: E731
        assert wait_for(lambda: get().status_code == 200)
        # the provider now registers other ports: the reported endpoint is not its any more
        other = {"addresses": ["127.0.0.1"], "ports": [upstream.port + 1, upstream.port + 1]}
        assert beat(server, provider, other).status_code == 200
        answer = wait_for(lambda: (r := get()).status_code != 200 and r, 5)
        assert answer.status_code == 502 and "No replica" in answer.text
        assert wait_for(lambda: f"not proxying to {upstream.endpoint}: port {upstream.port} is "
                        "outside the port range" in server.log.read_text())  # fmt: skip
        assert beat(server, provider, exact).status_code == 200  # back as it was
        assert wait_for(lambda: get().status_code == 200, 5)
        # an endpoint that reached the database by another way than the API (written before
        # the rule existed, say) is checked as well: the API's own socket is never proxied to
        assert beat(server, provider, LOOPBACK).status_code == 200
        engine = sync_engine(server.database_url)
        with engine.begin() as connection:
            connection.execute(update(leases).where(leases.c.id == lease["id"])
                               .values(endpoint=f"127.0.0.1:{server.port}"))  # fmt: skip
        engine.dispose()
        server.client.post(f"/v1/deployments/{dep['id']}/deposit", headers=tenant["headers"],
                           json={"amount": 1})  # a change through the API: read again now  # fmt: skip
        answer = wait_for(lambda: (r := get()).status_code != 200 and r, 5)
        assert answer.status_code == 502 and "kova_" not in answer.text  # not the /metrics
        assert wait_for(lambda: "orchestrator's own listening socket" in server.log.read_text())
        log = server.log.read_text()
        assert log.count(f"not proxying to 127.0.0.1:{server.port}") == 1  # logged once
    finally:
        upstream.stop()
