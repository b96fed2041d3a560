"""The market, command by command: orders, bids, leases, settlement, jobs, failures."""

from __future__ import annotations

import numpy as np
import pytest

from kova_core import (
    MICRO,
    NETWORK,
    BidPlaced,
    BidsLost,
    BidState,
    BidWithdrawn,
    CloseReason,
    DebtWrittenOff,
    DeploymentClosed,
    DeploymentNotPayable,
    DeploymentResumed,
    DeploymentState,
    DuplicateBid,
    FixedPrice,
    IllegalTransition,
    InsufficientBalance,
    InsufficientCapacity,
    InvalidAmount,
    InvalidHeight,
    LeaseClosed,
    LeaseResumed,
    LeaseStarted,
    LeaseState,
    ManifestError,
    Market,
    NotAJob,
    OrderClosed,
    OrderNotOpen,
    OrderOpened,
    OrderReopened,
    OrderState,
    PlacementMismatch,
    PriceAboveMax,
    ProviderLost,
    ProviderOffline,
    Resources,
    SettlementRound,
    Transfer,
    Undercut,
    UnknownEntity,
    escrow_account,
    provider_account,
    tenant_account,
)

from .helpers import GIB, big_provider, check_invariants, manifest

HALF_CORE = Resources(cpu=500, memory=512 * 1024**2, storage=GIB)


class World:
    """A market with one funded tenant and helpers to reach a state in one line."""

    def __init__(self, *, fee_bps: int = 0, funds: int = 10_000 * MICRO) -> None:
        self.market = Market(fee_bps=fee_bps)
        self.tenant = self.market.add_tenant("alice")
        self.market.credit(self.tenant, funds, 0)

    def deploy(self, height: int = 0, deposit: int = 1_000 * MICRO, **kw) -> int:
        events = self.market.create_deployment(self.tenant, manifest(**kw), deposit, height)
        return events[0].deployment_id

    def orders(self, dep: int) -> list[int]:
        return self.market.deployments[dep].order_ids

    def lease(self, order: int, provider: int, price: int, height: int) -> int:
        bid = self.market.place_bid(order, provider, price, height)[-1].bid_id
        started = [e for e in self.market.accept_bid(bid, height) if isinstance(e, LeaseStarted)]
        return started[0].lease_id


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


# ---------------------------------------------------------------------------- orders


def test_a_deployment_opens_one_order_per_replica() -> None:
    w = World()
    events = w.market.create_deployment(w.tenant, manifest(count=3), 50 * MICRO, 7)
    dep = events[0].deployment_id
    assert events[1] == Transfer(
        height=7,
        source=tenant_account(w.tenant),
        destination=escrow_account(dep),
        amount=50 * MICRO,
        reason="deposit",
    )
    assert events[2:] == [OrderOpened(height=7, order_id=i, deployment_id=dep) for i in (1, 2, 3)]
    for order_id in w.orders(dep):
        order = w.market.orders[order_id]
        assert (order.state, order.created_at, order.max_price) == (OrderState.OPEN, 7, MICRO)
        assert order.resources == HALF_CORE
    assert [s.replica for s in (w.market.orders[i].spec for i in w.orders(dep))] == [0, 1, 2]


def test_a_deposit_larger_than_the_tenant_balance_is_refused_and_changes_nothing() -> None:
    w = World(funds=10 * MICRO)
    with pytest.raises(InsufficientBalance):
        w.market.create_deployment(w.tenant, manifest(), 11 * MICRO, 0)
    assert w.market.deployments == {} and w.market.orders == {}
    assert w.market.balance(tenant_account(w.tenant)) == 10 * MICRO


def test_only_accepted_denominations_are_taken() -> None:
    market = Market(accepted_denoms={"uusdc"})
    tenant = market.add_tenant()
    with pytest.raises(ManifestError) as err:
        market.create_deployment(tenant, manifest(), 0, 0)
    assert "profiles.placement.anywhere.pricing.web.denom" in str(err.value)
    assert "uusdc" in str(err.value)


# ---------------------------------------------------------------------------- bids


def _bid_world():
    w = World()
    dep = w.deploy(count=2, price=2 * MICRO, attributes={"region": "eu"})
    p = big_provider(w.market, region="eu")
    return w, dep, p


def test_a_bid_reserves_resources_and_records_its_response_time() -> None:
    w, dep, p = _bid_world()
    order = w.orders(dep)[0]
    events = w.market.place_bid(order, p, MICRO, 25)
    assert events == [
        BidPlaced(height=25, bid_id=1, order_id=order, provider_id=p, price=MICRO, response_time=25)
    ]
    assert w.market.providers[p].reserved == HALF_CORE
    assert w.market.bids[1].response_time == 25


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        pytest.param("price above max", PriceAboveMax, id="price above the order's max"),
        pytest.param("duplicate", DuplicateBid, id="second open bid on the same order"),
        pytest.param("matched", OrderNotOpen, id="order already matched"),
        pytest.param("closed", OrderNotOpen, id="order closed"),
        pytest.param(
            "wrong region", PlacementMismatch, id="provider lacks the placement attribute"
        ),
        pytest.param("full", InsufficientCapacity, id="provider has no free capacity"),
        pytest.param("lost", ProviderOffline, id="provider is lost"),
        pytest.param("zero price", InvalidAmount, id="price zero"),
        pytest.param("float price", InvalidAmount, id="price as a float"),
        pytest.param("no order", UnknownEntity, id="unknown order"),
    ],
)
def test_a_bad_bid_is_rejected_with_a_typed_error_and_changes_nothing(setup, error) -> None:
    w, dep, p = _bid_world()
    order, other = w.orders(dep)
    price: object = MICRO
    if setup == "price above max":
        price = 2 * MICRO + 1
    elif setup == "duplicate":
        w.market.place_bid(order, p, MICRO, 1)
    elif setup == "matched":
        w.lease(order, big_provider(w.market, region="eu"), MICRO, 1)
    elif setup == "closed":
        w.market.expire_order(order, 1)
    elif setup == "wrong region":
        p = big_provider(w.market, region="us")
    elif setup == "full":
        p = w.market.add_provider(
            capacity=Resources(cpu=700, memory=GIB, storage=2 * GIB), attributes={"region": "eu"}
        )
        w.market.place_bid(other, p, MICRO, 1)  # reserves 500 of its 700 millicores
    elif setup == "lost":
        w.market.fail_provider(p, 1)
    elif setup == "zero price":
        price = 0
    elif setup == "float price":
        price = 1.5
    elif setup == "no order":
        order = 999
    before = (
        dict(w.market.bids),
        w.market.providers[p].reserved,
        [w.market.orders[i].state for i in w.orders(dep)],
    )
    with pytest.raises(error):
        w.market.place_bid(order, p, price, 2)  # type: ignore[arg-type]
    after = (
        dict(w.market.bids),
        w.market.providers[p].reserved,
        [w.market.orders[i].state for i in w.orders(dep)],
    )
    assert before == after


def test_reservations_make_overcommitting_impossible() -> None:
    w = World()
    dep = w.deploy(count=3)
    p = w.market.add_provider(capacity=Resources(cpu=1000, memory=4 * GIB, storage=10 * GIB))
    a, b, c = w.orders(dep)
    w.market.place_bid(a, p, MICRO, 1)
    w.market.place_bid(b, p, MICRO, 1)
    with pytest.raises(InsufficientCapacity):
        w.market.place_bid(c, p, MICRO, 1)
    w.market.withdraw_bid(2, 2)  # releases b's reservation
    assert w.market.place_bid(c, p, MICRO, 3)[-1].bid_id == 3


def test_accepting_a_bid_starts_a_lease_and_the_other_bids_lose() -> None:
    w, dep, p = _bid_world()
    q = big_provider(w.market, region="eu")
    order = w.orders(dep)[0]
    w.market.place_bid(order, p, MICRO, 10)
    w.market.place_bid(order, q, MICRO - 1, 12)
    events = w.market.accept_bid(2, 20)
    assert events == [
        BidsLost(height=20, order_id=order, bid_ids=(1,), provider_ids=(p,)),
        LeaseStarted(
            height=20, lease_id=1, deployment_id=dep, order_id=order, provider_id=q, price=MICRO - 1
        ),
    ]
    assert w.market.orders[order].state is OrderState.MATCHED
    assert [b.state for b in w.market.bids.values()] == [BidState.LOST, BidState.ACCEPTED]
    assert (
        w.market.providers[p].reserved == Resources() and w.market.providers[p].used == Resources()
    )
    assert w.market.providers[q].used == HALF_CORE and w.market.providers[q].reserved == Resources()
    with pytest.raises(IllegalTransition, match="bid 1 is lost: cannot accept"):
        w.market.accept_bid(1, 21)
    check_invariants(w.market)


def test_the_auto_bidder_bids_on_every_order_it_can_fit_in_id_order() -> None:
    w = World()
    dep = w.deploy(count=3, price=2 * MICRO)
    w.deploy(count=1, price=MICRO // 2)  # below the fixed $1/block: no bid
    p = w.market.add_provider(capacity=Resources(cpu=1000, memory=4 * GIB, storage=10 * GIB))
    events = w.market.poll(p, FixedPrice(), np.random.default_rng(0), 15)
    assert [(e.order_id, e.price) for e in events] == [(o, MICRO) for o in w.orders(dep)[:2]]
    assert w.market.poll(p, FixedPrice(), np.random.default_rng(0), 30) == []


def test_a_poll_limited_to_some_orders_visits_only_those_in_id_order() -> None:
    w = World()
    dep = w.deploy(count=3, price=2 * MICRO)
    first, second, third = w.orders(dep)
    w.market.expire_order(second, 1)
    p = w.market.add_provider(capacity=Resources(cpu=1000, memory=4 * GIB, storage=10 * GIB))
    rng = np.random.default_rng(0)
    # a closed order among them is passed over; the listed ones are visited in id order
    events = w.market.poll(p, FixedPrice(), rng, 15, orders={third, second})
    assert [e.order_id for e in events] == [third]
    events = w.market.poll(p, FixedPrice(), rng, 30, orders=[third, first])
    assert [e.order_id for e in events] == [first]  # already bid on the third
    assert w.market.poll(p, FixedPrice(), rng, 45, orders=[]) == []
    check_invariants(w.market)


def test_an_undercutting_auto_bidder_sees_the_best_competing_bid() -> None:
    w = World()
    dep = w.deploy(price=2 * MICRO)
    p, q = big_provider(w.market), big_provider(w.market)
    w.market.place_bid(w.orders(dep)[0], p, 1_500_000, 5)
    events = w.market.poll(q, Undercut(step=1_000, floor=0), np.random.default_rng(0), 15)
    assert [e.price for e in events] == [1_499_000]


# ---------------------------------------------------------------------------- settlement


def test_three_rounds_then_a_pause_then_a_resume_as_a_whole_trace() -> None:
    w = World(fee_bps=0)
    dep = w.deploy(deposit=150 * MICRO)
    p = big_provider(w.market)
    lease = w.lease(w.orders(dep)[0], p, MICRO, 30)
    trace = []
    for h in (60, 120, 180, 240):
        trace += [(type(e).__name__, e.height) for e in w.market.tick(h)]
    # 60: pays [30, 60) = 30; 120: pays 60; 180: owes 60 > 60 left? no: 150-90 = 60, pays;
    # 240: owes 60, escrow 0: pause
    assert trace == [
        ("Transfer", 60), ("SettlementRound", 60),
        ("Transfer", 120), ("SettlementRound", 120),
        ("Transfer", 180), ("SettlementRound", 180),
        ("LeasePaused", 240), ("DeploymentPaused", 240), ("SettlementRound", 240),
    ]  # fmt: skip
    x = w.market.leases[lease]
    assert (x.state, x.debt, x.last_settled, x.blocks_paid, x.total_paid) == (
        LeaseState.INSUFFICIENT_FUNDS, 60 * MICRO, 240, 150, 150 * MICRO,
    )  # fmt: skip
    # paused blocks are never billed
    assert kinds(w.market.tick(600)) == ["SettlementRound"] * 6
    # a deposit short of the debt pays nothing and resumes nothing
    short = w.market.deposit(dep, 59 * MICRO, 610)
    assert kinds(short) == ["Transfer"]
    assert w.market.leases[lease].state is LeaseState.INSUFFICIENT_FUNDS
    # topping up to cover the debt pays it and resumes billing from now
    events = w.market.deposit(dep, 100 * MICRO, 615)
    assert events[1:] == [
        Transfer(height=615, source=escrow_account(dep), destination=provider_account(p),
                 amount=60 * MICRO, reason="debt", lease_id=lease, start=180, end=240),
        LeaseResumed(height=615, lease_id=lease, deployment_id=dep, provider_id=p),
        DeploymentResumed(height=615, deployment_id=dep),
    ]  # fmt: skip
    assert w.market.leases[lease].last_settled == 615
    paid = w.market.tick(660)[0]
    assert (paid.amount, paid.start, paid.end) == (45 * MICRO, 615, 660)
    check_invariants(w.market)


def test_a_round_is_all_or_nothing_for_a_deployment() -> None:
    w = World()
    dep = w.deploy(count=3, deposit=100 * MICRO)
    a, b, c = w.orders(dep)
    w.lease(a, big_provider(w.market), MICRO, 0)
    w.lease(b, big_provider(w.market), MICRO, 0)
    events = w.market.tick(60)  # owes 120 > 100: neither lease is paid
    assert kinds(events) == ["LeasePaused", "LeasePaused", "DeploymentPaused", "SettlementRound"]
    assert w.market.escrow(dep) == 100 * MICRO
    # a paused deployment takes no new lease until the tenant deposits
    bid = w.market.place_bid(c, big_provider(w.market), MICRO, 61)[-1].bid_id
    with pytest.raises(DeploymentNotPayable):
        w.market.accept_bid(bid, 61)


def test_the_network_fee_takes_its_share_of_each_payment() -> None:
    w = World(fee_bps=250)
    dep = w.deploy(deposit=1_000 * MICRO)
    p = big_provider(w.market)
    w.lease(w.orders(dep)[0], p, 3, 0)  # 3 micro per block: fees round on the running total
    for h in range(60, 601, 60):
        w.market.tick(h)
    lease = w.market.leases[1]
    assert lease.total_paid == 1800
    assert w.market.balance(NETWORK) == 1800 * 250 // 10_000 == 45
    assert w.market.balance(provider_account(p)) == 1800 - 45
    check_invariants(w.market)


# ---------------------------------------------------------------------------- closing


def test_closing_settles_to_the_close_block_and_refunds_the_rest() -> None:
    w = World()
    dep = w.deploy(deposit=500 * MICRO)
    p = big_provider(w.market)
    w.lease(w.orders(dep)[0], p, MICRO, 10)
    events = w.market.close_deployment(dep, 100)
    assert kinds(events) == [
        "Transfer", "SettlementRound",  # the round at 60 pays [10, 60)
        "Transfer", "LeaseClosed", "OrderClosed", "Transfer", "DeploymentClosed",
    ]  # fmt: skip
    assert (events[2].amount, events[2].start, events[2].end, events[2].reason) == (
        40 * MICRO, 60, 100, "close",
    )  # fmt: skip
    assert events[5].reason == "refund" and events[5].amount == 410 * MICRO
    assert w.market.providers[p].used == Resources() and w.market.providers[p].completed == 1
    with pytest.raises(IllegalTransition, match="deployment 1 is closed: cannot close"):
        w.market.close_deployment(dep, 101)
    with pytest.raises(IllegalTransition):
        w.market.deposit(dep, MICRO, 101)
    check_invariants(w.market)


def test_closing_a_paused_deployment_pays_pro_rata_and_writes_off_the_rest() -> None:
    w = World()
    dep = w.deploy(count=2, deposit=90 * MICRO, price=2 * MICRO)
    a, b = w.orders(dep)
    w.lease(a, big_provider(w.market), MICRO, 0)
    w.lease(b, big_provider(w.market), 2 * MICRO, 0)
    w.market.tick(60)  # owes 60 + 120 = 180 > 90: paused
    events = w.market.close_deployment(dep, 70)
    paid = [e for e in events if isinstance(e, Transfer)]
    written = [e for e in events if isinstance(e, DebtWrittenOff)]
    assert [(t.lease_id, t.amount) for t in paid] == [(1, 30 * MICRO), (2, 60 * MICRO)]
    assert [(d.lease_id, d.amount) for d in written] == [(1, 30 * MICRO), (2, 60 * MICRO)]
    assert w.market.deployments[dep].written_off == 90 * MICRO
    assert w.market.escrow(dep) == 0
    check_invariants(w.market)


def test_an_expired_order_closes_and_its_bids_lose() -> None:
    w, dep, p = _bid_world()
    order = w.orders(dep)[0]
    w.market.place_bid(order, p, MICRO, 1)
    events = w.market.expire_order(order, 59)
    assert events == [
        BidsLost(height=59, order_id=order, bid_ids=(1,), provider_ids=(p,)),
        OrderClosed(height=59, order_id=order, deployment_id=dep, reason=CloseReason.EXPIRED),
    ]
    assert w.market.providers[p].reserved == Resources()


# ---------------------------------------------------------------------------- jobs


def test_a_job_is_charged_runtime_times_price_at_completion_and_refunded_the_rest() -> None:
    w = World()
    job = w.deploy(kind="job", max_runtime=3600, deposit=1_000 * MICRO, price=2 * MICRO)
    p = big_provider(w.market)
    lease = w.lease(w.orders(job)[0], p, 2 * MICRO, 10)
    assert kinds(w.market.tick(240)) == ["SettlementRound"] * 4  # jobs are not billed per round
    events = w.market.finish_job(lease, 250, succeeded=True)
    assert kinds(events) == [
        "Transfer",
        "LeaseClosed",
        "OrderClosed",
        "Transfer",
        "DeploymentClosed",
    ]
    charge, refund = events[0], events[3]
    assert (charge.amount, charge.start, charge.end, charge.reason) == (
        480 * MICRO,
        10,
        250,
        "close",
    )
    assert (refund.amount, refund.reason) == (520 * MICRO, "refund")
    assert w.market.deployments[job].close_reason is CloseReason.JOB_COMPLETED
    assert w.market.providers[p].completed == 1


def test_a_job_whose_escrow_runs_out_is_stopped_at_the_last_block_it_paid_for() -> None:
    w = World()
    job = w.deploy(kind="job", max_runtime=3600, deposit=100 * MICRO + 5, price=3 * MICRO)
    p = big_provider(w.market)
    lease = w.lease(w.orders(job)[0], p, 3 * MICRO, 20)
    assert w.market.job_deadline(job) == 20 + 33
    events = w.market.tick(1000)
    stop = [e for e in events if not isinstance(e, SettlementRound)]
    assert kinds(stop) == ["Transfer", "LeaseClosed", "OrderClosed", "Transfer", "DeploymentClosed"]
    assert stop[0].amount == 99 * MICRO and stop[0].height == 53
    assert stop[1].reason is CloseReason.JOB_OUT_OF_FUNDS
    assert stop[3].amount == MICRO + 5  # the part of a block it could not pay for
    assert w.market.providers[p].failed == 0 and w.market.providers[p].completed == 0
    assert w.market.leases[lease].state is LeaseState.CLOSED


def test_a_job_past_its_max_runtime_times_out() -> None:
    w = World()
    job = w.deploy(kind="job", max_runtime=100, deposit=1_000 * MICRO)
    w.lease(w.orders(job)[0], big_provider(w.market), MICRO, 0)
    events = w.market.tick(500)
    closed = [e for e in events if isinstance(e, DeploymentClosed)]
    assert closed == [
        DeploymentClosed(height=100, deployment_id=job, reason=CloseReason.JOB_TIMED_OUT)
    ]


def test_a_failed_job_counts_against_its_provider() -> None:
    w = World()
    job = w.deploy(kind="job", max_runtime=100, count=2, deposit=1_000 * MICRO)
    p = big_provider(w.market)
    first = w.lease(w.orders(job)[0], p, MICRO, 0)
    second = w.lease(w.orders(job)[1], p, MICRO, 0)
    w.market.finish_job(first, 10, succeeded=False)
    assert w.market.deployments[job].state is DeploymentState.ACTIVE  # the other replica runs on
    events = w.market.finish_job(second, 20)
    assert events[-1] == DeploymentClosed(
        height=20, deployment_id=job, reason=CloseReason.JOB_FAILED
    )
    assert (w.market.providers[p].completed, w.market.providers[p].failed) == (1, 1)


def test_finishing_a_deployment_lease_as_a_job_is_refused() -> None:
    w = World()
    dep = w.deploy()
    lease = w.lease(w.orders(dep)[0], big_provider(w.market), MICRO, 0)
    with pytest.raises(NotAJob):
        w.market.finish_job(lease, 5)


# ---------------------------------------------------------------------------- failures


def test_a_lost_provider_fails_its_leases_and_their_orders_reopen() -> None:
    w = World()
    dep = w.deploy(count=2)
    a, b = w.orders(dep)
    p = big_provider(w.market)
    lease = w.lease(a, p, MICRO, 0)
    w.market.place_bid(b, p, MICRO, 5)
    events = w.market.fail_provider(p, 30)
    assert events == [
        ProviderLost(height=30, provider_id=p),
        BidWithdrawn(height=30, bid_id=2, order_id=b, provider_id=p),
        Transfer(height=30, source=escrow_account(dep), destination=provider_account(p),
                 amount=30 * MICRO, reason="close", lease_id=lease, start=0, end=30),
        LeaseClosed(height=30, lease_id=lease, deployment_id=dep, provider_id=p,
                    reason=CloseReason.PROVIDER_LOST),
        OrderReopened(height=30, order_id=a, deployment_id=dep),
    ]  # fmt: skip
    assert w.market.providers[p].failed == 1
    assert [o.id for o in w.market.open_orders()] == [a, b]
    assert w.market.poll(p, FixedPrice(), np.random.default_rng(0), 45) == []
    w.market.recover_provider(p, 60)
    assert len(w.market.poll(p, FixedPrice(), np.random.default_rng(0), 75)) == 2
    check_invariants(w.market)


def test_a_failed_container_reopens_its_order() -> None:
    w = World()
    dep = w.deploy()
    p = big_provider(w.market)
    lease = w.lease(w.orders(dep)[0], p, MICRO, 0)
    events = w.market.fail_lease(lease, 10)
    assert kinds(events) == ["Transfer", "LeaseClosed", "OrderReopened"]
    assert events[1].reason is CloseReason.CONTAINER_FAILED
    with pytest.raises(IllegalTransition):
        w.market.fail_lease(lease, 11)
    with pytest.raises(ValueError, match="container_failed or provider_lost"):
        w.market.fail_lease(lease, 11, CloseReason.TENANT_CLOSED)


# ---------------------------------------------------------------------------- time and money


def test_time_never_goes_backwards() -> None:
    w = World()
    w.market.tick(100)
    with pytest.raises(InvalidHeight):
        w.market.tick(99)
    with pytest.raises(InvalidHeight):
        w.market.tick(1.5)  # type: ignore[arg-type]


def test_rounds_run_by_a_command_that_then_fails_are_returned_by_the_next_command() -> None:
    w = World()
    dep = w.deploy(deposit=100 * MICRO)
    order = w.orders(dep)[0]
    w.lease(order, big_provider(w.market), MICRO, 0)
    with pytest.raises(OrderNotOpen):
        w.market.place_bid(order, big_provider(w.market), MICRO, 130)
    # nothing is lost: the rounds at 60 and 120 come with the next command's events
    assert kinds(w.market.tick(130)) == [
        "Transfer", "SettlementRound",  # 60: pays 60 of 100
        "LeasePaused", "DeploymentPaused", "SettlementRound",  # 120: owes 60 > 40
    ]  # fmt: skip


def test_withdrawals_leave_the_system_and_cannot_overdraw() -> None:
    w = World()
    with pytest.raises(InsufficientBalance):
        w.market.withdraw(tenant_account(w.tenant), 10_001 * MICRO, 1)
    for account in ("escrow:1", "tenant:\u00b9", "tenant:", "tenant:x", "nobody:1"):
        with pytest.raises(UnknownEntity):  # "\u00b9" is a digit to str.isdigit, not to int
            w.market.withdraw(account, MICRO, 1)
    w.market.withdraw(tenant_account(w.tenant), 1_000 * MICRO, 2)
    assert (w.market.credited, w.market.withdrawn) == (10_000 * MICRO, 1_000 * MICRO)
    assert w.market.money_drift() == 0


def test_a_market_that_forgets_closed_bids_keeps_only_open_ones() -> None:
    market = Market(forget_closed_bids=True)
    tenant = market.add_tenant("t")
    market.credit(tenant, 100 * MICRO, 0)
    dep = market.create_deployment(tenant, manifest(count=2), 10 * MICRO, 0)[0].deployment_id
    first, second = market.deployments[dep].order_ids
    p, q = big_provider(market), big_provider(market)
    won = market.place_bid(first, p, MICRO, 1)[-1].bid_id
    lost = market.place_bid(first, q, MICRO, 1)[-1].bid_id
    waiting = market.place_bid(second, q, MICRO, 1)[-1].bid_id
    events = market.accept_bid(won, 2)
    assert [type(e).__name__ for e in events] == ["BidsLost", "LeaseStarted"]
    assert set(market.bids) == {waiting}  # the accepted and the lost bid are gone
    assert market.leases[1].bid_id == won and market.leases[1].price == MICRO
    with pytest.raises(UnknownEntity):
        market.withdraw_bid(lost, 3)
    market.withdraw_bid(waiting, 3)
    assert market.bids == {} and market.providers[q].reserved == Resources()
    check_invariants(market)


def test_cannot_serve_says_why_a_provider_may_not_bid_in_the_words_place_bid_refuses() -> None:
    w = World()
    (order,) = w.orders(w.deploy(attributes={"region": "eu"}))
    fits = big_provider(w.market, region="eu")
    elsewhere = big_provider(w.market, region="us")
    small = w.market.add_provider(capacity=Resources(cpu=100, memory=GIB, storage=GIB),
                                  attributes={"region": "eu"})  # fmt: skip
    lost = big_provider(w.market, region="eu")
    w.market.fail_provider(lost, 1)
    assert w.market.cannot_serve(order, fits) == []
    w.market.place_bid(order, fits, 1_000, 1)  # and the market agrees
    (placement,) = w.market.cannot_serve(order, elsewhere)
    assert placement.startswith("placement: ")
    with pytest.raises(PlacementMismatch):
        w.market.place_bid(order, elsewhere, 1_000, 1)
    (capacity,) = w.market.cannot_serve(order, small)
    assert capacity.startswith("capacity: ")
    with pytest.raises(InsufficientCapacity):
        w.market.place_bid(order, small, 1_000, 1)
    assert w.market.cannot_serve(order, lost) == ["the provider is lost"]
    with pytest.raises(UnknownEntity):
        w.market.cannot_serve(order + 99, fits)
