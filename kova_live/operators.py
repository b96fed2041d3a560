"""Operator commands over the API: credit a tenant, take a provider down or back, move a manual
clock, issue invite codes, suspend an account and resume it. An operator account is made on the
database by ``kova-live admin operator`` (never by ``POST /v1/accounts``); its token is the one
way in. Like every market command, each is applied once under its ``Idempotency-Key``
(:mod:`kova_live.journal`) and catches the market up to its height first. Invites, suspensions
and resumptions are not market commands and are not journaled (their answers hold secrets:
invite codes, a new token).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import MAX_AMOUNT, Event, Market, OrderReopened, tenant_account

from . import journal, market
from .app import (
    CACHES,
    CLOCK,
    ENGINE,
    LEADERSHIP,
    READER,
    WRITER,
    ApiError,
    RequestBody,
    hash_token,
    new_secret,
    read_body,
    wall_ms,
)
from .clock import ManualClock
from .db import transact
from .deployments import _account, _id
from .schema import accounts, invites, network, provider_nodes, transfers
from .writer import Batch, NotLeader

__all__ = ["add_routes"]


class Credit(RequestBody):
    """``POST /v1/accounts/{id}/credit``: micro-units from outside the network."""

    amount: int = Field(gt=0, le=MAX_AMOUNT)


class ClockMove(RequestBody):
    """``POST /v1/clock``: the height to move a manual clock to."""

    height: int = Field(ge=0, le=MAX_AMOUNT)


MAX_INVITES = 100


class NewInvites(RequestBody):
    """``POST /v1/invites``: how many invite codes to issue at once."""

    count: int = Field(default=1, ge=1, le=MAX_INVITES)


async def _operator(request: web.Request) -> Any:
    return await _account(request, "operator")


async def step_down(request: web.Request) -> web.Response:
    """A planned switch-over (``kova-live admin step-down``): the leader stops taking market
    commands (those waiting are answered 503, to be sent again to the next leader), releases
    its lock and stands by, so a standby takes over. 409 from a standby or a lone SQLite
    server."""
    await _operator(request)
    leadership = request.app.get(LEADERSHIP)
    if leadership is None or leadership.role != "leader":
        raise ApiError(409, "not_the_leader", "only the leader of a PostgreSQL network with "
                       "standbys steps down")  # fmt: skip
    leadership.step_down()
    return web.json_response({"stepped_down": True, "epoch": leadership.epoch})


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
    writer = request.app[WRITER]
    if not writer.started:  # a standby's clock stands still (it resumes where the leader left)
        raise NotLeader(writer.leader_url)
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


async def issue_invites(request: web.Request) -> web.Response:
    """Issue ``count`` invite codes, each good for one registration (``POST /v1/accounts``
    with ``invite``); the codes are answered once, only their hashes are kept."""
    operator = await _operator(request)
    empty = not (await request.read()).strip()  # no body: one code
    body: NewInvites = NewInvites() if empty else await read_body(request, NewInvites)
    codes = [new_secret("kinv_") for _ in range(body.count)]
    height, now = request.app[CLOCK].height(), wall_ms()
    async with request.app[ENGINE].begin() as connection:
        await connection.execute(insert(invites), [
            {"code_hash": hash_token(code), "issued_by": operator.id, "issued_height": height,
             "issued_ms": now} for code in codes
        ])  # fmt: skip
    return web.json_response(
        {"codes": codes, "issued_by": f"operator:{operator.id}", "height": height}, status=201
    )


def _account_row(account_id: int) -> Any:
    return select(accounts).where(accounts.c.id == account_id)


def _standing(row: Any) -> dict[str, Any]:
    suspended = row.suspended_ms is not None
    return {"id": row.id, "account": f"{row.role}:{row.id}", "suspended": suspended,
            "suspended_by": f"operator:{row.suspended_by}" if suspended else None,
            "suspended_height": row.suspended_height}  # fmt: skip


async def suspend_account(request: web.Request) -> web.Response:
    """Suspend an account: its token is refused from now on (403 ``account_suspended``) and
    will never work again; resuming gives the account a new one. Suspending a suspended
    account changes nothing and answers the suspension that stands."""
    operator = await _operator(request)
    account_id = _id(request, "account")
    if account_id == operator.id:
        raise ApiError(409, "cannot_suspend_self", "an operator cannot suspend its own account")
    async with request.app[ENGINE].begin() as connection:
        await connection.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.suspended_ms.is_(None))
            .values(suspended_by=operator.id, suspended_height=request.app[CLOCK].height(),
                    suspended_ms=wall_ms())
        )  # fmt: skip
        row = (await connection.execute(_account_row(account_id))).first()
    if row is None:
        raise ApiError(404, "not_found", f"no account {account_id}")
    request.app[CACHES].forget_token(row.token_hash)  # refused from the next request on
    return web.json_response(_standing(row))


async def resume_account(request: web.Request) -> web.Response:
    """Lift an account's suspension, with a new token (answered once, for the operator to hand
    over): the token it had when suspended stays revoked."""
    await _operator(request)
    account_id = _id(request, "account")
    token = new_secret("kova_")
    async with request.app[ENGINE].begin() as connection:
        row = (await connection.execute(_account_row(account_id))).first()
        if row is None:
            raise ApiError(404, "not_found", f"no account {account_id}")
        resumed = await connection.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.suspended_ms.is_not(None))
            .values(suspended_by=None, suspended_height=None, suspended_ms=None,
                    token_hash=hash_token(token))
        )  # fmt: skip
        if resumed.rowcount != 1:
            raise ApiError(409, "not_suspended", f"account {account_id} is not suspended")
    request.app[CACHES].forget_token(row.token_hash)
    return web.json_response({"id": row.id, "account": f"{row.role}:{row.id}",
                              "suspended": False, "token": token})  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the operator's routes."""
    app.router.add_post("/v1/invites", issue_invites)
    app.router.add_post("/v1/accounts/{id}/suspend", suspend_account)
    app.router.add_post("/v1/accounts/{id}/resume", resume_account)
    app.router.add_post("/v1/accounts/{id}/credit", credit)
    app.router.add_post("/v1/providers/{id}/fail", fail_provider)
    app.router.add_post("/v1/providers/{id}/recover", recover_provider)
    app.router.add_post("/v1/clock", move_clock)
    app.router.add_post("/v1/leader/step-down", step_down)
