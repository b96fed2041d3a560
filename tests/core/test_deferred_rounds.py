"""``Market(defer_rounds=True)`` decides everything as a market that pays every round does.

Random histories of commands (deployments with small deposits, bids, accepts, deposits that
resume paused deployments, closes, provider failures, ticks far apart) run on two markets, one
paying round by round and one deferring. Every command must return the same events but for
settlement transfers (which the deferring market makes later, in runs), and after ``flush`` the
balances, every lease and the ledger with each lease's settlement runs merged must be equal.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kova_core import (
    MICRO,
    InvalidAmount,
    KovaError,
    Market,
    SettlementRound,
    Transfer,
)

from .helpers import big_provider, check_invariants, manifest


def merged_ledger(market: Market) -> list[tuple[Any, ...]]:
    """The ledger with each lease's contiguous settlement transfers merged, sorted."""
    runs: dict[tuple[Any, ...], list[Transfer]] = defaultdict(list)
    rows = []
    for t in market.ledger:
        if t.reason == "settlement":
            runs[(t.lease_id, t.destination)].append(t)
        else:
            rows.append((t.height, t.source, t.destination, t.amount, t.reason, t.lease_id,
                         t.start, t.end))  # fmt: skip
    for group in runs.values():
        group.sort(key=lambda t: t.start)
        run = None
        for t in group:
            if run is not None and run[7] == t.start:
                run = (t.height, run[1], run[2], run[3] + t.amount, run[4], run[5], run[6], t.end)
            else:
                if run is not None:
                    rows.append(run)
                run = (t.height, t.source, t.destination, t.amount, t.reason, t.lease_id,
                       t.start, t.end)  # fmt: skip
        rows.append(run)
    return sorted(rows, key=lambda r: tuple((v is None, v) for v in r))


def leases(market: Market) -> list[tuple[Any, ...]]:
    return [
        (x.id, x.state, x.price, x.created_at, x.closed_at, x.close_reason, x.blocks_paid,
         x.total_paid, x.debt, x.written_off)
        for x in market.leases.values()
    ]  # fmt: skip


def without_settlement(events: list[Any]) -> list[Any]:
    return [
        e for e in events if not (isinstance(e, Transfer) and e.reason == "settlement")
    ]


COMMANDS = st.lists(
    st.tuples(
        st.sampled_from(["deploy", "bid", "deposit", "close", "fail", "recover", "tick"]),
        st.integers(0, 10**6),  # which entity / how much
        st.integers(0, 400),  # blocks to move on
    ),
    min_size=5,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(COMMANDS, st.sampled_from([7, 60]))
def test_deferring_rounds_changes_no_outcome(commands, interval):
    eager = Market(settlement_interval=interval)
    deferred = Market(settlement_interval=interval, defer_rounds=True)
    markets = (eager, deferred)
    for market in markets:
        tenant = market.add_tenant("t")
        market.credit(tenant, 10**12, 0)
        for _ in range(3):
            big_provider(market)
    height = 0
    for kind, pick, step in commands:
        height += step
        outcomes = []
        for market in markets:
            try:
                events = run(market, kind, pick, height)
            except KovaError as exc:
                events = [type(exc).__name__]
            outcomes.append(without_settlement(events))
        assert outcomes[0] == outcomes[1], (kind, pick, height)
    for market in markets:
        market.tick(height + 3 * interval)
    assert [e for e in eager.flush()] == []
    deferred.flush()
    assert deferred.accrued == 0
    assert dict(eager.balances) == dict(deferred.balances)
    assert leases(eager) == leases(deferred)
    assert merged_ledger(eager) == merged_ledger(deferred)
    for market in markets:
        check_invariants(market)


def run(market: Market, kind: str, pick: int, height: int) -> list[Any]:
    deps = sorted(market.deployments)
    if kind == "deploy":
        price = (1 + pick % 3) * MICRO // 2
        deposit = (pick % 500) * price  # from nothing to a few hundred blocks
        return market.create_deployment(1, manifest(count=1 + pick % 2, price=price), deposit,
                                        height)  # fmt: skip
    if kind == "bid":
        orders = [o.id for o in market.open_orders()]
        if not orders:
            return market.tick(height)
        order = orders[pick % len(orders)]
        provider = 1 + pick % 3
        placed = market.place_bid(order, provider, market.orders[order].max_price - pick % 7,
                                  height)  # fmt: skip
        return placed + market.accept_bid(placed[-1].bid_id, height)
    if kind == "deposit" and deps:
        return market.deposit(deps[pick % len(deps)], 1 + pick % (200 * MICRO), height)
    if kind == "close" and deps:
        return market.close_deployment(deps[pick % len(deps)], height)
    if kind == "fail":
        return market.fail_provider(1 + pick % 3, height)
    if kind == "recover":
        return market.recover_provider(1 + pick % 3, height)
    return market.tick(height)


def test_rounds_report_the_same_figures():
    """A round's SettlementRound counts deferred deployments as paid, with what they owe."""
    eager, deferred = Market(), Market(defer_rounds=True)
    for market in (eager, deferred):
        tenant = market.add_tenant("t")
        market.credit(tenant, 10**12, 0)
        provider = big_provider(market)
        for height, deposit in ((5, 100 * MICRO), (30, 10**9), (50, 300 * MICRO)):
            dep = market.create_deployment(tenant, manifest(price=MICRO), deposit, height)
            order = market.deployments[dep[0].deployment_id].order_ids[0]
            bid = market.place_bid(order, provider, MICRO, height)[-1].bid_id
            market.accept_bid(bid, height)
    rounds = [
        [e for e in market.tick(600) if isinstance(e, SettlementRound)]
        for market in (eager, deferred)
    ]
    assert rounds[0] == rounds[1]
    # $100 from block 5 runs short at 120 (owing 115); $300 from block 50 at 360 (owing 310)
    assert [r.deployments_paused for r in rounds[0]] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert deferred.accrued > 0 and eager.accrued == 0
    assert deferred.escrow(2) > eager.escrow(2)  # balances lag until flush
    deferred.flush()
    assert deferred.escrow(2) == eager.escrow(2) and deferred.accrued == 0


def test_defer_rounds_refuses_a_fee():
    with pytest.raises(InvalidAmount, match="defer_rounds needs fee_bps 0"):
        Market(fee_bps=100, defer_rounds=True)
