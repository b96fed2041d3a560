"""Tenant bid selection policies: which open bid each one accepts, ties, and building by name."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kova_core import (
    SELECTION_POLICIES,
    BestReputation,
    BidView,
    Cheapest,
    Fastest,
    SelectionPolicy,
    StrategyConfigError,
    UnknownStrategy,
    Weighted,
    reputation_score,
    selection_policy,
)

HALF = Fraction(1, 2)


def bid(bid_id: int, price: int, response_time: int, reputation: Fraction = HALF) -> BidView:
    return BidView(
        bid_id=bid_id,
        provider_id=100 + bid_id,
        price=price,
        response_time=response_time,
        reputation=reputation,
    )


# Three bids on one order, scaled for Weighted among themselves:
#            price  closeness  response  closeness  reputation
#   1 (A)    100    1          10        2/3        1/2
#   2 (B)    200    0           5        1          1/2
#   3 (C)    150    1/2        20        0          9/10
A = bid(1, price=100, response_time=10)
B = bid(2, price=200, response_time=5)
C = bid(3, price=150, response_time=20, reputation=Fraction(9, 10))
ABC = [A, B, C]


def winner(policy: SelectionPolicy, bids: Sequence[BidView]) -> int | None:
    chosen = policy.choose(bids)
    return None if chosen is None else chosen.bid_id


CASES = [
    # --- Cheapest: price, then response time, then bid id
    pytest.param(Cheapest(), [], None, id="cheapest-no-bids"),
    pytest.param(Cheapest(), [B], 2, id="cheapest-one-bid"),
    pytest.param(Cheapest(), ABC, 1, id="cheapest-lowest-price"),
    pytest.param(
        Cheapest(), [bid(1, 100, 10), bid(2, 100, 5)], 2, id="cheapest-same-price-faster-wins"
    ),
    pytest.param(
        Cheapest(),
        [bid(5, 100, 5), bid(3, 100, 5), bid(4, 100, 5)],
        3,
        id="cheapest-all-equal-lowest-bid-id",
    ),
    pytest.param(
        Cheapest(),
        [bid(1, 101, 1, Fraction(99, 100)), bid(2, 100, 50, Fraction(1, 9))],
        2,
        id="cheapest-ignores-reputation",
    ),
    # --- BestReputation: reputation, then price, then response time, then bid id
    pytest.param(BestReputation(), [], None, id="reputation-no-bids"),
    pytest.param(BestReputation(), ABC, 3, id="reputation-highest"),
    pytest.param(
        BestReputation(),
        [bid(1, 200, 5, Fraction(2, 3)), bid(2, 100, 5, HALF)],
        1,
        id="reputation-beats-price",
    ),
    pytest.param(BestReputation(), [A, B], 1, id="reputation-same-cheaper-wins"),
    pytest.param(
        BestReputation(),
        [bid(1, 100, 10), bid(2, 100, 5)],
        2,
        id="reputation-same-price-faster-wins",
    ),
    pytest.param(
        BestReputation(),
        [bid(9, 100, 5), bid(8, 100, 5)],
        8,
        id="reputation-all-equal-lowest-bid-id",
    ),
    pytest.param(
        BestReputation(),
        [bid(1, 100, 5, Fraction(2, 3)), bid(2, 100, 5, Fraction(4, 6))],
        1,
        id="reputation-equal-fractions-tie",
    ),
    # --- Fastest: response time, then price, then bid id
    pytest.param(Fastest(), [], None, id="fastest-no-bids"),
    pytest.param(Fastest(), ABC, 2, id="fastest-soonest"),
    pytest.param(Fastest(), [bid(1, 100, 7), bid(2, 90, 7)], 2, id="fastest-same-time-cheaper"),
    pytest.param(
        Fastest(), [bid(2, 100, 7), bid(1, 100, 7)], 1, id="fastest-all-equal-lowest-bid-id"
    ),
    # --- Weighted (exact fractions; see the table above ABC)
    pytest.param(Weighted(), [], None, id="weighted-no-bids"),
    pytest.param(Weighted(), [C], 3, id="weighted-one-bid"),
    # A = 1 + 1/2 + 2/3 = 13/6; B = 0 + 1/2 + 1 = 3/2; C = 1/2 + 9/10 + 0 = 7/5
    pytest.param(Weighted(), ABC, 1, id="weighted-equal-weights"),
    pytest.param(
        Weighted(price=Fraction(1), reputation=Fraction(0), response=Fraction(0)),
        ABC,
        1,
        id="weighted-price-only",
    ),
    pytest.param(
        Weighted(price=Fraction(0), reputation=Fraction(1), response=Fraction(0)),
        ABC,
        3,
        id="weighted-reputation-only",
    ),
    pytest.param(
        Weighted(price=Fraction(0), reputation=Fraction(0), response=Fraction(1)),
        ABC,
        2,
        id="weighted-response-only",
    ),
    # price 0.1: A = 1/10 + 1/2 + 2/3 = 19/15; B = 3/2; C = 1/20 + 9/10 = 19/20
    pytest.param(selection_policy("weighted", price=0.1), ABC, 2, id="weighted-float-weight"),
    # price 1/2, reputation 3, response 0: A = 1/2 + 3/2 = 2; B = 3/2; C = 1/4 + 27/10 = 59/20
    pytest.param(
        selection_policy("weighted", price="0.5", reputation="3", response="0"),
        ABC,
        3,
        id="weighted-string-weights",
    ),
    # price 1/2, reputation 1/3, response 1: A = 1/2 + 1/6 + 2/3 = 4/3; B = 1/6 + 1 = 7/6;
    # C = 1/4 + 3/10 = 11/20
    pytest.param(
        selection_policy("weighted", price="1/2", reputation="1/3"),
        ABC,
        1,
        id="weighted-fraction-strings",
    ),
    # A = 1 + 1/2 + 0 = 3/2 = B = 0 + 1/2 + 1: the tie goes to the cheaper
    pytest.param(Weighted(), [B, A], 1, id="weighted-tie-cheaper-wins"),
    # price-only weights, same price: the tie goes to the lower bid id, not the faster
    pytest.param(
        Weighted(price=Fraction(1), reputation=Fraction(0), response=Fraction(0)),
        [bid(2, 100, 5), bid(1, 100, 10)],
        1,
        id="weighted-tie-same-price-bid-id",
    ),
    pytest.param(
        Weighted(), [bid(7, 100, 5), bid(6, 100, 5)], 6, id="weighted-all-equal-lowest-bid-id"
    ),
    # reputation is used as it is (already in (0, 1)), not rescaled among the bids:
    # 1 = price 0 + 1/3 + time 1 = 4/3 against 2 = 1 + 1/2 + 0 = 3/2
    pytest.param(
        Weighted(),
        [bid(1, 200, 5, Fraction(1, 3)), bid(2, 100, 9, HALF)],
        2,
        id="weighted-reputation-not-rescaled",
    ),
]


@pytest.mark.parametrize(("policy", "bids", "expected"), CASES)
def test_choose(policy: SelectionPolicy, bids: list[BidView], expected: int | None) -> None:
    assert winner(policy, bids) == expected
    assert winner(policy, list(reversed(bids))) == expected


def test_weighted_weights_are_exact_fractions() -> None:
    policy = selection_policy("weighted", price=0.1, reputation="0.5", response=2)
    assert policy == Weighted(price=Fraction(1, 10), reputation=HALF, response=Fraction(2))


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param({"price": 0, "reputation": 0, "response": 0}, id="ints"),
        pytest.param({"price": "0", "reputation": "0.0", "response": 0.0}, id="strings-floats"),
        pytest.param({"price": Fraction(0), "reputation": 0, "response": "0/7"}, id="fractions"),
    ],
)
def test_weighted_needs_a_positive_weight(weights: dict[str, object]) -> None:
    with pytest.raises(StrategyConfigError) as raised:
        selection_policy("weighted", **weights)
    assert raised.value.field == "price"
    assert "at least one weight must be > 0" in str(raised.value)
    with pytest.raises(StrategyConfigError):
        Weighted(price=Fraction(0), reputation=Fraction(0), response=Fraction(0))


# --- invariants -----------------------------------------------------------------------------

weights = st.fractions(min_value=0, max_value=10, max_denominator=100)

policies = st.one_of(
    st.just(Cheapest()),
    st.just(BestReputation()),
    st.just(Fastest()),
    st.tuples(weights, weights, weights)
    .filter(lambda w: sum(w) > 0)
    .map(lambda w: Weighted(price=w[0], reputation=w[1], response=w[2])),
)


@st.composite
def bid_sets(draw: st.DrawFn) -> list[BidView]:
    ids = draw(st.lists(st.integers(0, 10**6), min_size=0, max_size=8, unique=True))
    # few distinct values, so that ties are common
    return [
        BidView(
            bid_id=bid_id,
            provider_id=draw(st.integers(0, 5)),
            price=draw(st.sampled_from([1, 500_000, 999_999, 1_000_000])),
            response_time=draw(st.integers(0, 3)),
            reputation=reputation_score(draw(st.integers(0, 3)), draw(st.integers(0, 3))),
        )
        for bid_id in ids
    ]


@given(policies, bid_sets(), st.randoms(use_true_random=False))
def test_choice_is_a_given_bid_and_ignores_order(
    policy: SelectionPolicy, bids: list[BidView], rnd: Random
) -> None:
    chosen = policy.choose(bids)
    if not bids:
        assert chosen is None
        return
    assert chosen in bids
    shuffled = list(bids)
    rnd.shuffle(shuffled)
    assert policy.choose(shuffled) == chosen
    assert policy.choose(tuple(bids)) == chosen


@given(bid_sets())
def test_each_policy_picks_the_best_on_its_own_measure(bids: list[BidView]) -> None:
    if not bids:
        return
    cheapest, reputable, fastest = (
        p.choose(bids) for p in (Cheapest(), BestReputation(), Fastest())
    )
    assert cheapest is not None and reputable is not None and fastest is not None
    assert cheapest.price == min(b.price for b in bids)
    assert reputable.reputation == max(b.reputation for b in bids)
    assert fastest.response_time == min(b.response_time for b in bids)


# --- the registry ---------------------------------------------------------------------------


def test_registered_names() -> None:
    assert sorted(SELECTION_POLICIES) == ["cheapest", "fastest", "reputation", "weighted"]


@pytest.mark.parametrize("name", sorted(SELECTION_POLICIES))
def test_every_registered_policy_builds_and_is_a_selection_policy(name: str) -> None:
    policy = selection_policy(name)
    assert isinstance(policy, SelectionPolicy)
    assert policy.name == name
    assert type(policy) is SELECTION_POLICIES[name]


@pytest.mark.parametrize("name", ["cheap", "Cheapest", "", "fixed"])
def test_unknown_policy_lists_the_registered_names(name: str) -> None:
    with pytest.raises(UnknownStrategy) as raised:
        selection_policy(name)
    assert str(raised.value) == (
        f"unknown selection policy {name!r}; registered: cheapest, fastest, reputation, weighted"
    )


@pytest.mark.parametrize(
    ("name", "params", "field", "message"),
    [
        pytest.param(
            "cheapest",
            {"price": 1},
            "price",
            "selection policy 'cheapest' has no parameter 'price' (takes: no parameters)",
            id="policy-without-parameters",
        ),
        pytest.param(
            "weighted",
            {"speed": 1},
            "speed",
            "selection policy 'weighted' has no parameter 'speed' "
            "(takes: price, reputation, response)",
            id="unknown-weight",
        ),
        pytest.param(
            "weighted", {"price": "abc"}, "price", "must be a number, got 'abc'", id="not-a-number"
        ),
        pytest.param(
            "weighted", {"reputation": True}, "reputation", "must be a number, got True", id="bool"
        ),
        pytest.param(
            "weighted", {"response": None}, "response", "must be a number, got None", id="none"
        ),
        pytest.param("weighted", {"price": [1]}, "price", "must be a number, got [1]", id="list"),
        pytest.param(
            "weighted", {"price": float("nan")}, "price", "must be a number, got nan", id="nan"
        ),
        pytest.param(
            "weighted", {"price": float("inf")}, "price", "must be a number, got inf", id="infinity"
        ),
        pytest.param("weighted", {"price": -1}, "price", "must be >= 0, got -1", id="negative"),
        pytest.param(
            "weighted",
            {"response": "-0.5"},
            "response",
            "must be >= 0, got -0.5",
            id="negative-string",
        ),
    ],
)
def test_policy_config_errors_name_the_parameter(
    name: str, params: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(StrategyConfigError) as raised:
        selection_policy(name, **params)
    assert raised.value.field == field
    assert str(raised.value) == f"{field}: {message}"
