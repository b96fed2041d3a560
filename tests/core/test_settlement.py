"""Settlement arithmetic, and the property that settling [a, c] equals [a, b] then [b, c]."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kova_core import (
    MICRO,
    Claim,
    LeaseState,
    Market,
    fee_share,
    job_deadline,
    plan_close,
    plan_round,
    provider_account,
)

from .helpers import big_provider, check_invariants, manifest


def claim(lease_id: int, amount: int, paid_before: int = 0) -> Claim:
    return Claim(
        lease_id=lease_id, provider_id=1, amount=amount, start=0, end=60, paid_before=paid_before
    )


def test_a_round_pays_every_claim_when_escrow_covers_them() -> None:
    plan = plan_round(100, [claim(1, 60), claim(2, 40)])
    assert plan is not None
    assert [(p.claim.lease_id, p.gross, p.fee, p.net) for p in plan] == [
        (1, 60, 0, 60),
        (2, 40, 0, 40),
    ]


def test_a_round_pays_nothing_when_escrow_is_one_micro_short() -> None:
    assert plan_round(99, [claim(1, 60), claim(2, 40)]) is None


@pytest.mark.parametrize(
    ("escrow", "amounts", "paid"),
    [
        pytest.param(100, [60, 40], [60, 40], id="covers all: paid in full"),
        pytest.param(50, [60, 40], [30, 20], id="half: pro rata"),
        pytest.param(10, [5, 5, 5], [4, 3, 3], id="remainder to the lowest lease id on a tie"),
        pytest.param(2, [1, 2, 4], [0, 1, 1], id="largest remainders first"),
        pytest.param(0, [7, 9], [0, 0], id="empty escrow: all written off"),
        pytest.param(5, [0, 10], [0, 5], id="a zero claim gets nothing"),
    ],
)
def test_a_close_pays_what_escrow_can_pro_rata(escrow, amounts, paid) -> None:
    plan = plan_close(escrow, [claim(i + 1, a) for i, a in enumerate(amounts)])
    assert [p.gross for p in plan] == paid
    assert [p.written_off for p in plan] == [a - g for a, g in zip(amounts, paid, strict=True)]


@given(
    escrow=st.integers(0, 10**9), amounts=st.lists(st.integers(0, 10**8), min_size=1, max_size=8)
)
def test_a_close_never_pays_more_than_escrow_or_a_claim(escrow, amounts) -> None:
    plan = plan_close(escrow, [claim(i + 1, a) for i, a in enumerate(amounts)])
    assert sum(p.gross for p in plan) == min(escrow, sum(amounts))
    assert all(0 <= p.gross <= p.claim.amount for p in plan)


@given(
    paid=st.lists(st.integers(0, 10**10), min_size=1, max_size=10),
    fee_bps=st.integers(0, 10_000),
)
def test_the_fee_depends_only_on_the_running_total(paid, fee_bps) -> None:
    total = 0
    fees = 0
    for amount in paid:
        fees += fee_share(total, amount, fee_bps)
        total += amount
    assert fees == total * fee_bps // 10_000
    assert all(fee_share(0, a, fee_bps) <= a for a in paid)


@pytest.mark.parametrize(
    ("escrow", "running", "deadline"),
    [
        pytest.param(100, [], None, id="nothing runs"),
        pytest.param(100, [(0, 10)], 10, id="one lease: balance / rate"),
        pytest.param(105, [(0, 10)], 10, id="a partial block is not paid for"),
        pytest.param(100, [(0, 10), (5, 10)], 7, id="two leases: (100 + 50) / 20"),
        pytest.param(0, [(30, 3)], 30, id="no escrow: stop where it starts"),
    ],
)
def test_job_deadline_is_the_last_block_escrow_pays_for(escrow, running, deadline) -> None:
    assert job_deadline(escrow, running) == deadline


def test_escrow_exhaustion_height_is_balance_over_burn_rate() -> None:
    """Analytic check: at rate r from block s with escrow E, the deployment pauses at the first
    round whose bill exceeds what is left."""
    market = Market()
    tenant = market.add_tenant()
    provider = big_provider(market)
    market.credit(tenant, 10_000 * MICRO, 0)
    price = 3 * MICRO
    escrow = 1_000 * MICRO  # 333.3 blocks of billing
    dep = market.create_deployment(tenant, manifest(price=price), escrow, 0)[0].deployment_id
    order = market.deployments[dep].order_ids[0]
    bid = market.place_bid(order, provider, price, 0)[-1].bid_id
    market.accept_bid(bid, 0)
    market.tick(10_000)
    lease = market.leases[1]
    # rounds at 60..300 pay 60 blocks each (900 units); the round at 360 owes 180 > 100 left
    assert lease.state is LeaseState.INSUFFICIENT_FUNDS
    assert lease.blocks_paid == (escrow // price) // 60 * 60 == 300
    assert lease.debt == 60 * price
    assert market.escrow(dep) == escrow - 300 * price


def _market_with_leases(prices: list[int], escrow: int, fee_bps: int) -> tuple[Market, int]:
    market = Market(fee_bps=fee_bps)
    tenant = market.add_tenant()
    market.credit(tenant, escrow, 0)
    dep = market.create_deployment(
        tenant, manifest(count=len(prices), price=max(prices)), escrow, 0
    )
    dep_id = dep[0].deployment_id
    for order_id, price in zip(market.deployments[dep_id].order_ids, prices, strict=True):
        provider = big_provider(market)
        bid = market.place_bid(order_id, provider, price, 0)[-1].bid_id
        market.accept_bid(bid, 0)
    return market, dep_id


@given(
    prices=st.lists(st.integers(1, 5 * MICRO), min_size=1, max_size=4),
    b=st.integers(1, 59),
    c_extra=st.integers(0, 59),
    fee_bps=st.sampled_from([0, 1, 250, 333, 10_000]),
)
def test_settling_a_to_c_at_once_equals_a_to_b_then_b_to_c(prices, b, c_extra, fee_bps) -> None:
    """Whenever escrow covers both, one settlement over [0, c] pays exactly what [0, b] then
    [b, c] pays: to each provider, to the network, and in each lease's books."""
    c = b + c_extra
    escrow = sum(prices) * c  # covers both, exactly
    once, dep = _market_with_leases(prices, escrow, fee_bps)
    twice, _ = _market_with_leases(prices, escrow, fee_bps)
    once.settle_deployment(dep, c)
    twice.settle_deployment(dep, b)
    twice.settle_deployment(dep, c)
    assert once.balances == twice.balances
    for lease_id, lease in once.leases.items():
        other = twice.leases[lease_id]
        assert (lease.total_paid, lease.blocks_paid, lease.last_settled) == (
            other.total_paid,
            other.blocks_paid,
            other.last_settled,
        )
        assert once.balance(provider_account(lease.provider_id)) + 0 >= 0
    assert once.escrow(dep) == twice.escrow(dep) == 0
    check_invariants(once)
    check_invariants(twice)


def test_a_jobs_next_deadline_is_the_earlier_of_escrow_and_max_runtime() -> None:
    from kova_core import job_next_deadline, job_out_of_funds

    # one lease from block 100 at 10 per block; escrow 500 pays blocks 100..150
    assert job_next_deadline(500, [(100, 100, 10)], None) == 150
    assert job_next_deadline(500, [(100, 100, 10)], 30) == 130  # max runtime first
    assert job_next_deadline(500, [(100, 100, 10), (90, 120, 10)], 1000) == 135
    assert job_next_deadline(500, [], 30) is None  # nothing runs
    # at 150 the escrow has paid 500: block 151 it cannot pay
    assert job_out_of_funds(500, [(100, 10)], 150)
    assert not job_out_of_funds(500, [(100, 10)], 130)
