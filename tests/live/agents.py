"""What the provider agent's tests share: the manifest they deploy, an agent process, and
helpers for a tenant, an agent, leases and containers (the fixtures ``docker_client`` and
``network`` are in ``conftest.py``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import docker

from .conftest import Server, credit, register, wait_for

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


def remove_providers_things(client, providers) -> None:
    """Every container, volume (and its filesystem image) and network of these providers."""
    from kova_live.volumes import Volumes

    for provider_id in providers:
        label = {"label": f"kova.provider={provider_id}"}
        for container in client.containers.list(all=True, filters=label):
            container.remove(force=True)
        volumes = Volumes(client, provider_id, Path("/nonexistent"), sized=True)
        for volume in volumes.mine():
            volumes.remove(volume)
        for network in client.networks.list(filters=label):
            network.remove()


def tenant_with_money(server):
    """A tenant with money to spend."""
    tenant = register(server, "tenant", "t")
    credit(server.database_url, tenant["account"], 10_000_000)
    return tenant


def fixed_agent(network, name):
    """A provider and its agent, which asks ``PRICE`` per block."""
    return network["agent"](name, "--strategy", "fixed", "--strategy-param", f"price_per_block={PRICE}")


def lease_of(server, provider, lease_id):
    reply = server.client.get(f"/v1/leases?ids={lease_id}", headers=provider["headers"])
    (lease,) = reply.json()["leases"]
    return lease


def container_of(client, lease_id):
    """The lease's container, if any (looked at again if it went while being listed: the
    agent removes containers as the test watches)."""
    for _ in range(10):
        try:
            found = client.containers.list(all=True, filters={"label": f"kova.lease={lease_id}"})
        except docker.errors.NotFound:
            continue
        return found[0] if found else None
    raise AssertionError(f"lease {lease_id}'s container kept vanishing while listed")


def accept_first_bid(server, tenant, dep):
    bids = wait_for(lambda: server.client.get(f"/v1/deployments/{dep['id']}/bids",
                                              headers=tenant["headers"]).json()["bids"])  # fmt: skip
    reply = server.client.post(f"/v1/bids/{bids[0]['id']}/accept", headers=tenant["headers"])
    assert reply.status_code == 201, reply.text
    return reply.json()


def running_deployments(server, tenant, provider, count):
    """``count`` deployments of ``HTTPD``, each with the first bid on it accepted and its lease
    running: the deployments and their leases."""
    deps = [server.client.post("/v1/deployments", headers=tenant["headers"],
                               json={"manifest": HTTPD, "deposit": 1_000_000}).json()
            for _ in range(count)]  # fmt: skip
    leases = [accept_first_bid(server, tenant, dep) for dep in deps]
    for lease in leases:
        wait_for(lambda lease=lease: lease_of(server, provider, lease["id"])["status"] == "running")
    return deps, leases
