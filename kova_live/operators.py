"""Operator commands over the API: credit a tenant, take a provider down or back, move a manual
clock. An operator account is made on the database by ``kova-live admin operator`` (never by
``POST /v1/accounts``); its token is the one way in. Like every market command, each is applied
once under its ``Idempotency-Key`` (:mod:`kova_live.journal`) and catches the market up to its
height first.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import MAX_AMOUNT, Event, Market, OrderReopened, tenant_account

from . import journal, market
from .app import CACHES, CLOCK, READER, ApiError, RequestBody, read_body
from .clock import ManualClock
from .db import transact
from .deployments import _account, _id
from .schema import accounts, network, provider_nodes, transfers
from .writer import Batch

__all__ = ["add_routes"]


class Credit(RequestBody):
    """``POST /v1/accounts/{id}/credit``: micro-units from outside the network."""

    amount: int = Field(gt=0, le=MAX_AMOUNT)


class ClockMove(RequestBody):
    """``POST /v1/clock``: the height to move a manual clock to."""

    height: int = Field(ge=0, le=MAX_AMOUNT)


async def _operator(request: web.Request) -> Any:
    return await _account(request, "operator")


async def credit(request: web.Request) -> web.Response:
    """Credit a tenant's balance: how money enters the network (there is no payment rail)."""
    operator = await _operator(request)
    tenant_id = _id(request, "account")
    body: Credit = await read_body(request, Credit)
    async with request.app[READER].connect() as connection:
        role = await connection.scalar(select(accounts.c.role).where(accounts.c.id == tenant_id))
    if role is None:
        raise ApiError(404, "not_found", f"no account {tenant_id}")
    if role != "tenant":
        raise ApiError(409, "not_a_tenant", f"account {tenant_id} is a {role}; credits go "
                       "to tenants")  # fmt: skip

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events = m.credit(market.tenant(m, tenant_id), body.amount, height)
        account = tenant_account(tenant_id)
        return events, {"account": account, "amount": body.amount, "height": height,
                        "balance": m.balance(account)}  # fmt: skip

    return (await journal.submit(request, operator.id, apply)).response()


async def fail_provider(request: web.Request) -> web.Response:
    """Take a provider down (a failure seen from outside, or a replay of one): its open bids
    are withdrawn and its leases fail against it, their orders open again."""
    operator = await _operator(request)
    provider_id = _id(request, "provider")

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        events = m.fail_provider(provider_id, height)
        reopened = [e.order_id for e in events if isinstance(e, OrderReopened)]
        return events, {"provider_id": provider_id, "state": "lost", "height": height,
                        "reopened_orders": reopened}  # fmt: skip

    answered = await journal.submit(request, operator.id, apply)
    request.app[CACHES].orders_changed()
    return answered.response()


async def recover_provider(request: web.Request) -> web.Response:
    """Bring a lost provider back online: it may bid again."""
    operator = await _operator(request)
    provider_id = _id(request, "provider")

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        return m.recover_provider(provider_id, height), {
            "provider_id": provider_id, "state": "online", "height": height,
        }  # fmt: skip

    return (await journal.submit(request, operator.id, apply)).response()


async def move_clock(request: web.Request) -> web.Response:
    """Move a manual clock (``serve --clock manual``) forward to ``height``, running every
    settlement round and job deadline up to it before answering."""
    operator = await _operator(request)
    body: ClockMove = await read_body(request, ClockMove)  # a bad body is a 400 on any clock
    clock = request.app[CLOCK]
    if not isinstance(clock, ManualClock):
        raise ApiError(409, "clock_not_manual", "this server keeps time by the wall clock; "
                       "start it with --clock manual to move its clock")  # fmt: skip
    if body.height < clock.height():
        raise ApiError(400, "invalid_field", f"the clock is at {clock.height()}; heights never "
                       "go back", "height")  # fmt: skip
    clock.advance(body.height)  # the writer applies the command at the clock's height

    def apply(m: Market, height: int, batch: Batch) -> tuple[list[Event], Any]:
        return m.tick(height), height

    async def answer(connection: AsyncConnection, height: int) -> dict[str, Any]:
        await connection.execute(update(network).values(manual_height=height))
        return {"height": height}

    return (await journal.submit(request, operator.id, apply, answer)).response()


async def manual_start(engine: Any) -> int:
    """The height a manual clock starts at: where an operator last left it (0 for a new
    network). Raises :class:`ValueError` for a network that has run on the wall clock."""

    async def read(connection: AsyncConnection) -> int:
        row = (await connection.execute(select(network.c.manual_height))).one()
        if row.manual_height is not None:
            return int(row.manual_height)
        ran = await connection.scalar(select(provider_nodes.c.provider_id).limit(1))
        moved = await connection.scalar(select(transfers.c.id).limit(1))
        if ran is not None or moved is not None:
            raise ValueError("this network has run on the wall clock; a manual clock would move "
                             "its heights back")  # fmt: skip
        await connection.execute(update(network).values(manual_height=0))
        return 0

    return await transact(engine, read)


def add_routes(app: web.Application) -> None:
    """Register the operator's routes."""
    app.router.add_post("/v1/accounts/{id}/credit", credit)
    app.router.add_post("/v1/providers/{id}/fail", fail_provider)
    app.router.add_post("/v1/providers/{id}/recover", recover_provider)
    app.router.add_post("/v1/clock", move_clock)
