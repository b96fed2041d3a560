"""Deployments and jobs over the API: create (manifest + deposit), list, show, deposit, close;
and the open orders providers look at.

Lifecycle checks use the core's tables (:func:`kova_core.transition`), manifests the core's
parser, and money the ledger module: one place for each rule. Each command is one transaction;
on PostgreSQL the deployment's row is locked (``FOR UPDATE``) for the commands that change it,
on SQLite every transaction holds the write lock from its start.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    MAX_AMOUNT,
    CloseReason,
    DeploymentState,
    IllegalTransition,
    InsufficientBalance,
    ManifestError,
    OrderState,
    TransferReason,
    deployment_denom,
    escrow_account,
    format_micro,
    parse_manifest,
    tenant_account,
    transition,
)

from .app import CLOCK, ENGINE, ApiError, RequestBody, authenticate, read_body
from .ledger import balance, move
from .schema import deployments, orders

__all__ = ["add_routes"]

Amount = Field(ge=0, le=MAX_AMOUNT)


class NewDeployment(RequestBody):
    """``POST /v1/deployments``: an Akash SDL manifest (YAML text or a JSON object) and the
    deposit moved from the tenant's balance into the new escrow, in micro-units."""

    manifest: str | dict[str, Any]
    deposit: int = Amount


class Deposit(RequestBody):
    """``POST /v1/deployments/{id}/deposit``: micro-units from the tenant's balance."""

    amount: int = Field(gt=0, le=MAX_AMOUNT)


async def _tenant(request: web.Request) -> Any:
    account = await authenticate(request)
    if account.role != "tenant":
        raise ApiError(403, "forbidden", "only tenants have deployments")
    return account


def _id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or int(raw) > MAX_AMOUNT:
        raise ApiError(404, "not_found", f"no deployment {raw!r}")
    return int(raw)


async def _owned(
    connection: AsyncConnection, deployment_id: int, tenant_id: int, *, lock: bool
) -> Any:
    """The tenant's deployment row (404 for another tenant's: its existence is not disclosed)."""
    query = select(deployments).where(deployments.c.id == deployment_id)
    if lock:
        query = query.with_for_update()
    row = (await connection.execute(query)).first()
    if row is None or row.tenant_id != tenant_id:
        raise ApiError(404, "not_found", f"no deployment {deployment_id}")
    return row


def _order_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "deployment_id": row.deployment_id,
        "service": row.service,
        "replica": row.replica,
        "resources": {
            "cpu": row.cpu,
            "memory": row.memory,
            "storage": row.storage,
            "gpu": row.gpu,
        },
        "max_price": row.max_price,
        "denom": row.denom,
        "state": row.state,
        "created_at": row.created_at,
        "closed_at": row.closed_at,
        "close_reason": row.close_reason,
    }


async def _view(connection: AsyncConnection, row: Any) -> dict[str, Any]:
    escrow = await balance(connection, escrow_account(row.id))
    order_rows = (
        await connection.execute(
            select(orders).where(orders.c.deployment_id == row.id).order_by(orders.c.id)
        )
    ).all()
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
        "written_off": row.written_off,
        "orders": [_order_view(o) for o in order_rows],
    }


def _insufficient(exc: InsufficientBalance, field: str) -> ApiError:
    return ApiError(
        409,
        "insufficient_balance",
        f"your balance is {format_micro(exc.balance)}, this needs {format_micro(exc.amount)}",
        field,
    )


def _illegal(exc: IllegalTransition) -> ApiError:
    return ApiError(409, "illegal_transition", str(exc))


# --------------------------------------------------------------------------- handlers


async def create_deployment(request: web.Request) -> web.Response:
    """Create a deployment or job: its escrow, and one open order per service replica."""
    tenant = await _tenant(request)
    body: NewDeployment = await read_body(request, NewDeployment)
    try:
        manifest = parse_manifest(body.manifest)
        specs = manifest.order_specs()
        deployment_denom(specs)
    except ManifestError as exc:
        first = exc.problems[0]
        raise ApiError(
            400, "invalid_manifest", f"{len(exc.problems)} problem(s); first: {first.message}",
            f"manifest.{first.path}",
        ) from None  # fmt: skip
    height = request.app[CLOCK].height()
    text = body.manifest if isinstance(body.manifest, str) else json.dumps(body.manifest)
    async with request.app[ENGINE].begin() as connection:
        dep_id = (
            await connection.execute(
                insert(deployments)
                .values(
                    tenant_id=tenant.id,
                    kind="job" if manifest.is_job else "deployment",
                    manifest=text,
                    max_runtime=manifest.max_runtime,
                    created_at=height,
                    state=DeploymentState.ACTIVE.value,
                    written_off=0,
                )
                .returning(deployments.c.id)
            )
        ).scalar_one()
        if body.deposit:
            try:
                await move(
                    connection,
                    source=tenant_account(tenant.id),
                    destination=escrow_account(dep_id),
                    amount=body.deposit,
                    reason=TransferReason.DEPOSIT,
                    height=height,
                )
            except InsufficientBalance as exc:
                raise _insufficient(exc, "deposit") from None
        for index, spec in enumerate(specs):
            r = spec.resources
            await connection.execute(
                insert(orders).values(
                    deployment_id=dep_id,
                    spec_index=index,
                    service=spec.service,
                    replica=spec.replica,
                    cpu=r.cpu,
                    memory=r.memory,
                    storage=r.storage,
                    gpu=r.gpu,
                    max_price=spec.max_price,
                    denom=spec.denom,
                    created_at=height,
                    state=OrderState.OPEN.value,
                )
            )
        row = await _owned(connection, dep_id, tenant.id, lock=False)
        view = await _view(connection, row)
    return web.json_response(view, status=201)


async def list_deployments(request: web.Request) -> web.Response:
    """The caller's deployments and jobs, newest first."""
    tenant = await _tenant(request)
    async with request.app[ENGINE].connect() as connection:
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
    """One of the caller's deployments: state, escrow, orders."""
    tenant = await _tenant(request)
    dep_id = _id(request)
    async with request.app[ENGINE].connect() as connection:
        row = await _owned(connection, dep_id, tenant.id, lock=False)
        view = await _view(connection, row)
    return web.json_response(view)


async def deposit(request: web.Request) -> web.Response:
    """Move money from the tenant's balance into a deployment's escrow."""
    tenant = await _tenant(request)
    dep_id = _id(request)
    body: Deposit = await read_body(request, Deposit)
    height = request.app[CLOCK].height()
    async with request.app[ENGINE].begin() as connection:
        row = await _owned(connection, dep_id, tenant.id, lock=True)
        if row.state == DeploymentState.CLOSED:
            try:
                transition("deployment", row.id, DeploymentState(row.state), "deposit")
            except IllegalTransition as exc:
                raise _illegal(exc) from None
        try:
            await move(
                connection,
                source=tenant_account(tenant.id),
                destination=escrow_account(dep_id),
                amount=body.amount,
                reason=TransferReason.DEPOSIT,
                height=height,
            )
        except InsufficientBalance as exc:
            raise _insufficient(exc, "amount") from None
        view = await _view(connection, row)
    return web.json_response(view)


async def close(request: web.Request) -> web.Response:
    """Close a deployment: its open orders close, and what is left in escrow is refunded."""
    tenant = await _tenant(request)
    dep_id = _id(request)
    height = request.app[CLOCK].height()
    reason = CloseReason.TENANT_CLOSED.value
    async with request.app[ENGINE].begin() as connection:
        row = await _owned(connection, dep_id, tenant.id, lock=True)
        try:
            new_state = transition("deployment", row.id, DeploymentState(row.state), "close")
            open_orders = (
                await connection.execute(
                    select(orders.c.id, orders.c.state)
                    .where(orders.c.deployment_id == dep_id, orders.c.state != "closed")
                    .order_by(orders.c.id)
                )
            ).all()
            for order in open_orders:
                closed = transition("order", order.id, OrderState(order.state), "close")
                await connection.execute(
                    update(orders)
                    .where(orders.c.id == order.id)
                    .values(state=closed.value, closed_at=height, close_reason=reason)
                )
        except IllegalTransition as exc:
            raise _illegal(exc) from None
        await connection.execute(
            update(deployments)
            .where(deployments.c.id == dep_id)
            .values(state=new_state.value, closed_at=height, close_reason=reason)
        )
        left = await balance(connection, escrow_account(dep_id))
        if left:
            await move(
                connection,
                source=escrow_account(dep_id),
                destination=tenant_account(tenant.id),
                amount=left,
                reason=TransferReason.REFUND,
                height=height,
            )
        row = await _owned(connection, dep_id, tenant.id, lock=False)
        view = await _view(connection, row)
    return web.json_response(view)


async def open_orders(request: web.Request) -> web.Response:
    """Orders open for bids, oldest first (providers only). ``state=open`` is the only state
    offered: other orders are none of a provider's business."""
    account = await authenticate(request)
    if account.role != "provider":
        raise ApiError(403, "forbidden", "only providers look for orders")
    state = request.query.get("state", "open")
    if state != "open":
        raise ApiError(400, "invalid_field", "only state=open is offered", "state")
    async with request.app[ENGINE].connect() as connection:
        rows = (
            await connection.execute(
                select(orders).where(orders.c.state == "open").order_by(orders.c.id).limit(1000)
            )
        ).all()
    return web.json_response({"orders": [_order_view(o) for o in rows]})


def add_routes(app: web.Application) -> None:
    """Register the deployment and order routes."""
    app.router.add_post("/v1/deployments", create_deployment)
    app.router.add_get("/v1/deployments", list_deployments)
    app.router.add_get("/v1/deployments/{id}", show_deployment)
    app.router.add_post("/v1/deployments/{id}/deposit", deposit)
    app.router.add_post("/v1/deployments/{id}/close", close)
    app.router.add_get("/v1/orders", open_orders)
