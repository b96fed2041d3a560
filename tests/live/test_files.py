"""Uploaded files over real HTTP (SQLite and PostgreSQL): a tenant uploads, a manifest places
the file by its SHA-256, and only the tenant who uploaded it and a provider holding a live lease
on such a deployment can fetch it. The content lives in the database, a chunk a row."""

import hashlib
import random

import yaml
from sqlalchemy import delete

from kova_live.db import sync_engine
from kova_live.files import CHUNK, MAX_FILE
from kova_live.schema import file_chunks

from .conftest import Server, credit, fresh_database, register
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


def test_a_file_of_several_chunks_comes_back_byte_for_byte(server):
    tenant = register(server, "tenant", "t")
    made = random.Random(1)
    for content in (b"", made.randbytes(CHUNK), made.randbytes(2 * CHUNK + 12_345)):
        reply = upload(server, tenant, content)
        assert reply.json() == {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
        got = server.client.get(f"/v1/files/{reply.json()['sha256']}", headers=tenant["headers"])
        assert got.status_code == 200 and got.content == content
        assert int(got.headers["content-length"]) == len(content)


def test_files_an_earlier_version_kept_in_the_data_folder_move_into_the_database(tmp_path):
    """Before migration 0019 the content lived in the orchestrator's data folder
    (``files/ab/abcdef...``); ``serve`` moves it into the database when it starts, and leaves
    a file whose content is not what its name says."""
    with fresh_database("postgresql", tmp_path) as url:
        data = tmp_path / "data"
        server = Server(url, data)
        tenant = register(server, "tenant", "t")
        sha256 = upload(server, tenant, CONTENT).json()["sha256"]
        server.stop()
        engine = sync_engine(url)  # as the earlier version left it: no chunks, a file
        with engine.begin() as connection:
            connection.execute(delete(file_chunks))
        engine.dispose()
        kept = data / "files" / sha256[:2] / sha256
        kept.parent.mkdir(parents=True)
        kept.write_bytes(CONTENT)
        wrong = data / "files" / "ab" / ("ab" + "0" * 62)
        wrong.parent.mkdir()
        wrong.write_bytes(b"not what the name says")
        server = Server(url, data)
        try:
            got = server.client.get(f"/v1/files/{sha256}", headers=tenant["headers"])
            assert got.status_code == 200 and got.content == CONTENT
            assert not kept.exists() and wrong.exists()
        finally:
            server.stop()
