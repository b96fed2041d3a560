"""The market over the API: deployments (create, list, show, deposit, close), their bids and
leases for tenants; heartbeats, open orders and bids for providers.

Handlers check who is asking and what they sent, then call :mod:`kova_live.market` inside one
transaction that commits before the reply. The core's errors become 4xx replies in one place
(:func:`kova_live.app.core_error`); an error rolls the transaction back, so nothing changes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    MAX_AMOUNT,
    CloseReason,
    InsufficientBalance,
    ManifestError,
    Resources,
    escrow_account,
    format_micro,
    job_deadline,
    parse_manifest,
    provider_matches,
    reputation_score,
)

from . import market
from .app import (
    CACHES,
    CLOCK,
    ENGINE,
    READER,
    SETTINGS,
    WORK,
    ApiError,
    RequestBody,
    authenticate,
    read_body,
)
from .db import transact
from .ledger import balance
from .schema import bids, deployments, leases, orders, provider_nodes
from .work import enqueue

__all__ = ["add_routes"]


class NewDeployment(RequestBody):
    """``POST /v1/deployments``: an Akash SDL manifest (YAML text or a JSON object) and the
    deposit moved from the tenant's balance into the new escrow, in micro-units."""

    manifest: str | dict[str, Any]
    deposit: int = Field(ge=0, le=MAX_AMOUNT)


class Deposit(RequestBody):
    """``POST /v1/deployments/{id}/deposit``: micro-units from the tenant's balance."""

    amount: int = Field(gt=0, le=MAX_AMOUNT)


class Capacity(RequestBody):
    """A provider machine's capacity: millicores, bytes, bytes, GPUs."""

    cpu: int = Field(ge=0, le=MAX_AMOUNT)
    memory: int = Field(ge=0, le=MAX_AMOUNT)
    storage: int = Field(ge=0, le=MAX_AMOUNT)
    gpu: int = Field(ge=0, le=1_000_000)


class Heartbeat(RequestBody):
    """``POST /v1/providers/heartbeat``: what the provider's machine has."""

    capacity: Capacity
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)
    gpu_models: list[str] = Field(default_factory=list, max_length=64)


class NewBid(RequestBody):
    """``POST /v1/orders/{id}/bids``: a price per block in micro-units."""

    price: int = Field(gt=0, le=MAX_AMOUNT)


async def _account(request: web.Request, role: str) -> Any:
    account = await authenticate(request)
    if account.role != role:
        raise ApiError(403, "forbidden", f"only {role}s may do this")
    return account


def _id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_AMOUNT:
        raise ApiError(404, "not_found", f"no {what} {raw!r}")
    return int(raw)


async def _owned(
    connection: AsyncConnection, deployment_id: int, tenant_id: int, *, lock: bool
) -> Any:
    """The tenant's deployment row (404 for another tenant's: its existence is not disclosed)."""
    if lock:
        row = await market.locked_deployment(connection, deployment_id)
    else:
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
        "pauses_at": pause_height(escrow, active, interval) if row.state == "active" else None,
        "debt": sum(r.debt for r in lease_rows),
        "written_off": row.written_off,
        "blocks_paid": sum(r.blocks_paid for r in lease_rows),
        "total_paid": sum(r.total_paid for r in lease_rows),
        "orders": [_order_view(o) for o in order_rows],
        "leases": [_lease_view(r) for r in lease_rows],
    }


# --------------------------------------------------------------------------- tenants


async def create_deployment(request: web.Request) -> web.Response:
    """Create a deployment or job: its escrow, and one open order per service replica."""
    tenant = await _account(request, "tenant")
    body: NewDeployment = await read_body(request, NewDeployment)
    try:
        manifest = parse_manifest(body.manifest)
    except ManifestError as exc:
        first = exc.problems[0]
        raise ApiError(
            400, "invalid_manifest", f"{len(exc.problems)} problem(s); first: {first.message}",
            f"manifest.{first.path}",
        ) from None  # fmt: skip
    text = body.manifest if isinstance(body.manifest, str) else json.dumps(body.manifest)
    height = request.app[CLOCK].height()

    async def work(connection: AsyncConnection) -> dict[str, Any]:
        try:
            dep_id = await market.create_deployment(
                connection, tenant.id, manifest, text, body.deposit, height, request.app[SETTINGS]
            )
        except InsufficientBalance as exc:
            raise _insufficient(exc, "deposit") from None
        expiry = height + request.app[WORK].order_expiry
        made = await connection.execute(select(orders.c.id).where(orders.c.deployment_id == dep_id))
        for order_id in made.scalars():
            await enqueue(connection, "expire_order", order_id, expiry, height)
        fresh = await _owned(connection, dep_id, tenant.id, lock=False)
        return await _view(request, connection, fresh)

    view = await transact(request.app[ENGINE], work)
    request.app[CACHES].orders_changed()
    return web.json_response(view, status=201)


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

    async def settle(connection: AsyncConnection) -> None:
        await market.catch_up(connection, request.app[CLOCK].height(), request.app[SETTINGS])

    await transact(request.app[ENGINE], settle)
    # then read it as of one moment: the deployment, its orders and its leases in one snapshot
    async with request.app[READER].connect() as connection:
        row = await _owned(connection, dep_id, tenant.id, lock=False)
        return web.json_response(await _view(request, connection, row))


async def deposit(request: web.Request) -> web.Response:
    """Move money into a deployment's escrow; a paused one whose debt is now covered resumes."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    body: Deposit = await read_body(request, Deposit)
    height, settings = request.app[CLOCK].height(), request.app[SETTINGS]

    async def work(connection: AsyncConnection) -> dict[str, Any]:
        await market.catch_up(connection, height, settings)
        row = await _owned(connection, dep_id, tenant.id, lock=True)
        try:
            await market.deposit(connection, row, body.amount, height, settings)
        except InsufficientBalance as exc:
            raise _insufficient(exc, "amount") from None
        fresh = await _owned(connection, dep_id, tenant.id, lock=False)
        return await _view(request, connection, fresh)

    return web.json_response(await transact(request.app[ENGINE], work))


async def close(request: web.Request) -> web.Response:
    """Close a deployment: settle its leases to now, close them and its orders, refund."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    height, settings = request.app[CLOCK].height(), request.app[SETTINGS]

    async def work(connection: AsyncConnection) -> dict[str, Any]:
        await market.catch_up(connection, height, settings)
        row = await _owned(connection, dep_id, tenant.id, lock=True)
        await market.close_deployment(connection, row, height, settings, CloseReason.TENANT_CLOSED)
        fresh = await _owned(connection, dep_id, tenant.id, lock=False)
        return await _view(request, connection, fresh)

    view = await transact(request.app[ENGINE], work)
    request.app[CACHES].orders_changed()
    return web.json_response(view)


async def deployment_bids(request: web.Request) -> web.Response:
    """The open bids on a deployment's orders, as a tenant chooses among them: price per
    block, the provider's record (completed and failed leases, reputation), response time."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    async with request.app[READER].connect() as connection:
        await _owned(connection, dep_id, tenant.id, lock=False)
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
    height, settings = request.app[CLOCK].height(), request.app[SETTINGS]

    async def work(connection: AsyncConnection) -> Any:
        lease_id = await market.accept_bid(connection, tenant.id, bid_id, height, settings)
        return (await connection.execute(select(leases).where(leases.c.id == lease_id))).one()

    lease = await transact(request.app[ENGINE], work)
    request.app[CACHES].orders_changed()
    return web.json_response(_lease_view(lease), status=201)


# --------------------------------------------------------------------------- providers


async def heartbeat(request: web.Request) -> web.Response:
    """A provider's agent says what its machine has; the provider is online."""
    provider = await _account(request, "provider")
    body: Heartbeat = await read_body(request, Heartbeat)
    c = body.capacity
    height = request.app[CLOCK].height()

    async def work(connection: AsyncConnection) -> None:
        await market.heartbeat(
            connection, provider.id,
            Resources(cpu=c.cpu, memory=c.memory, storage=c.storage, gpu=c.gpu),
            body.attributes, body.gpu_models, height,
        )  # fmt: skip

    await transact(request.app[ENGINE], work)
    return web.json_response({"provider_id": provider.id, "state": "online", "height": height})


async def open_orders(request: web.Request) -> web.Response:
    """Orders open for bids, oldest first (providers only). ``state=open`` is the only state
    offered: other orders are none of a provider's business."""
    await _account(request, "provider")
    state = request.query.get("state", "open")
    if state != "open":
        raise ApiError(400, "invalid_field", "only state=open is offered", "state")
    caches = request.app[CACHES]
    key = (request.app[CLOCK].height(), caches.orders_version)
    if caches.open_orders is None or caches.open_orders[0] != key:
        async with request.app[READER].connect() as connection:
            rows = (
                await connection.execute(
                    select(orders)
                    .where(orders.c.state == "open")
                    .order_by(orders.c.id)
                    .limit(1000)
                )
            ).all()
        body = json.dumps({"orders": [_order_view(o) for o in rows]}).encode()
        caches.open_orders = (key, body)
    return web.Response(body=caches.open_orders[1], content_type="application/json")


async def place_bid(request: web.Request) -> web.Response:
    """Bid a price per block on an open order, as the calling provider."""
    provider = await _account(request, "provider")
    order_id = _id(request, "order")
    body: NewBid = await read_body(request, NewBid)
    height, settings = request.app[CLOCK].height(), request.app[SETTINGS]

    async def work(connection: AsyncConnection) -> Any:
        bid_id = await market.place_bid(
            connection, provider.id, order_id, body.price, height, settings
        )
        return (await connection.execute(select(bids).where(bids.c.id == bid_id))).one()

    return web.json_response(_bid_view(await transact(request.app[ENGINE], work)), status=201)


async def withdraw_bid(request: web.Request) -> web.Response:
    """Take back one of the caller's open bids."""
    provider = await _account(request, "provider")
    bid_id = _id(request, "bid")
    height, settings = request.app[CLOCK].height(), request.app[SETTINGS]

    async def work(connection: AsyncConnection) -> Any:
        await market.withdraw_bid(connection, provider.id, bid_id, height, settings)
        return (await connection.execute(select(bids).where(bids.c.id == bid_id))).one()

    return web.json_response(_bid_view(await transact(request.app[ENGINE], work)))


def _bid_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "order_id": row.order_id, "provider_id": row.provider_id,
        "price": row.price, "height": row.height, "response_time": row.response_time,
        "state": row.state,
    }  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the market's routes."""
    app.router.add_post("/v1/deployments", create_deployment)
    app.router.add_get("/v1/deployments", list_deployments)
    app.router.add_get("/v1/deployments/{id}", show_deployment)
    app.router.add_post("/v1/deployments/{id}/deposit", deposit)
    app.router.add_post("/v1/deployments/{id}/close", close)
    app.router.add_get("/v1/deployments/{id}/bids", deployment_bids)
    app.router.add_post("/v1/bids/{id}/accept", accept)
    app.router.add_post("/v1/providers/heartbeat", heartbeat)
    app.router.add_get("/v1/orders", open_orders)
    app.router.add_post("/v1/orders/{id}/bids", place_bid)
    app.router.add_delete("/v1/bids/{id}", withdraw_bid)
    add_more_routes(app)


# --------------------------------------------------------------------------- more views


async def candidates(request: web.Request) -> web.Response:
    """Who could serve one of the tenant's orders, and for the others, why not: the answer to
    "why are there no bids?" (offline, placement attributes, free capacity)."""
    tenant = await _account(request, "tenant")
    order_id = _id(request, "order")
    async with request.app[READER].connect() as connection:
        order = (await connection.execute(select(orders).where(orders.c.id == order_id))).first()
        if order is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        await _owned(connection, order.deployment_id, tenant.id, lock=False)
        spec = await market.order_spec(connection, order)
        nodes = (
            await connection.execute(select(provider_nodes).order_by(provider_nodes.c.provider_id))
        ).all()
        able, unable = [], []
        for node in nodes:
            reasons = []
            if node.state != "online":
                reasons.append(f"the provider is {node.state}")
            mismatch = provider_matches(
                spec, json.loads(node.attributes), frozenset(),
                frozenset(json.loads(node.gpu_models)),
            )  # fmt: skip
            if mismatch:
                reasons.append(f"placement: {mismatch}")
            free = await market.free_capacity(connection, node)
            if not spec.resources.fits_in(free):
                reasons.append(f"capacity: {free} free, the order needs {spec.resources}")
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


async def my_leases(request: web.Request) -> web.Response:
    """The calling provider's leases, newest first; ``state`` filters (active,
    insufficient_funds, closed)."""
    provider = await _account(request, "provider")
    state = request.query.get("state")
    if state is not None and state not in ("active", "insufficient_funds", "closed"):
        raise ApiError(400, "invalid_field", "one of active, insufficient_funds, closed", "state")
    query = select(leases).where(leases.c.provider_id == provider.id)
    if state is not None:
        query = query.where(leases.c.state == state)
    async with request.app[READER].connect() as connection:
        rows = (await connection.execute(query.order_by(leases.c.id.desc()).limit(1000))).all()
    return web.json_response({"leases": [_lease_view(r) for r in rows]})


async def public_providers(request: web.Request) -> web.Response:
    """Every provider that has sent a heartbeat: attributes, capacity, state and reputation
    (public: no token needed)."""
    async with request.app[READER].connect() as connection:
        rows = (
            await connection.execute(select(provider_nodes).order_by(provider_nodes.c.provider_id))
        ).all()
    return web.json_response(
        {
            "providers": [
                {
                    "provider_id": r.provider_id, "state": r.state, "last_seen": r.last_seen,
                    "capacity": _resources(r), "attributes": json.loads(r.attributes),
                    "gpu_models": json.loads(r.gpu_models), "completed": r.completed,
                    "failed": r.failed,
                    "reputation": float(reputation_score(r.completed, r.failed)),
                }
                for r in rows
            ]
        }
    )  # fmt: skip


def add_more_routes(app: web.Application) -> None:
    """Candidates, a provider's leases, the public list of providers."""
    app.router.add_get("/v1/orders/{id}/candidates", candidates)
    app.router.add_get("/v1/leases", my_leases)
    app.router.add_get("/v1/providers", public_providers)
