"""Builders and invariant checks shared by the core's tests."""

from __future__ import annotations

import itertools
from collections import defaultdict

from kova_core import (
    EXTERNAL,
    BidState,
    DeploymentState,
    LeaseState,
    Manifest,
    Market,
    OrderState,
    Resources,
    parse_manifest,
)

GIB = 1024**3


def manifest(
    *,
    count: int = 1,
    cpu: str = "0.5",
    memory: str = "512Mi",
    storage: str = "1Gi",
    price: int = 1_000_000,
    kind: str = "deployment",
    max_runtime: int | None = None,
    attributes: dict[str, str] | None = None,
) -> Manifest:
    """A one-service manifest in Akash SDL 2.0 form."""
    lines = ['version: "2.0"']
    if kind != "deployment":
        lines.append(f"kind: {kind}")
    if max_runtime is not None:
        lines.append(f"max_runtime: {max_runtime}")
    lines += [
        "services:",
        "  web:",
        "    image: busybox:1.36",
        "profiles:",
        "  compute:",
        "    web:",
        "      resources:",
        f"        cpu: {{units: {cpu}}}",
        f"        memory: {{size: {memory}}}",
        f"        storage: {{size: {storage}}}",
        "  placement:",
        "    anywhere:",
    ]
    if attributes:
        lines.append("      attributes:")
        lines += [f"        {k}: {v}" for k, v in attributes.items()]
    lines += [
        "      pricing:",
        f"        web: {{denom: uakt, amount: {price}}}",
        "deployment:",
        "  web:",
        "    anywhere:",
        "      profile: web",
        f"      count: {count}",
    ]
    return parse_manifest("\n".join(lines) + "\n")


def big_provider(market: Market, **attributes: str) -> int:
    """A provider with room for many small orders."""
    return market.add_provider(
        capacity=Resources(cpu=8000, memory=32 * GIB, storage=500 * GIB), attributes=attributes
    )


def check_invariants(market: Market) -> None:
    """Assert every invariant of DESIGN section 1, recomputed from the market's public state."""
    # Money is conserved, and the balances are exactly the replay of the ledger.
    replay: dict[str, int] = defaultdict(int)
    credited = withdrawn = 0
    for t in market.ledger:
        assert isinstance(t.amount, int) and t.amount > 0, t
        if t.source == EXTERNAL:
            credited += t.amount
        else:
            replay[t.source] -= t.amount
        if t.destination == EXTERNAL:
            withdrawn += t.amount
        else:
            replay[t.destination] += t.amount
    assert {k: v for k, v in replay.items() if v} == {k: v for k, v in market.balances.items() if v}
    assert sum(market.balances.values()) == credited - withdrawn
    assert market.money_drift() == 0
    assert all(v >= 0 for v in market.balances.values()), market.balances

    # No block of a lease is paid twice: the ranges its payments cover never overlap.
    ranges: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for t in market.ledger:
        if t.lease_id is not None:
            assert t.start is not None and t.end is not None and t.start < t.end, t
            ranges[t.lease_id].add((t.start, t.end))
    for lease_id, spans in ranges.items():
        lease = market.leases[lease_id]
        ordered = sorted(spans)
        for (_, end), (start, _) in itertools.pairwise(ordered):
            assert end <= start, (lease_id, ordered)
        assert ordered[0][0] >= lease.created_at
        assert ordered[-1][1] <= (lease.closed_at if lease.closed_at is not None else market.height)
        assert lease.total_paid <= (ordered[-1][1] - lease.created_at) * lease.price

    # Capacity is never overcommitted, and the books of each provider add up.
    for p in market.providers.values():
        live = [x for x in market.leases.values() if x.provider_id == p.id]
        live = [x for x in live if x.state is not LeaseState.CLOSED]
        used = sum((x.resources for x in live), Resources())
        open_bids = [
            b for b in market.bids.values() if b.provider_id == p.id and b.state is BidState.OPEN
        ]
        reserved = sum((market.orders[b.order_id].resources for b in open_bids), Resources())
        assert p.used == used and p.reserved == reserved, p
        assert (p.used + p.reserved).fits_in(p.capacity), p
        assert p.free == p.capacity - p.used - p.reserved, p
        assert p.leases == {x.id for x in live}

    # Every state is legal and the entities agree with each other.
    for o in market.orders.values():
        dep = market.deployments[o.deployment_id]
        live = [
            x
            for x in market.leases.values()
            if x.order_id == o.id and x.state is not LeaseState.CLOSED
        ]
        bids = [b for b in market.bids.values() if b.order_id == o.id and b.state is BidState.OPEN]
        if o.state is OrderState.MATCHED:
            assert len(live) == 1 and not bids
        else:
            assert not live
        if o.state is OrderState.CLOSED:
            assert not bids
        if dep.state is DeploymentState.CLOSED:
            assert o.state is OrderState.CLOSED
    for lease in market.leases.values():
        dep = market.deployments[lease.deployment_id]
        if lease.state is LeaseState.INSUFFICIENT_FUNDS:
            assert dep.state is DeploymentState.INSUFFICIENT_FUNDS and not dep.is_job
        if lease.state is LeaseState.CLOSED:
            assert lease.close_reason is not None and lease.debt == 0
        else:
            assert dep.state is not DeploymentState.CLOSED
            assert market.providers[lease.provider_id].state.value == "online"
    for dep in market.deployments.values():
        if dep.state is DeploymentState.CLOSED:
            assert market.escrow(dep.id) == 0
        if dep.is_job and dep.state is not DeploymentState.CLOSED:
            # a running job never owes more than its escrow holds
            running = [market.leases[i] for i in dep.lease_ids]
            running = [x for x in running if x.state is LeaseState.ACTIVE]
            accrued = sum((market.height - x.last_settled) * x.price for x in running)
            assert accrued <= market.escrow(dep.id)


def check_limits(market: Market) -> None:
    """Assert what the market's limits promise, and that the books it keeps for them agree with
    a recount of its entities."""
    limits = market.limits
    opened: dict[int, int] = defaultdict(int)
    for o in market.open_orders():
        opened[market.deployments[o.deployment_id].tenant_id] += 1
    assert market._open_by_tenant == opened
    if limits.max_open_orders is not None:
        # the limit refuses new orders; an order reopened by its lease's failure (it has had a
        # lease) opens again whatever the count, or the tenant would lose a replica it had
        fresh: dict[int, int] = defaultdict(int)
        for o in market.open_orders():
            if o.lease_id is None:
                fresh[market.deployments[o.deployment_id].tenant_id] += 1
        assert all(n <= limits.max_open_orders for n in fresh.values()), fresh
    if limits.order_lifetime is not None:
        for o in market.open_orders():  # an order past its lifetime is closed by then
            assert market._lifetimes[o.id] > market.height, (o, market.height)
            assert market._lifetimes[o.id] <= market.height + limits.order_lifetime
    else:
        assert not market._lifetimes
    if limits.tenant_share_bps is None:
        assert not any(market._reserved_for.values())
        return
    for p in market.providers.values():
        mine: dict[int, tuple[int, Resources]] = {}
        for order_id in p.open_bids:
            order = market.orders[order_id]
            tenant = market.deployments[order.deployment_id].tenant_id
            count, held = mine.get(tenant, (0, Resources()))
            mine[tenant] = (count + 1, held + order.resources)
        assert market._reserved_for.get(p.id, {}) == mine, (p.id, mine)
