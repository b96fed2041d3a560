"""``kova-live provider``: the provider agent's command line (see :mod:`kova_live.agent`)."""

from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path
from typing import NoReturn

import click
import docker
import docker.errors
import httpx
import numpy as np

from kova_core import KovaError, parse_cpu, parse_duration, parse_size, pricing_strategy

from .agent import Agent, AgentError, Busy, gc_volumes, machine_capacity
from .endpoints import parse_address
from .failover import Failover, orchestrators
from .firewall import DEFAULT_DENIED, Firewall, FirewallError, parse_networks, resolvers
from .runner import Docker, Policy
from .volumes import Volumes

__all__ = ["provider"]

log = logging.getLogger("kova_live.agent")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``k=v`` items, from repeated options or comma-separated ones."""
    found: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                _fail(f"{option}: expected key=value, got {item!r}")
            found[key.strip()] = val.strip()
    return found


def _capacity(given: dict[str, str]) -> dict[str, int]:
    """What ``--capacity`` sets (the machine's capacity for the rest)."""
    parsers = {"cpu": parse_cpu, "memory": parse_size, "storage": parse_size, "gpu": int}
    values = {}
    for key, raw in given.items():
        if key not in parsers:
            _fail(f"--capacity: unknown resource {key!r} (cpu, memory, storage, gpu)")
        try:
            values[key] = parsers[key](raw)
        except (KovaError, ValueError) as exc:
            _fail(f"--capacity {key}: {exc}")
    return values


def _param(raw: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _client(orchestrator: str, token: str) -> httpx.Client:
    """A client of the orchestrators named (``URL1,URL2,...``: a leader and standbys; see
    :mod:`kova_live.failover`)."""
    try:
        urls = orchestrators(orchestrator)
    except ValueError as exc:
        _fail(f"--orchestrator: {exc}")
    return httpx.Client(
        base_url=urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=30,
        transport=Failover(urls), follow_redirects=True,
    )  # fmt: skip


def _whoami(http: httpx.Client) -> int:
    try:
        reply = http.get("/v1/accounts/me")
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the orchestrator at {http.base_url}: {exc}")
    if reply.status_code == 401:
        _fail("the orchestrator does not know this token (--token)")
    me = reply.json()
    if me.get("role") != "provider":
        _fail(f"this token is a {me.get('role')}'s; a provider's agent needs a provider's token")
    return int(me["id"])


def _docker() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _fail(f"cannot reach the Docker daemon: {exc}")
    return client


def _address(value: str, option: str) -> str:
    """An IP address to bind to (``--host-ip``: ``0.0.0.0`` is every address)."""
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        _fail(f"{option}: {value!r} is not an IP address")


def _public(value: str) -> str:
    """An address leases are reached at, as the orchestrator will take it (no names, no
    unspecified or multicast addresses)."""
    try:
        return str(parse_address(value.strip().strip("[]")))
    except ValueError as exc:
        _fail(f"--public-address: {exc}")


def _port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    if not (low.strip().isdigit() and (not sep or high.strip().isdigit())):
        _fail(f"--port-range: expected LOW-HIGH such as 30000-32767, got {value!r}")
    first, last = int(low), int(high) if sep else int(low)
    if not 1 <= first <= last <= 65535:
        _fail(f"--port-range: {value!r} is not within 1-65535 with LOW <= HIGH")
    return first, last


def _size(value: str, option: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        _fail(f"{option}: {exc}")


def _duration(value: str, option: str) -> int:
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError as exc:
        _fail(f"{option}: {exc}")


def _routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """The host's IPv4 routes (interface, destination) but the default one (/proc/net/route)."""
    found = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        network = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if network.prefixlen:
            found.append((fields[0], network))
    return found


@click.group(invoke_without_command=True)
@click.option("--orchestrator", envvar="KOVA_ORCHESTRATOR",
              help="The orchestrator's URL, or several (URL1,URL2: a leader and standbys).")
@click.option("--token", envvar="KOVA_TOKEN", help="This provider's bearer token.")
@click.option("--capacity", multiple=True,
              help="What to offer, e.g. cpu=8,memory=32Gi,storage=500Gi [default: the machine].")
@click.option("--attributes", multiple=True, help="Placement attributes, e.g. region=eu.")
@click.option("--strategy", default="fixed", show_default=True,
              help="A registered kova_core pricing strategy.")
@click.option("--strategy-param", multiple=True,
              help="A strategy parameter k=v (money in micro-units per block).")
@click.option("--poll-seconds", default=15.0, show_default=True,
              type=click.FloatRange(0.05, 3600))
@click.option("--public-address", multiple=True, default=("127.0.0.1",), show_default=True,
              help="An IP address leases are reached at (repeat for more); the first is "
                   "reported. The orchestrator accepts only its --endpoint-networks.")
@click.option("--host-ip", default=None,
              help="Where leases' ports are published [default: the first --public-address].")
@click.option("--port-range", default="30000-32767", show_default=True,
              help="Host ports leases' exposed ports are published on.")
@click.option("--pids-limit", default=512, show_default=True, type=click.IntRange(16, 4_194_304),
              help="Processes (and threads) a lease container may have at once.")
@click.option("--log-max-size", default="10Mi", show_default=True,
              help="Size at which a container's log file is rotated.")
@click.option("--log-max-files", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Log files kept per container (the cap is this times --log-max-size).")
@click.option("--writable-layer", default="1Gi", show_default=True,
              help="What a container may write outside its volumes (beyond: the lease fails).")
@click.option("--network-pool", default="10.213.0.0/16", show_default=True,
              help="Where deployment networks' subnets come from (must not overlap the host's "
                   "routes).")
@click.option("--network-prefix", default=27, show_default=True, type=click.IntRange(16, 29),
              help="Each deployment network's prefix length (/27: 29 containers).")
@click.option("--deny-networks", default=",".join(DEFAULT_DENIED), show_default=True,
              help="Private ranges lease containers may not reach (comma-separated; none).")
@click.option("--firewall/--no-firewall", default=True, show_default=True,
              help="Set the host rules that wall lease networks off (iptables; needs root).")
@click.option("--volume-retention", default=None,
              help="Remove a closed lease's volumes this long after it closed, e.g. 7d "
                   "[default: keep until gc-volumes].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kova-agent"), show_default=True,
              help="Folder for what the agent keeps across restarts (open bids, log positions, "
                   "volume images).")
@click.option("--seed", type=int, default=None, help="Seed of the pricing strategy's draws.")
@click.pass_context
def provider(
    ctx: click.Context, orchestrator: str | None, token: str | None, capacity: tuple[str, ...],
    attributes: tuple[str, ...], strategy: str, strategy_param: tuple[str, ...],
    poll_seconds: float, public_address: tuple[str, ...], host_ip: str | None, port_range: str,
    pids_limit: int, log_max_size: str, log_max_files: int, writable_layer: str,
    network_pool: str, network_prefix: int, deny_networks: str, firewall: bool,
    volume_retention: str | None, data_dir: Path, seed: int | None,
) -> None:  # fmt: skip
    """The provider agent: bids on open orders and runs leases in Docker."""
    ctx.ensure_object(dict)
    ctx.obj.update(orchestrator=orchestrator, token=token, data_dir=data_dir)
    if ctx.invoked_subcommand is not None:
        return
    if not orchestrator or not token:
        _fail("--orchestrator and --token are required (or KOVA_ORCHESTRATOR, KOVA_TOKEN)")
    params = {k: _param(v) for k, v in _pairs(strategy_param, "--strategy-param").items()}
    try:
        pricing = pricing_strategy(strategy, **params)
    except KovaError as exc:
        _fail(f"--strategy {strategy}: {exc}")
    overrides = _capacity(_pairs(capacity, "--capacity"))
    placement = _pairs(attributes, "--attributes")
    addresses = tuple(_public(a) for a in public_address)
    try:
        pool = ipaddress.IPv4Network(network_pool, strict=True)
    except ValueError as exc:
        _fail(f"--network-pool: {exc}")
    if network_prefix <= pool.prefixlen:
        _fail(f"--network-prefix: /{network_prefix} is not inside --network-pool {pool}")
    try:
        denied = parse_networks(deny_networks)
    except ValueError as exc:
        _fail(f"--deny-networks: {exc}")
    policy = Policy(
        public_addresses=addresses,
        host_ip=_address(host_ip, "--host-ip") if host_ip else addresses[0],
        port_range=_port_range(port_range), pids_limit=pids_limit,
        log_max_size=_size(log_max_size, "--log-max-size"), log_max_files=log_max_files,
        writable_layer=_size(writable_layer, "--writable-layer"),
        network_pool=pool, network_prefix=network_prefix,
    )  # fmt: skip
    retention = None if volume_retention is None else _duration(volume_retention,
                                                                "--volume-retention")  # fmt: skip
    for interface, route in _routes():
        if route.overlaps(pool) and not interface.startswith("kova"):
            _fail(f"--network-pool: {pool} overlaps this host's route to {route} on "
                  f"{interface}; choose a pool outside the host's networks")  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    http = _client(orchestrator, token)
    provider_id = _whoami(http)
    client = _docker()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = data_dir / "volumes"
    why_not = Volumes.probe(folder)
    volumes = Volumes(client, provider_id, folder, sized=why_not is None)
    runner = Docker(client, provider_id, volumes, policy)
    walls = Firewall(denied, dns=resolvers())
    if firewall:
        try:
            walls.apply()
        except FirewallError as exc:
            _fail(f"cannot set the host rules that wall lease networks off: {exc} "
                  "(--no-firewall runs without them)")  # fmt: skip
    remounted = volumes.mount_all()
    offered = machine_capacity(client)._replace(**overrides)
    agent = Agent(
        http=http, docker=runner, capacity=offered, strategy=pricing,
        pricing={"strategy": strategy, "params": params},
        attributes=placement, state_file=data_dir / "agent.json",
        rng=np.random.default_rng(seed), volume_retention=retention,
        heartbeat_every=poll_seconds,
    )  # fmt: skip
    layer = (
        "limited by the storage driver" if runner.probe_layer_limit()
        else "measured every poll"
    )  # fmt: skip
    userns = any("userns" in o for o in client.info().get("SecurityOptions") or ())
    mib = 2**20
    lines = [
        f"provider {provider_id} offering {offered} to {orchestrator}, polling every "
        f"{poll_seconds:g} s",
        f"leases reached at {', '.join(addresses)}, ports {policy.port_range[0]}-"
        f"{policy.port_range[1]} published on {policy.host_ip}",
        volumes.describe() + ("" if why_not is None else f" ({why_not})")
        + (f"; mounted again: {len(remounted)}" if remounted else ""),
        f"writable layer: {layer}, {policy.writable_layer / mib:g} MiB allowed",
        f"networks: one per deployment, /{network_prefix} from {pool} "
        f"({policy.networks():,} networks)",
        "firewall: " + (walls.describe() if firewall else "OFF (--no-firewall): lease "
                        "containers can reach this host and its networks"),
        f"containers: capabilities dropped but 8, no-new-privileges, {pids_limit} processes, "
        f"logs rotated at {policy.log_max_size / mib:g} MiB x {log_max_files}; user "
        "namespaces " + ("on (dockerd --userns-remap)" if userns else "off (see docs/provider.md)"),
    ]  # fmt: skip
    click.echo("kova-live provider: " + "\n  ".join(lines), err=True)
    while True:
        started = time.monotonic()
        try:
            agent.tick()
        except AgentError as exc:
            _fail(str(exc))
        except (httpx.HTTPError, docker.errors.DockerException, Busy) as exc:
            log.warning("this poll failed, trying again next poll: %s", exc)
        time.sleep(max(0.0, poll_seconds - (time.monotonic() - started)))


@provider.command("gc-volumes")
@click.option("--closed-for", required=True,
              help="Remove only volumes of leases closed at least this long ago, e.g. 7d "
                   "(0: every closed lease's).")
@click.pass_context
def gc_volumes_command(ctx: click.Context, closed_for: str) -> None:
    """Remove the volumes of leases the orchestrator reports closed (the agent keeps them
    when it removes a lease's container). A volume whose lease the orchestrator does not
    report closed stays."""
    orchestrator, token = ctx.obj["orchestrator"], ctx.obj["token"]
    if not orchestrator or not token:
        _fail("--orchestrator and --token are required (or KOVA_ORCHESTRATOR, KOVA_TOKEN)")
    seconds = _duration(closed_for, "--closed-for")
    http = _client(orchestrator, token)
    provider_id = _whoami(http)
    folder = Path(ctx.obj["data_dir"]).resolve() / "volumes"
    volumes = Volumes(_docker(), provider_id, folder, sized=True)
    try:
        gone = gc_volumes(http, volumes, seconds)
    except (AgentError, Busy, httpx.HTTPError) as exc:
        _fail(f"cannot ask the orchestrator about the leases: {exc}")
    click.echo(f"removed {len(gone)} volume(s)" + "".join(f"\n  {name}" for name in gone))
