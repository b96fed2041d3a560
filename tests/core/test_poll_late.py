"""``Market.poll_late``: polls of one order carried out together, after their time, place the
same bids (ids, prices, heights, reservations, generator draws) as the same polls carried out
one at a time at their heights with ``Market.poll``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kova_core import (
    BidPlaced,
    BidsPlaced,
    CostPlus,
    FixedPrice,
    Market,
    PricingStrategy,
    RandomBand,
    Resources,
    Undercut,
    UtilisationPrice,
    prices_alike,
)

from .helpers import GIB, check_invariants, manifest

STRATEGIES: list[PricingStrategy] = [
    FixedPrice(price_per_block=900_000),
    FixedPrice(price_per_block=3_000_000),  # above the max price: no bid, polls again
    CostPlus(cpu_cost=1_000_000, margin_bps=2_500),
    UtilisationPrice(base=500_000, peak=2_500_000),
    Undercut(floor=400_000, step=50_000),
    RandomBand(low=200_000, high=2_200_000),
]


def build(cpus: list[int], strategy_of: list[int], held: list[bool]) -> tuple[Market, int]:
    """A market with one open order (max price 2 units) and providers of the given sizes; the
    ``held`` ones first bid on another order, so their free capacity is less."""
    market = Market()
    tenant = market.add_tenant("t")
    market.credit(tenant, 10**9, 0)
    target = market.create_deployment(tenant, manifest(cpu="1", price=2_000_000), 10**6, 0)
    order = target[-1].order_id
    other = market.create_deployment(tenant, manifest(cpu="2", price=2_000_000), 10**6, 0)
    for cpu, hold in zip(cpus, held, strict=True):
        pid = market.add_provider(capacity=Resources(cpu=cpu, memory=8 * GIB, storage=50 * GIB))
        if hold and cpu >= 2000:
            market.place_bid(other[-1].order_id, pid, 1_000_000, 0)
    return market, order


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 8),
)
def test_late_polls_place_the_bids_timely_polls_would(data: st.DataObject, n: int) -> None:
    cpus = data.draw(st.lists(st.sampled_from([500, 1000, 2000, 4000]), min_size=n, max_size=n))
    strategy_of = data.draw(st.lists(st.integers(0, len(STRATEGIES) - 1), min_size=n, max_size=n))
    held = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    heights = sorted(data.draw(st.lists(st.integers(1, 100), min_size=1, max_size=20)))
    pollers = data.draw(st.lists(st.integers(1, n), min_size=len(heights), max_size=len(heights)))
    seed = data.draw(st.integers(0, 2**32))
    timely, order = build(cpus, strategy_of, held)
    late, _ = build(cpus, strategy_of, held)
    rngs_timely = {p: np.random.default_rng([seed, p]) for p in range(1, n + 1)}
    rngs_late = {p: np.random.default_rng([seed, p]) for p in range(1, n + 1)}

    placed_timely = []
    for height, pid in zip(heights, pollers, strict=True):
        strategy = STRATEGIES[strategy_of[pid - 1]]
        events = timely.poll(pid, strategy, rngs_timely[pid], height, orders=[order])
        placed_timely.append(any(type(e) is BidPlaced for e in events))
    polls = [
        (height, pid, STRATEGIES[strategy_of[pid - 1]], rngs_late[pid])
        for height, pid in zip(heights, pollers, strict=True)
    ]
    events, placed = late.poll_late(order, polls)
    events = [e for e in events if type(e) is BidsPlaced]  # not the rounds caught up
    assert placed == placed_timely
    assert late.height == timely.height
    assert {i: vars_of(b) for i, b in late.bids.items()} == {
        i: vars_of(b) for i, b in timely.bids.items()
    }
    for pid in range(1, n + 1):
        a, b = timely.providers[pid], late.providers[pid]
        assert (a.free, a.reserved, a.open_bids) == (b.free, b.reserved, b.open_bids)
        assert rngs_timely[pid].bit_generator.state == rngs_late[pid].bit_generator.state
    assert timely.orders[order].open_bids == late.orders[order].open_bids
    new = [b for b in timely.bids.values() if b.order_id == order]
    if new:
        assert events == [
            BidsPlaced(
                height=new[-1].height,
                order_id=order,
                bid_ids=tuple(b.id for b in new),
                provider_ids=tuple(b.provider_id for b in new),
                prices=tuple(b.price for b in new),
                heights=tuple(b.height for b in new),
            )
        ]
    else:
        assert events == []
    check_invariants(late)


def vars_of(bid: object) -> tuple[object, ...]:
    return tuple(getattr(bid, f) for f in bid.__slots__)  # type: ignore[attr-defined]


def test_late_polls_of_an_order_that_is_not_open_place_nothing() -> None:
    market, order = build([4000], [0], [False])
    market.expire_order(order, 5)
    events, placed = market.poll_late(order, [(3, 1, STRATEGIES[0], np.random.default_rng(0))])
    assert (events, placed) == ([], [False])
    assert market.providers[1].reserved == Resources()


def test_strategies_that_price_alike_say_so() -> None:
    assert [prices_alike(s) for s in STRATEGIES] == [True, True, True, True, False, False]

    class Unsaid:
        name = "unsaid"

        def price(self, ctx: object, rng: object) -> int:
            return 1

    assert not prices_alike(Unsaid())  # type: ignore[arg-type]
