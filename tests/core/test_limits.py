"""The network's limits (``Market(limits=Limits(...))``), each met and each kept to the block."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kova_core import (
    MICRO,
    BidState,
    CloseReason,
    DepositTooSmall,
    InsufficientCapacity,
    InvalidAmount,
    Limits,
    ManifestError,
    Market,
    OrderClosed,
    OrderState,
    Resources,
    TenantShareReached,
    TooManyOpenOrders,
    blocks_in,
    deposit_for_hours,
    max_price_per_block,
    pricing_strategy,
)

from .helpers import GIB, big_provider, check_invariants, check_limits, manifest


def market(**limits) -> tuple[Market, int]:
    m = Market(limits=Limits(**limits))
    tenant = m.add_tenant("t")
    m.credit(tenant, 10**6 * MICRO, 0)
    return m, tenant


def test_off_by_default_and_the_network_defaults():
    assert Market().limits == Limits()
    assert Limits.network(60) == Limits(
        min_deposit_blocks=60, max_replicas=100, max_open_orders=1000, largest_provider=True,
        order_lifetime=3600, tenant_share_bps=5000,
    )  # fmt: skip


@pytest.mark.parametrize(
    "field, value",
    [("min_deposit_blocks", -1), ("max_replicas", 0), ("max_open_orders", True),
     ("order_lifetime", 2**63), ("tenant_share_bps", 10_001), ("largest_provider", 1)],
)  # fmt: skip
def test_limits_out_of_range_are_refused_naming_the_field(field, value):
    with pytest.raises(InvalidAmount, match=f"limits.{field}"):
        Limits(**{field: value})


def test_a_deposit_below_the_minimum_is_refused_and_changes_nothing():
    m, t = market(min_deposit_blocks=60)
    before = dict(m.balances)
    with pytest.raises(DepositTooSmall, match=r"at least 120000000 micro.*60 blocks"):
        m.create_deployment(t, manifest(count=2, price=MICRO), 60 * 2 * MICRO - 1, 0)
    assert dict(m.balances) == before and not m.deployments and not m.orders
    m.create_deployment(t, manifest(count=2, price=MICRO), 60 * 2 * MICRO, 0)


def test_a_billion_replicas_are_refused_before_any_order_is_made():
    m, t = market(max_replicas=100)
    with pytest.raises(ManifestError) as caught:
        m.create_deployment(t, manifest(count=10**9), 0, 0)  # would exhaust memory if expanded
    problem = caught.value.problems[0]
    assert problem.path == "deployment.web.anywhere.count"
    assert "1000000000 replicas" in problem.message and "at most 100" in problem.message
    m.create_deployment(t, manifest(count=100), 0, 0)
    assert len(m.orders) == 100


def test_open_orders_per_tenant_are_capped_and_free_again_when_orders_close():
    m, t = market(max_open_orders=3)
    other = m.add_tenant("other")
    first = m.create_deployment(t, manifest(count=2), 0, 0)[0].deployment_id
    with pytest.raises(TooManyOpenOrders, match="has 2 open orders and asks for 2 more"):
        m.create_deployment(t, manifest(count=2), 0, 1)
    m.create_deployment(other, manifest(count=3), 0, 1)  # another tenant's are its own
    m.create_deployment(t, manifest(count=1), 0, 1)
    p = big_provider(m)
    order = m.deployments[first].order_ids[0]
    m.accept_bid(m.place_bid(order, p, 1, 2)[-1].bid_id, 2)  # matched: no longer open
    m.create_deployment(t, manifest(count=1), 0, 3)
    m.close_deployment(first, 4)
    m.create_deployment(t, manifest(count=1), 0, 5)
    check_limits(m)


def test_orders_no_larger_than_the_largest_provider_per_resource():
    m, t = market(largest_provider=True)
    m.create_deployment(t, manifest(cpu="64", memory="1Ti"), 0, 0)  # no provider yet: any size
    m.add_provider(capacity=Resources(cpu=4000, memory=8 * GIB, storage=100 * GIB), attributes={})
    m.add_provider(capacity=Resources(cpu=2000, memory=64 * GIB, storage=10 * GIB), attributes={})
    m.create_deployment(t, manifest(cpu="4", memory="64Gi", storage="100Gi"), 0, 1)
    with pytest.raises(ManifestError) as caught:
        m.create_deployment(t, manifest(cpu="4.5", memory="65Gi"), 0, 1)
    paths = [p.path for p in caught.value.problems]
    assert paths == ["profiles.compute.web.resources.cpu.units",
                     "profiles.compute.web.resources.memory.size"]  # fmt: skip
    assert "largest provider on the network has 4000" in caught.value.problems[0].message


def test_an_order_nobody_accepts_closes_at_the_end_of_its_lifetime_and_frees_capacity():
    m, t = market(order_lifetime=100)
    p = big_provider(m)
    dep = m.create_deployment(t, manifest(), 0, 10)[0].deployment_id
    order = m.deployments[dep].order_ids[0]
    m.place_bid(order, p, 1, 20)
    assert m.providers[p].reserved != Resources()
    m.tick(109)
    assert m.orders[order].state is OrderState.OPEN
    events = m.tick(500)
    closed = [e for e in events if isinstance(e, OrderClosed)]
    assert [(e.order_id, e.height, e.reason) for e in closed] == [(order, 110, CloseReason.EXPIRED)]
    assert m.providers[p].reserved == Resources() and m.providers[p].free == m.providers[p].capacity
    assert all(b.state is BidState.LOST for b in m.bids.values())
    check_invariants(m)
    check_limits(m)


def test_a_reopened_order_gets_a_lifetime_of_its_own():
    m, t = market(order_lifetime=100)
    p = big_provider(m)
    dep = m.create_deployment(t, manifest(), 10 * MICRO, 0)[0].deployment_id
    order = m.deployments[dep].order_ids[0]
    m.accept_bid(m.place_bid(order, p, 1, 0)[-1].bid_id, 0)
    m.tick(300)  # matched: its lifetime no longer runs
    m.fail_lease(m.orders[order].lease_id, 300, CloseReason.CONTAINER_FAILED)
    assert m.orders[order].state is OrderState.OPEN
    m.tick(399)
    assert m.orders[order].state is OrderState.OPEN
    m.tick(400)
    assert m.orders[order].state is OrderState.CLOSED


def test_one_tenants_bids_reserve_at_most_its_share_of_a_provider_beyond_a_first():
    m, t = market(tenant_share_bps=5000)
    other = m.add_tenant("other")
    p = m.add_provider(capacity=Resources(cpu=2000, memory=8 * GIB, storage=100 * GIB),
                       attributes={})  # fmt: skip
    whole = m.create_deployment(t, manifest(cpu="2"), 0, 0)[0].deployment_id  # a whole machine
    m.place_bid(m.deployments[whole].order_ids[0], p, 1, 0)  # a first bid: always
    m.withdraw_bid(next(iter(m.bids)), 0)
    flood = m.create_deployment(t, manifest(count=3, cpu="0.5"), 0, 0)[0].deployment_id
    a, b, c = m.deployments[flood].order_ids
    m.place_bid(a, p, 1, 1)
    m.place_bid(b, p, 1, 1)  # 1000 of 2000 millicores: the share
    with pytest.raises(TenantShareReached, match="at most cpu=1 memory=4Gi"):
        m.place_bid(c, p, 1, 1)
    assert isinstance(TenantShareReached("x"), InsufficientCapacity)
    theirs = m.create_deployment(other, manifest(cpu="0.5"), 0, 1)[0].deployment_id
    m.place_bid(m.deployments[theirs].order_ids[0], p, 1, 1)  # the other tenant still gets one
    check_limits(m)


def test_a_poll_passes_over_orders_beyond_the_tenants_share():
    m, t = market(tenant_share_bps=5000)
    other = m.add_tenant("other")
    p = m.add_provider(capacity=Resources(cpu=2000, memory=8 * GIB, storage=100 * GIB),
                       attributes={})  # fmt: skip
    m.create_deployment(t, manifest(count=4, cpu="0.5"), 0, 0)
    theirs = m.create_deployment(other, manifest(cpu="0.5"), 0, 0)[0].deployment_id
    m.poll(p, pricing_strategy("fixed", price_per_block=1), np.random.default_rng(0), 1)
    bid_on = {b.order_id for b in m.bids.values()}
    assert len(bid_on) == 3 and m.deployments[theirs].order_ids[0] in bid_on
    check_limits(m)


def test_limits_survive_a_restore():
    m, t = market(order_lifetime=100, tenant_share_bps=5000, max_open_orders=10)
    p = big_provider(m)
    dep = m.create_deployment(t, manifest(count=3), 0, 5)[0].deployment_id
    for order in m.deployments[dep].order_ids[:2]:
        m.place_bid(order, p, 1, 6)
    again = Market.restore(
        height=m.height, last_round=m.last_round, balances=m.balances, credited=m.credited,
        withdrawn=m.withdrawn, tenants=m.tenants.values(),
        providers=[dataclasses.replace(x) for x in m.providers.values()],
        deployments=[dataclasses.replace(d, order_ids=[], lease_ids=[]) for d in m.deployments.values()],
        orders=[dataclasses.replace(o, open_bids={}) for o in m.orders.values()],
        bids=m.bids.values(), leases=m.leases.values(), limits=m.limits,
    )  # fmt: skip
    check_limits(again)
    assert again._lifetimes == m._lifetimes and again._reserved_for == m._reserved_for
    assert again.largest == m.largest
    again.tick(105)
    assert all(o.state is OrderState.CLOSED for o in again.orders.values())


def test_polls_cannot_be_carried_out_late_under_limits_that_read_other_orders():
    m, t = market(order_lifetime=100)
    dep = m.create_deployment(t, manifest(), 0, 0)[0].deployment_id
    with pytest.raises(ValueError, match="cannot be carried out late"):
        m.poll_late(m.deployments[dep].order_ids[0], [])


def test_what_create_deployment_refuses_is_told_without_changing_anything():
    """``manifest_problems`` and ``Limits.min_deposit``: the rules a dry run asks about, the
    very ones ``create_deployment`` enforces."""
    m, t = market(max_replicas=100, largest_provider=True, min_deposit_blocks=60)
    m.add_provider(capacity=Resources(cpu=4000, memory=8 * GIB, storage=100 * GIB), attributes={})
    before = (dict(m.balances), dict(m.orders))
    assert m.manifest_problems(manifest(count=2)) == ()
    (too_many,) = m.manifest_problems(manifest(count=10**9))
    assert too_many.path == "deployment.web.anywhere.count"
    (too_big,) = m.manifest_problems(manifest(cpu="8"))
    assert too_big.path == "profiles.compute.web.resources.cpu.units"
    assert (dict(m.balances), dict(m.orders)) == before
    specs = manifest(count=2, price=MICRO).order_specs()
    assert max_price_per_block(specs) == 2 * MICRO
    needed = m.limits.min_deposit(max_price_per_block(specs))
    assert needed == 120 * MICRO and Limits().min_deposit(2 * MICRO) == 0
    with pytest.raises(DepositTooSmall):
        m.create_deployment(t, manifest(count=2, price=MICRO), needed - 1, 0)
    m.create_deployment(t, manifest(count=2, price=MICRO), needed, 0)


def test_a_deposit_for_hours_at_the_networks_block_length():
    assert blocks_in(3_600_000) == 3600 and blocks_in(3_600_000, 6000) == 600
    assert blocks_in(1001, 1000) == 2  # a started block is a block
    assert deposit_for_hours(1000, 24) == 1000 * 86_400
    assert deposit_for_hours(1000, 1, block_ms=6000) == 600_000
    assert deposit_for_hours(7, 1, block_ms=7000) == 7 * 515  # 3600 / 7 s, rounded up
    with pytest.raises(InvalidAmount):
        blocks_in(1000, 0)
