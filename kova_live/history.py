"""What the console draws and lists beyond a deployment's view: a deployment's escrow over time
(``GET /v1/deployments/{id}/escrow``) and a provider's own bids (``GET /v1/bids``). Public API,
under the same rules as the rest: a tenant reads only its deployments, a provider only its
bids."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from kova_core import BidState

from .app import CLOCK, INT64_MAX, READER, ApiError, int_query
from .deployments import _account, _id, _owned, _resources
from .schema import bids, escrow_points, orders

__all__ = ["add_routes"]

BID_STATES = tuple(s.value for s in BidState)


async def escrow_history(request: web.Request) -> web.Response:
    """The points of one of the caller's deployments' escrow history, oldest first: the last
    ``limit`` (1-1000, default 500) with an id below ``before``. A point is written at each
    change other than a round's routine payment (deposits, leases started, paused, resumed or
    closed, refunds); from a point on, the escrow falls by ``burn_rate`` a block, paid at each
    settlement round, until the next point."""
    tenant = await _account(request, "tenant")
    dep_id = _id(request, "deployment")
    limit = int_query(request, "limit", 500, 1, 1000)
    before = int_query(request, "before", INT64_MAX, 1, INT64_MAX)
    async with request.app[READER].connect() as connection:
        await _owned(connection, dep_id, tenant.id)
        rows = (
            await connection.execute(
                select(escrow_points)
                .where(escrow_points.c.deployment_id == dep_id, escrow_points.c.id < before)
                .order_by(escrow_points.c.id.desc())
                .limit(limit)
            )
        ).all()
    rows.reverse()
    return web.json_response(
        {
            "deployment_id": dep_id,
            "height": request.app[CLOCK].height(),
            "points": [
                {"id": r.id, "height": r.height, "escrow": r.escrow, "burn_rate": r.burn_rate}
                for r in rows
            ],
            "next_before": rows[0].id if len(rows) == limit else None,
        }
    )


async def my_bids(request: web.Request) -> web.Response:
    """The calling provider's bids, newest first, with the orders they are on: ``state``
    filters (open, accepted, lost, withdrawn), ``limit`` (1-1000, default 100) and ``before``
    (a bid id: only older ones) page; ``next_before`` continues."""
    provider = await _account(request, "provider")
    state = request.query.get("state")
    if state is not None and state not in BID_STATES:
        raise ApiError(400, "invalid_field", f"one of {', '.join(BID_STATES)}", "state")
    limit = int_query(request, "limit", 100, 1, 1000)
    before = int_query(request, "before", INT64_MAX, 1, INT64_MAX)
    query = (
        select(bids, orders.c.service, orders.c.max_price, orders.c.denom,
               orders.c.state.label("order_state"), orders.c.cpu, orders.c.memory,
               orders.c.storage, orders.c.gpu)
        .join(orders, orders.c.id == bids.c.order_id)
        .where(bids.c.provider_id == provider.id, bids.c.id < before)
        .order_by(bids.c.id.desc())
        .limit(limit)
    )  # fmt: skip
    if state is not None:
        query = query.where(bids.c.state == state)
    async with request.app[READER].connect() as connection:
        rows = (await connection.execute(query)).all()
    return web.json_response(
        {
            "bids": [
                {
                    "id": r.id, "order_id": r.order_id, "price": r.price, "height": r.height,
                    "response_time": r.response_time, "state": r.state, "service": r.service,
                    "max_price": r.max_price, "denom": r.denom, "order_state": r.order_state,
                    "resources": _resources(r),
                }
                for r in rows
            ],
            "next_before": rows[-1].id if len(rows) == limit else None,
        }
    )  # fmt: skip


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/deployments/{id}/escrow", escrow_history)
    app.router.add_get("/v1/bids", my_bids)
