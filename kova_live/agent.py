"""The provider agent (``kova-live provider``): bids on open orders and runs leases in Docker.

Every poll (``--poll-seconds``, 15 s by default) the agent:

1. sends a heartbeat (its capacity, attributes and pricing strategy);
2. reads its leases (``GET /v1/leases``, each with what its container runs) and its containers
   (found by the label ``kova.provider``), ships their new output (``POST /v1/leases/{id}/
   logs``), and reconciles the two: a live lease without a container gets one; a container
   whose lease is closed or unknown is stopped and removed (its volume is kept until
   ``kova-live provider gc-volumes``); a paused lease (``insufficient_funds``) pauses its
   container and a resumed one unpauses it; a job's container that exited is reported
   ``finished`` with its exit code and the end of its output; a deployment's container that
   exited, or a lease whose container cannot be made (an image not on this machine, say), is
   reported ``failed``;
3. bids on the open orders its free capacity fits (capacity less what its leases hold and its
   open bids reserve), at the price its ``kova_core`` pricing strategy gives, if that is within
   the order's max price, and withdraws bids its free capacity can no longer honour.

After a restart it adopts the containers whose leases are still live, by their labels: the
same reconciliation. What a lease's container is given: see :class:`Docker`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import httpx
import numpy as np

from kova_core import PricingContext, PricingStrategy, Resources

__all__ = ["Agent", "AgentError", "Docker", "machine_capacity"]

log = logging.getLogger("kova_live.agent")

LABEL = "kova.lease"
OUTPUT_TAIL = 64 * 1024  # characters of a job's output sent as its result
LOG_BATCH = 500  # lines per POST /v1/leases/{id}/logs


class AgentError(Exception):
    """Something the operator must fix (a bad token, no orchestrator, no Docker daemon)."""


def machine_capacity(client: docker.DockerClient) -> Resources:
    """What the Docker daemon's machine has: its CPUs, its memory, and the free space of the
    disk holding Docker's data; no GPUs."""
    import shutil

    info = client.info()
    root = info.get("DockerRootDir") or "/"
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = shutil.disk_usage("/").free
    return Resources(
        cpu=int(info["NCPU"]) * 1000, memory=int(info["MemTotal"]), storage=int(free), gpu=0
    )


class Docker:
    """The leases' containers, through the Docker SDK. A lease's container is given:

    - the image its manifest names, which must exist on this machine (no registry is pulled);
      the manifest's ``command`` as the entrypoint and ``args`` as the command, and its env;
    - a CPU limit of the lease's cores (``nano_cpus``, fractions included) and a memory limit
      (``mem_limit``, swap the same, so no more);
    - one named volume per storage volume of the lease (``kova-lease-<id>-<volume>``), mounted
      at the manifest's mount path (``/data`` for a volume without one);
    - each exposed port published on ``host_ip`` on a port Docker picks; the endpoint reported
      is the first one's;
    - the uploaded files its manifest places, copied in (read by the container's user);
    - labels ``kova.lease``, ``kova.deployment``, ``kova.order``, ``kova.provider``,
      ``kova.kind``;
    - the default bridge network; not privileged, no new privileges, no host network and no
      host mounts; no restart policy (a container that stops is reported).
    """

    def __init__(self, client: docker.DockerClient, provider_id: int, host_ip: str) -> None:
        self.client, self.provider_id, self.host_ip = client, provider_id, host_ip

    def containers(self) -> dict[int, Any]:
        """This provider's lease containers, running or not, by lease id."""
        found = self.client.containers.list(
            all=True, filters={"label": f"kova.provider={self.provider_id}"}
        )
        return {int(c.labels[LABEL]): c for c in found}

    def storage_size_enforced(self) -> bool:
        """Whether the storage driver can limit a container's disk (overlay2 on xfs with project
        quotas can; most cannot, and then a lease's storage is not limited)."""
        try:
            probe = self.client.containers.create(
                "kova/job:1", storage_opt={"size": "1G"}, labels={"kova.probe": "1"}
            )
        except docker.errors.APIError:
            return False
        except docker.errors.ImageNotFound:
            return False
        probe.remove(force=True)
        return True

    def start(self, lease: dict[str, Any], files: dict[str, bytes]) -> Any:
        """Create and start the lease's container (``files``: content by SHA-256)."""
        spec = lease["container"]
        resources = lease["resources"]
        volumes = {}
        for volume in spec["storage"]:
            name = f"kova-lease-{lease['id']}-{volume['name']}"
            self.client.volumes.create(
                name, labels={LABEL: str(lease["id"]), "kova.provider": str(self.provider_id)}
            )
            mode = "ro" if volume["read_only"] else "rw"
            volumes[name] = {"bind": volume["mount"] or "/data", "mode": mode}
        ports = {f"{e['port']}/{e['proto'].lower()}": (self.host_ip, None) for e in spec["expose"]}
        container = self.client.containers.create(
            spec["image"],
            entrypoint=spec["command"] or None,
            command=spec["args"] or None,
            environment=spec["env"],
            name=f"kova-lease-{lease['id']}",
            labels={
                LABEL: str(lease["id"]), "kova.deployment": str(lease["deployment_id"]),
                "kova.order": str(lease["order_id"]), "kova.provider": str(self.provider_id),
                "kova.kind": lease["kind"],
            },
            nano_cpus=resources["cpu"] * 1_000_000,
            mem_limit=resources["memory"],
            memswap_limit=resources["memory"],
            volumes=volumes,
            ports=ports,
            privileged=False,
            security_opt=["no-new-privileges"],
            detach=True,
        )  # fmt: skip
        for placed in spec["files"]:
            path = PurePosixPath(placed["path"])
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                content = files[placed["sha256"]]
                entry = tarfile.TarInfo(path.name)
                entry.size, entry.mode = len(content), 0o444
                tar.addfile(entry, io.BytesIO(content))
            container.put_archive(str(path.parent), archive.getvalue())
        container.start()
        return container

    def endpoint(self, container: Any) -> str | None:
        """``host:port`` of the container's first published port, if any."""
        container.reload()
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or ():
                host = binding["HostIp"] or self.host_ip
                host = f"[{host}]" if ":" in host else host  # an IPv6 address
                return f"{host}:{binding['HostPort']}"
        return None

    def remove(self, container: Any) -> None:
        """Stop and remove a container; its volumes stay."""
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def gc_volumes(self, live: Iterable[int]) -> list[str]:
        """Remove this provider's lease volumes whose lease is not in ``live``; their names."""
        keep = {str(i) for i in live}
        gone = []
        for volume in self.client.volumes.list(
            filters={"label": f"kova.provider={self.provider_id}"}
        ):
            if volume.attrs["Labels"].get(LABEL) not in keep:
                volume.remove(force=True)
                gone.append(volume.name)
        return gone


@dataclass
class Agent:
    """One provider machine's agent; :meth:`tick` is one poll (see the module's docs)."""

    http: httpx.Client  # base_url is the orchestrator, headers carry the token
    docker: Docker
    capacity: Resources
    strategy: PricingStrategy
    pricing: dict[str, Any]  # {"strategy": name, "params": {...}}, as the heartbeat sends it
    attributes: dict[str, str] = field(default_factory=dict)
    state_file: Path | None = None  # where open bids and log cursors survive a restart
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng())
    bids: dict[int, tuple[int, Resources]] = field(default_factory=dict)  # order -> bid, needs
    refused: dict[int, int] = field(default_factory=dict)  # order -> height it was refused
    cursors: dict[str, str] = field(default_factory=dict)  # lease id -> last log timestamp
    reported: dict[int, str] = field(default_factory=dict)  # lease id -> what we told
    cannot_run: set[int] = field(default_factory=set)  # deployments whose image is missing
    block_seconds: float | None = None  # the network's, read when first needed

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            kept = json.loads(self.state_file.read_text())
            self.cursors = kept.get("cursors", {})
            self.bids = {
                int(order): (int(bid), Resources(*needs))
                for order, (bid, needs) in kept.get("bids", {}).items()
            }

    # ------------------------------------------------------------------ one poll

    def tick(self) -> None:
        height = self.heartbeat()
        leases = self._get("/v1/leases")["leases"]
        live = [lease for lease in leases if lease["state"] != "closed"]
        containers = self.docker.containers()
        self.ship_logs(containers)
        self.reconcile(live, containers)
        self.bid(live, height)

    def heartbeat(self) -> int:
        c = self.capacity
        body = {
            "capacity": {"cpu": c.cpu, "memory": c.memory, "storage": c.storage, "gpu": c.gpu},
            "attributes": self.attributes, "pricing": self.pricing,
        }  # fmt: skip
        return int(self._post("/v1/providers/heartbeat", body)["height"])

    # ------------------------------------------------------------------ containers

    def reconcile(self, live: list[dict[str, Any]], containers: dict[int, Any]) -> None:
        by_id = {lease["id"]: lease for lease in live}
        for lease_id, container in containers.items():
            if lease_id not in by_id:  # closed, or never ours: nothing runs without a lease
                log.info("lease %s is over: removing its container", lease_id)
                self.docker.remove(container)
                self.cursors.pop(str(lease_id), None)
        for lease in live:
            container = containers.get(lease["id"])
            if container is None:
                if lease["status"] in ("finished", "failed"):
                    continue  # reported; the orchestrator closes it
                self._start(lease)
                continue
            self._follow(lease, container)
        self._save()

    def _start(self, lease: dict[str, Any]) -> None:
        try:
            files = {f["sha256"]: self._file(f["sha256"]) for f in lease["container"]["files"]}
            container = self.docker.start(lease, files)
        except docker.errors.ImageNotFound:
            image = lease["container"]["image"]
            self.cannot_run.add(lease["deployment_id"])  # no more bids on its orders
            self._report(lease, {"state": "failed", "message": f"image {image!r} is not on "
                                 "this provider's machine (no registry is reachable)"})  # fmt: skip
            return
        except (docker.errors.APIError, httpx.HTTPError, KeyError) as exc:
            self._report(lease, {"state": "failed", "message": f"cannot start: {exc}"[:2000]})
            return
        log.info("lease %s: started container %s", lease["id"], container.short_id)
        if lease["state"] == "insufficient_funds":
            container.pause()
        self._running(lease, container)

    def _running(self, lease: dict[str, Any], container: Any) -> None:
        endpoint = self.docker.endpoint(container) if lease["kind"] == "deployment" else None
        self._report(lease, {"state": "running", "endpoint": endpoint})

    def _follow(self, lease: dict[str, Any], container: Any) -> None:
        container.reload()
        status = container.status
        if status == "exited" or status == "dead":
            code = int(container.attrs["State"]["ExitCode"])
            if lease["kind"] == "job":
                output = container.logs(stdout=True, stderr=True).decode(errors="replace")
                self._report(lease, {"state": "finished", "exit_code": code,
                                     "output": output[-OUTPUT_TAIL:],
                                     "runtime_blocks": self._runtime(container)})  # fmt: skip
            else:
                message = f"the container exited with code {code}"
                self._report(lease, {"state": "failed", "message": message})
            return
        if lease["state"] == "insufficient_funds" and status == "running":
            log.info("lease %s is paused (insufficient funds): pausing its container", lease["id"])
            container.pause()
        elif lease["state"] == "active" and status == "paused":
            log.info("lease %s resumed: unpausing its container", lease["id"])
            container.unpause()
        if lease["status"] == "pending" and status in ("running", "paused"):
            self._running(lease, container)  # adopted after a restart, or not yet reported

    def _runtime(self, container: Any) -> int | None:
        """How many blocks an exited container ran (started to finished, rounded up)."""
        state = container.attrs["State"]
        started, finished = _stamp(state["StartedAt"]), _stamp(state["FinishedAt"])
        if self.block_seconds is None:
            self.block_seconds = float(self._get("/v1/status")["block_seconds"])
        seconds = _instant(finished) - _instant(started)
        return max(0, math.ceil(seconds / self.block_seconds))

    def _report(self, lease: dict[str, Any], body: dict[str, Any]) -> None:
        said = json.dumps(body, sort_keys=True)
        if self.reported.get(lease["id"]) == said:
            return
        reply = self.http.post(f"/v1/leases/{lease['id']}/status", json=body)
        if reply.status_code == 200:
            self.reported[lease["id"]] = said
        else:
            log.warning("lease %s: status %s refused: %s", lease["id"], body["state"], reply.text)

    def _file(self, sha256: str) -> bytes:
        reply = self.http.get(f"/v1/files/{sha256}")
        reply.raise_for_status()
        return reply.content

    # ------------------------------------------------------------------ logs

    def ship_logs(self, containers: dict[int, Any]) -> None:
        """Send each container's output since the last line sent, in batches."""
        for lease_id, container in containers.items():
            since = self.cursors.get(str(lease_id))
            lines: list[tuple[str, str, str]] = []  # (timestamp, stream, text)
            for stream in ("stdout", "stderr"):
                raw = container.logs(
                    stdout=stream == "stdout", stderr=stream == "stderr", timestamps=True,
                    since=_seconds(since) if since else None,
                )  # fmt: skip
                for line in raw.decode(errors="replace").splitlines():
                    docker_stamp, _, text = line.partition(" ")
                    stamp = _stamp(docker_stamp)
                    if since is None or stamp > since:
                        lines.append((stamp, stream, text[: 16 * 1024]))
            lines.sort()
            for i in range(0, len(lines), LOG_BATCH):
                batch = lines[i : i + LOG_BATCH]
                reply = self.http.post(
                    f"/v1/leases/{lease_id}/logs",
                    json={"lines": [{"stream": s, "text": t} for _, s, t in batch]},
                )
                if reply.status_code != 201 and reply.status_code != 200:
                    log.warning("lease %s: logs refused: %s", lease_id, reply.text)
                    break
                self.cursors[str(lease_id)] = batch[-1][0]

    def _save(self) -> None:
        if self.state_file is not None:
            bids = {order: [bid, list(needs)] for order, (bid, needs) in self.bids.items()}
            self.state_file.write_text(json.dumps({"cursors": self.cursors, "bids": bids}))

    # ------------------------------------------------------------------ bids

    def bid(self, live: list[dict[str, Any]], height: int) -> None:
        """Bid on the open orders that fit, and withdraw bids that no longer can be honoured."""
        orders = self._get("/v1/orders?state=open")["orders"]
        open_ids = {o["id"] for o in orders}
        for order_id in [o for o in self.bids if o not in open_ids]:  # won, lost or closed
            del self.bids[order_id]
        held = sum((_resources(lease["resources"]) for lease in live), Resources())
        room = self.capacity - held
        for order_id in sorted(self.bids, reverse=True):  # newest first
            reserved = sum((needs for _, needs in self.bids.values()), Resources())
            if reserved.fits_in(room):
                break
            bid_id, _ = self.bids.pop(order_id)
            log.info("withdrawing bid %s: this machine can no longer serve order %s", bid_id,
                     order_id)  # fmt: skip
            self.http.delete(f"/v1/bids/{bid_id}")
        free = room - sum((needs for _, needs in self.bids.values()), Resources())
        for order in orders:
            if order["id"] in self.bids or height - self.refused.get(order["id"], -10**9) < 60:
                continue
            if order["deployment_id"] in self.cannot_run:
                continue
            needs = _resources(order["resources"])
            if not needs.fits_in(free):
                continue
            context = PricingContext(
                order_id=order["id"], resources=needs, max_price=order["max_price"],
                order_created_at=order["created_at"], height=height, capacity=self.capacity,
                free=free,
            )  # fmt: skip
            price = self.strategy.price(context, self.rng)
            if price is None or price > order["max_price"] or price <= 0:
                continue
            reply = self.http.post(f"/v1/orders/{order['id']}/bids", json={"price": price})
            if reply.status_code == 201:
                self.bids[order["id"]] = (int(reply.json()["id"]), needs)
                free = free - needs
                log.info("bid %s per block on order %s", price, order["id"])
            else:  # placement, a bid made before a restart, or gone: not again for a minute
                self.refused[order["id"]] = height
        self._save()

    # ------------------------------------------------------------------ HTTP

    def _get(self, path: str) -> Any:
        reply = self.http.get(path)
        _check(reply)
        return reply.json()

    def _post(self, path: str, body: Any) -> Any:
        reply = self.http.post(path, json=body)
        _check(reply)
        return reply.json()


def _check(reply: httpx.Response) -> None:
    if reply.status_code in (401, 403):
        raise AgentError(f"the orchestrator refused this agent's token: {reply.text}")
    if reply.status_code >= 400:
        raise AgentError(f"{reply.request.method} {reply.request.url.path}: {reply.status_code}"
                         f" {reply.text}")  # fmt: skip


def _resources(value: dict[str, int]) -> Resources:
    return Resources(cpu=value["cpu"], memory=value["memory"], storage=value["storage"],
                     gpu=value["gpu"])  # fmt: skip


def _stamp(docker_stamp: str) -> str:
    """A Docker log timestamp (RFC 3339 with up to nine digits of fraction, trailing zeros
    dropped) as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnn``, which sorts as a string."""
    whole, _, fraction = docker_stamp.rstrip("Z").partition(".")
    return f"{whole[:19]}.{fraction[:9].ljust(9, '0')}"


def _instant(stamp: str) -> float:
    """A :func:`_stamp` as Unix seconds, with its fraction."""
    return _seconds(stamp) + float("0." + stamp[20:])


def _seconds(stamp: str) -> int:
    """A :func:`_stamp` as whole Unix seconds (Docker's ``since`` includes that second)."""
    from datetime import datetime

    return int(datetime.fromisoformat(stamp[:19] + "+00:00").timestamp())
