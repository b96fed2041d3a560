"""The market over the API: deployments (create, list, show, deposit, close), their bids and
leases for tenants; heartbeats, open orders and bids for providers.

Handlers check who is asking and what they sent, then submit the command to the single writer
(:mod:`kova_live.writer`): a call on the orchestrator's ``kova_core.Market``, made durable before
the reply. The core's errors become 4xx replies in one place (:func:`kova_live.app.core_error`);
a refused command changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

import yaml
from aiohttp import web
from pydantic import ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    MAX_AMOUNT,
    BidPlaced,
    BidState,
    DeploymentCreated,
    DepositTooSmall,
    Event,
    IllegalTransition,
    InsufficientBalance,
    LeaseStarted,
    LeaseState,
    ManifestError,
    Market,
    PricingContext,
    ProviderState,
    Resources,
    StrategyConfigError,
    UnknownStrategy,
    deposit_for_hours,
    escrow_account,
    format_micro,
    job_deadline,
    lowest_ask,
    max_price_per_block,
    parse_manifest,
    pricing_strategy,
    reputation_score,
    selection_policy,
    spec_record,
    tenant_account,
)

from . import journal, market
from .app import (
    API,
    CACHES,
    CLOCK,
    ENGINE,
    INGRESS,
    INT64_MAX,
    READER,
    SETTINGS,
    WRITER,
    ApiError,
    RequestBody,
    authenticate,
    core_error,
    decimal,
    int_query,
    read_body,
)
from .audits import add_routes as add_audit_routes
from .audits import auditors_of
from .console import CONSOLE
from .db import transact
from .endpoints import (
    MAX_ADDRESSES,
    EndpointPolicy,
    Registration,
    format_endpoint,
    parse_address,
    parse_endpoint,
)
from .files import check_files
from .ingress import HostnameTaken, claim_routes, route_urls
from .ledger import balance
from .schema import bids, deployments, leases, logs, orders, provider_nodes
from .work import enqueue
from .writer import Batch, Command

__all__ = ["add_routes"]


class AutoAccept(RequestBody):
    """The orchestrator accepts for the tenant: ``wait`` blocks after an order opens (or
    reopens), it accepts the bid the registered selection ``policy`` (with ``params``) chooses;
    with no bid yet, it looks again ``wait`` blocks later (at least 15: a poll interval)."""

    policy: str = Field(min_length=1, max_length=64)
    params: dict[str, str | int | float] = Field(default_factory=dict, max_length=16)
    wait: int = Field(default=15, ge=0, le=86_400)


def _not_empty(schema: dict[str, Any]) -> None:
    # what the document says of a manifest: the core refuses an empty one (it has no services)
    text, mapping = schema["anyOf"]
    text["minLength"], mapping["minProperties"] = 1, 1


EXAMPLE_MANIFEST = """version: "2.0"
services:
  web: {image: "busybox:1.36", expose: [{port: 8080, as: 80, to: [{global: true}]}]}
profiles:
  compute:
    web: {resources: {cpu: {units: 0.5}, memory: {size: 512Mi}, storage: {size: 1Gi}}}
  placement:
    anywhere: {pricing: {web: {denom: uusd, amount: 1000}}}
deployment:
  web: {anywhere: {profile: web, count: 1}}
"""


class NewDeployment(RequestBody):
    """``POST /v1/deployments``: an Akash SDL manifest (YAML text or a JSON object) and the
    deposit moved from the tenant's balance into the new escrow, in micro-units; optionally, a
    policy with which the orchestrator accepts bids for the tenant. An unknown field of the
    manifest is ignored with a warning (in the answer's ``warnings``), as Akash ignores it;
    ``strict`` makes it a refusal."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"manifest": EXAMPLE_MANIFEST, "deposit": 1_000_000}]}
    )
    manifest: str | dict[str, Any] = Field(json_schema_extra=_not_empty)
    deposit: int = Field(ge=0, le=MAX_AMOUNT)
    auto_accept: AutoAccept | None = None
    strict: bool = False


class DeploymentCheck(RequestBody):
    """``POST /v1/deployments/check``: what creating a deployment from ``manifest`` would meet,
    without creating it: every problem, the warnings, its orders and prices, the network's
    minimum deposit for it and the escrow for ``hours`` of its maximum price; with
    ``deposit``, whether that deposit would do."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"manifest": EXAMPLE_MANIFEST, "hours": 24}]}
    )
    manifest: str | dict[str, Any] = Field(json_schema_extra=_not_empty)
    strict: bool = False
    deposit: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    hours: int = Field(default=24, ge=1, le=8760)

    @field_validator("manifest")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # as the document says (an empty one is a bad field here, not a manifest to judge)
        if not value:
            raise PydanticCustomError("manifest", "an empty manifest: send YAML text or an object")
        return value


class Deposit(RequestBody):
    """``POST /v1/deployments/{id}/deposit``: micro-units from the tenant's balance."""

    amount: int = Field(gt=0, le=MAX_AMOUNT)


class Capacity(RequestBody):
    """A provider machine's capacity: millicores, bytes, bytes, GPUs."""

    cpu: int = Field(ge=0, le=MAX_AMOUNT)
    memory: int = Field(ge=0, le=MAX_AMOUNT)
    storage: int = Field(ge=0, le=MAX_AMOUNT)
    gpu: int = Field(ge=0, le=1_000_000)


class Pricing(RequestBody):
    """The registered pricing strategy a provider's agent bids with, and its parameters (money
    in micro-units per block)."""

    strategy: str = Field(min_length=1, max_length=64)
    params: dict[str, str | int | float] = Field(default_factory=dict, max_length=16)


PORT = Annotated[int, Field(ge=1, le=65535)]


class Endpoints(RequestBody):
    """Where the provider's leases are reached: the IP ``addresses`` (IPv4 or IPv6 literals,
    no names: 1 to 16) and the inclusive range of ``ports`` they publish on, ``[low,
    high]``. Each address must be inside the server's endpoint networks; a lease's reported
    endpoint must be one of these addresses, at a port in the range."""

    addresses: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=MAX_ADDRESSES
    )
    ports: list[PORT] = Field(min_length=2, max_length=2)

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        # checked whole, so that any problem names endpoints.addresses (not an item of it)
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_ADDRESSES:
            raise PydanticCustomError("addresses", f"a list of 1 to {MAX_ADDRESSES} IP addresses")
        for item in value:
            try:
                parse_address(item)
            except ValueError as exc:
                raise PydanticCustomError("address", str(exc)) from None
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        if (
            not isinstance(value, list) or len(value) != 2
            or not all(type(p) is int and 1 <= p <= 65535 for p in value)
        ):  # fmt: skip
            raise PydanticCustomError(
                "ports", "[low, high]: two integer ports from 1 to 65535, low <= high"
            )
        if value[0] > value[1]:
            raise PydanticCustomError("ports", f"the low port {value[0]} is above the high "
                                      f"port {value[1]}")  # fmt: skip
        return value

    def registration(self) -> Registration:
        addresses = dict.fromkeys(parse_address(a) for a in self.addresses)  # once each, in order
        return Registration(tuple(addresses), self.ports[0], self.ports[1])


class Heartbeat(RequestBody):
    """``POST /v1/providers/heartbeat``: what the provider's machine has, optionally how its
    agent prices (candidates then tell tenants whose ceiling is below what it asks), and where
    its leases are reached (``endpoints``; without it, no endpoint of its can be reported)."""

    capacity: Capacity
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)
    gpu_models: list[str] = Field(default_factory=list, max_length=64)
    pricing: Pricing | None = None
    endpoints: Endpoints | None = None


class NewBid(RequestBody):
    """``POST /v1/orders/{id}/bids``: a price per block in micro-units."""

    price: int = Field(gt=0, le=MAX_AMOUNT)


MAX_OUTPUT = 64 * 1024  # characters of a job's output the orchestrator keeps


class LogLine(RequestBody):
    """One line of a container's output."""

    stream: Literal["stdout", "stderr"] = "stdout"
    text: str = Field(max_length=16 * 1024)


class ShippedLogs(RequestBody):
    """``POST /v1/leases/{id}/logs``: lines of the lease's container output, oldest first."""

    lines: list[LogLine] = Field(min_length=1, max_length=1000)


# where a running lease's service answers, which the ingress proxies to: host:port (no scheme,
# no path); the form only: the handler then requires an IP literal host at an address and port
# its provider registered (kova_live.endpoints), and says which rule an endpoint breaks
ENDPOINT = r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$"


class LeaseStatus(RequestBody):
    """``POST /v1/leases/{id}/status``: what the provider's agent sees of the lease's container.

    ``running`` (with the ``endpoint`` where a deployment's service answers, ``host:port``: an
    IP address and port the provider registered in its heartbeat's ``endpoints``),
    ``finished`` (a job's container exited: ``exit_code``, the end of its ``output``, and
    optionally how many blocks it ran, ``runtime_blocks``, as the agent measured it), or
    ``failed`` (the container cannot run: ``message`` says why; the order opens for bids
    again)."""

    state: Literal["running", "finished", "failed"]
    endpoint: str | None = Field(default=None, max_length=300, pattern=ENDPOINT)
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    output: str | None = Field(default=None, max_length=MAX_OUTPUT)
    runtime_blocks: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    message: str | None = Field(default=None, max_length=2000)

    def problem(self) -> tuple[str, str] | None:
        """The field that does not go with ``state``, and why."""
        if self.state == "finished" and self.exit_code is None:
            return "exit_code", "a finished job reports its exit code"
        if self.state != "finished":
            for name in ("exit_code", "output", "runtime_blocks"):
                if getattr(self, name) is not None:
                    return name, "only a finished job reports an exit code, output and run time"
        if self.state != "running" and self.endpoint is not None:
            return "endpoint", "only a running lease reports an endpoint"
        if self.endpoint is not None and not 0 < int(self.endpoint.rsplit(":", 1)[1]) < 65536:
            return "endpoint", "the endpoint's port is not between 1 and 65535"
        if self.state != "failed" and self.message is not None:
            return "message", "only a failed lease reports a message"
        return None


async def _account(request: web.Request, role: str) -> Any:
    account = await authenticate(request)
    if account.role != role:
        raise ApiError(403, "forbidden", f"only {role}s may do this")
    return account


def _id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    value = decimal(raw, 0, MAX_AMOUNT)
    if value is None:
        raise ApiError(404, "not_found", f"no {what} {raw[:40]!r}")
    return value


async def _owned(connection: AsyncConnection, deployment_id: int, tenant_id: int) -> Any:
    """The tenant's deployment row (404 for another tenant's: its existence is not disclosed)."""
    query = select(deployments).where(deployments.c.id == deployment_id)
    row = (await connection.execute(query)).first()
    if row is None or row.tenant_id != tenant_id:
        raise ApiError(404, "not_found", f"no deployment {deployment_id}")
    return row


def _insufficient(exc: InsufficientBalance, field: str) -> ApiError:
    held, needed = format_micro(exc.balance), format_micro(exc.amount)
    message = f"your balance is {held}, this needs {needed}"
    return ApiError(409, "insufficient_balance", message, field)


def _resources(row: Any) -> dict[str, int]:
    return {"cpu": row.cpu, "memory": row.memory, "storage": row.storage, "gpu": row.gpu}


def _order_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "deployment_id": row.deployment_id,
        "service": row.service,
        "replica": row.replica,
        "resources": _resources(row),
        "max_price": row.max_price,
        "denom": row.denom,
        "state": row.state,
        "created_at": row.created_at,
        "closed_at": row.closed_at,
        "close_reason": row.close_reason,
    }


def _lease_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "deployment_id": row.deployment_id,
        "order_id": row.order_id,
        "provider_id": row.provider_id,
        "bid_id": row.bid_id,
        "price": row.price,
        "resources": _resources(row),
        "state": row.state,
        "created_at": row.created_at,
        "last_settled": row.last_settled,
        "blocks_paid": row.blocks_paid,
        "total_paid": row.total_paid,
        "debt": row.debt,
        "written_off": row.written_off,
        "closed_at": row.closed_at,
        "close_reason": row.close_reason,
        "status": row.status,
        "endpoint": row.endpoint,
        "exit_code": row.exit_code,
        "status_message": row.status_message,
        "reported_at": row.reported_at,
    }


def pause_height(escrow: int, active: list[Any], interval: int) -> int | None:
    """The settlement round at which the escrow will no longer cover the active leases if
    nothing is deposited: the first round after the last block the escrow pays for (the core's
    ``job_deadline`` arithmetic: every round until then pays exactly what accrues)."""
    last_covered = job_deadline(escrow, [(row.last_settled, row.price) for row in active])
    if last_covered is None:
        return None
    return (last_covered // interval + 1) * interval


async def _view(request: web.Request, connection: AsyncConnection, row: Any) -> dict[str, Any]:
    escrow = await balance(connection, escrow_account(row.id))
    order_rows = (
        await connection.execute(
            select(orders).where(orders.c.deployment_id == row.id).order_by(orders.c.id)
        )
    ).all()
    lease_rows = (
        await connection.execute(
            select(leases).where(leases.c.deployment_id == row.id).order_by(leases.c.id)
        )
    ).all()
    active = [r for r in lease_rows if r.state == "active"]
    interval = request.app[SETTINGS].settlement_interval
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "created_at": row.created_at,
        "closed_at": row.closed_at,
        "close_reason": row.close_reason,
        "max_runtime": row.max_runtime,
        "escrow": escrow,
        "escrow_units": format_micro(escrow),
        "burn_rate": sum(r.price for r in active),
        # a deployment pauses at a round; a job is not settled in rounds but stops at its
        # deadline (escrow run out or max runtime reached)
        "pauses_at": (
            pause_height(escrow, active, interval)
            if row.kind == "deployment" and row.state == "active"
            else None
        ),
        "deadline": row.deadline,
        "auto_accept": None if row.auto_accept is None else json.loads(row.auto_accept),
        "debt": sum(r.debt for r in lease_rows),
        "written_off": row.written_off,
        "blocks_paid": sum(r.blocks_paid for r in lease_rows),
        "total_paid": sum(r.total_paid for r in lease_rows),
        "orders": [_order_view(o) for o in order_rows],
        "leases": [_lease_view(r) for r in lease_rows],
        "urls": await route_urls(connection, row.id, request.app[INGRESS]),
    }


# --------------------------------------------------------------------------- tenants


def _manifest_text(request: web.Request, manifest: str | dict[str, Any]) -> str:
    """The manifest as stored (JSON for an object); 400 naming ``manifest`` if it is larger
    than the network takes, checked before parsing: a manifest's cost grows with its size."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    most = request.app[API].max_manifest_bytes
    if len(text.encode()) > most:
        raise ApiError(
            400, "invalid_field", f"the manifest is {len(text.encode())} bytes; the network takes"
            f" at most {most}", "manifest",
        )  # fmt: skip
    return text


def _problems(found: Iterable[Any]) -> list[dict[str, str]]:
    """Manifest problems or warnings as the API lists them: each ``manifest.<path>``."""
    return [{"field": _join("manifest", p.path), "message": p.message} for p in found]


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if path else prefix


async def create_deployment(request: web.Request) -> web.Response:
    """Create a deployment or job: its escrow, and one open order per service replica. The
    answer carries the manifest's ``warnings`` (fields ignored, features not honoured)."""
    tenant = await _account(request, "tenant")
    body: NewDeployment = await read_body(request, NewDeployment)
    text = _manifest_text(request, body.manifest)
    try:
        manifest = parse_manifest(body.manifest, strict=body.strict)
    except ManifestError as exc:
        raise core_error(exc) from None
    warnings = _problems(manifest.warnings)
    auto = body.auto_accept
    if auto is not None:
        _registered(selection_policy, auto.policy, auto.params, "auto_accept", "policy")
    auto_json = None if auto is None else auto.model_dump_json()
    ingress = request.app[INGRESS]

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events = m.create_deployment(market.tenant(m, tenant.id), manifest, body.deposit, height)
        made = next(e for e in events if isinstance(e, DeploymentCreated))
        batch.new_deployments[made.deployment_id] = (text, auto_json)
        return events, (
            made.deployment_id,
            height,
            list(m.deployments[made.deployment_id].order_ids),
        )

    async def answer(connection: AsyncConnection, value: Any) -> dict[str, Any]:
        dep_id, height, order_ids = value
        await check_files(connection, manifest, tenant.id, dep_id)  # the files it references
        await claim_routes(connection, dep_id, manifest, ingress)
        for order_id in order_ids if auto is not None else ():
            await enqueue(connection, "auto_accept", order_id, height + auto.wait, height)
        fresh = await _owned(connection, dep_id, tenant.id)
        return {**await _view(request, connection, fresh), "warnings": warnings}

    custom = any(e.accept for service in manifest.services.values() for e in service.expose)
    # a deployment that asks for hostnames of its own holds the claim from the check until it
    # is created: another one checked meanwhile would fail the writer's batch (and 503 every
    # command in it) when it claimed the same name
    async with request.app[CACHES].claiming if custom else contextlib.nullcontext():
        # what the database says of the manifest, before the market is asked: its files are
        # the tenant's (files are never deleted), its hostnames free
        async with request.app[READER].connect() as connection:
            await check_files(connection, manifest, tenant.id, None)
            try:
                await claim_routes(connection, None, manifest, ingress)
            except HostnameTaken as exc:
                raise ApiError(409, "hostname_taken", str(exc), exc.field) from None
        try:
            answered = await journal.submit(request, tenant.id, apply, answer, status=201)
        except InsufficientBalance as exc:
            raise _insufficient(exc, "deposit") from None
    request.app[CACHES].orders_changed()
    return answered.response()


async def check_deployment(request: web.Request) -> web.Response:
    """A dry run of creating a deployment: 200 with ``valid``, every problem (``errors``: the
    manifest's, the network's rules for it, files not uploaded, hostnames taken, and, with a
    ``deposit``, the minimum deposit and the balance), the ``warnings``, and for a manifest
    without problems its orders, their summed maximum price per block, the network's minimum
    deposit and the escrow for ``hours``. Nothing changes."""
    tenant = await _account(request, "tenant")
    body: DeploymentCheck = await read_body(request, DeploymentCheck)
    _manifest_text(request, body.manifest)
    errors: list[dict[str, str]] = []
    try:
        manifest = parse_manifest(body.manifest, strict=body.strict)
    except ManifestError as exc:
        errors, warnings = _problems(exc.problems), _problems(exc.warnings)
        return web.json_response(_checked(_declared_kind(body.manifest), body.hours, errors,
                                          warnings))  # fmt: skip
    warnings = _problems(manifest.warnings)

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        # a query: the rules create_deployment applies to this manifest (nothing changes)
        problems = m.manifest_problems(manifest)
        specs = () if problems else manifest.order_specs()
        price = max_price_per_block(specs)
        too_small = None
        if body.deposit is not None:
            try:
                m.require_deposit(specs, body.deposit)
            except DepositTooSmall as exc:
                too_small = str(exc)
        return [], (problems, specs, m.limits.min_deposit(price),
                    m.balance(tenant_account(tenant.id)), too_small)  # fmt: skip

    writer = request.app[WRITER]
    if writer.started:  # the leader: its market, between batches
        problems, specs, minimum, held, too_small = await writer.submit(Command(apply))
    else:  # a standby: its copy, restored from the database at most VIEW_SECONDS ago
        copy = await writer.view()
        problems, specs, minimum, held, too_small = apply(copy, copy.height, Batch())[1]
    errors += _problems(problems)
    async with request.app[READER].connect() as connection:
        try:
            await check_files(connection, manifest, tenant.id, None)
        except ApiError as exc:
            errors.append({"field": exc.field or "manifest", "message": exc.message})
        try:
            await claim_routes(connection, None, manifest, request.app[INGRESS])
        except HostnameTaken as exc:
            errors.append({"field": exc.field, "message": str(exc)})
    if errors:
        return web.json_response(_checked(manifest.kind, body.hours, errors, warnings))
    price = max_price_per_block(specs)
    if too_small is not None:  # the core's own refusal, as creation would say it
        errors.append({"field": "deposit", "message": too_small})
    elif body.deposit is not None and body.deposit > held:
        errors.append({"field": "deposit", "message": f"your balance is {format_micro(held)}, "
                       f"this needs {format_micro(body.deposit)}"})  # fmt: skip
    orders = [
        {"service": spec.service, "replica": spec.replica,
         "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory,
                       "storage": spec.resources.storage, "gpu": spec.resources.gpu},
         "max_price": spec.max_price, "denom": spec.denom}
        for spec in specs
    ]  # fmt: skip
    block_ms = request.app[CLOCK].block_ms
    return web.json_response(_checked(
        manifest.kind, body.hours, errors, warnings, orders=orders, price=price,
        minimum=minimum, for_hours=deposit_for_hours(price, body.hours, block_ms),
    ))  # fmt: skip


def _checked(
    kind: str, hours: int, errors: list[dict[str, str]], warnings: list[dict[str, str]], *,
    orders: list[dict[str, Any]] | None = None, price: int | None = None,
    minimum: int | None = None, for_hours: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The answer of a dry run (the orders and amounts are left out, null, when the manifest
    has problems of its own: a deposit's alone keeps them, so that the minimum can be read)."""
    return {
        "valid": not errors, "errors": errors, "warnings": warnings, "kind": kind,
        "orders": orders or [], "max_price_per_block": price, "min_deposit": minimum,
        "deposit_for_hours": {"hours": hours, "amount": for_hours},
    }  # fmt: skip


def _declared_kind(source: str | dict[str, Any]) -> str:
    """What a manifest that did not parse says it is (``kind: job``), else a deployment."""
    if isinstance(source, str):
        try:
            source = yaml.safe_load(source)
        except Exception:  # any text: what it is cannot be read
            return "deployment"
    kind = source.get("kind") if isinstance(source, Mapping) else None
    return "job" if kind == "job" else "deployment"


def _registered(
    build: Callable[..., Any], name: str, params: dict[str, Any], field: str, name_key: str
) -> Any:
    """A registered strategy or policy built from a request (``field``: where the request has
    it); 400 naming the name or the parameter unless it is registered and takes them."""
    try:
        return build(name, **params)
    except UnknownStrategy as exc:
        raise ApiError(400, "invalid_field", str(exc), f"{field}.{name_key}") from None
    except StrategyConfigError as exc:
        where = f"{field}.params.{exc.field}" if exc.field in params else field
        raise ApiError(400, "invalid_field", exc.message, where) from None


async def list_deployments(request: web.Request) -> web.Response:
    """The caller's deployments and jobs, newest first."""
    tenant = await _account(request, "tenant")
    async with request.app[READER].connect() as connection:
        rows = (
            await connection.execute(
                select(deployments)
                .where(deployments.c.tenant_id == tenant.id)
                .order_by(deployments.c.id.desc())
            )
        ).all()
        items = [
            {
                "id": row.id,
                "kind": row.kind,
                "state": row.state,
                "created_at": row.created_at,
                "escrow": await balance(connection, escrow_account(row.id)),
            }
            for row in rows
        ]
    return web.json_response({"deployments": items})


async def show_deployment(request: web.Request) -> web.Response:
    """One of the caller's deployments: state, escrow, burn rate, when it will pause, orders
    and leases (settled up to the current height)."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    if request.app[WRITER].started:  # the leader: the rounds and deadlines due by now, done
        await request.app[WRITER].tick()  # (a standby reads what the leader last wrote)
    # then read it as of one moment: the deployment, its orders and its leases in one snapshot
    async with request.app[READER].connect() as connection:
        row = await _owned(connection, dep_id, tenant.id)
        return web.json_response(await _view(request, connection, row))


async def _tenants_deployment(request: web.Request, dep_id: int, tenant_id: int) -> Any:
    """The tenant's deployment row, read before its command is submitted (404 otherwise)."""
    async with request.app[READER].connect() as connection:
        return await _owned(connection, dep_id, tenant_id)


def _live(m: Market, dep_id: int, command: str) -> Any:
    """The deployment in the market (a closed one it has forgotten is refused as closed)."""
    if dep_id not in m.deployments:
        raise market.closed("deployment", dep_id, command)
    return dep_id


async def deposit(request: web.Request) -> web.Response:
    """Move money into a deployment's escrow; a paused one whose debt is now covered resumes."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    body: Deposit = await read_body(request, Deposit)
    await _tenants_deployment(request, dep_id, tenant.id)

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        return m.deposit(_live(m, dep_id, "deposit"), body.amount, height), dep_id

    try:
        answered = await journal.submit(
            request, tenant.id, apply, _deployment_answer(request, tenant.id)
        )
    except InsufficientBalance as exc:
        raise _insufficient(exc, "amount") from None
    request.app[CACHES].orders_changed()  # a deposit may resume it
    return answered.response()


def _deployment_answer(request: web.Request, tenant_id: int) -> Any:
    async def answer(connection: AsyncConnection, dep_id: int) -> dict[str, Any]:
        return await _view(request, connection, await _owned(connection, dep_id, tenant_id))

    return answer


async def close(request: web.Request) -> web.Response:
    """Close a deployment: settle its leases to now, close them and its orders, refund."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    await _tenants_deployment(request, dep_id, tenant.id)

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        return m.close_deployment(_live(m, dep_id, "close"), height), dep_id

    answered = await journal.submit(
        request, tenant.id, apply, _deployment_answer(request, tenant.id)
    )
    request.app[CACHES].orders_changed()
    return answered.response()


async def deployment_bids(request: web.Request) -> web.Response:
    """The open bids on a deployment's orders, as a tenant chooses among them: price per
    block, the provider's record (completed and failed leases, reputation), response time."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    async with request.app[READER].connect() as connection:
        await _owned(connection, dep_id, tenant.id)
        rows = (
            await connection.execute(
                select(bids, provider_nodes.c.completed, provider_nodes.c.failed)
                .join(orders, orders.c.id == bids.c.order_id)
                .join(provider_nodes, provider_nodes.c.provider_id == bids.c.provider_id)
                .where(orders.c.deployment_id == dep_id, bids.c.state == "open")
                .order_by(bids.c.id)
            )
        ).all()
    return web.json_response(
        {
            "bids": [
                {
                    "id": r.id, "order_id": r.order_id, "provider_id": r.provider_id,
                    "price": r.price, "height": r.height, "response_time": r.response_time,
                    "completed": r.completed, "failed": r.failed,
                    "reputation": float(reputation_score(r.completed, r.failed)),
                }
                for r in rows
            ]
        }
    )  # fmt: skip


async def accept(request: web.Request) -> web.Response:
    """Accept a bid on one of the tenant's orders: the lease starts; its other bids are lost."""
    tenant = await _account(request, "tenant")
    bid_id = _id(request, "bid")
    async with request.app[READER].connect() as connection:
        row = (
            await connection.execute(
                select(bids.c.state, deployments.c.tenant_id)
                .join(orders, orders.c.id == bids.c.order_id)
                .join(deployments, deployments.c.id == orders.c.deployment_id)
                .where(bids.c.id == bid_id)
            )
        ).first()
    if row is None or row.tenant_id != tenant.id:
        raise ApiError(404, "not_found", f"no bid with id {bid_id}")

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        if bid_id not in m.bids:  # accepted, lost or withdrawn: the market has let it go
            raise IllegalTransition("bid", bid_id, row.state if row.state != "open" else "closed",
                                    "accept")  # fmt: skip
        events = m.accept_bid(bid_id, height)
        return events, next(e.lease_id for e in events if isinstance(e, LeaseStarted))

    async def answer(connection: AsyncConnection, lease_id: int) -> dict[str, Any]:
        lease = select(leases).where(leases.c.id == lease_id)
        return _lease_view((await connection.execute(lease)).one())

    answered = await journal.submit(request, tenant.id, apply, answer, status=201)
    request.app[CACHES].orders_changed()
    return answered.response()


# --------------------------------------------------------------------------- providers


async def heartbeat(request: web.Request) -> web.Response:
    """A provider's agent says what its machine has; the provider is online. The reply lists
    the auditors whose audits of it stand (``auditor:<id>``, sorted): the agent bids on
    orders whose ``signedBy`` they satisfy."""
    provider = await _account(request, "provider")
    body: Heartbeat = await read_body(request, Heartbeat)
    c = body.capacity
    if body.pricing is not None:
        _registered(
            pricing_strategy, body.pricing.strategy, body.pricing.params, "pricing", "strategy"
        )
    pricing = None if body.pricing is None else body.pricing.model_dump_json()
    endpoints = None
    if body.endpoints is not None:
        registration = body.endpoints.registration()
        policy = request.app[API].endpoints
        for address in registration.addresses:
            outside = policy.address_problem(address)
            if outside is not None:
                raise ApiError(400, "invalid_field", outside, "endpoints.addresses")
        endpoints = (registration.stored(), registration.low, registration.high)
    capacity = Resources(cpu=c.cpu, memory=c.memory, storage=c.storage, gpu=c.gpu)
    # whose audits stand with the attributes it registers now
    async with request.app[READER].connect() as connection:
        audited = (await auditors_of(connection, [provider.id], {provider.id: body.attributes})
                   ).get(provider.id, frozenset())  # fmt: skip

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events: list[Event] = []
        known = m.providers.get(provider.id)
        if known is None:
            m.add_provider(capacity=capacity, attributes=body.attributes, auditors=audited,
                           gpu_models=body.gpu_models, provider_id=provider.id)  # fmt: skip
        else:
            if known.state is ProviderState.LOST:  # its agent is back
                events += m.recover_provider(provider.id, height)
            events += m.update_provider(provider.id, capacity=capacity,
                                        attributes=body.attributes, gpu_models=body.gpu_models,
                                        height=height)  # fmt: skip
            events += m.set_auditors(provider.id, audited, height)
        batch.touched_providers.add(provider.id)
        batch.heard.add(provider.id)
        return events, height

    async def answer(connection: AsyncConnection, height: int) -> tuple[int, bool]:
        # what the market does not keep: how it prices, where its leases are reached
        addresses, low, high = endpoints if endpoints is not None else (None, None, None)
        where = provider_nodes.c.provider_id == provider.id
        columns = (provider_nodes.c.endpoint_addresses, provider_nodes.c.endpoint_port_low,
                   provider_nodes.c.endpoint_port_high)  # fmt: skip
        before = (await connection.execute(select(*columns).where(where))).one()
        await connection.execute(
            update(provider_nodes).where(where).values(
                pricing=pricing, endpoint_addresses=addresses, endpoint_port_low=low,
                endpoint_port_high=high, last_seen=height,
            )
        )  # fmt: skip
        return height, tuple(before) != (addresses, low, high)

    height, moved = await request.app[WRITER].submit(Command(apply, answer))
    if moved:  # the ingress checks the provider's endpoints against it now, not next block
        request.app[CACHES].routes_changed()
    return web.json_response(
        {"provider_id": provider.id, "state": "online", "height": height,
         "auditors": sorted(audited)}
    )  # fmt: skip


async def open_orders(request: web.Request) -> web.Response:
    """Orders open for bids (providers only), a page at a time: every tenant's first open
    order, then every tenant's second… (by ``tenant_seq``, the number of orders its tenant made
    before it, then id), so one tenant's many orders never hide another's; ``after`` (the
    ``next`` of the page before) continues the list, which reaches every open order however
    many there are; ``limit`` orders a page. ``state=open`` is the only state offered: other
    orders are none of a provider's business."""
    await _account(request, "provider")
    state = request.query.get("state", "open")
    if state != "open":
        raise ApiError(400, "invalid_field", "only state=open is offered", "state")
    page = request.app[API].page_size
    limit = int_query(request, "limit", page, 1, page)
    after = request.query.get("after")
    if after is not None and _cursor(after) is None:
        raise ApiError(400, "invalid_field", "must be the next of a page before", "after")
    caches = request.app[CACHES]
    key = (request.app[CLOCK].height(), caches.orders_version, after or "", limit)
    body = caches.open_orders.get(key)
    if body is None:
        if len(caches.open_orders) > 256 or any(k[:2] != key[:2] for k in caches.open_orders):
            caches.open_orders.clear()  # another block or version: every page is out of date
        # one read for all the polls that find the page out of date at once (hundreds a
        # second at the start of each block); a poll that goes away does not cancel it, and
        # a read that failed is tried again by the next poll
        loading = caches.loading.get(key)
        if loading is None or (loading.done() and loading.exception()):
            for old in [k for k, f in caches.loading.items() if f.done() or k[:2] != key[:2]]:
                del caches.loading[old]
            loading = caches.loading[key] = asyncio.ensure_future(
                _load_open_orders(request.app, key)
            )
        body = await asyncio.shield(loading)
    return web.Response(body=body, content_type="application/json")


def _cursor(text: str) -> tuple[int, int] | None:
    """``after``'s (tenant_seq, order id), if it is one (``<seq>.<id>``)."""
    seq, dot, order_id = text.partition(".")
    first, second = decimal(seq, 0, INT64_MAX), decimal(order_id, 0, INT64_MAX)
    return None if not dot or first is None or second is None else (first, second)


async def _load_open_orders(app: web.Application, key: tuple[int, int, str, int]) -> bytes:
    after, limit = _cursor(key[2]) if key[2] else None, key[3]
    async with app[READER].connect() as connection:
        # per order listed, through the bids' (order_id, state) index: the bids table holds
        # every bid ever placed, which a GROUP BY over it would read once per block
        best = (
            select(func.min(bids.c.price))
            .where(bids.c.order_id == orders.c.id, bids.c.state == BidState.OPEN.value)
            .correlate(orders)
            .scalar_subquery()
            .label("best_price")
        )
        query = (
            select(orders, deployments.c.manifest, best)
            .join(deployments, deployments.c.id == orders.c.deployment_id)
            .where(orders.c.state == "open")
            .order_by(orders.c.tenant_seq, orders.c.id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(tuple_(orders.c.tenant_seq, orders.c.id) > tuple_(*after))
        rows = (await connection.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    # each order with what a provider's poll (kova_core.plan_poll) reads of it: its spec
    # (placement included) and the lowest open bid on it
    body = json.dumps(
        {
            "orders": [
                {
                    **_order_view(o),
                    "spec": spec_record(market.order_specs(o.manifest)[o.spec_index]),
                    "best_price": o.best_price,
                }
                for o in rows
            ],
            "next": f"{rows[-1].tenant_seq}.{rows[-1].id}" if more else None,
        }
    ).encode()
    app[CACHES].open_orders[key] = body
    return body


async def place_bid(request: web.Request) -> web.Response:
    """Bid a price per block on an open order, as the calling provider."""
    provider = await _account(request, "provider")
    order_id = _id(request, "order")
    body: NewBid = await read_body(request, NewBid)

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events = m.place_bid(order_id, market.bidder(m, provider.id), body.price, height)
        placed = next(e for e in events if isinstance(e, BidPlaced))
        return events, {
            "id": placed.bid_id, "order_id": order_id, "provider_id": provider.id,
            "price": placed.price, "height": placed.height,
            "response_time": placed.response_time, "state": BidState.OPEN.value,
        }  # fmt: skip

    return (await journal.submit(request, provider.id, apply, status=201)).response()


async def _providers_bid(request: web.Request, bid_id: int, provider_id: int) -> Any:
    async with request.app[READER].connect() as connection:
        row = (await connection.execute(select(bids).where(bids.c.id == bid_id))).first()
    if row is None or row.provider_id != provider_id:
        raise ApiError(404, "not_found", f"no bid with id {bid_id}")
    return row


async def withdraw_bid(request: web.Request) -> web.Response:
    """Take back one of the caller's open bids."""
    provider = await _account(request, "provider")
    bid_id = _id(request, "bid")
    row = await _providers_bid(request, bid_id, provider.id)

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        if bid_id not in m.bids:  # accepted, lost or withdrawn: the market has let it go
            raise IllegalTransition("bid", bid_id, row.state if row.state != "open" else "closed",
                                    "withdraw")  # fmt: skip
        return m.withdraw_bid(bid_id, height), bid_id

    async def answer(connection: AsyncConnection, bid_id: int) -> dict[str, Any]:
        return _bid_view((await connection.execute(select(bids).where(bids.c.id == bid_id))).one())

    answered = await journal.submit(request, provider.id, apply, answer)
    request.app[CACHES].orders_changed()
    return answered.response()


async def expire_order(request: web.Request) -> web.Response:
    """The tenant gives up on one of its open orders: it closes as ``expired`` and its open
    bids are lost (the server does the same on its own after ``--order-expiry`` blocks)."""
    tenant = await _account(request, "tenant")
    order_id = _id(request, "order")
    the_order = select(orders).where(orders.c.id == order_id)
    async with request.app[READER].connect() as connection:
        row = (await connection.execute(the_order)).first()
        if row is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        await _owned(connection, row.deployment_id, tenant.id)  # 404 if not its

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        if order_id not in m.orders:  # its deployment closed: the market has let it go
            raise IllegalTransition("order", order_id, "closed", "expire")
        return m.expire_order(order_id, height), order_id

    async def answer(connection: AsyncConnection, order_id: int) -> dict[str, Any]:
        return _order_view((await connection.execute(the_order)).one())

    answered = await journal.submit(request, tenant.id, apply, answer)
    request.app[CACHES].orders_changed()
    return answered.response()


def _bid_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "order_id": row.order_id, "provider_id": row.provider_id,
        "price": row.price, "height": row.height, "response_time": row.response_time,
        "state": row.state,
    }  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the market's routes."""
    app.router.add_post("/v1/deployments", create_deployment)
    # before the {id} routes: "check" is no id (they are GET and POST .../{id}/...: no clash)
    app.router.add_post("/v1/deployments/check", check_deployment)
    app.router.add_get("/v1/deployments", list_deployments)
    app.router.add_get("/v1/deployments/{id}", show_deployment)
    app.router.add_post("/v1/deployments/{id}/deposit", deposit)
    app.router.add_post("/v1/deployments/{id}/close", close)
    app.router.add_get("/v1/deployments/{id}/bids", deployment_bids)
    app.router.add_post("/v1/bids/{id}/accept", accept)
    app.router.add_post("/v1/providers/heartbeat", heartbeat)
    app.router.add_get("/v1/orders", open_orders)
    app.router.add_post("/v1/orders/{id}/bids", place_bid)
    app.router.add_post("/v1/orders/{id}/expire", expire_order)
    app.router.add_delete("/v1/bids/{id}", withdraw_bid)
    add_more_routes(app)


# --------------------------------------------------------------------------- more views


async def candidates(request: web.Request) -> web.Response:
    """Who could serve one of the tenant's orders, and for the others, why not: the answer to
    "why are there no bids?" (offline, placement attributes, free capacity, and, for a provider
    whose heartbeat says how it prices, an ask above the order's maximum price)."""
    tenant = await _account(request, "tenant")
    order_id = _id(request, "order")
    async with request.app[READER].connect() as connection:
        order = (await connection.execute(select(orders).where(orders.c.id == order_id))).first()
        if order is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        await _owned(connection, order.deployment_id, tenant.id)
        nodes = (
            await connection.execute(select(provider_nodes).order_by(provider_nodes.c.provider_id))
        ).all()
        offers = (
            await connection.execute(
                select(bids.c.provider_id, bids.c.price).where(
                    bids.c.order_id == order_id, bids.c.state == "open"
                )
            )
        ).all()
        # what an undercutting provider would have to beat: the best bid of the others
        best = {
            node.provider_id: min((p for who, p in offers if who != node.provider_id), default=None)
            for node in nodes
        }
    height = request.app[CLOCK].height()

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        # a query: what the market says of each provider's chances (nothing changes)
        if order_id not in m.orders:
            raise market.closed("order", order_id, "look for candidates")
        return [], {
            node.provider_id: (
                m.cannot_serve(order_id, node.provider_id),
                m.providers[node.provider_id].free,
            )
            for node in nodes
            if node.provider_id in m.providers
        }

    writer = request.app[WRITER]
    if writer.started:  # the leader: its market, between batches
        known = await writer.submit(Command(apply))
    else:  # a standby: its copy, restored from the database at most VIEW_SECONDS ago
        copy = await writer.view()
        if order_id not in copy.orders and order.state == "open":  # opened since: a new copy
            copy = await writer.view(max_age=0)
        known = apply(copy, copy.height, Batch())[1]
    able, unable = [], []
    for node in nodes:
        if node.provider_id not in known:  # its row is there, its heartbeat being applied
            continue
        reasons, free = known[node.provider_id]
        reasons = list(reasons)
        if node.pricing is not None:
            ask = _lowest_ask(order, node, free, best.get(node.provider_id), height)
            if ask is not None and ask > order.max_price:
                reasons.append(
                    f"price: its {json.loads(node.pricing)['strategy']} strategy asks at"
                    f" least {format_micro(ask)} per block, above the order's maximum"
                    f" {format_micro(order.max_price)}"
                )
        if reasons:
            unable.append({"provider_id": node.provider_id, "reasons": reasons})
        else:
            able.append(node.provider_id)
    return web.json_response(
        {
            "order_id": order_id,
            "providers": len(nodes),
            "can_serve": len(able),
            "candidates": able,
            "cannot_serve": unable,
        }
    )


def _lowest_ask(
    order: Any, node: Any, free: Resources, best: int | None, height: int
) -> int | None:
    """The least the provider's strategy may ask for the order now (None: cannot be known)."""
    pricing = json.loads(node.pricing)
    strategy = pricing_strategy(pricing["strategy"], **pricing["params"])
    ctx = PricingContext(
        order_id=order.id, resources=_resources_of(order), max_price=order.max_price,
        order_created_at=order.created_at, height=height, capacity=_resources_of(node),
        free=free, best_price=best,
    )  # fmt: skip
    return lowest_ask(strategy, ctx)


def _resources_of(row: Any) -> Resources:
    return Resources(cpu=row.cpu, memory=row.memory, storage=row.storage, gpu=row.gpu)


# the core's lease states, and live: every one but closed (its container should run)
LEASE_STATES = {s.value: (s.value,) for s in LeaseState} | {
    "live": tuple(s.value for s in LeaseState if s is not LeaseState.CLOSED)
}
MAX_ID = 2**63 - 1
LOOKUP = 100
"""An ``ids=`` question may name the page size's worth of ids, and never fewer than this: an
agent asks about this many at once, whatever the server's page size."""


def _lease_ids(raw: str, most: int) -> list[int]:
    """``ids=1,2,3``: the lease ids asked about, once each; 400 naming ``ids`` otherwise."""
    items = raw.split(",")
    if len(items) > most:
        raise ApiError(400, "invalid_field", f"at most {most} lease ids at once", "ids")
    ids = []
    for item in items:
        value = decimal(item, 1, MAX_ID)
        if value is None:
            raise ApiError(
                400, "invalid_field",
                f"comma-separated lease ids from 1 to {MAX_ID}; {item[:40]!r} is not one", "ids",
            )  # fmt: skip
        ids.append(value)
    return sorted(set(ids), reverse=True)


async def my_leases(request: web.Request) -> web.Response:
    """The calling provider's leases, newest first, a page at a time: ``state`` filters
    (active, insufficient_funds, closed, or live: not closed), ``limit`` (1 to the server's
    page size, which is the default) and ``before`` (a lease id: only older ones) page;
    ``next_before`` is the cursor of the next page, null after the last. ``ids=1,2,3`` asks
    about those leases instead, whatever their state (the caller's among them; at most a page
    of ids, or :data:`LOOKUP`; no paging). Each lease carries what its container is to run
    (``container``: see :func:`container_spec`)."""
    provider = await _account(request, "provider")
    page_size = request.app[API].page_size
    state = request.query.get("state")
    if state is not None and state not in LEASE_STATES:
        raise ApiError(400, "invalid_field", f"one of {', '.join(LEASE_STATES)}", "state")
    limit = int_query(request, "limit", page_size, 1, page_size)
    before = int_query(request, "before", MAX_ID, 1, MAX_ID)
    raw_ids = request.query.get("ids")
    ids = None if raw_ids is None else _lease_ids(raw_ids, max(page_size, LOOKUP))
    query = (
        select(leases, deployments.c.manifest, deployments.c.kind, deployments.c.max_runtime,
               orders.c.spec_index)
        .join(deployments, deployments.c.id == leases.c.deployment_id)
        .join(orders, orders.c.id == leases.c.order_id)
        .where(leases.c.provider_id == provider.id)
        .order_by(leases.c.id.desc())
    )  # fmt: skip
    if ids is not None:  # these leases, whatever their state: no paging
        query = query.where(leases.c.id.in_(ids))
    else:
        if state is not None:
            query = query.where(leases.c.state.in_(LEASE_STATES[state]))
        # one more than the page: whether there is a next page, exactly
        query = query.where(leases.c.id < before).limit(limit + 1)
    async with request.app[READER].connect() as connection:
        rows = (await connection.execute(query)).all()
    following = None
    if ids is None and len(rows) > limit:
        rows = rows[:limit]
        following = rows[-1].id
    return web.json_response(
        {
            "leases": [
                {**_lease_view(r), "container": container_spec(r.manifest, r.spec_index),
                 "kind": r.kind, "max_runtime": r.max_runtime}
                for r in rows
            ],
            "next_before": following,
        }
    )  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _manifest(text: str) -> Any:
    return parse_manifest(text)


def container_spec(manifest: str, spec_index: int) -> dict[str, Any]:
    """What the container of the order at ``spec_index`` of ``manifest`` runs: the service's
    image, command and args, environment, exposed ports, uploaded files (by SHA-256, with the
    path to place each at), storage volumes (size in bytes, mount path, storage class) and
    whether its root filesystem is read-only."""
    parsed = _manifest(manifest)
    spec = parsed.order_specs()[spec_index]
    service = parsed.services[spec.service]
    return {
        "service": service.name, "image": service.image, "command": list(service.command),
        "args": list(service.args), "env": dict(service.env),
        "expose": [{"port": e.port, "as": e.as_port, "proto": e.proto, "global": e.global_}
                   for e in service.expose],
        "files": [{"sha256": f.sha256, "path": f.path} for f in service.files],
        "storage": [{"name": v.name, "size": v.size, "mount": v.mount, "read_only": v.read_only,
                     "class": v.storage_class} for v in spec.storage],
        "read_only_root": service.read_only_root,
    }  # fmt: skip


async def public_providers(request: web.Request) -> web.Response:
    """Every provider that has sent a heartbeat: attributes, capacity, state, reputation and
    the auditors whose audits of it stand (public: no token needed)."""
    async with request.app[READER].connect() as connection:
        rows = (
            await connection.execute(select(provider_nodes).order_by(provider_nodes.c.provider_id))
        ).all()
        audited = await auditors_of(connection)
    return web.json_response(
        {
            "providers": [
                {
                    "provider_id": r.provider_id, "state": r.state, "last_seen": r.last_seen,
                    "capacity": _resources(r), "attributes": json.loads(r.attributes),
                    "gpu_models": json.loads(r.gpu_models), "completed": r.completed,
                    "failed": r.failed,
                    "pricing": None if r.pricing is None else json.loads(r.pricing),
                    "reputation": float(reputation_score(r.completed, r.failed)),
                    "auditors": sorted(audited.get(r.provider_id, ())),
                }
                for r in rows
            ]
        }
    )  # fmt: skip


async def lease_status(request: web.Request) -> web.Response:
    """The provider's agent reports one of its leases: running (with its endpoint), a job
    finished (exit code 0 completes it; any other fails it, against the provider), or failed
    (the lease closes against the provider and its order opens for bids again)."""
    provider = await _account(request, "provider")
    lease_id = _id(request, "lease")
    body: LeaseStatus = await read_body(request, LeaseStatus)
    problem = body.problem()
    if problem is not None:
        raise ApiError(400, "invalid_field", problem[1], problem[0])
    the_lease = select(leases).where(leases.c.id == lease_id)
    async with request.app[READER].connect() as connection:
        row = (await connection.execute(the_lease)).first()
    if row is None or row.provider_id != provider.id:
        raise ApiError(404, "not_found", f"no lease {lease_id}")

    if body.state == "running":  # a report of the agent's, not a market command

        async def running(connection: AsyncConnection) -> Any:
            now = (await connection.execute(the_lease)).one()
            if now.state == "closed":
                raise ApiError(
                    409, "lease_closed", f"lease {lease_id} is closed ({now.close_reason})"
                )
            report: dict[str, Any] = {
                "status": "running",
                "reported_at": request.app[CLOCK].height(),
            }
            if body.endpoint is not None:
                report["endpoint"] = await _checked_endpoint(
                    connection, request.app[API].endpoints, provider.id, body.endpoint
                )
            await connection.execute(update(leases).where(leases.c.id == lease_id).values(**report))
            return _lease_view((await connection.execute(the_lease)).one())

        answered = await journal.run(request, provider.id, running)
    else:

        def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
            if lease_id not in m.leases:  # its deployment closed: the market has let it go
                raise IllegalTransition("lease", lease_id, "closed", "close")
            if body.state == "finished":
                events = m.finish_job(lease_id, height, succeeded=body.exit_code == 0)
            else:
                events = m.fail_lease(lease_id, height)
            return events, height

        async def answer(connection: AsyncConnection, height: int) -> Any:
            report: dict[str, Any] = {"status": body.state, "reported_at": height}
            if body.state == "finished":
                report.update(exit_code=body.exit_code, output=body.output,
                              runtime_blocks=body.runtime_blocks)  # fmt: skip
            else:
                report["status_message"] = body.message
            await connection.execute(update(leases).where(leases.c.id == lease_id).values(**report))
            return _lease_view((await connection.execute(the_lease)).one())

        answered = await journal.submit(request, provider.id, apply, answer)
    request.app[CACHES].orders_changed()  # a running lease's endpoint serves its routes now
    return answered.response()


async def _checked_endpoint(
    connection: AsyncConnection, policy: EndpointPolicy, provider_id: int, endpoint: str
) -> str:
    """``endpoint`` in its normal form, if the provider's lease may be reached there (see
    :mod:`kova_live.endpoints`); else 400 naming ``endpoint``, saying which rule it breaks."""
    node = (
        await connection.execute(
            select(provider_nodes.c.endpoint_addresses, provider_nodes.c.endpoint_port_low,
                   provider_nodes.c.endpoint_port_high)
            .where(provider_nodes.c.provider_id == provider_id)
        )
    ).first()  # fmt: skip
    registration = None if node is None else Registration.of(*node)
    problem = policy.problem(endpoint, registration)
    if problem is not None:
        raise ApiError(400, "invalid_field", problem, "endpoint")
    return format_endpoint(*parse_endpoint(endpoint))


async def job_result(request: web.Request) -> web.Response:
    """A job's outcome: whether it is done, why it closed, and each lease's exit code and
    output as its provider reported them."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    async with request.app[READER].connect() as connection:
        dep = await _owned(connection, dep_id, tenant.id)
        if dep.kind != "job":
            raise ApiError(409, "not_a_job", f"deployment {dep_id} is not a job: it has no result")
        rows = (
            await connection.execute(
                select(leases, orders.c.service, orders.c.replica)
                .join(orders, orders.c.id == leases.c.order_id)
                .where(leases.c.deployment_id == dep_id)
                .order_by(leases.c.id)
            )
        ).all()
    return web.json_response(
        {
            "deployment_id": dep_id, "state": dep.state, "done": dep.state == "closed",
            "close_reason": dep.close_reason,
            "results": [
                {
                    "lease_id": r.id, "order_id": r.order_id, "service": r.service,
                    "replica": r.replica, "provider_id": r.provider_id, "state": r.state,
                    "status": r.status, "exit_code": r.exit_code, "output": r.output,
                    "runtime_blocks": r.runtime_blocks,
                    "close_reason": r.close_reason, "blocks_paid": r.blocks_paid,
                    "total_paid": r.total_paid,
                }
                for r in rows
            ],
        }
    )  # fmt: skip


async def ship_logs(request: web.Request) -> web.Response:
    """The provider's agent ships lines of one of its leases' output (kept 24 hours)."""
    provider = await _account(request, "provider")
    lease_id = _id(request, "lease")
    body: ShippedLogs = await read_body(request, ShippedLogs)
    height, now_ms = request.app[CLOCK].height(), request.app[CLOCK].now_ms()

    async def work(connection: AsyncConnection) -> tuple[int, int]:
        row = (
            await connection.execute(
                select(leases.c.provider_id, leases.c.deployment_id).where(leases.c.id == lease_id)
            )
        ).first()
        if row is None or row.provider_id != provider.id:
            raise ApiError(404, "not_found", f"no lease {lease_id}")
        await connection.execute(
            insert(logs),
            [
                {"lease_id": lease_id, "deployment_id": row.deployment_id, "height": height,
                 "created_ms": now_ms, "stream": line.stream, "line": line.text}
                for line in body.lines
            ],
        )  # fmt: skip
        return len(body.lines), row.deployment_id

    accepted, dep_id = await transact(request.app[ENGINE], work)
    console = request.app.get(CONSOLE)
    if console is not None:  # the console's pages that follow these logs look at once
        console.changes.publish([f"logs:{dep_id}"])
    return web.json_response({"lease_id": lease_id, "accepted": accepted}, status=201)


async def deployment_logs(request: web.Request) -> web.Response:
    """Log lines of a deployment's leases, oldest first: those after ``after`` (a line id; 0,
    the default, is the start), at most ``limit`` (1-1000, default 200). ``next_after`` is the
    cursor for the next call (``kova logs --follow`` polls with it)."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    after = int_query(request, "after", 0, 0, MAX_AMOUNT)
    limit = int_query(request, "limit", 200, 1, 1000)
    async with request.app[READER].connect() as connection:
        await _owned(connection, dep_id, tenant.id)
        rows = (
            await connection.execute(
                select(logs, orders.c.service, orders.c.replica)
                .join(leases, leases.c.id == logs.c.lease_id)
                .join(orders, orders.c.id == leases.c.order_id)
                .where(logs.c.deployment_id == dep_id, logs.c.id > after)
                .order_by(logs.c.id)
                .limit(limit)
            )
        ).all()
    return web.json_response(
        {
            "lines": [
                {"id": r.id, "lease_id": r.lease_id, "service": r.service, "replica": r.replica,
                 "height": r.height, "stream": r.stream, "text": r.line}
                for r in rows
            ],
            "next_after": rows[-1].id if rows else after,
        }
    )  # fmt: skip


def add_more_routes(app: web.Application) -> None:
    """Candidates, a provider's leases and their status reports, the public list of providers,
    a job's result, providers' audits (:mod:`kova_live.audits`)."""
    app.router.add_get("/v1/orders/{id}/candidates", candidates)
    app.router.add_get("/v1/leases", my_leases)
    app.router.add_post("/v1/leases/{id}/status", lease_status)
    app.router.add_get("/v1/providers", public_providers)
    app.router.add_get("/v1/deployments/{id}/result", job_result)
    app.router.add_post("/v1/leases/{id}/logs", ship_logs)
    app.router.add_get("/v1/deployments/{id}/logs", deployment_logs)
    add_audit_routes(app)
