"""Leases' containers on a provider's machine, through the Docker SDK: what each is given.

A lease's container gets:

- **what the manifest runs**: its image, which must exist on this machine (no registry is
  pulled); the manifest's ``command`` as the entrypoint and ``args`` as the command; its env;
  the uploaded files it places, copied in before it starts (``put_archive``, read-only mode
  bits; no host mount);
- **the lease's resources**: a CPU limit of the lease's cores (``nano_cpus``, fractions
  included), a memory limit with swap the same (so no swap), each storage volume a volume of
  exactly its size (:mod:`kova_live.volumes`; ``class: ram`` volumes a ``tmpfs`` of their size,
  counted in the memory limit), mounted at the manifest's path (``/data`` for one without);
- **least privilege** (:class:`Policy`): every capability dropped, and only
  :data:`CAPABILITIES` added back; ``no-new-privileges``; a process limit (``pids_limit``);
  json-file logs rotated at a size cap; a private IPC namespace; the root filesystem read-only,
  with a ``tmpfs`` at ``/tmp``, when the manifest asks (``readOnlyRootFilesystem: true``); its
  writable layer limited (:meth:`Docker.layer_sizes`); not privileged, no host network, no
  host mounts, no restart policy (a crash is reported);
- **a network of its deployment's own** (:meth:`Docker.network`): a Docker bridge for the
  deployment's containers on this provider, on a subnet from the operator's pool, where each
  container answers to its service's name; nothing else is on it. Host rules refuse traffic
  from it to the host and to private ranges (:mod:`kova_live.firewall`);
- its exposed ports **published on the provider's own address**, on ports Docker picks within
  the provider's registered range; the first is the endpoint reported;
- labels ``kova.lease``, ``kova.deployment``, ``kova.order``, ``kova.provider``, ``kova.kind``
  and ``kova.agent`` (the generation of these settings: a container of an earlier agent is
  made again on the agent's first start, its volumes' data kept).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool, LogConfig, Mount

from .firewall import BRIDGE_PREFIX
from .volumes import LEASE_LABEL, Volumes

__all__ = ["CAPABILITIES", "GENERATION", "Docker", "Policy", "RunnerError"]

log = logging.getLogger("kova_live.agent")

GENERATION = "2"
"""The ``kova.agent`` label of containers made with this module's settings. Containers without
it (root, Docker's default bridge, no limits) were made by an earlier agent."""

CAPABILITIES = (
    "CHOWN",  # entrypoints that chown their data folders (databases do)
    "DAC_OVERRIDE",  # root in the container reading and writing files of other users
    "FOWNER",  # chmod and utime on files the process does not own (entrypoints fixing modes)
    "FSETID",  # keep set-user/group-ID bits when such a file is changed
    "SETGID",  # servers that start as root and drop to a user of their own
    "SETUID",  # (nginx, PostgreSQL, su-exec and gosu in entrypoints)
    "NET_BIND_SERVICE",  # listen on ports below 1024, as web servers do
    "KILL",  # signal processes of another user in the container (a supervisor's workers)
)
"""Capabilities given back after dropping all. Docker's defaults also give MKNOD, NET_RAW (raw
sockets: forged packets on the bridge), SYS_CHROOT, SETPCAP, SETFCAP and AUDIT_WRITE; a
tenant's container does not get those."""

MiB, GiB = 2**20, 2**30


class RunnerError(Exception):
    """A lease's container cannot be made; the message says why (reported to the orchestrator)."""


@dataclass(frozen=True)
class Policy:
    """The operator's settings for every lease container (``kova-live provider`` flags)."""

    public_addresses: tuple[str, ...] = ("127.0.0.1",)  # where leases are reached
    host_ip: str = "127.0.0.1"  # where their ports are published
    port_range: tuple[int, int] = (30000, 32767)
    pids_limit: int = 512
    log_max_size: int = 10 * MiB  # bytes per log file
    log_max_files: int = 3
    writable_layer: int = GiB  # bytes a container may write outside its volumes
    network_pool: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network("10.213.0.0/16")
    )
    network_prefix: int = 27  # each deployment's subnet: 2**(32-27) - 3 = 29 containers

    def networks(self) -> int:
        """How many deployment networks the pool holds."""
        return 2 ** (self.network_prefix - self.network_pool.prefixlen)


class Docker:
    """This provider's lease containers and deployment networks (see the module's docs).

    ``layer_limit_by_driver``: whether the storage driver limits a container's writable layer
    (overlay2 on xfs with project quotas); elsewhere the agent measures it every poll."""

    def __init__(
        self, client: docker.DockerClient, provider_id: int, volumes: Volumes,
        policy: Policy | None = None,
    ) -> None:  # fmt: skip
        self.client, self.provider_id, self.volumes = client, provider_id, volumes
        self.policy = policy or Policy()
        self.layer_limit_by_driver = False

    # ------------------------------------------------------------------ containers

    def containers(self) -> dict[int, Any]:
        """This provider's lease containers, running or not, by lease id."""
        found = self.client.containers.list(
            all=True, filters={"label": f"kova.provider={self.provider_id}"}
        )
        return {int(c.labels[LEASE_LABEL]): c for c in found}

    def probe_layer_limit(self) -> bool:
        """Whether the storage driver can limit a container's writable layer (sets
        ``layer_limit_by_driver``)."""
        try:
            probe = self.client.containers.create(
                "kova/job:1", storage_opt={"size": "1G"}, labels={"kova.probe": "1"}
            )
        except (docker.errors.APIError, docker.errors.ImageNotFound):
            self.layer_limit_by_driver = False
        else:
            probe.remove(force=True)
            self.layer_limit_by_driver = True
        return self.layer_limit_by_driver

    def start(self, lease: dict[str, Any], files: dict[str, bytes]) -> Any:
        """Create and start the lease's container (``files``: content by SHA-256). Raises
        docker's errors, or :class:`RunnerError`."""
        spec, resources, policy = lease["container"], lease["resources"], self.policy
        volumes: dict[str, dict[str, str]] = {}
        mounts: list[Mount] = []
        for index, volume in enumerate(spec["storage"]):
            target = volume["mount"] or "/data"
            if volume.get("class") == "ram":  # memory, counted in the memory limit
                mounts.append(Mount(target, "", type="tmpfs", tmpfs_size=int(volume["size"])))
                continue
            name = self.volumes.ensure(lease["id"], index, volume)
            volumes[name] = {"bind": target, "mode": "ro" if volume["read_only"] else "rw"}
        low, high = policy.port_range
        ports = {f"{e['port']}/{e['proto'].lower()}": (policy.host_ip, f"{low}-{high}")
                 for e in spec["expose"]}  # fmt: skip
        network = self.network(lease["deployment_id"])
        endpoint = self.client.api.create_endpoint_config(aliases=[spec["service"]])
        read_only = bool(spec.get("read_only_root"))
        tmp = {"/tmp": f"size={resources['memory']},mode=1777,nosuid,nodev"}
        layer = {"size": str(policy.writable_layer)}
        container = self.client.containers.create(
            spec["image"],
            entrypoint=spec["command"] or None,
            command=spec["args"] or None,
            environment=spec["env"],
            name=f"kova-lease-{lease['id']}",
            hostname=spec["service"],
            labels={
                LEASE_LABEL: str(lease["id"]), "kova.deployment": str(lease["deployment_id"]),
                "kova.order": str(lease["order_id"]), "kova.provider": str(self.provider_id),
                "kova.kind": lease["kind"], "kova.agent": GENERATION,
            },
            nano_cpus=resources["cpu"] * 1_000_000,
            mem_limit=resources["memory"],
            memswap_limit=resources["memory"],
            pids_limit=policy.pids_limit,
            cap_drop=["ALL"],
            cap_add=list(CAPABILITIES),
            security_opt=["no-new-privileges"],
            privileged=False,
            ipc_mode="private",
            read_only=read_only,
            tmpfs=tmp if read_only else None,
            log_config=LogConfig(type="json-file", config={
                "max-size": str(policy.log_max_size), "max-file": str(policy.log_max_files)}),
            storage_opt=layer if self.layer_limit_by_driver else None,
            volumes=volumes,
            mounts=mounts,
            ports=ports,
            network=network,
            networking_config={network: endpoint},
            detach=True,
        )  # fmt: skip
        try:
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
        except BaseException:
            container.remove(force=True)  # half made: the next poll starts again
            raise
        return container

    def endpoint(self, container: Any) -> str | None:
        """``address:port`` of the container's first published port, at the provider's first
        public address."""
        container.reload()
        address = self.policy.public_addresses[0]
        address = f"[{address}]" if ":" in address else address  # an IPv6 address
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or ():
                return f"{address}:{binding['HostPort']}"
        return None

    def remove(self, container: Any) -> None:
        """Stop and remove a container; its volumes stay."""
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def layer_sizes(self) -> dict[int, int]:
        """Bytes each of this provider's containers holds in its writable layer, by lease id
        (Docker measures the layer: a walk of its files)."""
        found = self.client.api.containers(
            all=True, size=True, filters={"label": f"kova.provider={self.provider_id}"}
        )
        return {int(c["Labels"][LEASE_LABEL]): int(c.get("SizeRw") or 0) for c in found}

    # ------------------------------------------------------------------ networks

    def network_name(self, deployment_id: int) -> str:
        return f"kova-p{self.provider_id}-d{deployment_id}"

    def network(self, deployment_id: int) -> str:
        """The deployment's network on this provider, made if need be; its name. Raises
        :class:`RunnerError` when the pool has no free subnet."""
        name = self.network_name(deployment_id)
        with contextlib.suppress(docker.errors.NotFound):
            return str(self.client.networks.get(name).name)
        policy = self.policy
        taken: list[ipaddress.IPv4Network] = []
        bridges: set[str] = set()
        for existing in self.client.networks.list():
            for config in (existing.attrs.get("IPAM") or {}).get("Config") or ():
                with contextlib.suppress(KeyError, ValueError):
                    taken.append(ipaddress.IPv4Network(config["Subnet"]))
            options = existing.attrs.get("Options") or {}
            bridges.add(options.get("com.docker.network.bridge.name", ""))
        subnets = policy.network_pool.subnets(new_prefix=policy.network_prefix)
        for index, subnet in enumerate(subnets):
            bridge = f"{BRIDGE_PREFIX}{index}"
            if bridge in bridges or any(subnet.overlaps(t) for t in taken):
                continue
            try:
                self.client.networks.create(
                    name, driver="bridge",
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))]),
                    options={"com.docker.network.bridge.name": bridge},
                    labels={"kova.provider": str(self.provider_id),
                            "kova.deployment": str(deployment_id), "kova.network": "1"},
                )  # fmt: skip
            except docker.errors.APIError as exc:
                if "already exists" in str(exc):  # made meanwhile (by this provider)
                    return name
                continue  # the subnet or bridge taken meanwhile (another agent on this host)
            log.info("deployment %s: network %s on %s (%s)", deployment_id, name, subnet, bridge)
            return name
        raise RunnerError(
            f"no free subnet left in this provider's network pool {policy.network_pool} "
            f"(/{policy.network_prefix} each): the operator sets --network-pool"
        )

    def prune_networks(self, keep: Iterable[int]) -> list[str]:
        """Remove this provider's deployment networks but those of ``keep`` (deployment ids)
        that no container uses; their names."""
        kept = {str(d) for d in keep}
        gone = []
        for network in self.client.networks.list(
            filters={"label": [f"kova.provider={self.provider_id}", "kova.network=1"]}
        ):
            if network.attrs.get("Labels", {}).get("kova.deployment") in kept:
                continue
            try:
                network.remove()
            except docker.errors.APIError:
                continue  # a container still uses it (being removed); next poll
            gone.append(network.name)
        return gone
