"""The provider agent (``kova-live provider``): bids on open orders and runs leases in Docker.

Every poll (``--poll-seconds``, 15 s by default) the agent:

1. sends a heartbeat (its capacity, attributes, pricing strategy, and the addresses and port
   range its leases are reached at);
2. reads every lease it holds that is not closed (``GET /v1/leases?state=live``, page after
   page, each with what its container runs) and its containers (found by the label
   ``kova.provider``), ships their new output (``POST /v1/leases/{id}/logs``), and reconciles
   the two:

   - a live lease without a container gets one (:mod:`kova_live.runner`);
   - a container whose lease is not among the live ones is removed only when the orchestrator,
     asked about that very lease (``GET /v1/leases?ids=...``), reports it closed; its volumes
     are kept (``gc-volumes``, ``--volume-retention``). A container the orchestrator says
     nothing of is left alone, with a warning: when an answer is missing, partial or the
     orchestrator cannot be reached, nothing is removed;
   - a paused lease (``insufficient_funds``) pauses its container and a resumed one unpauses
     it; a job's container that exited is reported ``finished`` with its exit code and the end
     of its output; a deployment's container that exited, a lease whose container cannot be
     made (an image not on this machine, say), or one that wrote more than its writable-layer
     allowance outside its volumes, is reported ``failed``;
   - a container made by an earlier agent (root, Docker's default bridge, no limits) is made
     again with this agent's settings, its volumes' data copied into sized volumes;
   - deployment networks no live lease needs any more are removed;
3. bids on the open orders its free capacity fits (capacity less what its leases hold and its
   open bids reserve), at the price its ``kova_core`` pricing strategy gives, if that is within
   the order's max price, and withdraws bids its free capacity can no longer honour.

After a restart it adopts the containers whose leases are still live, by their labels: the
same reconciliation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import numpy as np

from kova_core import (
    PollOrder,
    PricingStrategy,
    ProviderView,
    Resources,
    plan_poll,
    spec_from_record,
)

from .runner import GENERATION, Docker, RunnerError
from .volumes import LEASE_LABEL, VolumeError, Volumes, volume_name

__all__ = ["Agent", "AgentError", "Busy", "gc_volumes", "lookup", "machine_capacity"]

log = logging.getLogger("kova_live.agent")

OUTPUT_TAIL = 64 * 1024  # characters of a job's output sent as its result
LOG_BATCH = 500  # lines per POST /v1/leases/{id}/logs
LOOKUP_BATCH = 100  # lease ids per GET /v1/leases?ids=
MAX_PAGES = 100_000  # of GET /v1/leases: a server that never ends its listing is an error


class AgentError(Exception):
    """Something the operator must fix (a bad token, no orchestrator, no Docker daemon)."""


class Busy(Exception):
    """The orchestrator asks to be called again later (429: this provider is over its rate
    limit; 503: busy): the poll stops there, the next one tries again."""


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
    volume_retention: float | None = None  # seconds a closed lease's volumes are kept (None: ever)
    heartbeat_every: float = 15.0  # seconds: the poll interval, kept during a long poll too
    bids: dict[int, tuple[int, Resources]] = field(default_factory=dict)  # order -> bid, needs
    refused: dict[int, int] = field(default_factory=dict)  # order -> height it was refused
    cursors: dict[str, str] = field(default_factory=dict)  # lease id -> last log timestamp
    reported: dict[int, str] = field(default_factory=dict)  # lease id -> what we told
    cannot_run: set[int] = field(default_factory=set)  # deployments whose image is missing
    unknown: set[int] = field(default_factory=set)  # containers' leases nobody reports (warned)
    block_seconds: float | None = None  # the network's, read when first needed
    auditors: frozenset[str] = frozenset()  # who audited this provider, as heartbeats report
    last_heartbeat: float = -math.inf  # time.monotonic() of the last one

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            try:
                kept = json.loads(self.state_file.read_text())
                cursors = dict(kept.get("cursors", {}))
                bids = {
                    int(order): (int(bid), Resources(*needs))
                    for order, (bid, needs) in kept.get("bids", {}).items()
                }
            except (ValueError, TypeError, AttributeError, OSError) as exc:
                # written by an agent before this one whose writes were not atomic, or damaged:
                # its bids show up as refused duplicates and its log cursors start over
                log.warning("%s cannot be read (%s): starting without it", self.state_file, exc)
            else:
                self.cursors, self.bids = cursors, bids

    # ------------------------------------------------------------------ one poll

    def tick(self) -> None:
        height = self.heartbeat()
        live = self.live_leases()
        containers = self.docker.containers()
        self.ship_logs(containers)
        self.reconcile(live, containers)
        self.bid(live, height)
        if self.volume_retention is not None:
            for name in self.gc_volumes(self.volume_retention):
                log.info("volume %s: its lease closed over %g s ago: removed", name,
                         self.volume_retention)  # fmt: skip

    def heartbeat(self) -> int:
        c, policy = self.capacity, self.docker.policy
        body = {
            "capacity": {"cpu": c.cpu, "memory": c.memory, "storage": c.storage, "gpu": c.gpu},
            "attributes": self.attributes, "pricing": self.pricing,
            "endpoints": {"addresses": list(policy.public_addresses),
                          "ports": list(policy.port_range)},
        }  # fmt: skip
        self.last_heartbeat = time.monotonic()
        reply = self.http.post("/v1/providers/heartbeat", json=body)
        if reply.status_code == 400:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                error = reply.json()["error"]
                if str(error.get("field") or "").startswith("endpoints"):
                    raise AgentError(f"--public-address/--port-range: the orchestrator refuses "
                                     f"them: {error['message']}")  # fmt: skip
        _check(reply)
        answer = reply.json()
        self.auditors = frozenset(answer.get("auditors", ()))
        return int(answer["height"])

    # ------------------------------------------------------------------ leases

    def live_leases(self) -> list[dict[str, Any]]:
        """Every lease of this provider that is not closed, however many pages that takes.
        Raises :class:`AgentError` or httpx's errors: a poll with a partial answer stops."""
        found: dict[int, dict[str, Any]] = {}
        path = "/v1/leases?state=live"
        for _ in range(MAX_PAGES):
            page = self._get(path)
            for lease in page["leases"]:
                found[lease["id"]] = lease
            before = page.get("next_before")
            if before is None:
                return list(found.values())
            path = f"/v1/leases?state=live&before={int(before)}"
        raise AgentError(f"GET /v1/leases did not end after {MAX_PAGES} pages")

    def lookup(self, lease_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What the orchestrator reports of these leases (:func:`lookup`)."""
        return lookup(self.http, lease_ids)

    # ------------------------------------------------------------------ containers

    def reconcile(self, live: list[dict[str, Any]], containers: dict[int, Any]) -> None:
        by_id = {lease["id"]: lease for lease in live}
        others = [lease_id for lease_id in containers if lease_id not in by_id]
        reported = self.lookup(others) if others else {}
        for lease_id in others:
            lease = reported.get(lease_id)
            if lease is not None and lease["state"] == "closed":
                log.info("lease %s is closed (%s): removing its container", lease_id,
                         lease["close_reason"])  # fmt: skip
                self.docker.remove(containers[lease_id])
                self.cursors.pop(str(lease_id), None)
            elif lease is None and lease_id not in self.unknown:
                self.unknown.add(lease_id)
                log.warning("the orchestrator does not report lease %s of container %s: "
                            "leaving the container as it is", lease_id,
                            containers[lease_id].name)  # fmt: skip
        sizes = {} if self.docker.layer_limit_by_driver else self.docker.layer_sizes()
        for lease in live:
            # a poll that starts many containers takes long: the orchestrator hears from this
            # machine as often as ever, or it would take it for lost
            if time.monotonic() - self.last_heartbeat >= self.heartbeat_every:
                self.heartbeat()
            container = containers.get(lease["id"])
            if container is not None and container.labels.get("kova.agent") != GENERATION:
                log.info("lease %s: its container was made by an earlier agent: making it "
                         "again with this agent's settings, its data kept", lease["id"])
                self.docker.remove(container)
                container = None
            if container is None:
                if lease["status"] in ("finished", "failed"):
                    continue  # reported; the orchestrator closes it
                self._start(lease)
                continue
            if sizes.get(lease["id"], 0) > self.docker.policy.writable_layer:
                self._overfull(lease, container, sizes[lease["id"]])
                continue
            self._follow(lease, container)
        self.docker.prune_networks(lease["deployment_id"] for lease in live)
        self._save()

    def _start(self, lease: dict[str, Any]) -> None:
        try:
            self._carry_over(lease)
            files = {f["sha256"]: self._file(f["sha256"]) for f in lease["container"]["files"]}
            container = self.docker.start(lease, files)
        except docker.errors.ImageNotFound:
            image = lease["container"]["image"]
            self.cannot_run.add(lease["deployment_id"])  # no more bids on its orders
            self._report(lease, {"state": "failed", "message": f"image {image!r} is not on "
                                 "this provider's machine (no registry is reachable)"})  # fmt: skip
            return
        except (RunnerError, VolumeError) as exc:
            self._report(lease, {"state": "failed", "message": str(exc)[:2000]})
            return
        except (docker.errors.APIError, httpx.HTTPError, KeyError) as exc:
            self._report(lease, {"state": "failed", "message": f"cannot start: {exc}"[:2000]})
            return
        log.info("lease %s: started container %s", lease["id"], container.short_id)
        if lease["state"] == "insufficient_funds":
            container.pause()
        self._running(lease, container)

    def _carry_over(self, lease: dict[str, Any]) -> None:
        """Carry an earlier agent's volumes of the lease over into its sized volumes (see
        :meth:`Volumes.carry_over`). Raises :class:`VolumeError`."""
        for index, volume in enumerate(lease["container"]["storage"]):
            if volume.get("class") == "ram":
                continue
            old = self.docker.volumes.carry_over(lease["id"], index, volume)
            if old is not None:
                log.info("lease %s: the data of %s carried over into %s", lease["id"], old,
                         volume_name(lease["id"], index))  # fmt: skip

    def _overfull(self, lease: dict[str, Any], container: Any, size: int) -> None:
        """The container wrote more than its allowance outside its volumes: stop it, and fail
        its lease with that reason."""
        allowed = self.docker.policy.writable_layer
        log.info("lease %s: its container holds %d bytes outside its volumes (%d allowed): "
                 "stopping it", lease["id"], size, allowed)  # fmt: skip
        container.reload()
        if container.status in ("running", "paused"):
            if container.status == "paused":
                container.unpause()
            container.kill()
        self._report(lease, {"state": "failed", "message": (
            f"the container wrote {size / 2**20:.1f} MiB outside its storage volumes, over the "
            f"{allowed / 2**20:.1f} MiB of writable layer this provider allows (write to a "
            "storage volume instead)")})  # fmt: skip

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

    def gc_volumes(self, closed_for: float) -> list[str]:
        """Remove volumes of leases closed ``closed_for`` seconds ago (:func:`gc_volumes`)."""
        return gc_volumes(self.http, self.docker.volumes, closed_for)

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
        reply = self._command("POST", f"/v1/leases/{lease['id']}/status", body)
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
            # whole or not at all: an agent killed while writing leaves the last whole state
            partial = self.state_file.with_name(self.state_file.name + ".partial")
            partial.write_text(json.dumps({"cursors": self.cursors, "bids": bids}))
            os.replace(partial, self.state_file)

    # ------------------------------------------------------------------ bids

    def bid(self, live: list[dict[str, Any]], height: int) -> None:
        """Withdraw the bids this machine can no longer honour and bid on the open orders that
        fit, as the core's provider poll (``plan_poll``, the simulator's too) decides."""
        orders, after = [], None
        for _ in range(MAX_PAGES):  # every tenant's first order, then every tenant's second...
            page = self._get("/v1/orders?state=open" + (f"&after={after}" if after else ""))
            orders += page["orders"]
            after = page.get("next")
            if after is None:
                break
        complete = after is None
        open_ids = {o["id"] for o in orders}
        for order_id in [o for o in self.bids if o not in open_ids and complete]:
            del self.bids[order_id]  # won, lost or closed (unless on a page not read)
        seen = [
            PollOrder(o["id"], spec_from_record(o["spec"]), o["created_at"], o.get("best_price"))
            for o in orders
            if o["id"] not in self.bids
            and height - self.refused.get(o["id"], -(10**9)) >= 60
            and o["deployment_id"] not in self.cannot_run
        ]
        view = ProviderView(
            capacity=self.capacity,
            used=sum((_resources(lease["resources"]) for lease in live), Resources()),
            bids=self.bids,
            attributes=self.attributes,
            auditors=self.auditors,
        )
        plan = plan_poll(view, seen, self.strategy, self.rng, height)
        by_bid = {bid_id: order_id for order_id, (bid_id, _) in self.bids.items()}
        for bid_id in plan.withdraw:
            order_id = by_bid[bid_id]
            log.info("withdrawing bid %s: this machine can no longer serve order %s", bid_id,
                     order_id)  # fmt: skip
            self._command("DELETE", f"/v1/bids/{bid_id}")
            del self.bids[order_id]
        needs_of = {order.id: order.spec.resources for order in seen}
        for order_id, price in plan.bids:
            reply = self._command("POST", f"/v1/orders/{order_id}/bids", {"price": price})
            if reply.status_code == 201:
                self.bids[order_id] = (int(reply.json()["id"]), needs_of[order_id])
                log.info("bid %s per block on order %s", price, order_id)
            else:  # placement, a bid made before a restart, or gone: not again for a minute
                self.refused[order_id] = height
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

    def _command(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send a market command under an Idempotency-Key, again with the same key if the
        answer is lost on the way (the orchestrator applies it once either way). Raises httpx's
        errors after three tries."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(3):
            try:
                return self.http.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def lookup(http: httpx.Client, lease_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """What the orchestrator reports of these leases of the caller's, whatever their state (a
    lease it does not report is absent). Raises :class:`AgentError` or httpx's errors."""
    wanted = sorted(set(lease_ids))
    found: dict[int, dict[str, Any]] = {}
    for i in range(0, len(wanted), LOOKUP_BATCH):
        ids = ",".join(str(x) for x in wanted[i : i + LOOKUP_BATCH])
        reply = http.get(f"/v1/leases?ids={ids}")
        _check(reply)
        for lease in reply.json()["leases"]:
            found[lease["id"]] = lease
    return found


def gc_volumes(http: httpx.Client, volumes: Volumes, closed_for: float) -> list[str]:
    """Remove the provider's lease volumes whose lease the orchestrator reports closed for at
    least ``closed_for`` seconds (and no container uses); their names. A volume whose lease it
    does not report, or reports live, stays. Raises like :func:`lookup`."""
    by_lease: dict[int, list[Any]] = {}
    for volume in volumes.mine():
        raw = (volume.attrs.get("Labels") or {}).get(LEASE_LABEL, "")
        if raw.isdigit():
            by_lease.setdefault(int(raw), []).append(volume)
    if not by_lease:
        return []
    reply = http.get("/v1/status")
    _check(reply)
    status = reply.json()
    height, block_seconds = int(status["height"]), float(status["block_seconds"])
    retention = math.ceil(closed_for / block_seconds)
    reported = lookup(http, by_lease)
    gone = []
    for lease_id, found in sorted(by_lease.items()):
        lease = reported.get(lease_id)
        if lease is None or lease["state"] != "closed":
            continue
        if height - int(lease["closed_at"]) < retention:
            continue
        for volume in found:
            try:
                volumes.remove(volume)
            except (docker.errors.APIError, VolumeError) as exc:
                log.warning("volume %s cannot be removed yet: %s", volume.name, exc)
                continue
            gone.append(volume.name)
    return gone


def _check(reply: httpx.Response) -> None:
    if reply.status_code in (429, 503):
        raise Busy(f"{reply.request.method} {reply.request.url.path}: {reply.status_code}, "
                   f"retry after {reply.headers.get('Retry-After', '?')} s")  # fmt: skip
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
