"""``GET /metrics``: the orchestrator in Prometheus' text format.

Requests are counted and timed as they happen, by route template and status (a middleware).
The market's gauges (entities by state, escrow held, queued work, the height) are read from the
database when Prometheus scrapes, so every server process reports the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select

from .schema import accounts, balances, deployments, leases, orders, settlement_rounds, work_queue

__all__ = ["METRICS", "Metrics", "metrics_middleware", "serve_metrics"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IngressAnswers:
    """``kova_ingress_requests_total``: what the ingress's worker processes answered, by who
    answered (``container``, or ``ingress`` itself: no route, paused, no replica, unreachable)
    and status; ``read`` gives the counts (the workers count in memory shared with the server
    process)."""

    def __init__(self) -> None:
        self.read: Callable[[], dict[tuple[str, int], int]] = dict

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "kova_ingress_requests", "Requests the ingress answered, by who answered and status",
            labels=["source", "status"],
        )  # fmt: skip
        for (source, status), count in sorted(self.read().items()):
            family.add_metric([source, str(status)], count)
        yield family


class Metrics:
    """One registry per application, so that tests can run several servers in a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kova_http_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "kova_http_request_seconds", "Time to answer an HTTP request", ["route"], registry=r
        )
        self.height = Gauge("kova_height", "The current block height", registry=r)
        self.accounts = Gauge("kova_accounts", "Registered accounts", ["role"], registry=r)
        self.deployments = Gauge("kova_deployments", "Deployments and jobs", ["state"], registry=r)
        self.orders = Gauge("kova_orders", "Orders", ["state"], registry=r)
        self.leases = Gauge("kova_leases", "Leases", ["state"], registry=r)
        self.escrow = Gauge("kova_escrow_micro", "Money held in escrow, micro-units", registry=r)
        self.rounds = Gauge("kova_settlement_rounds", "Settlement rounds run", registry=r)
        self.work = Gauge("kova_work_pending", "Background work waiting", registry=r)
        self.held = Gauge(
            "kova_providers_held",
            "Silent providers whose loss a sweep holds back (too many fell silent at once)",
            registry=r,
        )
        self.leader = Gauge(
            "kova_leader", "1 while this process leads (runs market commands), 0 on a standby",
            registry=r,
        )
        self.takeovers = Counter(
            "kova_takeovers", "Terms this process has begun as the leader", registry=r
        )
        self.bid_batch = Histogram(
            "kova_bid_batch_size", "Bid requests taken by one transaction", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )  # fmt: skip
        self.ingress = IngressAnswers()
        r.register(self.ingress)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route template (``/v1/deployments/{id}``)."""
    started = time.perf_counter()
    response = await handler(request)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


async def serve_metrics(request: web.Request) -> web.Response:
    """The metrics, read fresh from the database."""
    from .app import CLOCK, READER

    m = request.app[METRICS]
    m.height.set(request.app[CLOCK].height())
    async with request.app[READER].connect() as connection:
        for gauge, column in (
            (m.accounts, accounts.c.role),
            (m.deployments, deployments.c.state),
            (m.orders, orders.c.state),
            (m.leases, leases.c.state),
        ):
            gauge.clear()
            rows = await connection.execute(select(column, func.count()).group_by(column))
            for label, count in rows.all():
                gauge.labels(label).set(count)
        escrow = await connection.scalar(
            select(func.coalesce(func.sum(balances.c.amount), 0)).where(
                balances.c.account.like("escrow:%")
            )
        )
        m.escrow.set(int(escrow))
        m.rounds.set(
            int(await connection.scalar(select(func.count()).select_from(settlement_rounds)))
        )
        pending = select(func.count()).where(work_queue.c.state == "pending")
        m.work.set(int(await connection.scalar(pending)))
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
