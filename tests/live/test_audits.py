"""Auditors and audits over real HTTP (SQLite and PostgreSQL): an auditor vouches for a
provider's attributes, and a manifest whose placement says ``signedBy`` gets bids only from the
providers its auditors audited; a heartbeat that changes a signed attribute voids the audit;
revocation; who may audit; bad bodies; ``kova-live audit``; and a provider agent that bids on a
signed order once audited."""

import subprocess

import pytest
import yaml

from .conftest import kova_live, register
from .test_lifecycle import MANIFEST
from .test_openapi import CHECKS, SCHEMATHESIS

BOX = {"cpu": 2000, "memory": 4 * 2**30, "storage": 50 * 2**30, "gpu": 0}


def heartbeat(server, provider, attributes):
    reply = server.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                               json={"capacity": BOX, "attributes": attributes})  # fmt: skip
    assert reply.status_code == 200, reply.text
    return reply.json()


def audit(server, auditor, provider_id, body=None):
    return server.client.post(f"/v1/providers/{provider_id}/audits", headers=auditor["headers"],
                              json=body)  # fmt: skip


def revoke(server, auditor, provider_id):
    return server.client.delete(f"/v1/providers/{provider_id}/audits", headers=auditor["headers"])


def audits_of(server, account, provider_id):
    reply = server.client.get(f"/v1/providers/{provider_id}/audits", headers=account["headers"])
    assert reply.status_code == 200, reply.text
    return reply.json()


def deploy(server, tenant, signed_by):
    """A deployment of one order whose placement requires ``signed_by``."""
    manifest = yaml.safe_load(MANIFEST)
    manifest["profiles"]["placement"]["dc"]["signedBy"] = signed_by
    reply = server.client.post("/v1/deployments", headers=tenant["headers"],
                               json={"manifest": manifest, "deposit": 0})  # fmt: skip
    assert reply.status_code == 201, reply.text
    return reply.json()["orders"][0]["id"]


def bid(server, provider, order_id, price=1_000):
    return server.client.post(f"/v1/orders/{order_id}/bids", headers=provider["headers"],
                              json={"price": price})  # fmt: skip


def refusal(reply):
    return reply.status_code, reply.json()["error"]["code"]


def test_an_auditors_identity_is_its_account_id(server):
    auditor = register(server, "auditor", "acme audits")
    assert auditor["role"] == "auditor" and auditor["account"] == f"auditor:{auditor['id']}"
    me = server.client.get("/v1/accounts/me", headers=auditor["headers"]).json()
    assert me["role"] == "auditor" and me["account"] == auditor["account"]
    twin = register(server, "auditor", "acme audits")  # names need not be unique; ids are
    assert twin["account"] != auditor["account"]
    # an auditor is neither a tenant nor a provider
    deploy_refused = server.client.post("/v1/deployments", headers=auditor["headers"],
                                        json={"manifest": MANIFEST, "deposit": 0})  # fmt: skip
    assert deploy_refused.status_code == 403
    beat = server.client.post("/v1/providers/heartbeat", headers=auditor["headers"],
                              json={"capacity": BOX})  # fmt: skip
    assert beat.status_code == 403


def test_signed_by_any_of_gets_bids_only_from_the_audited_provider(server):
    tenant, auditor = register(server, "tenant", "t"), register(server, "auditor", "a")
    audited, other = register(server, "provider", "audited"), register(server, "provider", "other")
    assert heartbeat(server, audited, {"region": "eu"})["auditors"] == []
    assert heartbeat(server, other, {"region": "eu"})["auditors"] == []
    signed = audit(server, auditor, audited["id"])  # no body: every attribute it registers
    assert signed.status_code == 201, signed.text
    made = signed.json()
    assert made == {
        "provider_id": audited["id"], "auditor": auditor["account"], "auditor_id": auditor["id"],
        "attributes": {"region": "eu"}, "height": made["height"], "valid": True, "voided_by": [],
    }  # fmt: skip
    # the heartbeat's reply lists the auditors, which the agent passes to the core's poll
    assert heartbeat(server, audited, {"region": "eu"})["auditors"] == [auditor["account"]]
    assert heartbeat(server, other, {"region": "eu"})["auditors"] == []

    order_id = deploy(server, tenant, {"anyOf": [auditor["account"], "auditor:999999999"]})
    assert bid(server, audited, order_id).status_code == 201
    refused = bid(server, other, order_id)
    assert refusal(refused) == (409, "placement_mismatch")
    assert "not signed by any of" in refused.json()["error"]["message"]

    # what the tenant sees: who could serve it, and why the other cannot
    seen = server.client.get(f"/v1/orders/{order_id}/candidates", headers=tenant["headers"]).json()
    assert audited["id"] in seen["candidates"]
    (why,) = [c["reasons"] for c in seen["cannot_serve"] if c["provider_id"] == other["id"]]
    assert any(r.startswith("placement: not signed by any of") for r in why)
    # the public list, and the provider's audits, as anyone authenticated sees them
    public = {p["provider_id"]: p for p in server.client.get("/v1/providers").json()["providers"]}
    assert public[audited["id"]]["auditors"] == [auditor["account"]]
    assert public[other["id"]]["auditors"] == []
    listed = audits_of(server, tenant, audited["id"])
    assert listed["auditors"] == [auditor["account"]] and listed["audits"] == [made]
    assert audits_of(server, tenant, other["id"]) == {
        "provider_id": other["id"], "auditors": [], "audits": []
    }


def test_all_of_needs_every_auditor(server):
    tenant = register(server, "tenant", "t")
    first, second = register(server, "auditor", "a1"), register(server, "auditor", "a2")
    provider = register(server, "provider", "p")
    heartbeat(server, provider, {"region": "eu", "tier": "gold"})
    order_id = deploy(server, tenant, {"allOf": [first["account"], second["account"]]})
    assert audit(server, first, provider["id"]).status_code == 201
    refused = bid(server, provider, order_id)
    assert refusal(refused) == (409, "placement_mismatch")
    assert f"not signed by {second['account']}" in refused.json()["error"]["message"]
    # the second vouches for one attribute only: an audit need not sign them all
    assert audit(server, second, provider["id"], {"attributes": {"tier": "gold"}}).status_code == 201
    assert heartbeat(server, provider, {"region": "eu", "tier": "gold"})["auditors"] == sorted(
        [first["account"], second["account"]]
    )
    assert bid(server, provider, order_id).status_code == 201


def test_a_heartbeat_that_changes_a_signed_attribute_voids_the_audit(server):
    tenant, auditor = register(server, "tenant", "t"), register(server, "auditor", "a")
    provider = register(server, "provider", "p")
    heartbeat(server, provider, {"region": "eu", "tier": "gold"})
    assert audit(server, auditor, provider["id"], {"attributes": {"region": "eu"}}).status_code == 201
    # an attribute the audit did not sign may change
    assert heartbeat(server, provider, {"region": "eu", "tier": "silver"})["auditors"] == [
        auditor["account"]
    ]
    # a signed one may not: the audit is void, and listed as such
    assert heartbeat(server, provider, {"region": "us", "tier": "silver"})["auditors"] == []
    (void,) = audits_of(server, auditor, provider["id"])["audits"]
    assert void["valid"] is False and void["voided_by"] == ["region"]
    order_id = deploy(server, tenant, {"anyOf": [auditor["account"]]})
    assert refusal(bid(server, provider, order_id)) == (409, "placement_mismatch")
    # dropping it voids it too; registering the signed value again restores it
    assert heartbeat(server, provider, {"tier": "silver"})["auditors"] == []
    assert heartbeat(server, provider, {"region": "eu"})["auditors"] == [auditor["account"]]
    assert bid(server, provider, order_id).status_code == 201
    # a new audit replaces the old one: one audit per auditor and provider
    heartbeat(server, provider, {"region": "us"})
    again = audit(server, auditor, provider["id"]).json()
    assert again["attributes"] == {"region": "us"} and again["valid"]
    assert [a["attributes"] for a in audits_of(server, auditor, provider["id"])["audits"]] == [
        {"region": "us"}
    ]


def test_revoking_an_audit(server):
    tenant, auditor = register(server, "tenant", "t"), register(server, "auditor", "a")
    bystander = register(server, "auditor", "b")
    provider = register(server, "provider", "p")
    heartbeat(server, provider, {})
    assert audit(server, auditor, provider["id"], {}).json()["attributes"] == {}  # it vouches, no more
    order_id = deploy(server, tenant, {"anyOf": [auditor["account"]]})
    # another auditor has nothing to revoke, and revokes nothing of others'
    assert refusal(revoke(server, bystander, provider["id"])) == (404, "not_found")
    gone = revoke(server, auditor, provider["id"])
    assert gone.status_code == 200
    assert gone.json() == {"provider_id": provider["id"], "auditor": auditor["account"], "revoked": True}
    assert audits_of(server, tenant, provider["id"])["audits"] == []
    assert heartbeat(server, provider, {})["auditors"] == []
    assert refusal(bid(server, provider, order_id)) == (409, "placement_mismatch")
    assert refusal(revoke(server, auditor, provider["id"])) == (404, "not_found")


def test_an_audit_sent_again_under_its_key_applies_once(server):
    auditor, provider = register(server, "auditor", "a"), register(server, "provider", "p")
    heartbeat(server, provider, {"region": "eu"})
    keyed = {**auditor["headers"], "Idempotency-Key": "sign-1"}
    path = f"/v1/providers/{provider['id']}/audits"
    first = server.client.post(path, headers=keyed, json={"attributes": {"region": "eu"}})
    assert first.status_code == 201, first.text
    heartbeat(server, provider, {"region": "us"})  # voids it; the retry must not sign anew
    again = server.client.post(path, headers=keyed, json={"attributes": {"region": "eu"}})
    assert (again.status_code, again.json()) == (201, first.json())
    assert audits_of(server, auditor, provider["id"])["auditors"] == []


def test_only_auditors_audit(server):
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    heartbeat(server, provider, {"region": "eu"})
    for caller in (tenant, provider):
        assert refusal(audit(server, caller, provider["id"])) == (403, "forbidden")
        assert refusal(revoke(server, caller, provider["id"])) == (403, "forbidden")
    assert server.client.post(f"/v1/providers/{provider['id']}/audits").status_code == 401
    assert server.client.get(f"/v1/providers/{provider['id']}/audits").status_code == 401
    assert audits_of(server, provider, provider["id"])["audits"] == []  # anyone may look


LONG = "x" * 129


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{attributes", 400, "malformed_json", None),
        (b"[]", 400, "bad_request", None),
        (b'{"attributes": ["region"]}', 400, "invalid_field", "attributes"),
        (b'{"attributes": "region=eu"}', 400, "invalid_field", "attributes"),
        (b'{"attributes": {"region": 7}}', 400, "invalid_field", "attributes.region"),
        (b'{"attributes": {"region": null}}', 400, "invalid_field", "attributes.region"),
        (b'{"attributes": {"region": "' + LONG.encode() + b'"}}', 400, "invalid_field", "attributes.region"),
        (b'{"attributes": {"' + LONG.encode() + b'": "eu"}}', 400, "invalid_field", "attributes"),
        (b'{"attributes": {"": "eu"}}', 400, "invalid_field", "attributes"),
        (b'{"attributes": {' + b", ".join(b'"k%d": "v"' % i for i in range(65)) + b"}}", 400, "invalid_field", "attributes"),
        (b'{"attributes": {"region": "e\\u0000u"}}', 400, "invalid_field", "attributes.region"),
        (b'{"attributes": {}, "provider": 1}', 400, "invalid_field", "provider"),
        (b'{"attributes": {"region": "us"}}', 409, "attribute_mismatch", "attributes.region"),
        (b'{"attributes": {"region": "eu", "gpu": "a100"}}', 409, "attribute_mismatch", "attributes.gpu"),
    ],
)  # fmt: skip
def test_bad_audits_are_refused_naming_the_field(server, body, status, code, field):
    auditor, provider = register(server, "auditor", "a"), register(server, "provider", "p")
    heartbeat(server, provider, {"region": "eu"})
    reply = server.client.post(f"/v1/providers/{provider['id']}/audits", content=body,
                               headers={**auditor["headers"], "Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert audits_of(server, auditor, provider["id"])["audits"] == []  # nothing was stored


def test_who_can_be_audited(server):
    auditor, tenant = register(server, "auditor", "a"), register(server, "tenant", "t")
    silent = register(server, "provider", "silent")
    for who in (10**12, "abc", "-1", 2**64, tenant["id"], auditor["id"]):
        assert refusal(audit(server, auditor, who)) == (404, "not_found"), who
        assert server.client.get(f"/v1/providers/{who}/audits", headers=auditor["headers"]).status_code == 404
    refused = audit(server, auditor, silent["id"])
    assert refusal(refused) == (409, "no_heartbeat")
    assert "has not sent a heartbeat" in refused.json()["error"]["message"]
    assert audits_of(server, auditor, silent["id"])["audits"] == []


def test_the_cli_signs_lists_and_revokes(server):
    auditor, provider = register(server, "auditor", "a"), register(server, "provider", "p")
    tenant = register(server, "tenant", "t")
    heartbeat(server, provider, {"region": "eu", "tier": "gold"})
    pid = str(provider["id"])

    def cli(*args, token=auditor["token"]):
        return kova_live("audit", *args, "--orchestrator", server.url, env={"KOVA_TOKEN": token})

    signed = cli("sign", pid, "--attribute", "region=eu")
    assert signed.returncode == 0, signed.stderr
    assert f"{auditor['account']} audited provider {pid}" in signed.stdout
    assert "region=eu" in signed.stdout and "tier" not in signed.stdout
    listed = cli("list", pid, token=tenant["token"])
    assert listed.returncode == 0, listed.stderr
    assert f"audited by {auditor['account']}" in listed.stdout and "stands" in listed.stdout
    heartbeat(server, provider, {"region": "us"})
    void = cli("list", pid)
    assert "audited by nobody" in void.stdout and "void" in void.stdout and "region" in void.stdout
    mismatch = cli("sign", pid, "--attribute", "region=eu")
    assert mismatch.returncode == 1 and mismatch.stderr.count("\n") == 1
    assert "(attributes.region)" in mismatch.stderr and "Traceback" not in mismatch.stderr
    everything = cli("sign", pid)  # every attribute it registers now
    assert everything.returncode == 0 and "region=us" in everything.stdout
    revoked = cli("revoke", pid)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = cli("revoke", pid)
    assert again.returncode == 1 and "has no audit" in again.stderr and "Traceback" not in again.stderr
    not_auditor = cli("sign", pid, token=tenant["token"])
    assert not_auditor.returncode == 1 and "only auditors" in not_auditor.stderr
    bad = cli("sign", pid, "--attribute", "region")
    assert bad.returncode == 2 and "--attribute" in bad.stderr and "Traceback" not in bad.stderr
    no_token = kova_live("audit", "list", pid, "--orchestrator", server.url, env={"KOVA_TOKEN": ""})
    assert no_token.returncode == 2 and "KOVA_TOKEN" in no_token.stderr
    unreachable = kova_live("audit", "list", pid, "--orchestrator", "http://127.0.0.1:1",
                            "--token", auditor["token"])  # fmt: skip
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_schemathesis_finds_no_server_error_in_the_audit_routes(server, tmp_path):
    """As an auditor, on a provider that exists (its id fixed in the paths), so that the
    generated bodies reach the attributes' checks and some audits are signed."""
    auditor, provider = register(server, "auditor", "st"), register(server, "provider", "st")
    heartbeat(server, provider, {"region": "eu", "tier": "gold"})
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.id" = {provider["id"]}\n')
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{server.url}/v1/openapi.json",
         "-H", f"Authorization: Bearer {auditor['token']}", "--checks", CHECKS,
         "--include-path-regex", "/audits$", "--max-examples", "50",
         "--phases", "coverage,fuzzing", "--seed", "1", "--workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "3 selected" in result.stdout and "failed" not in result.stdout.split("Test cases:")[-1]
