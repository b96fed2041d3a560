"""``kova``, the tenant's CLI, as a process against a real server (SQLite and PostgreSQL):
login, deploy, bids, accept, status, deposit, close; refusals as one readable line."""

import os
import subprocess
import sys
import time

import pytest

from .conftest import credit
from .test_lifecycle import MANIFEST


def kova(config, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kova_live.tenant_cli", *map(str, args)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KOVA_CONFIG": str(config), **(env or {})},
    )  # fmt: skip


@pytest.fixture
def tenant(server, tmp_path):
    config = tmp_path / "config.json"
    result = kova(config, "login", "--server", server.url, "--name", "carol")
    assert result.returncode == 0, result.stderr
    assert "logged in" in result.stdout and oct(config.stat().st_mode)[-3:] == "600"
    account = result.stdout.split(" as ")[1].split(" ")[0]
    credit(server.database_url, account, 500_000_000)
    return config


def test_a_tenants_day(server, tenant, tmp_path):
    manifest = tmp_path / "web.yaml"
    exposed = "    image: busybox:1.36\n    expose:\n      - port: 8080\n        to:\n          - global: true\n"
    manifest.write_text(MANIFEST.replace("    image: busybox:1.36\n", exposed))
    assert "500" in kova(tenant, "balance").stdout
    made = kova(tenant, "deploy", manifest, "--deposit", "150")
    assert made.returncode == 0, made.stderr
    dep_id = made.stdout.split()[1]
    assert "150 in escrow" in made.stdout
    assert "no open bids" in kova(tenant, "bids", dep_id).stdout

    provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "p"}).json()
    headers = {"Authorization": f"Bearer {provider['token']}"}
    server.client.post("/v1/providers/heartbeat", headers=headers, json={
        "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**36, "gpu": 0}})
    shown = server.client.get(f"/v1/deployments/{dep_id}", headers={"Authorization": f"Bearer {_token(tenant)}"})
    order_id = shown.json()["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order_id}/bids", headers=headers, json={"price": 25_000}).json()

    table = kova(tenant, "bids", dep_id)
    assert table.returncode == 0 and "0.025" in table.stdout and "0.50" in table.stdout
    accepted = kova(tenant, "accept", bid["id"])
    assert accepted.returncode == 0 and "at 0.025 per block" in accepted.stdout
    detail = kova(tenant, "status", dep_id)
    assert "active" in detail.stdout and "burning 0.025 per block" in detail.stdout
    assert f"web: http://web-{dep_id}.deployments.localhost/" in detail.stdout  # its public URL
    assert dep_id in kova(tenant, "status").stdout
    topped = kova(tenant, "deposit", dep_id, "10")
    assert topped.returncode == 0, topped.stderr
    escrow = float(topped.stdout.split("escrow ")[1])
    assert 150 < escrow <= 160  # 150 + 10, less what rounds have paid since the lease began
    closed = kova(tenant, "close", dep_id)
    assert closed.returncode == 0 and f"deployment {dep_id} closed" in closed.stdout


def _token(config):
    import json

    return json.loads(config.read_text())["token"]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["status", "999999"], 1, "error: no deployment 999999"),
        (["accept", "999999"], 1, "error: no bid with id 999999"),
        (["deposit", "1", "-5"], 2, "AMOUNT"),
        (["deposit", "1", "0.0000001"], 2, "finer than one micro-unit"),
        (["deploy", "nope.yaml", "--deposit", "1"], 2, "does not exist"),
    ],
)
def test_refusals_are_one_readable_line(tenant, args, status, message):
    result = kova(tenant, *args)
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_manifest_names_the_field(tenant, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text('version: "2.0"\nservices: {}\n')
    result = kova(tenant, "deploy", broken, "--deposit", "1")
    assert result.returncode == 1 and "(manifest." in result.stderr


def test_without_a_server_it_says_how_to_get_one(tmp_path):
    result = kova(tmp_path / "none.json", "status", env={"KOVA_SERVER": "", "KOVA_TOKEN": ""})
    assert result.returncode == 2 and "kova login" in result.stderr


def test_an_unreachable_server_is_one_line(tmp_path):
    result = kova(tmp_path / "none.json", "status", "--server", "http://127.0.0.1:9", "--token", "x")
    assert result.returncode == 1 and "cannot reach http://127.0.0.1:9" in result.stderr


def test_a_jobs_result(server, tenant, tmp_path):
    import yaml

    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(yaml.safe_load(MANIFEST) | {"kind": "job", "max_runtime": "1h"}))
    made = kova(tenant, "deploy", manifest, "--deposit", "20")
    assert made.returncode == 0 and made.stdout.startswith("job "), made.stderr
    job_id = made.stdout.split()[1]
    provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "p"}).json()
    headers = {"Authorization": f"Bearer {provider['token']}"}
    server.client.post("/v1/providers/heartbeat", headers=headers, json={
        "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**36, "gpu": 0}})
    shown = server.client.get(f"/v1/deployments/{job_id}", headers={"Authorization": f"Bearer {_token(tenant)}"})
    order_id = shown.json()["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order_id}/bids", headers=headers, json={"price": 1_000}).json()
    assert kova(tenant, "accept", bid["id"]).returncode == 0
    assert "stops at block" in kova(tenant, "status", job_id).stdout
    waiting = kova(tenant, "result", job_id)
    assert waiting.returncode == 1 and "still active: 0 of 1" in waiting.stderr
    lease_id = server.client.get("/v1/leases", headers=headers).json()["leases"][0]["id"]
    server.client.post(f"/v1/leases/{lease_id}/status", headers=headers,
                       json={"state": "finished", "exit_code": 0, "output": "pi = 3.14159\n"})
    done = kova(tenant, "result", job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pi = 3.14159\n"
    assert "job_completed" in done.stderr and "exit code 0" in done.stderr


def test_logs_and_following_them(server, tenant, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST)
    dep_id = kova(tenant, "deploy", manifest, "--deposit", "5").stdout.split()[1]
    provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "p"}).json()
    headers = {"Authorization": f"Bearer {provider['token']}"}
    server.client.post("/v1/providers/heartbeat", headers=headers, json={
        "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**36, "gpu": 0}})
    shown = server.client.get(f"/v1/deployments/{dep_id}", headers={"Authorization": f"Bearer {_token(tenant)}"})
    bid = server.client.post(f"/v1/orders/{shown.json()['orders'][0]['id']}/bids", headers=headers,
                             json={"price": 1_000}).json()
    lease = kova(tenant, "accept", bid["id"]).stdout.split()[1]
    server.client.post(f"/v1/leases/{lease}/logs", headers=headers, json={"lines": [
        {"text": "hello"}, {"stream": "stderr", "text": "oops"}]})
    printed = kova(tenant, "logs", dep_id)
    assert printed.returncode == 0
    assert printed.stdout == "[web#0] hello\n" and printed.stderr == "[web#0] oops\n"
    follower = subprocess.Popen(
        [sys.executable, "-m", "kova_live.tenant_cli", "logs", dep_id, "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KOVA_CONFIG": str(tenant)},
    )  # fmt: skip
    time.sleep(2)
    server.client.post(f"/v1/leases/{lease}/logs", headers=headers, json={"lines": [{"text": "later"}]})
    time.sleep(2)
    assert kova(tenant, "close", dep_id).returncode == 0
    out, _ = follower.communicate(timeout=30)  # it ends by itself once the deployment closed
    assert out == "[web#0] hello\n[web#0] later\n"


def test_upload_and_deploy_with_auto_accept(server, tenant, tmp_path):
    import hashlib

    import yaml

    data = tmp_path / "input.csv"
    data.write_bytes(b"a,b\n1,2\n")
    uploaded = kova(tenant, "upload", data)
    assert uploaded.returncode == 0, uploaded.stderr
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert f"sha256 {digest}" in uploaded.stdout and "path: /data/input.csv" in uploaded.stdout
    manifest = yaml.safe_load(MANIFEST)
    manifest["services"]["web"]["files"] = [{"sha256": digest, "path": "/data/input.csv"}]
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(manifest))
    made = kova(tenant, "deploy", path, "--deposit", "5", "--auto-accept", "cheapest", "--wait", "20")
    assert made.returncode == 0, made.stderr
    assert "the orchestrator accepts the cheapest bid after 20 blocks" in made.stdout
    refused = kova(tenant, "deploy", path, "--deposit", "5", "--auto-accept", "luckiest")
    assert refused.returncode == 1 and "(auto_accept.policy)" in refused.stderr
    missing = kova(tenant, "upload", tmp_path / "nope.bin")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


TYPO = MANIFEST.replace("    image: busybox:1.36\n", "    image: busybox:1.36\n    depends-on: []\n")
WARNED = "warning: services.web.depends-on: unknown field, ignored (did you mean 'depends_on'?)"


def test_deploy_prints_the_manifests_warnings_and_strict_refuses(tenant, tmp_path):
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(TYPO)
    made = kova(tenant, "deploy", manifest, "--deposit", "1")
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == WARNED and "created" in made.stdout
    strict = kova(tenant, "deploy", manifest, "--deposit", "1", "--strict")
    assert strict.returncode == 1
    assert "unknown field" in strict.stderr and "(manifest.services.web.depends-on)" in strict.stderr


def test_check_prints_orders_prices_and_deposits_or_every_problem(tenant, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(TYPO.replace("count: 1", "count: 2"))
    checked = kova(tenant, "check", manifest, "--hours", "2")
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == WARNED
    out = checked.stdout
    assert "2 order(s)" in out and out.count("0.05") >= 2 and "1Gi" in out
    assert "max price: 0.1 per block" in out and "minimum deposit: 0" in out
    # 2 hours of the test server's 50 ms blocks: 144,000 blocks at 0.1
    assert "deposit for 2 hours at the max price: 14400" in out and "web.yaml: valid" in out
    broke = tmp_path / "bad.yaml"
    broke.write_text(TYPO.replace("units: 1", "units: 0").replace("size: 1Gi}\n        storage",
                                                                   "size: lots}\n        storage"))
    refused = kova(tenant, "check", broke, "--strict")
    assert refused.returncode == 1 and "order(s)" not in refused.stdout
    assert refused.stderr.splitlines() == [
        "error: services.web.depends-on: unknown field (did you mean 'depends_on'?)",
        "error: profiles.compute.web.resources.cpu.units: must be greater than 0",
        "error: profiles.compute.web.resources.memory.size: not a size: 'lots' (use bytes or a "
        "unit such as 512Mi, 1Gi, 10G)",
    ]
    poor = kova(tenant, "check", manifest, "--deposit", "100000")
    assert poor.returncode == 1 and "error: deposit: your balance is" in poor.stderr
