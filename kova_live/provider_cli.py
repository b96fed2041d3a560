"""``kova-live provider``: the provider agent's command line (see :mod:`kova_live.agent`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import docker
import docker.errors
import httpx
import numpy as np

from kova_core import KovaError, parse_cpu, parse_size, pricing_strategy

from .agent import Agent, AgentError, Docker, machine_capacity

__all__ = ["provider"]

log = logging.getLogger("kova_live.agent")


def _fail(message: str) -> None:
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
    return httpx.Client(
        base_url=orchestrator.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
        timeout=30,
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


@click.group(invoke_without_command=True)
@click.option("--orchestrator", envvar="KOVA_ORCHESTRATOR", help="The orchestrator's URL.")
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
@click.option("--host-ip", default="127.0.0.1", show_default=True,
              help="Where the leases' exposed ports are published.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kova-agent"), show_default=True,
              help="Folder for what the agent keeps across restarts (open bids, log positions).")
@click.option("--seed", type=int, default=None, help="Seed of the pricing strategy's draws.")
@click.pass_context
def provider(
    ctx: click.Context, orchestrator: str | None, token: str | None, capacity: tuple[str, ...],
    attributes: tuple[str, ...], strategy: str, strategy_param: tuple[str, ...],
    poll_seconds: float, host_ip: str, data_dir: Path, seed: int | None,
) -> None:  # fmt: skip
    """The provider agent: bids on open orders and runs leases in Docker."""
    ctx.ensure_object(dict)
    ctx.obj.update(orchestrator=orchestrator, token=token)
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    http = _client(orchestrator, token)
    provider_id = _whoami(http)
    client = _docker()
    runner = Docker(client, provider_id, host_ip)
    offered = machine_capacity(client)._replace(**overrides)
    if not runner.storage_size_enforced():
        click.echo("kova-live provider: this Docker storage driver cannot limit a container's "
                   "disk; leases' storage sizes are not enforced", err=True)  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(
        http=http, docker=runner, capacity=offered, strategy=pricing,
        pricing={"strategy": strategy, "params": params},
        attributes=placement, state_file=data_dir / "agent.json",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    click.echo(f"kova-live provider: provider {provider_id} offering {offered} to "
               f"{orchestrator}, polling every {poll_seconds:g} s", err=True)  # fmt: skip
    while True:
        started = time.monotonic()
        try:
            agent.tick()
        except AgentError as exc:
            _fail(str(exc))
        except (httpx.HTTPError, docker.errors.DockerException) as exc:
            log.warning("this poll failed, trying again next poll: %s", exc)
        time.sleep(max(0.0, poll_seconds - (time.monotonic() - started)))


@provider.command("gc-volumes")
@click.pass_context
def gc_volumes(ctx: click.Context) -> None:
    """Remove the volumes of leases that are over (the agent keeps them when it removes a
    lease's container)."""
    orchestrator, token = ctx.obj["orchestrator"], ctx.obj["token"]
    if not orchestrator or not token:
        _fail("--orchestrator and --token are required (or KOVA_ORCHESTRATOR, KOVA_TOKEN)")
    http = _client(orchestrator, token)
    provider_id = _whoami(http)
    leases = http.get("/v1/leases").json()["leases"]
    live = [lease["id"] for lease in leases if lease["state"] != "closed"]
    gone = Docker(_docker(), provider_id, "127.0.0.1").gc_volumes(live)
    click.echo(f"removed {len(gone)} volume(s)" + "".join(f"\n  {name}" for name in gone))
