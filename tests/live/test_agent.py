"""The provider agent against a real orchestrator and a real Docker daemon (PostgreSQL).

Each test starts ``kova-live serve`` with short blocks and one or more ``kova-live provider``
processes on loopback, and runs leases in the local images ``scripts/images`` builds. Without a
Docker daemon the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server, credit, fresh_database, register, wait_for

docker = pytest.importorskip("docker")

HTTPD = """
version: "2.0"
services:
  web:
    image: kova/httpd:1
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu: {units: 0.5}
        memory: {size: 128Mi}
        storage: {size: 512Mi}
  placement:
    dc:
      pricing:
        web: {denom: ukova, amount: 5000}
deployment:
  web:
    dc:
      profile: web
      count: 1
"""
PRICE = 1_000  # what the agents' fixed strategy asks per block


@pytest.fixture(scope="module")
def docker_client() -> Iterator[object]:
    try:
        client = docker.from_env()
        client.ping()
        client.images.get("kova/httpd:1")
        client.images.get("kova/job:1")
    except Exception as exc:  # no daemon, or no images: scripts/services makes both
        message = f"no Docker daemon with the local images (run scripts/services): {exc}"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(message)
    yield client
    client.close()


class AgentProcess:
    """A ``kova-live provider`` process."""

    def __init__(self, server: Server, token: str, folder: Path, *extra: str) -> None:
        self.args = [
            sys.executable, "-m", "kova_live", "provider", "--orchestrator", server.url,
            "--token", token, "--poll-seconds", "0.3", "--data-dir", str(folder),
            "--capacity", "cpu=2,memory=1Gi,storage=4Gi", "--seed", "1", *extra,
        ]  # fmt: skip
        self.log = folder / "agent.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        self._log_file = self.log.open("a")
        self.process = subprocess.Popen(self.args, stdout=self._log_file, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def network(docker_client, tmp_path) -> Iterator[dict]:
    """An orchestrator on PostgreSQL with 0.05 s blocks; agents are started by the test and
    stopped here, and every container and volume of the test's providers removed."""
    agents: list[AgentProcess] = []
    with fresh_database("postgresql", tmp_path) as url:
        server = Server(url, tmp_path / "server", 0.05)
        providers: list[int] = []

        def agent(name: str, *extra: str) -> tuple[dict, AgentProcess]:
            account = register(server, "provider", name)
            providers.append(account["id"])
            started = AgentProcess(server, account["token"], tmp_path / name, *extra)
            agents.append(started)
            return account, started

        try:
            yield {"server": server, "agent": agent, "docker": docker_client}
        finally:
            for started in agents:
                started.stop()
            server.stop()
            for provider_id in providers:
                label = {"label": f"kova.provider={provider_id}"}
                for container in docker_client.containers.list(all=True, filters=label):
                    container.remove(force=True)
                for volume in docker_client.volumes.list(filters=label):
                    volume.remove(force=True)


def _lease(server, provider, lease_id):
    leases = server.client.get("/v1/leases", headers=provider["headers"]).json()["leases"]
    return next(lease for lease in leases if lease["id"] == lease_id)


def _container(client, lease_id):
    found = client.containers.list(all=True, filters={"label": f"kova.lease={lease_id}"})
    return found[0] if found else None


def test_a_deployment_runs_in_a_container_that_follows_its_lease(network):
    server, client = network["server"], network["docker"]
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    provider, _ = network["agent"]("p", "--strategy", "fixed",
                                   "--strategy-param", f"price_per_block={PRICE}")  # fmt: skip
    # about a round and a half of blocks: the second round finds the escrow short
    dep = server.client.post("/v1/deployments", headers=tenant["headers"],
                             json={"manifest": HTTPD, "deposit": 90 * PRICE}).json()  # fmt: skip
    bids = wait_for(lambda: server.client.get(f"/v1/deployments/{dep['id']}/bids",
                                              headers=tenant["headers"]).json()["bids"])  # fmt: skip
    assert bids[0]["provider_id"] == provider["id"] and bids[0]["price"] == PRICE
    lease = server.client.post(f"/v1/bids/{bids[0]['id']}/accept", headers=tenant["headers"]).json()
    running = wait_for(lambda: (x := _lease(server, provider, lease["id"]))["status"] == "running" and x)
    container = _container(client, lease["id"])
    assert container.labels["kova.deployment"] == str(dep["id"])
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 128 * 2**20
    assert not host["Privileged"] and host["NetworkMode"] == "default"
    assert [m["Type"] for m in container.attrs["Mounts"]] == ["volume"]
    # the limits as the container's own cgroup sees them (v1 or v2)
    seen = container.exec_run(["sh", "-c", "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
                               "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
                               "$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"]).output.split()  # fmt: skip
    assert int(seen[0]) / int(seen[1]) == 0.5
    memory = container.exec_run(["sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                                 "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"]).output  # fmt: skip
    assert int(memory) == 128 * 2**20
    assert httpx.get(f"http://{running['endpoint']}/", timeout=5).text.strip() == "kova"
    # the escrow runs short: the lease pauses, and so does its container
    wait_for(lambda: _lease(server, provider, lease["id"])["state"] == "insufficient_funds", 30)
    wait_for(lambda: (_container(client, lease["id"]).reload() or True)
             and _container(client, lease["id"]).status == "paused")  # fmt: skip
    server.client.post(f"/v1/deployments/{dep['id']}/deposit", headers=tenant["headers"],
                       json={"amount": 1_000_000})  # fmt: skip
    wait_for(lambda: _container(client, lease["id"]).status == "running")
    assert httpx.get(f"http://{running['endpoint']}/", timeout=5).text.strip() == "kova"
    server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
    wait_for(lambda: _container(client, lease["id"]) is None)
    volumes = client.volumes.list(filters={"label": f"kova.lease={lease['id']}"})
    assert len(volumes) == 1  # kept until the operator runs gc-volumes
