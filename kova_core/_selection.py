"""Tenant bid selection policies: one small interface, several policies, registered by name.

A policy sees the open bids on one order as :class:`BidView` records and returns the one to
accept, or ``None``. Every policy orders bids by a total key ending in the bid id, so ties
always break the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from operator import itemgetter
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

from ._errors import StrategyConfigError
from ._registry import build

__all__ = [
    "SELECTION_POLICIES",
    "BestReputation",
    "BidView",
    "Cheapest",
    "Fastest",
    "SelectionPolicy",
    "Weighted",
    "selection_policy",
]


class BidView(NamedTuple):
    """An open bid as a tenant sees it (read-only; a named tuple, built for every open bid a
    tenant reviews)."""

    bid_id: int
    provider_id: int
    price: int
    response_time: int
    reputation: Fraction
    completed: int = 0
    failed: int = 0


# Keys of the policies that compare plain fields (a policy sees an order's every bid):
# (price, response_time, bid_id) and (response_time, price, bid_id), read by position
_PRICE_RESPONSE_ID = itemgetter(
    BidView._fields.index("price"),
    BidView._fields.index("response_time"),
    BidView._fields.index("bid_id"),
)
_RESPONSE_PRICE_ID = itemgetter(
    BidView._fields.index("response_time"),
    BidView._fields.index("price"),
    BidView._fields.index("bid_id"),
)


@runtime_checkable
class SelectionPolicy(Protocol):
    """A tenant's choice among the open bids on an order."""

    name: ClassVar[str]

    def choose(self, bids: Sequence[BidView]) -> BidView | None:
        """Return the bid to accept, or ``None`` to accept none (for instance, no bids)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Cheapest:
    """Lowest price per block; then fastest response; then lowest bid id."""

    name: ClassVar[str] = "cheapest"

    def choose(self, bids: Sequence[BidView]) -> BidView | None:
        """Return the cheapest bid."""
        return min(bids, key=_PRICE_RESPONSE_ID, default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class BestReputation:
    """Highest reputation; then lowest price; then fastest; then lowest bid id."""

    name: ClassVar[str] = "reputation"

    def choose(self, bids: Sequence[BidView]) -> BidView | None:
        """Return the bid of the most reputable provider."""
        return min(
            bids, key=lambda b: (-b.reputation, b.price, b.response_time, b.bid_id), default=None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fastest:
    """Shortest response time (a quick bid suggests availability); then price; then bid id."""

    name: ClassVar[str] = "fastest"

    def choose(self, bids: Sequence[BidView]) -> BidView | None:
        """Return the bid that came soonest after the order opened."""
        return min(bids, key=_RESPONSE_PRICE_ID, default=None)


def _closeness(value: int, low: int, high: int) -> Fraction:
    """1 for the lowest value among the bids, 0 for the highest, linear between (1 if all equal)."""
    return Fraction(1) if high == low else Fraction(high - value, high - low)


@dataclass(frozen=True, slots=True, kw_only=True)
class Weighted:
    """A weighted score of price, reputation and response time, each scaled to [0, 1] among the
    bids (cheapest and fastest score 1). Highest score wins; ties go to the cheaper, then the
    lower bid id. Exact fractions throughout."""

    name: ClassVar[str] = "weighted"
    price: Fraction = Fraction(1)
    reputation: Fraction = Fraction(1)
    response: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        if self.price + self.reputation + self.response == 0:
            raise StrategyConfigError("price", "at least one weight must be > 0")

    def choose(self, bids: Sequence[BidView]) -> BidView | None:
        """Return the bid with the highest weighted score."""
        if not bids:
            return None
        prices = [b.price for b in bids]
        times = [b.response_time for b in bids]
        lo_p, hi_p, lo_t, hi_t = min(prices), max(prices), min(times), max(times)

        def score(b: BidView) -> Fraction:
            return (
                self.price * _closeness(b.price, lo_p, hi_p)
                + self.reputation * b.reputation
                + self.response * _closeness(b.response_time, lo_t, hi_t)
            )

        return min(bids, key=lambda b: (-score(b), b.price, b.bid_id))


SELECTION_POLICIES: Mapping[str, type[SelectionPolicy]] = {
    cls.name: cls for cls in (Cheapest, BestReputation, Fastest, Weighted)
}
"""Bid selection policies by registered name."""


def selection_policy(name: str, **params: object) -> SelectionPolicy:
    """Build the selection policy registered as ``name`` with ``params``.

    Raises :class:`UnknownStrategy` or :class:`StrategyConfigError` (naming the parameter).
    """
    return build(SELECTION_POLICIES, "selection policy", name, params)
