"""Who may register, and an account's token over its life, on real servers (SQLite and
PostgreSQL): ``serve --registration invite`` (the default) with single-use codes from
``kova-live invite``, ``closed`` with ``kova-live admin account``, ``open``; ``kova login
--invite``; an operator suspends and resumes an account (``kova-live admin suspend``/``resume``);
a user rotates its token (``kova rotate-token``)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kova_live.app import hash_token
from kova_live.db import sync_engine
from kova_live.schema import accounts, invites

from .conftest import BACKENDS, Server, fresh_database, kova_live, operator_headers, register
from .test_tenant_cli import kova


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module", params=BACKENDS)
def invited(request, tmp_path_factory):
    """A server with the default registration (``invite``: no ``--registration`` flag but the
    fixture's own, which says so), and an operator's headers."""
    folder = tmp_path_factory.mktemp(f"invite-{request.param}")
    with fresh_database(request.param, folder) as url:
        started = Server(url, folder / "data", 0.05, "--registration", "invite")
        started.ops = operator_headers(url)
        try:
            yield started
        finally:
            started.stop()


def issue(server: Server, count: int) -> list[str]:
    """``kova-live invite --count`` against the server: the codes it prints."""
    made = kova_live("invite", "--count", str(count), "--orchestrator", server.url,
                     "--token", token_of(server.ops))  # fmt: skip
    assert made.returncode == 0, made.stderr
    codes = made.stdout.split()
    assert len(codes) == count and len(set(codes)) == count
    return codes


def accounts_now(server: Server) -> int:
    status = server.client.get("/v1/status").json()
    return status["tenants"] + status["providers"]


def test_serve_registers_by_invitation_unless_told_otherwise():
    from kova_live.cli import serve

    registration = next(p for p in serve.params if p.name == "registration")
    assert registration.default == "invite"


def test_an_invite_code_registers_one_account_and_no_more(invited):
    first, second = issue(invited, 2)
    before = accounts_now(invited)
    made = invited.client.post(
        "/v1/accounts", json={"role": "tenant", "name": "a", "invite": first}
    )
    assert made.status_code == 201, made.text
    refusals = [
        ({"role": "tenant", "name": "b", "invite": first}, 403, "invalid_invite"),  # used
        ({"role": "tenant", "name": "b", "invite": "kinv_" + "x" * 43}, 403, "invalid_invite"),
        ({"role": "tenant", "name": "b"}, 403, "invite_required"),
        ({"role": "tenant", "name": "b", "invite": "not a code"}, 400, "invalid_field"),
        ({"role": "tenant", "name": "b", "invite": "k" * 65}, 400, "invalid_field"),
        ({"role": "operator", "name": "b", "invite": second}, 400, "invalid_field"),
    ]
    for body, status, code in refusals:
        refused = invited.client.post("/v1/accounts", json=body)
        assert refused.status_code == status, (body, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == (
            code,
            "role" if body["role"] == "operator" else "invite",
        )
    assert "kova-live invite" in invited.client.post(
        "/v1/accounts", json={"role": "tenant", "name": "b"}).json()["error"]["message"]  # fmt: skip
    assert accounts_now(invited) == before + 1  # the refused made nothing, nor used ``second``
    auditor = invited.client.post(
        "/v1/accounts", json={"role": "auditor", "name": "c", "invite": second}
    )
    assert auditor.status_code == 201 and auditor.json()["account"].startswith("auditor:")
    assert (
        invited.client.get("/v1/accounts/me", headers=bearer(auditor.json()["token"])).status_code
        == 200
    )
    engine = sync_engine(invited.database_url)
    try:
        with engine.connect() as connection:
            rows = {r.code_hash: r for r in connection.execute(select(invites))}
            operator = connection.execute(select(accounts.c.id).where(
                accounts.c.token_hash == hash_token(token_of(invited.ops)))).scalar_one()  # fmt: skip
    finally:
        engine.dispose()
    assert first not in rows and hash_token(first) in rows  # only the hash is kept
    for code, account in ((first, made.json()), (second, auditor.json())):
        row = rows[hash_token(code)]
        assert (row.issued_by, row.used_by) == (operator, account["id"])
        assert row.issued_ms <= row.used_ms and row.issued_height <= row.used_height


def test_only_an_operator_issues_invites(invited):
    tenant = invited.client.post("/v1/accounts", json={"role": "tenant", "name": "t",
                                                       "invite": issue(invited, 1)[0]}).json()  # fmt: skip
    refused = invited.client.post("/v1/invites", headers=bearer(tenant["token"]), json={"count": 1})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert invited.client.post("/v1/invites", json={"count": 1}).status_code == 401
    for count in (0, 101, "3"):
        bad = invited.client.post("/v1/invites", headers=invited.ops, json={"count": count})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "count", bad.text
    one = invited.client.post("/v1/invites", headers=invited.ops)  # no body: one code
    assert one.status_code == 201 and len(one.json()["codes"]) == 1
    cli = kova_live("invite", "--orchestrator", invited.url, "--token", tenant["token"])
    assert cli.returncode == 1 and "only operators may do this" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_kova_login_registers_with_an_invite_and_says_plainly_when_it_needs_one(invited, tmp_path):
    config = tmp_path / "config.json"
    needs = kova(config, "login", "--server", invited.url, "--name", "dora")
    assert needs.returncode == 1 and "Traceback" not in needs.stderr
    assert "registers accounts by invitation: pass --invite CODE" in needs.stderr
    wrong = kova(config, "login", "--server", invited.url, "--invite", "kinv_wrong")
    assert wrong.returncode == 1 and "unknown or already used (--invite)" in wrong.stderr
    assert not config.exists()
    code = issue(invited, 1)[0]
    done = kova(
        config, "login", "--server", invited.url, "--name", "dora", env={"KOVA_INVITE": code}
    )
    assert done.returncode == 0, done.stderr
    assert "logged in" in done.stdout and kova(config, "balance").stdout.startswith("tenant:")
    again = kova(tmp_path / "other.json", "login", "--server", invited.url, "--invite", code)
    assert again.returncode == 1 and "already used" in again.stderr


def test_a_closed_network_registers_nobody_and_operators_make_accounts(database_url, tmp_path):
    server = Server(database_url, tmp_path / "data", 0.05, "--registration", "closed")
    try:
        refused = server.client.post("/v1/accounts", json={"role": "tenant", "name": "x"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "registration_closed"
        assert "kova-live admin account" in refused.json()["error"]["message"]
        login = kova(
            tmp_path / "config.json", "login", "--server", server.url, "--invite", "kinv_x"
        )
        assert login.returncode == 1 and "does not register accounts" in login.stderr
        for role in ("tenant", "provider", "auditor"):
            made = kova_live("admin", "account", role, f"a {role}", "--database-url", database_url)
            assert made.returncode == 0, made.stderr
            assert made.stdout.startswith(f"{role}:")
            me = server.client.get("/v1/accounts/me", headers=bearer(made.stdout.split()[-1]))
            assert me.status_code == 200 and me.json()["role"] == role  # the server sees it at once
        bad = kova_live("admin", "account", "operator", "x", "--database-url", database_url)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert server.client.get("/v1/status").json()["tenants"] == 1
    finally:
        server.stop()


def test_an_open_network_registers_anyone(server):
    # the suite's server runs with --registration open (conftest); an invite is not needed
    made = server.client.post("/v1/accounts", json={"role": "tenant", "name": "o"})
    assert made.status_code == 201, made.text


# --------------------------------------------------------------------------- suspend, resume


def admin(server: Server, command: str, account: str):
    if server.ops is None:
        server.ops = operator_headers(server.database_url)
    return kova_live("admin", command, account, "--orchestrator", server.url,
                     "--token", token_of(server.ops))  # fmt: skip


def test_a_suspended_accounts_token_is_refused_at_once_and_resuming_gives_a_new_one(server):
    alice = register(server, "tenant", "alice")
    bob = register(server, "provider", "bob")
    for account in (alice, bob):  # the server now remembers both tokens
        assert server.client.get("/v1/accounts/me", headers=account["headers"]).status_code == 200
    suspended = admin(server, "suspend", alice["account"])
    assert suspended.returncode == 0, suspended.stderr
    assert suspended.stdout.startswith(f"{alice['account']} is suspended (by operator:")
    for method, path in (("GET", "/v1/accounts/me"), ("POST", "/v1/deployments"),
                         ("POST", "/v1/accounts/me/token")):  # fmt: skip
        refused = server.client.request(method, path, headers=alice["headers"], json={})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "account_suspended"
        assert "suspended" in refused.json()["error"]["message"]
    assert server.client.get("/v1/accounts/me", headers=bob["headers"]).status_code == 200
    again = server.client.post(f"/v1/accounts/{alice['id']}/suspend", headers=server.ops)
    assert again.status_code == 200 and again.json()["suspended"] is True
    first = suspended.stdout.split("(by ")[1].split(" ")[0]
    assert again.json()["suspended_by"] == first  # the suspension that stands, unchanged
    resumed = admin(server, "resume", str(alice["id"]))
    assert resumed.returncode == 0, resumed.stderr
    token = resumed.stdout.split()[-1]
    assert server.client.get("/v1/accounts/me", headers=bearer(token)).json()["id"] == alice["id"]
    old = server.client.get("/v1/accounts/me", headers=alice["headers"])
    assert old.status_code == 401  # the token it had when suspended stays revoked
    not_suspended = admin(server, "resume", str(alice["id"]))
    assert not_suspended.returncode == 1 and "is not suspended" in not_suspended.stderr
    # bob's provider token is suspended the same way, then made good again
    assert admin(server, "suspend", bob["account"]).returncode == 0
    beat = server.client.post("/v1/providers/heartbeat", headers=bob["headers"], json={})
    assert beat.status_code == 403 and beat.json()["error"]["code"] == "account_suspended"


def test_only_operators_suspend_and_not_themselves(server):
    alice = register(server, "tenant", "alice")
    bob = register(server, "tenant", "bob")
    refused = server.client.post(f"/v1/accounts/{bob['id']}/suspend", headers=alice["headers"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    if server.ops is None:
        server.ops = operator_headers(server.database_url)
    me = server.client.get("/v1/accounts/me", headers=server.ops).json()
    self_ = server.client.post(f"/v1/accounts/{me['id']}/suspend", headers=server.ops)
    assert self_.status_code == 409 and self_.json()["error"]["code"] == "cannot_suspend_self"
    for path in ("/v1/accounts/999999999/suspend", "/v1/accounts/999999999/resume",
                 "/v1/accounts/x1/suspend"):  # fmt: skip
        assert server.client.post(path, headers=server.ops).status_code == 404
    bad = kova_live("admin", "suspend", "tenant:x", "--token", "t")
    assert bad.returncode == 2 and "ACCOUNT: expected an account id" in bad.stderr
    assert server.client.get("/v1/accounts/me", headers=bob["headers"]).status_code == 200


# --------------------------------------------------------------------------- rotation


def test_a_rotated_token_replaces_the_old_one_at_once(server):
    alice = register(server, "tenant", "alice")
    assert server.client.get("/v1/accounts/me", headers=alice["headers"]).status_code == 200
    rotated = server.client.post("/v1/accounts/me/token", headers=alice["headers"])
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["account"] == alice["account"] and new["token"] != alice["token"]
    old = server.client.get("/v1/accounts/me", headers=alice["headers"])
    assert old.status_code == 401 and old.json()["error"]["code"] == "unauthorized"
    assert (
        server.client.get("/v1/accounts/me", headers=bearer(new["token"])).json()["id"]
        == alice["id"]
    )
    assert server.client.post("/v1/accounts/me/token", headers=alice["headers"]).status_code == 401


def test_kova_rotate_token_saves_the_new_token(server, tmp_path):
    config = tmp_path / "config.json"
    assert kova(config, "login", "--server", server.url, "--name", "erin").returncode == 0
    import json

    before = json.loads(config.read_text())["token"]
    rotated = kova(config, "rotate-token")
    assert rotated.returncode == 0, rotated.stderr
    assert "the old one no longer works" in rotated.stdout
    after = json.loads(config.read_text())["token"]
    assert after != before and oct(config.stat().st_mode)[-3:] == "600"
    assert kova(config, "balance").returncode == 0  # with the saved, new token
    stale = kova(config, "balance", "--token", before)
    assert stale.returncode == 1 and "unknown token" in stale.stderr
