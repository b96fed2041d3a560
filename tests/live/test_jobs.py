"""Jobs over real HTTP (SQLite and PostgreSQL): a job's lease, the agent's status reports
(running, finished with an exit code and output, failed), the job's result, and the deadlines
the server's own loop enforces (escrow run out, max runtime), with the money they move."""

import yaml

from .conftest import LOOPBACK, credit, register, wait_for
from .test_lifecycle import MANIFEST

BOX = {"cpu": 2000, "memory": 4 * 2**30, "storage": 50 * 2**30, "gpu": 0}
PRICE = 1_000  # micro-units per block


def job_manifest(max_runtime="1h"):
    return yaml.safe_load(MANIFEST) | {"kind": "job", "max_runtime": max_runtime}


def setup(server, deposit, max_runtime="1h", providers=1):
    """A tenant with a job and open order, and providers that sent their heartbeat."""
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    agents = []
    for i in range(providers):
        agent = register(server, "provider", f"p{i}")
        server.client.post("/v1/providers/heartbeat", headers=agent["headers"],
                           json={"capacity": BOX, "endpoints": LOOPBACK})  # fmt: skip
        agents.append(agent)
    job = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": job_manifest(max_runtime), "deposit": deposit}).json()
    return tenant, agents, job


def lease_on(server, tenant, agent, job):
    order_id = next(o["id"] for o in show(server, tenant, job)["orders"] if o["state"] == "open")
    bid = server.client.post(f"/v1/orders/{order_id}/bids", headers=agent["headers"],
                             json={"price": PRICE}).json()
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"])
    assert lease.status_code == 201, lease.text
    return lease.json()


def show(server, tenant, job):
    return server.client.get(f"/v1/deployments/{job['id']}", headers=tenant["headers"]).json()


def report(server, agent, lease, **body):
    return server.client.post(f"/v1/leases/{lease['id']}/status", headers=agent["headers"], json=body)


def balance(server, who):
    return server.client.get("/v1/accounts/me", headers=who["headers"]).json()["balance"]


def test_a_job_runs_finishes_and_pays_for_its_runtime(server):
    tenant, (agent,), job = setup(server, deposit=1_000_000)
    lease = lease_on(server, tenant, agent, job)
    view = show(server, tenant, job)
    # the escrow pays for 1,000 blocks at PRICE, sooner than the hour of max runtime
    assert view["deadline"] == lease["created_at"] + 1_000 and view["pauses_at"] is None
    running = report(server, agent, lease, state="running")
    assert running.status_code == 200 and running.json()["status"] == "running"
    before = balance(server, tenant)
    done = report(server, agent, lease, state="finished", exit_code=0, output="42\n")
    assert done.status_code == 200, done.text
    closed = done.json()
    assert closed["state"] == "closed" and closed["close_reason"] == "job_completed"
    assert closed["status"] == "finished" and closed["exit_code"] == 0
    runtime = closed["closed_at"] - lease["created_at"]
    assert closed["blocks_paid"] == runtime and closed["total_paid"] == runtime * PRICE
    assert balance(server, agent) == runtime * PRICE
    assert balance(server, tenant) == before + 1_000_000 - runtime * PRICE  # the rest refunded
    result = server.client.get(f"/v1/deployments/{job['id']}/result", headers=tenant["headers"])
    assert result.status_code == 200
    body = result.json()
    assert body["done"] and body["close_reason"] == "job_completed"
    assert [(r["exit_code"], r["output"], r["service"]) for r in body["results"]] == [(0, "42\n", "web")]
    again = report(server, agent, lease, state="finished", exit_code=0)
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    providers = server.client.get("/v1/providers").json()["providers"]
    assert next(p for p in providers if p["provider_id"] == agent["id"])["completed"] == 1


def test_a_failed_container_reopens_the_order_and_a_bad_exit_fails_the_job(server):
    tenant, (first, second), job = setup(server, deposit=1_000_000, providers=2)
    lease = lease_on(server, tenant, first, job)
    failed = report(server, first, lease, state="failed", message="image not found")
    assert failed.status_code == 200, failed.text
    assert failed.json()["close_reason"] == "container_failed"
    assert failed.json()["status_message"] == "image not found"
    assert show(server, tenant, job)["orders"][0]["state"] == "open"
    assert show(server, tenant, job)["deadline"] is None  # nothing runs
    retry = lease_on(server, tenant, second, job)
    done = report(server, second, retry, state="finished", exit_code=3, output="boom")
    assert done.json()["close_reason"] == "job_failed"
    view = show(server, tenant, job)
    assert view["state"] == "closed" and view["close_reason"] == "job_failed"
    providers = {p["provider_id"]: p for p in server.client.get("/v1/providers").json()["providers"]}
    assert providers[first["id"]]["failed"] == 1 and providers[second["id"]]["failed"] == 1


def test_the_server_stops_a_job_whose_escrow_runs_out(server):
    tenant, (agent,), job = setup(server, deposit=20 * PRICE)  # 20 blocks: one second here
    lease = lease_on(server, tenant, agent, job)
    assert show(server, tenant, job)["deadline"] == lease["created_at"] + 20
    # no command: the server's loop stops the job at its deadline
    view = wait_for(lambda: (v := show(server, tenant, job))["state"] == "closed" and v)
    assert view["close_reason"] == "job_out_of_funds" and view["escrow"] == 0
    (stopped,) = view["leases"]
    assert stopped["closed_at"] == lease["created_at"] + 20 and stopped["total_paid"] == 20 * PRICE
    assert balance(server, agent) == 20 * PRICE
    late = report(server, agent, lease, state="running")
    assert late.status_code == 409 and late.json()["error"]["code"] == "lease_closed"


def test_the_server_stops_a_job_at_its_max_runtime(server):
    tenant, (agent,), job = setup(server, deposit=1_000_000, max_runtime=30)
    lease = lease_on(server, tenant, agent, job)
    view = wait_for(lambda: (v := show(server, tenant, job))["state"] == "closed" and v)
    assert view["close_reason"] == "job_timed_out"
    assert view["leases"][0]["total_paid"] == 30 * PRICE
    assert view["escrow"] == 0 and balance(server, agent) == 30 * PRICE
    result = server.client.get(f"/v1/deployments/{job['id']}/result", headers=tenant["headers"]).json()
    assert result["done"] and result["results"][0]["close_reason"] == "job_timed_out"
    assert lease["id"] == result["results"][0]["lease_id"]


def test_status_reports_are_checked_and_only_the_lessee_reports(server):
    tenant, (agent, other), job = setup(server, deposit=1_000_000, providers=2)
    lease = lease_on(server, tenant, agent, job)
    assert report(server, other, lease, state="running").status_code == 404
    assert report(server, tenant, lease, state="running").status_code == 403
    for body, field in (
        ({"state": "finished"}, "exit_code"),
        ({"state": "running", "exit_code": 0}, "exit_code"),
        ({"state": "failed", "endpoint": "10.0.0.7:31000"}, "endpoint"),
        ({"state": "running", "endpoint": "http://10.0.0.7:31000"}, "endpoint"),  # host:port
        ({"state": "running", "endpoint": "10.0.0.7:31000/x"}, "endpoint"),
        ({"state": "running", "endpoint": "10.0.0.7:70000"}, "endpoint"),
        ({"state": "running", "endpoint": "10.0.0.7"}, "endpoint"),
        ({"state": "running", "message": "hi"}, "message"),
        ({"state": "asleep"}, "state"),
        ({"state": "finished", "exit_code": "0"}, "exit_code"),
        ({"state": "finished", "exit_code": 0, "output": "x" * 70_000}, "output"),
    ):
        refused = report(server, agent, lease, **body)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, body
    assert show(server, tenant, job)["leases"][0]["status"] == "pending"  # nothing changed
    # a deployment's lease reports where it runs, and cannot "finish"
    service = server.client.post("/v1/deployments", headers=tenant["headers"],
                                 json={"manifest": MANIFEST, "deposit": 1_000_000}).json()
    served = lease_on(server, tenant, agent, service)
    up = report(server, agent, served, state="running", endpoint="127.0.0.1:31000")
    assert up.json()["endpoint"] == "127.0.0.1:31000"
    assert show(server, tenant, service)["leases"][0]["endpoint"] == "127.0.0.1:31000"
    not_a_job = report(server, agent, served, state="finished", exit_code=0)
    assert not_a_job.status_code == 409 and not_a_job.json()["error"]["code"] == "not_a_job"
    no_result = server.client.get(f"/v1/deployments/{service['id']}/result", headers=tenant["headers"])
    assert no_result.status_code == 409 and no_result.json()["error"]["code"] == "not_a_job"
    stranger = register(server, "tenant", "s")
    assert server.client.get(f"/v1/deployments/{job['id']}/result",
                             headers=stranger["headers"]).status_code == 404
