"""``kova-live``: run the orchestrator (``serve``), migrate its database, operator commands.

The database comes from ``--database-url`` or ``KOVA_DATABASE_URL``; without either, it is the
embedded SQLite file in the data folder (``--data-dir`` or ``KOVA_DATA_DIR``, default
``./kova-data``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import secrets
import sys
from pathlib import Path
from typing import Literal

import click

from kova_core import MAX_AMOUNT, InvalidAmount, Limits, format_micro, parse_amount

from .audit_cli import audit
from .limits import (
    DEFAULT_ACCOUNTS,
    DEFAULT_READS,
    DEFAULT_WRITES,
    LimitSettings,
    Rate,
    parse_proxies,
    parse_rate,
)
from .provider_cli import provider

# The server's modules (aiohttp's server, SQLAlchemy, alembic, the API) are imported by the
# commands that use them: `kova-live provider` and the API-only admin commands start in a
# third of the time without them.

__all__ = ["main"]

SWITCH_INTERVAL = 0.0005  # seconds: how long a thread holds the GIL when another wants it

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("kova-data"),
    envvar="KOVA_DATA_DIR",
    show_default=True,
    help="Folder for the embedded database and uploaded files.",
)
database_option = click.option(
    "--database-url",
    envvar="KOVA_DATABASE_URL",
    help="postgresql+psycopg://user@host/db (production) [default: SQLite in the data folder].",
)


def _url(data_dir: Path, database_url: str | None) -> str:
    from .db import default_url

    if database_url:
        return database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    return default_url(data_dir)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kova")
def main() -> None:
    """Kova's orchestrator: the core in real time, on a SQL database."""


@main.command("migrate")
@data_dir_option
@database_option
def migrate_command(data_dir: Path, database_url: str | None) -> None:
    """Bring the database to the newest schema."""
    from .db import DatabaseError, migrate

    url = _url(data_dir, database_url)
    try:
        before, after = migrate(url)
    except DatabaseError as exc:
        _fail(str(exc))
    except Exception as exc:  # the database refused: unreachable, no permission, ...
        _fail(f"cannot migrate the database: {exc.__class__.__name__}: {exc}")
    else:
        if before == after:
            click.echo(f"the database is already at schema {after}")
        else:
            click.echo(f"migrated the database from {before or 'nothing'} to schema {after}")


def _rate_text(rate: Rate) -> str:
    return f"{rate.per_second:g},{rate.burst}"


NETWORK = Limits.network()
"""The network's limits as serve's flags default them (``--min-deposit-blocks``'s default is
the network's settlement interval, which the database holds)."""


@main.command()
@data_dir_option
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--block-seconds",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.001, 3600),
    help="Length of a block (1 s in production; shorter for tests and demos).",
)
@click.option(
    "--order-expiry",
    default=NETWORK.order_lifetime,
    show_default=True,
    type=click.IntRange(0, MAX_AMOUNT),
    help="Blocks an order stays open: then it closes (expired), bid on or not, and its bids'"
    " reservations are freed; 0: forever.",
)
@click.option(
    "--min-deposit-blocks",
    type=click.IntRange(0, MAX_AMOUNT),
    default=None,
    help="A new deployment's deposit must pay this many blocks at its max price; 0: none"
    " [default: one settlement interval].",
)
@click.option(
    "--max-replicas",
    default=NETWORK.max_replicas,
    show_default=True,
    type=click.IntRange(0, MAX_AMOUNT),
    help="The most orders (service replicas) one deployment opens; 0: no limit.",
)
@click.option(
    "--max-open-orders",
    default=NETWORK.max_open_orders,
    show_default=True,
    type=click.IntRange(0, MAX_AMOUNT),
    help="The most orders one tenant may have open at once; 0: no limit.",
)
@click.option(
    "--order-size",
    type=click.Choice(["largest-provider", "any"]),
    default="largest-provider",
    show_default=True,
    help="largest-provider: an order's resources must fit the largest capacity any provider has"
    " registered (per resource); any: no check.",
)
@click.option(
    "--tenant-share",
    default=(NETWORK.tenant_share_bps or 10_000) / 10_000,
    show_default=True,
    type=click.FloatRange(0.0001, 1),
    help="The most of a provider's capacity its open bids on one tenant's orders may reserve,"
    " beyond a first bid (1: no limit).",
)
@click.option(
    "--max-manifest-bytes",
    default=64 * 1024,
    show_default=True,
    type=click.IntRange(1, 1024 * 1024),
    help="The largest manifest POST /v1/deployments takes, checked before it is parsed.",
)
@click.option(
    "--heartbeat-grace",
    default=75,
    show_default=True,
    type=click.IntRange(1),
    help="Blocks without a heartbeat after which a provider is lost (its leases fail).",
)
@click.option(
    "--hold-share",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="A sweep that finds more than this share of the online providers silent at once holds"
    " their loss back for another grace (the fault is likelier the orchestrator's network).",
)
@click.option(
    "--log-retention",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds (wall clock) that log lines shipped by providers are kept.",
)
@click.option(
    "--ingress-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the ingress (deployments' public URLs) on this port too [default: none].",
)
@click.option(
    "--ingress-workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Processes serving the ingress, beside the API's (about one per spare core).",
)
@click.option(
    "--domain",
    default="deployments.localhost",
    show_default=True,
    help="Deployments' hostnames are <service>-<id>.DOMAIN.",
)
@click.option(
    "--public-scheme",
    type=click.Choice(["http", "https"]),
    default="http",
    show_default=True,
    help="The scheme of tenants' URLs: https behind a TLS proxy (https with --tls-cert).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM certificate (chain) for the ingress to terminate TLS itself (with --tls-key).",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The PEM private key of --tls-cert.")
@click.option(
    "--page-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="The most leases GET /v1/leases answers at once (the rest by paging with before).",
)
@click.option(
    "--endpoint-networks",
    default="public",
    show_default=True,
    help="Where leases' endpoints may be: comma-separated CIDRs and/or public (globally "
    "routable addresses). Providers' registered addresses must be inside them.",
)
@click.option(
    "--accepted-denoms",
    default="",
    help="Comma-separated denominations manifests may price in [default: any]; a deployment "
    "priced in another is refused (400 naming the manifest's denom field).",
)
@click.option(
    "--advertise-url",
    envvar="KOVA_ADVERTISE_URL",
    default=None,
    help="This process's URL as clients and the other orchestrators reach it, which standbys "
    "name as the leader's [default: http://HOST:PORT].",
)
@click.option(
    "--console/--no-console",
    default=True,
    show_default=True,
    help="Serve Kova Console, the web pages for tenants and providers, at /console/ on the "
    "API's port (a client of the API: it adds no rule and no access the API does not give).",
)
@click.option(
    "--redirect/--no-redirect",
    "redirect_to_leader",
    default=False,
    show_default=True,
    help="A standby answers a market command 307 to the leader's --advertise-url (for clients "
    "that reach the orchestrators directly) rather than 503 (behind a balancer, which keeps "
    "the orchestrators' own URLs from clients).",
)
@click.option(
    "--clock",
    "clock_kind",
    type=click.Choice(["wall", "manual"]),
    default="wall",
    show_default=True,
    help="wall: heights from the wall clock; manual: the height moves only when an operator "
    "advances it (POST /v1/clock), for replays and tests.",
)
@click.option(
    "--registration",
    type=click.Choice(["open", "invite", "closed"]),
    default="invite",
    show_default=True,
    envvar="KOVA_REGISTRATION",
    help="Who registers over POST /v1/accounts: anyone (open), holders of an operator's invite "
    "code (invite; kova-live invite), nobody (closed; kova-live admin account makes accounts).",
)
@click.option("--rate-limit-accounts", default=_rate_text(DEFAULT_ACCOUNTS), show_default=True,
              envvar="KOVA_RATE_LIMIT_ACCOUNTS", help="Registrations per client address: RATE "
              "(per second),BURST; 0 turns it off.")  # fmt: skip
@click.option("--rate-limit-writes", default=_rate_text(DEFAULT_WRITES), show_default=True,
              envvar="KOVA_RATE_LIMIT_WRITES", help="Other non-GET requests, per account and "
              "per client address: RATE,BURST; 0 turns it off.")  # fmt: skip
@click.option("--rate-limit-reads", default=_rate_text(DEFAULT_READS), show_default=True,
              envvar="KOVA_RATE_LIMIT_READS", help="GETs under /v1, per account and per client "
              "address: RATE,BURST; 0 turns it off.")  # fmt: skip
@click.option("--trusted-proxy", default="", envvar="KOVA_TRUSTED_PROXY",
              help="Comma-separated CIDRs of proxies whose X-Forwarded-For names the client "
              "(for rate limits) [default: none].")  # fmt: skip
def serve(
    data_dir: Path,
    database_url: str | None,
    host: str,
    port: int,
    block_seconds: float,
    order_expiry: int,
    min_deposit_blocks: int | None,
    max_replicas: int,
    max_open_orders: int,
    order_size: str,
    tenant_share: float,
    max_manifest_bytes: int,
    heartbeat_grace: int,
    hold_share: float,
    log_retention: float,
    ingress_port: int | None,
    ingress_workers: int,
    domain: str,
    public_scheme: str,
    tls_cert: str | None,
    tls_key: str | None,
    page_size: int,
    endpoint_networks: str,
    accepted_denoms: str,
    clock_kind: str,
    registration: Literal["open", "invite", "closed"],
    rate_limit_accounts: str,
    rate_limit_writes: str,
    rate_limit_reads: str,
    trusted_proxy: str,
    advertise_url: str | None,
    redirect_to_leader: bool,
    console: bool,
) -> None:
    """Run the orchestrator: the API and the block clock, and (with --ingress-port) the
    ingress in processes of its own."""
    import uvloop
    from aiohttp import web

    from .app import ApiSettings, create_app
    from .clock import BlockClock, ManualClock
    from .db import (
        DatabaseError,
        async_engine,
        check_schema,
        current_revision,
        ensure_network,
        hold_writer_lock,
        migrate,
    )
    from .endpoints import EndpointPolicy, parse_networks
    from .ingress import LOG_FORMAT, IngressError, IngressSettings, listen
    from .work import WorkSettings

    try:
        networks = parse_networks(endpoint_networks)
    except ValueError as exc:
        _fail(f"--endpoint-networks: {exc}")
    rates = _limits(rate_limit_accounts, rate_limit_writes, rate_limit_reads, trusted_proxy)
    denoms = frozenset(d.strip() for d in accepted_denoms.split(",") if d.strip()) or None
    if accepted_denoms.strip() and denoms is None:
        _fail("--accepted-denoms: name at least one denomination (or leave it out: any)")
    url = _url(data_dir, database_url)
    try:
        if current_revision(url) is None:
            # a brand-new database: creating the schema changes nothing anyone relies on
            migrate(url)
        check_schema(url)
        settings = ensure_network(url, block_ms=round(block_seconds * 1000))
        # on SQLite, one serving process per database: its market lives in this process's
        # memory; on PostgreSQL, several, one of them the leader (kova_live.leader)
        serving = hold_writer_lock(url) if url.startswith("sqlite") else None
    except DatabaseError as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"cannot open the database: {exc.__class__.__name__}: {exc}")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    clock = BlockClock(settings.genesis_ms, settings.block_ms)
    if clock_kind == "manual":
        if ingress_port is not None:
            _fail("--clock manual: the ingress keeps wall-clock time; leave out --ingress-port")
        try:
            start = asyncio.run(_manual_start(url))
        except ValueError as exc:
            _fail(f"--clock manual: {exc}")
        clock = ManualClock(settings.genesis_ms, settings.block_ms, start)
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    ingress = IngressSettings(
        domain=domain.lower().strip("."), port=ingress_port, host=host, workers=ingress_workers,
        scheme="https" if tls_cert else public_scheme, tls_cert=tls_cert, tls_key=tls_key,
    )  # fmt: skip
    try:
        ingress.ssl_context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        _fail(f"--tls-cert/--tls-key: {exc}")
    try:  # the API's port, before anything starts
        listening = listen(host, port)
    except OSError as exc:
        _fail(f"--host/--port: {exc}")
    port = listening.getsockname()[1]  # --port 0: the one the system picked
    share = round(tenant_share * 10_000)
    limits = Limits(
        min_deposit_blocks=(
            settings.settlement.settlement_interval if min_deposit_blocks is None
            else min_deposit_blocks
        ),
        max_replicas=max_replicas or None,
        max_open_orders=max_open_orders or None,
        largest_provider=order_size == "largest-provider",
        order_lifetime=order_expiry or None,
        tenant_share_bps=None if share >= 10_000 else max(share, 1),
    )  # fmt: skip
    # no lease's endpoint may be the server's own socket (the ingress adds its own as it starts)
    endpoints = EndpointPolicy(networks).listening_also(host, port)
    app = create_app(
        async_engine(url),
        clock,
        dataclasses.replace(settings.settlement, accepted_denoms=denoms, limits=limits),
        WorkSettings(
            heartbeat_grace=heartbeat_grace,
            hold_share=hold_share,
            log_retention_ms=round(log_retention * 1000),
        ),
        data_dir / "files",
        ingress,
        ApiSettings(page_size=page_size, endpoints=endpoints, max_manifest_bytes=max_manifest_bytes,
                    registration=registration, limits=rates,
                    advertise_url=advertise_url or f"http://{host}:{port}",
                    redirect_to_leader=redirect_to_leader, console=console),
    )  # fmt: skip
    click.echo(f"kova-live: height {clock.height()}, serving on http://{host}:{port}", err=True)
    click.echo(f"kova-live: network limits: {limits}; rate limits: {rates}", err=True)
    # what start-up made (modules, tables, compiled statements) lives as long as the process:
    # out of the garbage collector's way, a full collection walks a tenth as many objects and
    # stalls every request in flight that much less
    gc.collect()
    gc.freeze()
    # the single writer applies its batches in a worker thread (a round over 100,000 leases
    # computes for a second or more): the event loop waits for the GIL at most this long
    # each time it wants it back, instead of 5 ms, so a poll answered meanwhile is not held
    # up a few milliseconds at every turn (measured: p99 22 ms instead of 650 ms; see
    # benchmarks/live_round_polls.py)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        web.run_app(app, sock=listening, print=None, access_log=None,
                    loop=uvloop.new_event_loop())  # fmt: skip
    except IngressError as exc:
        _fail(f"--ingress-port: {exc}")
    finally:
        if serving is not None:
            serving.release()


def _limits(accounts: str, writes: str, reads: str, proxies: str) -> LimitSettings:
    """The rate-limit flags as settings (exits naming the flag that is wrong)."""
    rates: list[Rate | None] = []
    for flag, text in (("accounts", accounts), ("writes", writes), ("reads", reads)):
        try:
            rates.append(parse_rate(text))
        except ValueError as exc:
            _fail(f"--rate-limit-{flag}: {exc}")
    try:
        trusted = parse_proxies(proxies)
    except ValueError as exc:
        _fail(f"--trusted-proxy: {exc}")
    return LimitSettings(*rates, trusted_proxies=trusted)


async def _manual_start(url: str) -> int:
    from .db import async_engine
    from .operators import manual_start

    engine = async_engine(url)
    try:
        return await manual_start(engine)
    finally:
        await engine.dispose()


@main.group()
def admin() -> None:
    """Operator commands: an operator account, or on a closed network any account (on the
    database, before the server starts or while it runs), and credits, suspensions and
    resumptions (over the running server's API, with an operator's token)."""


@admin.command()
@click.argument("name")
@data_dir_option
@database_option
def operator(name: str, data_dir: Path, database_url: str | None) -> None:
    """Make an operator account called NAME and print its token (shown once).

    An operator credits tenants, takes providers down or back, and moves a manual clock over
    the API (POST /v1/accounts/{id}/credit, /v1/providers/{id}/fail and /recover, /v1/clock).
    """
    account_id, name, token = _make_account(data_dir, database_url, "operator", name)
    click.echo(f"operator {account_id} ({name}); token (shown once):")
    click.echo(token)


@admin.command()
@click.argument("role", type=click.Choice(["tenant", "provider", "auditor"]))
@click.argument("name")
@data_dir_option
@database_option
def account(role: str, name: str, data_dir: Path, database_url: str | None) -> None:
    """Make a ROLE account called NAME and print its token (shown once), whatever serve
    --registration says: how accounts are made on a closed network (on the database, as
    admin operator does; the running server sees the account at once)."""
    account_id, name, token = _make_account(data_dir, database_url, role, name)
    click.echo(f"{role}:{account_id} ({name}); token (shown once):")
    click.echo(token)


def _make_account(
    data_dir: Path, database_url: str | None, role: str, name: str
) -> tuple[int, str, str]:
    """An account made on the database (migrated first if new): its id, name and token."""
    from .db import DatabaseError, check_schema, current_revision, migrate

    name = name.strip()
    if not 1 <= len(name) <= 100:
        _fail("NAME: 1 to 100 characters")
    url = _url(data_dir, database_url)
    try:
        if current_revision(url) is None:
            migrate(url)
        check_schema(url)
    except DatabaseError as exc:
        _fail(str(exc))
    token = "kova_" + secrets.token_urlsafe(32)
    return asyncio.run(_new_account(url, role, name, token)), name, token


async def _new_account(url: str, role: str, name: str, token: str) -> int:
    """The new account's id; made at the network's height now (0 before its first start,
    which this does not bring forward: the first ``serve`` still says how long a block is)."""
    from sqlalchemy import insert, select

    from .app import hash_token
    from .clock import BlockClock
    from .db import async_engine
    from .schema import accounts, network

    engine = async_engine(url)
    try:
        async with engine.begin() as connection:
            row = (await connection.execute(select(network))).first()
            height = 0 if row is None else BlockClock(row.genesis_ms, row.block_ms).height()
            made = await connection.execute(
                insert(accounts)
                .values(role=role, name=name, token_hash=hash_token(token),
                        created_height=height)
                .returning(accounts.c.id)
            )  # fmt: skip
            return int(made.scalar_one())
    finally:
        await engine.dispose()


@admin.command()
@click.argument("account")
@click.argument("amount")
@click.option("--orchestrator", envvar="KOVA_ORCHESTRATOR", default="http://127.0.0.1:8080",
              show_default=True, help="The orchestrator's URL (or KOVA_ORCHESTRATOR).")
@click.option("--token", envvar="KOVA_TOKEN",
              help="An operator's token (kova-live admin operator; or KOVA_TOKEN).")
def credit(account: str, amount: str, orchestrator: str, token: str | None) -> None:
    """Credit AMOUNT units (e.g. 100 or 0.5) to a tenant: ACCOUNT is its id or tenant:<id>.

    There is no payment rail; this is how money enters the network. It goes through the
    running orchestrator's API (POST /v1/accounts/{id}/credit) with an operator's token, so
    the market the orchestrator keeps sees it.
    """
    from .audit_cli import call_api

    try:
        micro = parse_amount(amount)
    except InvalidAmount as exc:
        _fail(f"AMOUNT: {exc}")
    if micro == 0:
        _fail("AMOUNT: must be greater than 0")
    raw = account.removeprefix("tenant:")
    if not (raw.isascii() and raw.isdigit()):
        _fail(f"ACCOUNT: expected a tenant id such as 3 or tenant:3, got {account!r}")
    if not token:
        _fail("--token: an operator's token is needed (kova-live admin operator makes one)")
    done = call_api(orchestrator, token, "POST", f"/v1/accounts/{int(raw)}/credit",
                    {"amount": micro})  # fmt: skip
    held = format_micro(int(done["balance"]))
    click.echo(f"credited {format_micro(micro)} to tenant:{int(raw)}; balance {held}")


def _account_id(account: str) -> int:
    """ACCOUNT as an id: ``3`` or ``<role>:3``."""
    raw = account.rpartition(":")[2]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        _fail(f"ACCOUNT: expected an account id such as 3 or tenant:3, got {account!r}")
    return int(raw)


operator_token_option = click.option(
    "--token", envvar="KOVA_TOKEN", help="An operator's token (kova-live admin operator; or "
    "KOVA_TOKEN).",
)  # fmt: skip
orchestrator_option = click.option(
    "--orchestrator", envvar="KOVA_ORCHESTRATOR", default="http://127.0.0.1:8080",
    show_default=True, help="The orchestrator's URL (or KOVA_ORCHESTRATOR).",
)  # fmt: skip


def _as_operator(token: str | None) -> str:
    if not token:
        _fail("--token: an operator's token is needed (kova-live admin operator makes one)")
    assert token is not None
    return token


@admin.command("step-down")
@orchestrator_option
@operator_token_option
def step_down(orchestrator: str, token: str | None) -> None:
    """Hand the leadership to a standby (a planned switch-over, before an upgrade): the leader
    at ORCHESTRATOR stops taking market commands, releases its lock and stands by for a few
    seconds, in which a standby takes over (POST /v1/leader/step-down)."""
    from .audit_cli import call_api

    done = call_api(orchestrator, _as_operator(token), "POST", "/v1/leader/step-down")
    click.echo(f"{orchestrator} stepped down (it led in epoch {done['epoch']}); a standby takes "
               "over within seconds (GET /v1/status says who leads)")  # fmt: skip


@admin.command()
@click.argument("account")
@orchestrator_option
@operator_token_option
def suspend(account: str, orchestrator: str, token: str | None) -> None:
    """Suspend ACCOUNT (its id, or role:id): its token is refused from now on, for good
    (POST /v1/accounts/{id}/suspend). Its leases and escrow run on; take a provider's leases
    down with POST /v1/providers/{id}/fail."""
    from .audit_cli import call_api

    done = call_api(orchestrator, _as_operator(token), "POST",
                    f"/v1/accounts/{_account_id(account)}/suspend")  # fmt: skip
    click.echo(f"{done['account']} is suspended (by {done['suspended_by']} at block "
               f"{done['suspended_height']})")  # fmt: skip


@admin.command()
@click.argument("account")
@orchestrator_option
@operator_token_option
def resume(account: str, orchestrator: str, token: str | None) -> None:
    """Lift ACCOUNT's suspension and print its new token (shown once; the old one stays
    revoked): hand it to the account's owner (POST /v1/accounts/{id}/resume)."""
    from .audit_cli import call_api

    done = call_api(orchestrator, _as_operator(token), "POST",
                    f"/v1/accounts/{_account_id(account)}/resume")  # fmt: skip
    click.echo(f"{done['account']} is resumed; its new token (shown once):")
    click.echo(done["token"])


@main.command()
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100),
              help="How many codes (each registers one account).")  # fmt: skip
@orchestrator_option
@operator_token_option
def invite(count: int, orchestrator: str, token: str | None) -> None:
    """Issue invite codes, one a line, for serve --registration invite (the default): each
    registers one account (kova login --invite CODE; POST /v1/accounts with "invite"). They
    are issued over the running orchestrator's API (POST /v1/invites) with an operator's
    token; only their hashes are kept, so they are shown once."""
    from .audit_cli import call_api

    done = call_api(orchestrator, _as_operator(token), "POST", "/v1/invites", {"count": count})
    for code in done["codes"]:
        click.echo(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


main.add_command(provider)
main.add_command(audit)
