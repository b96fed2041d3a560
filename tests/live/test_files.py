"""Uploaded files over real HTTP (SQLite and PostgreSQL): a tenant uploads, a manifest places
the file by its SHA-256, and only the tenant who uploaded it and a provider holding a live lease
on such a deployment can fetch it."""

import hashlib

import yaml

from kova_live.files import MAX_FILE

from .conftest import credit, register
from .test_jobs import BOX
from .test_lifecycle import MANIFEST

CONTENT = b"id,value\n1,42\n" + bytes(range(256)) * 100


def upload(server, who, content):
    return server.client.post("/v1/files", headers=who["headers"], content=content)


def manifest_with(sha256):
    manifest = yaml.safe_load(MANIFEST)
    manifest["services"]["web"]["files"] = [{"sha256": sha256, "path": "/data/input.csv"}]
    return manifest


def test_a_file_reaches_the_provider_of_a_lease_that_places_it(server):
    tenant, other = register(server, "tenant", "t"), register(server, "tenant", "o")
    provider, stranger = register(server, "provider", "p"), register(server, "provider", "s")
    credit(server.database_url, tenant["account"], 10_000_000)
    made = upload(server, tenant, CONTENT)
    assert made.status_code == 201, made.text
    sha256 = hashlib.sha256(CONTENT).hexdigest()
    assert made.json() == {"sha256": sha256, "size": len(CONTENT)}
    assert upload(server, tenant, CONTENT).json()["sha256"] == sha256  # again: the same file
    fetch = lambda who: server.client.get(f"/v1/files/{sha256}", headers=who["headers"])  # noqa: E731
    assert fetch(tenant).content == CONTENT
    assert fetch(other).status_code == 404 and fetch(provider).status_code == 404
    server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": manifest_with(sha256), "deposit": 1_000_000})
    assert dep.status_code == 201, dep.text
    dep = dep.json()
    bid = server.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids", headers=provider["headers"],
                             json={"price": 1_000}).json()
    assert fetch(provider).status_code == 404  # a bid is not a lease
    assert server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).status_code == 201
    got = fetch(provider)
    assert got.status_code == 200 and got.content == CONTENT
    assert got.headers["content-type"] == "application/octet-stream"
    assert fetch(stranger).status_code == 404
    server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
    assert fetch(provider).status_code == 404  # the lease is over


def test_a_manifest_may_only_place_files_its_tenant_uploaded(server):
    tenant, other = register(server, "tenant", "t"), register(server, "tenant", "o")
    credit(server.database_url, tenant["account"], 10_000_000)
    theirs = upload(server, other, b"someone else's").json()["sha256"]
    for sha256 in ("0" * 64, theirs):
        refused = server.client.post("/v1/deployments", headers=tenant["headers"],
                                     json={"manifest": manifest_with(sha256), "deposit": 1_000_000})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["field"] == "manifest.services.web.files.0.sha256"
    bad = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": manifest_with("ABC"), "deposit": 0})
    assert bad.json()["error"]["field"] == "manifest.services.web.files.0.sha256"
    assert server.client.get("/v1/deployments", headers=tenant["headers"]).json()["deployments"] == []
    me = server.client.get("/v1/accounts/me", headers=tenant["headers"]).json()
    assert me["balance"] == 10_000_000  # no deposit moved


def test_uploads_are_for_tenants_and_at_most_64_mib(server):
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    assert upload(server, provider, b"x").status_code == 403
    assert server.client.post("/v1/files", content=b"x").status_code == 401
    too_big = upload(server, tenant, b"\0" * (MAX_FILE + 1))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "file_too_large"
    assert upload(server, tenant, b"").json()["size"] == 0  # an empty file is a file
    assert server.client.get("/v1/files/not-a-hash", headers=tenant["headers"]).status_code == 404
